"""A private Redis and real Celery worker processes for the queue tests (each stopped by PID, pipes closed)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "redis_test_server.sh"


class RedisServer:
    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.port: int | None = None
        self.pid: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [str(SCRIPT), str(self.data_dir)] + ([str(self.port)] if self.port else [])
        out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=30).stdout.split()
        self.port, self.pid = int(out[0]), int(out[1])

    def stop(self) -> None:
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            self.pid = None
            return
        for _ in range(200):
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None

    def restart(self, hard: bool = False) -> None:
        """Stop Redis (SIGKILL when ``hard``: no shutdown save, only what the AOF already holds) and start it again
        on the same port and data directory."""
        if hard and self.pid is not None:
            os.kill(self.pid, signal.SIGKILL)
            wait_for(lambda: not _alive(self.pid), 10, "redis to die")
            self.pid = None
        self.stop()
        self.start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def worker_env(settings_values: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENASTRO_")}
    env.update({"OPENASTRO_" + k.upper(): str(v) for k, v in settings_values.items()})
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


class Worker:
    """``openastro worker --queues QUEUE`` in its own session (so it and its pool children die together)."""

    def __init__(self, queue: str, env: dict, log: Path, concurrency: int = 1):
        self.log_path = log
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "worker", "--queues", queue, "--concurrency", str(concurrency),
             "--loglevel", "INFO"],
            env=env, cwd=str(ROOT), stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b" ready." in self.log_path.read_bytes():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"worker not ready: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes (a machine dying mid-task)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


@contextmanager
def workers(*specs):
    started = []
    try:
        for spec in specs:
            started.append(Worker(**spec))
        for w in started:
            w.wait_ready()
        yield started
    finally:
        for w in started:
            w.stop()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
