"""`openastro serve` in a subprocess, as an operator runs it: started on a free port, waited for through
/api/v1/health, stopped (SIGINT, else SIGKILL) and every pipe closed. Output goes to a log file, not a pipe, so a
chatty server can never block and nothing is left unclosed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx

CLI = [sys.executable, "-c", "from server.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(var_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENASTRO_") or k.startswith("OPENASTRO_TEST_")}
    env.update(OPENASTRO_VAR_DIR=str(var_dir), OPENASTRO_PROGRESS="false", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=os.getcwd(), **extra)
    return env


class Server:
    def __init__(self, proc: subprocess.Popen, base: str, log: Path, verify) -> None:
        self.proc, self.base, self.log, self.verify = proc, base, log, verify

    def client(self, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=timeout, verify=self.verify)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def peak_rss_mb(self) -> float:
        """The server process's peak resident memory so far (VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc status")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)


@contextlib.contextmanager
def serving(var_dir: Path, log: Path, *args: str, env: dict[str, str] | None = None, scheme: str = "http",
            verify=True, timeout_s: float = 60) -> Iterator[Server]:
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([*CLI, "serve", "--port", str(port), *args], env=env or cli_env(var_dir),
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Server(proc, f"{scheme}://127.0.0.1:{port}", log, verify)
    try:
        deadline = time.monotonic() + timeout_s
        with server.client(timeout=2) as probe:
            while True:
                try:
                    if probe.get("/api/v1/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"openastro serve did not come up:\n{server.output()}")
                time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
