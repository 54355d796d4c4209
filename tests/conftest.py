"""Shared fixtures. Thread counts are pinned before numpy is imported anywhere (2-core machines)."""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import secrets  # noqa: E402

import pytest  # noqa: E402

from server.core.context import OpenAstro  # noqa: E402
from server.core.db import Database  # noqa: E402
from server.core.settings import load_settings  # noqa: E402
from s3_server import s3_bucket, s3_endpoint, s3_env, s3_store_factory  # noqa: E402,F401  (S3 backend fixtures)

MYSQL_URL_VAR = "OPENASTRO_TEST_MYSQL_URL"


@pytest.fixture(autouse=True)
def _offline_astropy():
    """No test may reach the network through astropy's data/IERS downloads."""
    from astropy.utils import data, iers

    with data.conf.set_temp("allow_internet", False), iers.conf.set_temp("auto_download", False):
        yield


@pytest.fixture
def settings(tmp_path):
    """Embedded-default settings rooted in a temporary directory (no environment leaks in)."""
    return load_settings(env={}, overrides={"var_dir": str(tmp_path / "var"), "progress": False})


@pytest.fixture
def oa_app(settings):
    """An application object on a fresh, migrated SQLite database and object store."""
    app = OpenAstro(settings)
    app.db.upgrade()
    return app


def _mysql_server_url() -> str:
    url = os.environ.get(MYSQL_URL_VAR, "")
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{MYSQL_URL_VAR} is not set in CI: the MariaDB tests must run (see .ci/run)")
        pytest.skip(f"{MYSQL_URL_VAR} not set (scripts/mariadb-test-server.sh prints it)")
    return url


@pytest.fixture
def mariadb_url():
    """A fresh, empty MariaDB database on the test server; dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = make_url(_mysql_server_url())
    name = f"oa_t_{secrets.token_hex(4)}"
    admin = create_engine(server.set(database=None))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def any_db_url(request, tmp_path):
    """The same test on the embedded SQLite default and on a real MariaDB server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("mariadb_url")


@pytest.fixture
def any_db(any_db_url):
    db = Database(any_db_url)
    yield db
    db.engine.dispose()


@pytest.fixture
def redis_server(tmp_path):
    """A private Redis (scripts/redis_test_server.sh: 127.0.0.1, free port, AOF with fsync always), stopped by PID."""
    from queue_helpers import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()
