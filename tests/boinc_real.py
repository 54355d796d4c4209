"""The real BOINC server of the test suite (scripts/boinc-test-server.sh): start/stop and what the tests ask of it.

The server is BOINC built from ../shared/boinc-src, a project deployed by docs/deploy.md's own steps, its own
Apache on 127.0.0.1 and the Debian boinc-client as its own instance attached over loopback. The session fixture
(``boinc_server`` in tests/conftest.py) starts it once and stops what it started, by PID.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "boinc-test-server.sh"
SRC_DIRS = (ROOT.parent / "shared" / "boinc-src", Path("/work/shared/boinc-src"))


def missing_requirements() -> list[str]:
    """What this machine lacks to build and run the real server (empty: it can)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (the script creates the project user and runs programs as it)")
    if not any(list(d.glob("boinc-*.tar.xz")) for d in SRC_DIRS if d.is_dir()):
        missing.append("the BOINC source tarball (../shared/boinc-src/boinc-*.tar.xz)")
    for program in ("apache2", "boinc", "boinccmd", "mariadbd", "setpriv", "autoconf", "make", "g++", "php"):
        if shutil.which(program) is None and not Path("/usr/sbin", program).exists():
            missing.append(program)
    return missing


@dataclass
class BoincServer:
    env: dict[str, str]
    started_here: bool

    @classmethod
    def start(cls, app_bundle: Path) -> "BoincServer":
        environ = dict(os.environ, OPENASTRO_TEST_APP_BUNDLE=str(app_bundle))
        was_running = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True).returncode == 0
        proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, env=environ,
                              timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"scripts/boinc-test-server.sh start failed (exit {proc.returncode}):\n"
                               + "\n".join((proc.stdout + proc.stderr).splitlines()[-40:]))
        env = dict(line.split("=", 1) for line in proc.stdout.splitlines() if re.match(r"^[A-Z_]+=", line))
        return cls(env, started_here=not was_running)

    def stop(self) -> None:
        if self.started_here:
            subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, text=True, timeout=300)

    # --- OpenAstro as the tests use it (as root: the shared object store keeps working for the daemons) -----

    def settings_env(self) -> dict[str, str]:
        return {"OPENASTRO_DATABASE_URL": self.env["OPENASTRO_DATABASE_URL"],
                "OPENASTRO_VAR_DIR": self.env["OPENASTRO_VAR_DIR"], "OPENASTRO_EXECUTOR": "boinc",
                "OPENASTRO_BOINC_PROJECT_DIR": self.env["BOINC_PROJECT_ROOT"], "OPENASTRO_PROGRESS": "false"}

    def app(self):
        from server.core.context import OpenAstro
        from server.core.settings import load_settings

        return OpenAstro(load_settings(env=self.settings_env()))

    @property
    def project_root(self) -> Path:
        return Path(self.env["BOINC_PROJECT_ROOT"])

    def project(self):
        from work_generator.boinc_project import BoincProject

        return BoincProject(self.project_root)

    def boinc_sql(self, query: str, **params) -> list[tuple]:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.env["BOINC_DB_URL"])
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(query), params)]
        finally:
            engine.dispose()

    # --- the client ---------------------------------------------------------------------------------------

    def boinccmd(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(["boinccmd", "--host", self.env["BOINC_CLIENT_RPC"], "--passwd",
                               self.env["BOINC_CLIENT_PASSWD"], *args], capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise RuntimeError(f"boinccmd {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def poke(self) -> None:
        """Ask the client for a scheduler RPC now (report results, fetch work) instead of after its backoff."""
        self.boinccmd("--project", self.env["BOINC_URL"], "update", check=False)

    def tasks(self) -> list[dict[str, str]]:
        """The client's tasks (``boinccmd --get_tasks``), one dict per task with its ``key: value`` lines."""
        tasks: list[dict[str, str]] = []
        for line in self.boinccmd("--get_tasks", check=False).splitlines():
            if re.match(r"^\d+\) -+$", line.strip()):
                tasks.append({})
            elif tasks and ":" in line:
                key, _, value = line.strip().partition(":")
                tasks[-1][key.strip()] = value.strip()
        return tasks

    def client_stop(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "client-stop"], check=True, capture_output=True, timeout=120)

    def client_start(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "client-start"], check=True, capture_output=True, timeout=120)

    def wait(self, predicate, timeout: float, what: str, poke_every: float = 8.0):
        """Poll ``predicate`` (poking the client) until it returns a truthy value; fail with the logs if not."""
        deadline = time.monotonic() + timeout
        next_poke = 0.0
        while True:
            value = predicate()
            if value:
                return value
            now = time.monotonic()
            if now > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n" + self.logs())
            if now >= next_poke:
                self.poke()
                next_poke = now + poke_every
            time.sleep(1.0)

    def logs(self, lines: int = 15) -> str:
        out = []
        for path in sorted(self.project_root.glob("log_*/*.log")) + [Path(self.env["BOINC_CLIENT_DIR"]) /
                                                                     "stdoutdae.txt"]:
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            out.append(f"--- {path}\n" + "\n".join(tail))
        return "\n".join(out)
