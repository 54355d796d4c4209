"""Who runs work units: the local executor (embedded default) or a BOINC server.

One interface (a small strategy object)::

    executor.submit(work_unit_names)   # queue the work units (rows already made by the work generator)
    executor.poll() -> Progress        # counts so far
    executor.collect() -> Progress     # run/wait until every submitted work unit is resolved

:class:`LocalExecutor` plays the BOINC client *and* the server daemons on this machine, through the same
programs and conventions a real project uses, so a campaign run locally exercises what BOINC will run:

* each replica (result ``WU_N``) runs ``openastro-app`` (the console script or a frozen build) in a
  slot-like directory ``VAR/local-boinc/slots/RESULT`` holding copies of the inputs under their open
  names (the templates use ``<copy_file/>``), an ``init_data.xml`` with ``ncpus`` 1 and the checkpoint
  period, and job.xml's command line; a process pool of ``ncores`` workers runs replicas;
* the output is "uploaded" to ``VAR/local-boinc/upload/FANOUT/RESULT_rNNN_0`` (BOINC's name shape);
* the validator and assimilator programs are invoked exactly as ``script_validator`` /
  ``script_assimilator`` invoke them: through ``system()`` (a shell), from ``VAR/local-boinc/tmp_HOST``,
  as ``../bin/NAME ARGS`` with bare names and default arguments, the launchers in ``bin/`` written by the
  same code as ``openastro boinc install``;
* quorum and limits come from the work unit's templates (``min_quorum`` valid results that the compare
  script finds equivalent; ``max_error_results``, ``max_total_results``, ``max_success_results``), and a
  failed work unit reaches the assimilator's ``--error`` path with BOINC's mask bits.

:class:`BoincExecutor` is the work generator's submission to a real project; the project's daemons do the
rest.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

from sqlalchemy import func, select

from server.core.boinc_contract import (ASSIMILATE_SCRIPT, EXIT_TRANSIENT, EXIT_VALID, RESULT_OPEN_NAME,
                                   SPEC_OPEN_NAME, VALIDATE_COMPARE_SCRIPT, VALIDATE_INIT_SCRIPT, fanout_dir,
                                   templates_for)
from server.core.db.models import Campaign, WorkUnit

LOCAL_HOST = "localhost"
CHECKPOINT_NAME = "openastro_checkpoint.dat"
FRACTION_DONE_NAME = "fraction_done"
TRANSIENT_RETRIES = 3
REFERENCE_FLOPS = 3e9


class ExecutorError(RuntimeError):
    """The executor cannot run (missing app, unwritable work directory)."""


@dataclass
class Progress:
    total: int = 0
    done: int = 0
    error: int = 0
    running: int = 0
    replicas_run: int = 0
    invalid: int = 0

    @property
    def finished(self) -> int:
        return self.done + self.error


class Executor(Protocol):
    def submit(self, work_units: Sequence[str]) -> None: ...
    def poll(self) -> Progress: ...
    def collect(self) -> Progress: ...


@dataclass
class _Replica:
    wu_name: str
    index: int
    returncode: int | None = None
    upload_path: Path | None = None
    stderr_tail: str = ""
    processed: bool = False  # seen by the transitioner (a finished thread is not yet processed)


@dataclass
class _WorkState:
    name: str
    wu_id: int
    campaign_id: int
    kind: str
    quorum: int
    limits: dict
    timeout_s: float
    replicas: list[_Replica] = field(default_factory=list)
    valid: list[_Replica] = field(default_factory=list)
    errors: int = 0
    invalid: int = 0
    resolved: bool = False


def app_command_default() -> list[str]:
    script = Path(sys.executable).parent / "openastro-app"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "app.main"]


def job_command_line() -> list[str]:
    """The arguments job.xml gives the app (server.boinc.package renders the same line)."""
    return ["run", "--spec", SPEC_OPEN_NAME, "--out", RESULT_OPEN_NAME, "--checkpoint", CHECKPOINT_NAME,
            "--fraction-done", FRACTION_DONE_NAME]


def init_data_xml(wu_name: str, result_name: str, slot: int, checkpoint_period_s: float, resources: dict) -> str:
    """A minimal ``init_data.xml`` with the fields the app reads (the client writes many more)."""
    return "\n".join([
        "<app_init_data>", "<major_version>7</major_version>", "<app_name>openastro_app</app_name>",
        f"<wu_name>{wu_name}</wu_name>", f"<result_name>{result_name}</result_name>", f"<slot>{slot}</slot>",
        f"<checkpoint_period>{checkpoint_period_s:.6f}</checkpoint_period>", "<ncpus>1.000000</ncpus>",
        f"<rsc_fpops_est>{float(resources.get('fpops_est', 3.6e12)):.6f}</rsc_fpops_est>",
        f"<rsc_fpops_bound>{float(resources.get('fpops_bound', 8.64e13)):.6f}</rsc_fpops_bound>",
        f"<rsc_memory_bound>{float(resources.get('memory_bytes', 5e8)):.6f}</rsc_memory_bound>",
        f"<rsc_disk_bound>{float(resources.get('disk_bytes', 1e9)):.6f}</rsc_disk_bound>",
        "</app_init_data>", ""])


class LocalExecutor:
    """Runs work units on this machine through the same app, validator and assimilator programs as BOINC."""

    def __init__(self, app, *, ncores: int | None = None, app_command: Sequence[str] | None = None,
                 checkpoint_period_s: float | None = None, echo: Callable[[str], None] | None = None,
                 keep_slots: bool = False) -> None:
        from server.boinc.install import write_launchers

        self.app = app
        self.ncores = int(ncores or app.settings.ncores)
        self.app_command = list(app_command) if app_command else app_command_default()
        self.checkpoint_period_s = float(checkpoint_period_s or app.settings.checkpoint_period_s)
        self.echo = echo or (lambda _msg: None)
        self.keep_slots = keep_slots
        self.root = app.var_dir / "local-boinc"
        self.tmp_dir = self.root / f"tmp_{LOCAL_HOST}"
        self.upload_dir = self.root / "upload"
        self.slots_dir = self.root / "slots"
        for d in (self.tmp_dir, self.upload_dir, self.slots_dir):
            d.mkdir(parents=True, exist_ok=True)
        write_launchers(self.root / "bin", settings_env(app.settings))
        self._queue: list[str] = []
        self._states: dict[str, _WorkState] = {}
        self._lock = threading.Lock()
        self._progress = Progress()
        self._slot_counter = 0

    # --- interface ------------------------------------------------------------------------------------

    def submit(self, work_units: Sequence[str]) -> None:
        with self.app.db.session() as session:
            for name in work_units:
                wu = session.scalars(select(WorkUnit).where(WorkUnit.name == name)).first()
                if wu is None:
                    raise ValueError(f"no work unit named {name!r}")
                if name in self._states or wu.state not in ("created", "sent"):
                    continue
                quorum = int((wu.input_files or {}).get("quorum", 2))
                t = templates_for(wu.kind, quorum)
                resources = (wu.input_files or {}).get("resources", {})
                timeout = float(resources.get("fpops_bound", 8.64e13)) / REFERENCE_FLOPS
                self._states[name] = _WorkState(
                    name, wu.id, wu.campaign_id, wu.kind, quorum,
                    {"max_error_results": t.max_error_results, "max_total_results": t.max_total_results,
                     "max_success_results": t.max_success_results, "target_nresults": t.target_nresults},
                    timeout)
                wu.state = "sent"
                self._queue.append(name)
        with self._lock:
            self._progress.total = len(self._states)

    def poll(self) -> Progress:
        with self._lock:
            return Progress(**self._progress.__dict__)

    def collect(self, on_progress: Callable[[Progress], None] | None = None) -> Progress:
        pending = [self._states[n] for n in self._queue]
        self._queue = []
        with ThreadPoolExecutor(max_workers=self.ncores) as pool:
            futures = {}
            for state in pending:
                for _ in range(state.limits["target_nresults"]):
                    futures[self._launch(pool, state)] = state
            while futures:
                future = next(as_completed(futures))
                state = futures.pop(future)
                replica = future.result()
                with self._lock:
                    self._progress.running -= 1
                    self._progress.replicas_run += 1
                for extra in self._after_replica(state, replica):
                    futures[self._launch(pool, extra)] = extra
                if on_progress is not None:
                    on_progress(self.poll())
        return self.poll()

    # --- running replicas -------------------------------------------------------------------------------

    def _cancelled(self, state: _WorkState) -> bool:
        with self.app.db.session() as session:
            return session.get(Campaign, state.campaign_id).status == "cancelled"

    def _launch(self, pool, state: _WorkState):
        replica = _Replica(state.name, len(state.replicas))
        state.replicas.append(replica)
        with self._lock:
            self._progress.running += 1
            self._slot_counter += 1
            slot = self._slot_counter
        return pool.submit(self._run_replica, state, replica, slot)

    def _run_replica(self, state: _WorkState, replica: _Replica, slot: int) -> _Replica:
        result_name = f"{state.name}_{replica.index}"
        if self._cancelled(state):
            replica.returncode = -1
            replica.stderr_tail = "campaign cancelled"
            return replica
        slot_dir = self.slots_dir / result_name
        if slot_dir.exists():
            shutil.rmtree(slot_dir)
        slot_dir.mkdir(parents=True)
        with self.app.db.session() as session:
            wu = session.scalars(select(WorkUnit).where(WorkUnit.name == state.name)).one()
            files = dict(wu.input_files["files"])
            resources = dict(wu.input_files.get("resources", {}))
        for open_name, meta in files.items():
            self.app.store.copy_to(meta["key"], slot_dir / open_name)  # <copy_file/>: a real file in the slot
        (slot_dir / "init_data.xml").write_text(
            init_data_xml(state.name, result_name, slot, self.checkpoint_period_s, resources), encoding="utf-8")
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
            env[var] = "1"
        try:
            proc = subprocess.run(self.app_command + job_command_line(), cwd=slot_dir, env=env,
                                  capture_output=True, text=True, timeout=max(60.0, state.timeout_s))
            replica.returncode = proc.returncode
            replica.stderr_tail = "\n".join(proc.stderr.strip().splitlines()[-3:])
        except subprocess.TimeoutExpired:
            replica.returncode = 197  # BOINC: elapsed time exceeded rsc_fpops_bound
            replica.stderr_tail = f"killed after {state.timeout_s:.0f} s (rsc_fpops_bound)"
        output = slot_dir / RESULT_OPEN_NAME
        (slot_dir / "stderr.txt").write_text(replica.stderr_tail + "\n", encoding="utf-8")
        if replica.returncode == 0 and output.is_file():
            token = int(hashlib.sha256(result_name.encode()).hexdigest()[:8], 16)
            upload_name = f"{result_name}_r{token}_0"
            target = self.upload_dir / fanout_dir(upload_name) / upload_name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(output, target)
            replica.upload_path = target
        elif replica.returncode == 0:
            replica.returncode = 195
            replica.stderr_tail += " | exit 0 without result.npz (output file absent)"
        if not self.keep_slots:
            shutil.rmtree(slot_dir, ignore_errors=True)
        return replica

    # --- the server side: validation, transitions, assimilation -----------------------------------------

    def _daemon_call(self, script: str, args: Sequence[str]) -> int:
        """Run a bin/ script the way script_validator/script_assimilator do: system() from tmp_HOST."""
        command = " ".join([f"../bin/{script}", *[str(a) for a in args]])  # unquoted, as BOINC builds it
        proc = subprocess.run(command, shell=True, cwd=self.tmp_dir, capture_output=True, text=True)
        for line in proc.stderr.strip().splitlines():
            self.echo(f"    {line}")
        return proc.returncode

    def _validate(self, script: str, args: Sequence[str]) -> int:
        for _ in range(TRANSIENT_RETRIES):
            code = self._daemon_call(script, args)
            if code != EXIT_TRANSIENT:
                return code
        return code

    def _after_replica(self, state: _WorkState, replica: _Replica) -> list[_WorkState]:
        """BOINC's transitioner + validator for one returned replica; returns replicas to (re)send."""
        replica.processed = True
        if state.resolved:
            return []
        if replica.upload_path is None:
            state.errors += 1
            self.echo(f"  {state.name}_{replica.index}: client error (exit {replica.returncode}) "
                      f"{replica.stderr_tail[-300:]}")
        else:
            code = self._validate(VALIDATE_INIT_SCRIPT, [replica.upload_path])
            if code == EXIT_VALID:
                canonical = None
                for other in state.valid:
                    if self._validate(VALIDATE_COMPARE_SCRIPT, [other.upload_path, replica.upload_path]) == EXIT_VALID:
                        canonical = other
                        break
                state.valid.append(replica)
                if state.quorum == 1:
                    canonical = replica
                if canonical is not None and len(state.valid) >= state.quorum:
                    return self._finish(state, canonical)
            else:
                state.invalid += 1
                with self._lock:
                    self._progress.invalid += 1
        lim = state.limits
        if self._cancelled(state):
            return self._fail(state, 16)
        if state.errors >= lim["max_error_results"]:
            return self._fail(state, 2)
        if len(state.valid) > lim["max_success_results"]:
            return self._fail(state, 4)
        outstanding = sum(1 for r in state.replicas if not r.processed)
        if len(state.replicas) >= lim["max_total_results"]:
            return [] if outstanding else self._fail(state, 8)
        needed = state.quorum - len(state.valid) if len(state.valid) < state.quorum else 1
        return [state] * max(0, needed - outstanding)

    def _assimilate(self, args: Sequence) -> None:
        code = self._daemon_call(ASSIMILATE_SCRIPT, args)
        if code != 0:
            raise ExecutorError(f"the assimilator exited {code} for {' '.join(map(str, args))}: a BOINC "
                                "assimilator daemon would stop here (see the lines above)")

    def _finish(self, state: _WorkState, canonical: _Replica) -> list[_WorkState]:
        state.resolved = True
        self._assimilate([state.wu_id, canonical.upload_path])
        with self._lock:
            self._progress.done += 1
        return []

    def _fail(self, state: _WorkState, mask: int) -> list[_WorkState]:
        state.resolved = True
        self._assimilate(["--error", mask, state.name, state.wu_id, state.campaign_id])
        with self._lock:
            self._progress.error += 1
        return []


