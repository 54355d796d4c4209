"""Process-level behaviour of the volunteer app: threads, network, signals, progress.

Nothing here imports numpy: :func:`cap_threads` must run before numpy (and with it the two
OpenBLAS copies numpy and scipy ship) is imported, because OpenBLAS reads its thread count once
at load time. ``app.main`` therefore reads ``init_data.xml``, calls :func:`cap_threads`, and only
then imports the task modules.

Exit codes are defined here so that every part of the app (and the docs) uses the same numbers.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

# --- exit codes (documented in docs/volunteer_app.md) -------------------------------------------
EXIT_OK = 0
EXIT_USAGE = 2            # bad command line (argparse's own code)
EXIT_BAD_SPEC = 3         # wu.json missing, not JSON, or not a valid openastro.wu spec
EXIT_BAD_INPUT = 4        # an input file is missing, unreadable or malformed
EXIT_OUTPUT_UNWRITABLE = 5  # the output (or checkpoint) location cannot be written
EXIT_CHECKPOINT_MISMATCH = 6  # a checkpoint from another format/kind/work unit: refused
EXIT_OUT_OF_MEMORY = 7    # MemoryError
EXIT_INTERNAL = 8         # any other unexpected error (a bug): traceback on stderr
EXIT_INTERRUPTED = 143    # SIGTERM/SIGINT: checkpointed (if the kind checkpoints) and stopped

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")

# Seconds between SIGTERM and a forced exit if the task does not stop by itself. BOINC's wrapper
# kills the task 10 s after SIGTERM; a task that has not reached a stop point by then loses only
# the work since its last checkpoint (checkpoints are atomic, so the previous one stays valid).
FORCED_EXIT_AFTER_S = 8.0


def log(message: str) -> None:
    """One line on stderr, prefixed so it stands out in BOINC's stderr_out."""
    stamp = time.strftime("%H:%M:%S", time.gmtime())
    sys.stderr.write(f"[openastro-app {stamp} pid={os.getpid()}] {message}\n")
    sys.stderr.flush()


def cap_threads(ncpus: int, environ: dict[str, str] | None = None) -> None:
    """Set the BLAS/OpenMP thread variables to ``ncpus`` (call before importing numpy)."""
    if isinstance(ncpus, bool) or not isinstance(ncpus, int) or ncpus < 1:
        raise ValueError(f"ncpus must be a positive integer, got {ncpus!r}")
    env = os.environ if environ is None else environ
    for name in THREAD_VARS:
        env[name] = str(ncpus)


def numpy_already_imported() -> bool:
    return "numpy" in sys.modules


def go_offline() -> None:
    """Stop astropy from ever reaching the network (IERS tables, cached data downloads).

    Imports astropy, so call it after :func:`cap_threads`.
    """
    from astropy.utils import data, iers

    iers.conf.auto_download = False
    iers.conf.auto_max_age = None
    data.conf.allow_internet = False


def restore_child_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child program: PyInstaller's LD_LIBRARY_PATH undone.

    The PyInstaller bootloader prepends its own folder to ``LD_LIBRARY_PATH`` and keeps the
    original in ``LD_LIBRARY_PATH_ORIG``; a child program must get the original back.
    """
    env = dict(os.environ if environ is None else environ)
    if "LD_LIBRARY_PATH_ORIG" in env:
        env["LD_LIBRARY_PATH"] = env.pop("LD_LIBRARY_PATH_ORIG")
    elif getattr(sys, "frozen", False):
        env.pop("LD_LIBRARY_PATH", None)
    return env


# PyInstaller onefile extraction dirs are named _MEI + digits/letters (e.g. _MEI00006dcc2oTRT2).
_MEI_RE = re.compile(r"^_MEI[0-9A-Za-z]+$")


def clean_stale_extractions(slot_dir: Path, own_dir: str | None = None) -> list[Path]:
    """Delete ``_MEI*`` extraction dirs left in the slot by a killed onefile run.

    Only directories directly inside ``slot_dir`` whose name matches the PyInstaller pattern are
    removed, never ``own_dir`` (``sys._MEIPASS`` of this process). Returns what was removed.
    """
    own = Path(own_dir).resolve() if own_dir else None
    removed = []
    for entry in sorted(Path(slot_dir).iterdir()):
        if not _MEI_RE.match(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        if own is not None and entry.resolve() == own:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


class StopFlag:
    """Set by SIGTERM/SIGINT; tasks poll :meth:`is_set` between steps and checkpoint on it.

    The first signal sets the flag and arms a timer that forces ``os._exit(EXIT_INTERRUPTED)``
    after :data:`FORCED_EXIT_AFTER_S` in case the task is stuck inside a long C call, so the app
    always exits non-zero within BOINC's 10 s grace period and never exits 0 as if finished.
    """

    def __init__(self, forced_exit_after_s: float = FORCED_EXIT_AFTER_S):
        self._event = threading.Event()
        self._forced_exit_after_s = forced_exit_after_s
        self.signum: int | None = None
        self.received_at: float | None = None

    def is_set(self) -> bool:
        return self._event.is_set()

    __call__ = is_set

    def _handler(self, signum, frame) -> None:
        if self._event.is_set():
            return
        self.signum = signum
        self.received_at = time.monotonic()
        self._event.set()
        timer = threading.Timer(self._forced_exit_after_s, self._force_exit)
        timer.daemon = True
        timer.start()

    def _force_exit(self) -> None:
        log(f"signal {self.signum}: task did not stop within {self._forced_exit_after_s:.0f} s; "
            f"exiting {EXIT_INTERRUPTED} (resumes from the last checkpoint)")
        os._exit(EXIT_INTERRUPTED)

    def install(self) -> "StopFlag":
        self._previous = {signum: signal.signal(signum, self._handler)
                          for signum in (signal.SIGTERM, signal.SIGINT)}
        return self

    def uninstall(self) -> None:
        """Restore the previous handlers (matters when main() runs in-process, e.g. tests)."""
        for signum, handler in getattr(self, "_previous", {}).items():
            signal.signal(signum, handler)
        self._previous = {}


class ProgressFile:
    """Writes the fraction done (a single number in [0, 1]) for BOINC's wrapper.

    The wrapper reads the last number in the file once a second and deletes the file each time it
    starts the task, so the value is rewritten right after a checkpoint is loaded. Writes are
    atomic (temp + rename) so the wrapper never reads a half-written number, and rate-limited.
    """

    def __init__(self, path: Path | None, min_interval_s: float = 1.0):
        self.path = path
        self.min_interval_s = min_interval_s
        self._last_write = -float("inf")
        self._last_value: float | None = None

    def write(self, fraction: float, *, force: bool = False) -> None:
        if self.path is None:
            return
        value = min(1.0, max(0.0, float(fraction)))
        now = time.monotonic()
        if not force and (now - self._last_write < self.min_interval_s or value == self._last_value):
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="ascii") as handle:
            handle.write(f"{value:.6f}\n")
        os.replace(tmp, self.path)
        self._last_write = now
        self._last_value = value


def write_boinc_finish_file(slot_dir: Path, status: int = 0) -> None:
    """Write ``boinc_finish_called`` as a bare BOINC main program must before exiting.

    Only used with ``--boinc-finish-file`` (app shipped as the main program, without the wrapper).
    Under the wrapper (our packaging), the wrapper writes it itself after the app exits.
    """
    path = Path(slot_dir) / "boinc_finish_called"
    tmp = path.with_name(".boinc_finish_called.tmp")
    tmp.write_text(f"{status}\n", encoding="ascii")
    os.replace(tmp, path)
