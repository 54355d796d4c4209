"""Shared fixtures. Thread counts are pinned before numpy is imported anywhere (2-core machines)."""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import secrets  # noqa: E402
from pathlib import Path  # noqa: E402

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


# --- the frozen volunteer app: built once per session, shared by test_app_frozen.py and test_boinc_real.py ----

# A prebuilt bundle instead of a build per session (e.g. the old-glibc release build,
# dist/oldglibc/openastro_app)
FROZEN_APP_VAR = "OPENASTRO_TEST_FROZEN_APP"


def prebuilt_bundle_executable(var: str, value: str) -> Path:
    """The executable of the onedir bundle ``value`` names (the directory or its executable).

    Fails the session with one clear message when the path is not such a bundle.
    """
    path = Path(value).expanduser().absolute()  # absolute: the tests run it from slot dirs
    exe = path if path.is_file() else path / "openastro_app"
    bundle = exe.parent
    if not path.exists():
        problem = "does not exist"
    elif path.is_file() and path.name != "openastro_app":
        problem = "is a file but not the bundle's openastro_app executable"
    elif not exe.is_file():
        problem = "holds no openastro_app executable"
    elif not os.access(exe, os.X_OK):
        problem = f"{exe} is not executable"
    elif not (bundle / "_internal").is_dir():
        problem = f"{bundle} has no _internal/ directory, so it is not a PyInstaller onedir bundle"
    else:
        return exe
    pytest.fail(f"{var}={value}: {problem}; expected an onedir bundle directory named openastro_app "
                f"(e.g. dist/oldglibc/openastro_app) or its openastro_app executable", pytrace=False)


@pytest.fixture(scope="session")
def frozen_app(tmp_path_factory) -> Path:
    """Path of the frozen executable: built once per session unless a bundle is given (above)."""
    given = os.environ.get(FROZEN_APP_VAR)
    if given:
        return prebuilt_bundle_executable(FROZEN_APP_VAR, given)
    from server.boinc.package import build_frozen_app

    bundle = build_frozen_app(tmp_path_factory.mktemp("frozen_build"))
    return bundle / "openastro_app"


# --- the real BOINC server (scripts/boinc-test-server.sh; tests/test_boinc_real.py) -----------------------------

@pytest.fixture(scope="session")
def boinc_server(frozen_app):
    """BOINC built from source, a project deployed by docs/deploy.md, Apache and the Debian client on 127.0.0.1.

    Skipped where the machine cannot build or run it (not root, no apt packages, no source); in CI that fails."""
    from boinc_real import BoincServer, missing_requirements

    missing = missing_requirements()
    if missing:
        message = "the real BOINC server cannot run here: missing " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message + " (scripts/setup.sh installs the packages)")
        pytest.skip(message)
    server = BoincServer.start(frozen_app.parent)
    try:
        yield server
    finally:
        server.stop()
