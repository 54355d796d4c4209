"""Fixtures for the S3 backend: a real S3-compatible server (moto_server) started on 127.0.0.1 by
scripts/s3-test-server.sh, one per test session, stopped by PID; each test gets its own fresh bucket."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "s3-test-server.sh"
# The test server accepts any credentials; these are test-only values, never real ones.
TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "openastro-test", "AWS_SECRET_ACCESS_KEY": "openastro-test-secret",
                    "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_s3_server(log_path: Path, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start scripts/s3-test-server.sh on a free port; (process, endpoint URL) once it answers."""
    port = free_port()
    env = {**os.environ, **(extra_env or {})}
    log = open(log_path, "wb")
    proc = subprocess.Popen(["bash", str(SCRIPT), str(port)], stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=ROOT)
    log.close()
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the S3 test server exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
            return proc, endpoint
        except OSError:
            if time.monotonic() > deadline:
                stop_s3_server(proc)
                raise RuntimeError(f"the S3 test server did not answer on {endpoint}") from None
            time.sleep(0.1)


def stop_s3_server(proc: subprocess.Popen) -> None:
    """Stop the server we started, by its PID (the script execs the server, so the PID is the server's)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """Endpoint URL of the session's S3-compatible server (credentials: TEST_CREDENTIALS)."""
    proc, endpoint = start_s3_server(tmp_path_factory.mktemp("s3server") / "server.log")
    try:
        yield endpoint
    finally:
        stop_s3_server(proc)


@pytest.fixture
def s3_env(monkeypatch):
    for name, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return TEST_CREDENTIALS


@pytest.fixture
def s3_bucket(s3_endpoint, s3_env):
    """A new, empty bucket on the test server; its name."""
    from server.core.storage_s3 import make_client

    name = f"oa-test-{secrets.token_hex(6)}"
    make_client(s3_endpoint, "us-east-1", 3).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_store_factory(s3_endpoint, s3_bucket, tmp_path):
    """make(prefix="objects", **options) -> an S3ObjectStore on this test's bucket (cache under tmp_path)."""
    from server.core.storage_s3 import S3ObjectStore

    def make(prefix: str = "objects", cache: str = "s3-cache", **options):
        return S3ObjectStore(f"s3://{s3_bucket}/{prefix}", cache_dir=tmp_path / cache, endpoint_url=s3_endpoint,
                             max_attempts=3, **options)

    return make
