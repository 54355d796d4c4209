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


class BoincProject:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
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
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)
            os.chmod(path, 0o644)
        md5_path = path.with_name(path.name + ".md5")
        if not md5_path.exists():
            atomic_write_bytes(md5_path, f"{md5} {len(data)}\n".encode())
        return path

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