def settings_env(settings) -> dict[str, str]:
    """Environment that makes the bin/ programs see this application's database and object store."""
    env = {"OPENASTRO_VAR_DIR": str(Path(settings.var_dir).absolute()),
           "OPENASTRO_DATABASE_URL": settings.resolved_database_url,
           "OPENASTRO_STORAGE_DIR": str(settings.resolved_storage_dir)}
    if settings.storage_url:  # the S3 store; credentials travel in the inherited AWS_* environment, never here
        for name in ("storage_url", "s3_endpoint_url", "s3_region", "s3_multipart_threshold", "s3_part_size",
                     "s3_max_attempts"):
            if settings.values[name] not in ("", None):
                env["OPENASTRO_" + name.upper()] = str(settings.values[name])
        env["OPENASTRO_STORAGE_CACHE_DIR"] = str(settings.resolved_storage_cache_dir)
    return env


class BoincExecutor:
    """Submission to a real BOINC project: the work generator stages inputs and calls create_work."""

    def __init__(self, app, project_dir: str | os.PathLike[str]) -> None:
        from work_generator.boinc_project import BoincProject

        self.app = app
        self.project = BoincProject(project_dir)
        self._names: list[str] = []

    def submit(self, work_units: Sequence[str]) -> None:
        from work_generator.generate import submit_to_boinc

        self._names.extend(work_units)
        with self.app.db.session() as session:
            campaigns = set(session.scalars(select(WorkUnit.campaign_id).where(WorkUnit.name.in_(list(work_units)))))
        for cid in sorted(campaigns):
            submit_to_boinc(self.app, self.project, cid)

    def poll(self) -> Progress:
        with self.app.db.session() as session:
            counts = dict(session.execute(select(WorkUnit.state, func.count()).where(WorkUnit.name.in_(self._names))
                                          .group_by(WorkUnit.state)).all())
        return Progress(total=len(self._names), done=counts.get("done", 0), error=counts.get("error", 0),
                        running=counts.get("sent", 0))

    def collect(self) -> Progress:
        """BOINC's daemons validate and assimilate; this only reports where things stand."""
        return self.poll()


def make_executor(app, name: str, **kwargs) -> Executor:
    if name == "local":
        return LocalExecutor(app, **kwargs)
    if name == "boinc":
        project_dir = kwargs.get("project_dir") or app.settings.boinc_project_dir
        if not project_dir:
            raise ExecutorError("the boinc executor needs a project directory (OPENASTRO_BOINC_PROJECT_DIR)")
        return BoincExecutor(app, project_dir)
    raise ExecutorError(f"unknown executor {name!r}: choose local or boinc")


def shell_quote_command(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)
