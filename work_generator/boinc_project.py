"""A BOINC project directory as the work generator uses it: download hierarchy, ``bin/create_work``.

Everything here follows ../shared/boinc-contract.md:

* input files go into the download hierarchy under their (content-addressed, immutable) physical names,
  in the fan-out directory ``bin/dir_hier_path NAME`` prints; a *different* file under an existing name is
  refused (``stage_file``'s rule), the same file is left alone;
* work is created in bulk with ``bin/create_work --appname A --stdin --wu_template T --result_template T``
  run from the project root, one line per job (``--wu_name W`` then the physical input names), ``--batch``
  per campaign and the cost class's ``--rsc_*`` values on the command line (they are not in the templates,
  where they would silently win).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from server.core.boinc_contract import APP_NAME, fanout_dir
from server.core.storage import atomic_write_bytes


class BoincProjectError(RuntimeError):
    """The project directory is unusable, or a BOINC tool refused a call."""


@dataclass(frozen=True)
class CreateWorkCall:
    """One bulk ``create_work`` invocation (what ``--dry_run`` prints)."""

    argv: tuple[str, ...]
    stdin: str

    def shell_text(self) -> str:
        return " ".join(self.argv) + " <<'EOF'\n" + self.stdin + "EOF"


def _config_text(root: ET.Element, tag: str) -> str | None:
    node = root.find(f"config/{tag}")
    return None if node is None or node.text is None else node.text.strip()


# BOINC's result states (db/boinc_db_types.h): server_state, outcome, validate_state.
RESULT_SERVER_STATE = {1: "inactive", 2: "unsent", 4: "in_progress", 5: "over"}
RESULT_OUTCOME_ERRORS = (3, 4, 6, 7)  # client error, no reply, validate error, client detached
VALIDATE_VALID, VALIDATE_INVALID = 1, 2


@dataclass(frozen=True)
class BatchSummary:
    """One campaign (BOINC batch) as BOINC's own database sees it."""

    batch: int
    workunits: int
    workunits_error: int
    workunits_assimilated: int
    unsent: int
    in_progress: int
    valid: int
    invalid: int
    error: int
    results_per_host: dict[int, int]
    oldest_in_progress_sent: int | None  # unix time the oldest result in progress was sent


