"""The `openastro` command line: role groups, config, db, and one clear line per bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from server.cli import main
from server.core.db import Database


def run(args, env=None, tmp_path=None):
    base = {"OPENASTRO_VAR_DIR": str(tmp_path / "var")} if tmp_path else {}
    return CliRunner().invoke(main, args, env={**base, **(env or {})}, catch_exceptions=False)


def test_help_lists_the_role_groups():
    result = run(["--help"])
    assert result.exit_code == 0
    for group in ("config", "db", "demo"):
        assert f"  {group}" in result.output


def test_config_show_reports_value_and_source(tmp_path):
    result = run(["config", "show"], env={"OPENASTRO_NCORES": "2"}, tmp_path=tmp_path)
    assert result.exit_code == 0
    line = next(l for l in result.output.splitlines() if l.startswith("ncores"))
    assert "2" in line and "env OPENASTRO_NCORES" in line


def test_invalid_setting_is_one_line_and_nonzero(tmp_path):
    result = run(["config", "show"], env={"OPENASTRO_EXECUTOR": "cloud"}, tmp_path=tmp_path)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: invalid value 'cloud' for setting executor (from OPENASTRO_EXECUTOR): must be one of local, boinc"
    ]


def test_db_upgrade_then_status_on_sqlite(tmp_path):
    result = run(["db", "upgrade"], tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "var" / "openastro.db").is_file()
    status = run(["db", "status"], tmp_path=tmp_path)
    head = Database(f"sqlite:///{tmp_path / 'var' / 'openastro.db'}").head_revision()  # the newest migration
    assert status.exit_code == 0 and f"revision: {head}; code needs: {head}" in status.output


def test_db_status_on_empty_database_says_what_to_do(tmp_path):
    result = run(["db", "status"], tmp_path=tmp_path)
    assert result.exit_code == 1
    assert "run `openastro db upgrade`" in result.output


def test_unreachable_database_is_one_clear_line(tmp_path):
    result = run(["db", "upgrade"], env={"OPENASTRO_DATABASE_URL": "mysql+mysqldb://u:p@127.0.0.1:1/x"},
                 tmp_path=tmp_path)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot reach the database at")


@pytest.mark.mariadb
def test_db_upgrade_on_mariadb(tmp_path, mariadb_url):
    result = run(["db", "upgrade"], env={"OPENASTRO_DATABASE_URL": mariadb_url}, tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    head = Database(mariadb_url).head_revision()  # the newest migration
    assert f"database at revision {head}" in result.output


def test_read_only_storage_is_one_clear_line(tmp_path):
    store = tmp_path / "file-not-dir"
    store.write_text("not a directory")
    result = run(["demo", "--quick"], env={"OPENASTRO_STORAGE_DIR": str(store / "store")}, tmp_path=tmp_path)
    assert result.exit_code == 1
    assert "cannot create the object store" in result.output


def test_console_script_entry_point_runs():
    exe = os.path.join(os.path.dirname(sys.executable), "openastro")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Usage: openastro" in out.stdout