class BoincProject:
    def __init__(self, root: str | os.PathLike[str], *, workunit_index=None) -> None:
        """``workunit_index``: names -> {name: BOINC workunit id} for names already in BOINC's ``workunit`` table
        (default: a query of the project's database, from config.xml)."""
        self.root = Path(root).absolute()
        self._workunit_index = workunit_index
        config_path = self.root / "config.xml"
        if not config_path.is_file():
            raise BoincProjectError(f"{self.root} is not a BOINC project directory (no config.xml)")
        try:
            tree = ET.parse(config_path).getroot()
        except ET.ParseError as exc:
            raise BoincProjectError(f"{config_path} is not well-formed XML: {exc}") from None
        self.download_dir = Path(_config_text(tree, "download_dir") or self.root / "download")
        self.upload_dir = Path(_config_text(tree, "upload_dir") or self.root / "upload")
        fanout = _config_text(tree, "uldl_dir_fanout")
        try:
            self.fanout = int(fanout) if fanout else 1024
        except ValueError:
            raise BoincProjectError(f"config.xml: uldl_dir_fanout {fanout!r} is not an integer") from None
        self._fanout_checked = False
        self._db = {tag: _config_text(tree, tag) or "" for tag in ("db_host", "db_name", "db_user", "db_passwd")}
        self._engine = None

    def __repr__(self) -> str:
        return f"BoincProject({str(self.root)!r})"

    @property
    def stop_file(self) -> Path:
        return self.root / "stop_daemons"

    def stop_requested(self) -> bool:
        return self.stop_file.exists()

    def tool(self, name: str) -> Path:
        path = self.root / "bin" / name
        if not path.is_file() or not os.access(path, os.X_OK):
            raise BoincProjectError(f"{path} is missing or not executable: is {self.root} a BOINC project?")
        return path

    # --- download hierarchy -------------------------------------------------------------------------

    def download_path(self, physical_name: str) -> Path:
        path = self.download_dir / fanout_dir(physical_name, self.fanout) / physical_name
        if not self._fanout_checked:
            # Our fan-out must be the server's: ask bin/dir_hier_path once.
            proc = subprocess.run([str(self.tool("dir_hier_path")), physical_name], cwd=self.root,
                                  capture_output=True, text=True)
            printed = proc.stdout.strip()
            if proc.returncode != 0 or Path(printed) != path:
                raise BoincProjectError(f"bin/dir_hier_path {physical_name} printed {printed!r} "
                                        f"(exit {proc.returncode}); expected {path}")
            self._fanout_checked = True
        return path

    def stage_bytes(self, physical_name: str, data: bytes) -> Path:
        """Put an input file into the download hierarchy (idempotent; never replaces a different file)."""
        path = self.download_path(physical_name)
        md5 = hashlib.md5(data).hexdigest()
        if path.exists():
            if hashlib.md5(path.read_bytes()).hexdigest() != md5:
                raise BoincProjectError(f"{path} already exists with different content: input names must be "
                                        "unique and immutable")
        else:
            new_dir = not path.parent.exists()
            path.parent.mkdir(parents=True, exist_ok=True)
            if new_dir:
                self._give_to_project(path.parent)
            atomic_write_bytes(path, data, mode=0o644)
            self._give_to_project(path)
        md5_path = path.with_name(path.name + ".md5")
        if not md5_path.exists():
            atomic_write_bytes(md5_path, f"{md5} {len(data)}\n".encode(), mode=0o644)
            self._give_to_project(md5_path)
        return path

    def _give_to_project(self, path: Path) -> None:
        """Run as root (an admin's ``openastro boinc generate``), hand what we create in the download hierarchy to
        the project user, who owns download/: BOINC's file_deleter (the project user) must delete it later."""
        if os.geteuid() != 0:
            return
        st = self.download_dir.stat()
        if st.st_uid != 0:
            os.chown(path, st.st_uid, st.st_gid)

    # --- create_work ----------------------------------------------------------------------------------

    def create_work_call(self, jobs: Sequence[tuple[str, Sequence[str]]], *, wu_template: str, result_template: str,
                         batch: int, fpops_est: float, fpops_bound: float, memory_bytes: float, disk_bytes: float,
                         appname: str = APP_NAME) -> CreateWorkCall:
        for template in (wu_template, result_template):
            if not (self.root / "templates" / template).is_file():
                raise BoincProjectError(f"template templates/{template} is not installed in {self.root}: "
                                        "run `openastro boinc install`")
        argv = ("bin/create_work", "--appname", appname, "--batch", str(int(batch)),
                "--wu_template", f"templates/{wu_template}", "--result_template", f"templates/{result_template}",
                "--rsc_fpops_est", f"{fpops_est:.6g}", "--rsc_fpops_bound", f"{fpops_bound:.6g}",
                "--rsc_memory_bound", f"{memory_bytes:.6g}", "--rsc_disk_bound", f"{disk_bytes:.6g}", "--stdin")
        lines = []
        for wu_name, files in jobs:
            for token in (wu_name, *files):
                if not token or any(c.isspace() for c in token) or token.startswith("-"):
                    raise ValueError(f"create_work token {token!r} is empty, starts with '-' or has whitespace")
            lines.append(" ".join(["--wu_name", wu_name, *files]))
        return CreateWorkCall(argv, "".join(line + "\n" for line in lines))

    def run_create_work(self, call: CreateWorkCall) -> None:
        self.tool("create_work")
        proc = subprocess.run(list(call.argv), cwd=self.root, input=call.stdin, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise BoincProjectError(f"bin/create_work failed (exit {proc.returncode}): " + " | ".join(tail))

    # --- BOINC's database -----------------------------------------------------------------------------------

    def db_url(self) -> str:
        """SQLAlchemy URL of BOINC's database (config.xml's db_host[:port], db_name, db_user, db_passwd)."""
        from sqlalchemy.engine import URL

        host, _, port = (self._db["db_host"] or "localhost").partition(":")
        if not self._db["db_name"]:
            raise BoincProjectError(f"{self.root / 'config.xml'} names no <db_name>")
        return URL.create("mysql+mysqldb", username=self._db["db_user"] or None,
                          password=self._db["db_passwd"] or None, host=host, port=int(port) if port else None,
                          database=self._db["db_name"]).render_as_string(hide_password=False)

    def _connect(self):
        from sqlalchemy import create_engine

        if self._engine is None:
            self._engine = create_engine(self.db_url(), pool_pre_ping=True)
        return self._engine.connect()

    def workunit_ids(self, names: Sequence[str]) -> dict[str, int]:
        """{name: id} of the names already in BOINC's ``workunit`` table."""
        names = list(names)
        if not names:
            return {}
        if self._workunit_index is not None:
            return dict(self._workunit_index(names))
        from sqlalchemy import bindparam, text
        from sqlalchemy.exc import SQLAlchemyError

        query = text("SELECT name, id FROM workunit WHERE name IN :names").bindparams(
            bindparam("names", expanding=True))
        found: dict[str, int] = {}
        try:
            with self._connect() as conn:
                for i in range(0, len(names), 500):
                    found.update({n: int(i_) for n, i_ in conn.execute(query, {"names": names[i:i + 500]})})
        except SQLAlchemyError as exc:
            raise BoincProjectError(f"cannot read BOINC's workunit table: {str(exc).splitlines()[0]}") from None
        return found

    def cancel_workunits(self, names: Sequence[str]) -> list[str]:
        """Cancel these jobs in BOINC (``bin/cancel_jobs --name WU`` each: BOINC marks the work unit cancelled,
        its unsent results are not sent and clients abort running ones). Names BOINC does not have (rows never
        submitted) are skipped. Returns the names cancelled."""
        tool = self.tool("cancel_jobs")
        cancelled = []
        for name in names:
            proc = subprocess.run([str(tool), "--name", name], cwd=self.root, capture_output=True, text=True)
            if proc.returncode != 0:
                if "No workunit named" in proc.stderr:
                    continue
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                raise BoincProjectError(f"bin/cancel_jobs --name {name} failed (exit {proc.returncode}): "
                                        + " | ".join(tail))
            cancelled.append(name)
        return cancelled

    def is_staged(self, physical_name: str) -> bool:
        return self.download_path(physical_name).is_file()

    def batch_summaries(self, batches: Sequence[int]) -> dict[int, BatchSummary]:
        """Per batch (= campaign id): work units and results as BOINC's database has them."""
        from sqlalchemy import bindparam, text
        from sqlalchemy.exc import SQLAlchemyError

        batches = [int(b) for b in batches]
        if not batches:
            return {}
        wu_q = text("SELECT batch, COUNT(*), SUM(error_mask <> 0), SUM(assimilate_state = 2) FROM workunit "
                    "WHERE batch IN :b GROUP BY batch").bindparams(bindparam("b", expanding=True))
        res_q = text("SELECT w.batch, r.server_state, r.outcome, r.validate_state, r.hostid, r.sent_time "
                     "FROM result r JOIN workunit w ON w.id = r.workunitid WHERE w.batch IN :b"
                     ).bindparams(bindparam("b", expanding=True))
        try:
            with self._connect() as conn:
                wus = {int(b): (int(n), int(e or 0), int(a or 0)) for b, n, e, a in conn.execute(wu_q, {"b": batches})}
                rows = list(conn.execute(res_q, {"b": batches}))
        except SQLAlchemyError as exc:
            raise BoincProjectError(f"cannot read BOINC's database: {str(exc).splitlines()[0]}") from None
        out = {}
        for batch in batches:
            mine = [r for r in rows if int(r[0]) == batch]
            hosts: dict[int, int] = {}
            for r in mine:
                if r[4]:
                    hosts[int(r[4])] = hosts.get(int(r[4]), 0) + 1
            in_progress = [r for r in mine if r[1] == 4]
            n, e, a = wus.get(batch, (0, 0, 0))
            out[batch] = BatchSummary(
                batch, n, e, a, unsent=sum(r[1] == 2 for r in mine), in_progress=len(in_progress),
                valid=sum(r[3] == VALIDATE_VALID for r in mine), invalid=sum(r[3] == VALIDATE_INVALID for r in mine),
                error=sum(r[1] == 5 and r[2] in RESULT_OUTCOME_ERRORS for r in mine), results_per_host=hosts,
                oldest_in_progress_sent=min((int(r[5]) for r in in_progress if r[5]), default=None))
        return out

    def host_rows(self) -> list[tuple]:
        """BOINC's ``host`` table: (id, os_name, os_version, p_vendor, p_model, p_ncpus, m_nbytes, rpc_time,
        expavg_credit, misc) per host (server.boinc.hosts reads them)."""
        return self._select("SELECT id, os_name, os_version, p_vendor, p_model, p_ncpus, m_nbytes, rpc_time, "
                            "expavg_credit, misc FROM host ORDER BY id", {}, "host")

    def app_version_rows(self, app_name: str) -> list[tuple]:
        """(version_num, platform name, plan_class, deprecated) of the app's registered versions."""
        return self._select("SELECT av.version_num, p.name, av.plan_class, av.deprecated FROM app_version av "
                            "JOIN platform p ON p.id = av.platformid JOIN app a ON a.id = av.appid "
                            "WHERE a.name = :app ORDER BY av.version_num, p.name", {"app": app_name}, "app_version")

    def _select(self, query: str, params: dict, table: str) -> list[tuple]:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self._connect() as conn:
                return [tuple(r) for r in conn.execute(text(query), params)]
        except SQLAlchemyError as exc:
            raise BoincProjectError(f"cannot read BOINC's {table} table: {str(exc).splitlines()[0]}") from None
