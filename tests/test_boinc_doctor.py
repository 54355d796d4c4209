"""What a real BOINC server showed (issue #18), checked without one: file modes, launchers the project user can
run, update_versions answered, a shared object store that stays writable, and `openastro boinc doctor`."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from boinc_fakes import make_fake_project
from server.boinc import install as install_mod
from server.boinc.doctor import (Account, Finding, access_problem, check_databases, check_host_and_daemons,
                                 check_launchers, check_readable_by_web, check_writable_tree, may_access,
                                 program_problem, READ, WRITE, EXECUTE)
from server.boinc.executors import settings_env
from server.boinc.install import InstallError, install
from server.cli import main as cli_main
from server.core.storage import LocalObjectStore

STRANGER = Account("stranger", 64999, frozenset({64999}))  # no file here belongs to it or its group


@pytest.fixture
def open_tmp():
    """A temp dir every user can enter (pytest's own is 0700: no other user could reach anything in it)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="oa-doctor-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_may_access_uses_owner_then_group_then_other_bits(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    os.chmod(f, 0o640)
    st = f.stat()
    owner = Account("o", st.st_uid + 1 if st.st_uid == 0 else st.st_uid, frozenset())
    group_member = Account("g", 64998, frozenset({st.st_gid}))
    if owner.uid == st.st_uid:
        assert may_access(st, owner, READ | WRITE) and not may_access(st, owner, EXECUTE)
    assert may_access(st, group_member, READ) and not may_access(st, group_member, WRITE)
    assert not may_access(st, STRANGER, READ)
    os.chmod(f, 0o644)
    assert may_access(f.stat(), STRANGER, READ)


def test_a_private_parent_directory_blocks_another_user(open_tmp):
    private = open_tmp / "private"
    (private / "bin").mkdir(parents=True)
    prog = private / "bin" / "python"
    prog.write_text("#!/bin/sh\n")
    os.chmod(prog, 0o755)
    os.chmod(private, 0o700)
    problem = access_problem(prog, STRANGER, EXECUTE)
    assert problem is not None and f"cannot enter {private}" in problem
    os.chmod(private, 0o711)
    assert program_problem(prog, STRANGER) is None


def test_files_written_atomically_are_readable_by_others_not_0600(tmp_path, monkeypatch):
    from app.atomic import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.txt", b"x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.txt") == 0o644


def test_install_writes_config_templates_and_launchers_readable_by_the_web_server_whatever_the_umask(
        open_tmp, oa_app):
    project = make_fake_project(open_tmp / "project")
    old = os.umask(0o077)
    try:
        install(project, settings_env(oa_app.settings), register=False)
    finally:
        os.umask(old)
    assert _mode(project / "config.xml") == 0o644
    assert _mode(project / "project.xml") == 0o644
    templates = list((project / "templates").glob("*.xml"))
    assert templates and all(_mode(t) == 0o644 for t in templates)
    launchers = [project / "bin" / n for n in ("openastro-assimilate", "openastro-work-generator")]
    assert all(_mode(p) == 0o755 for p in launchers)
    assert check_readable_by_web(project, STRANGER) == []


def test_doctor_reports_a_0600_config_xml_with_the_fix(open_tmp):
    project = make_fake_project(open_tmp / "project")
    os.chmod(project / "config.xml", 0o600)
    findings = check_readable_by_web(project, STRANGER)
    assert len(findings) == 1
    assert "config.xml" in findings[0].problem and "scheduler CGI" in findings[0].problem
    assert findings[0].fix.startswith("chmod a+r")


def test_install_refuses_launchers_the_project_user_cannot_run(open_tmp, oa_app, monkeypatch):
    project = make_fake_project(open_tmp / "project")
    private = open_tmp / "root-only"
    private.mkdir()
    python = private / "python3"
    python.write_text("#!/bin/sh\nexit 0\n")
    os.chmod(python, 0o755)
    os.chmod(private, 0o700)
    monkeypatch.setattr(install_mod, "_program", lambda name: [str(python), "-m", "x"])
    monkeypatch.setattr(install_mod, "_openastro_cli", lambda: [str(python), "-m", "server.cli"])
    monkeypatch.setattr("server.boinc.access.project_owner", lambda p: STRANGER)
    with pytest.raises(InstallError) as err:
        install(project, settings_env(oa_app.settings), register=False)
    assert f"cannot enter {private}" in str(err.value) and "virtual environment" in str(err.value)
    findings = check_launchers(project, STRANGER)
    assert len(findings) == 4  # every launcher named, each with the fix


def test_update_versions_is_run_without_questions(tmp_path, oa_app):
    project = make_fake_project(tmp_path / "project")
    (project / "apps" / "openastro_app" / "1.00" / "x86_64-pc-linux-gnu").mkdir(parents=True)
    (project / "apps" / "openastro_app" / "1.00" / "x86_64-pc-linux-gnu" / "version.xml").write_text("<version/>")
    report = install(project, settings_env(oa_app.settings))
    assert "bin/update_versions --noconfirm" in report.commands_run


def test_the_fake_update_versions_registers_nothing_when_a_question_is_unanswered(tmp_path):
    from boinc_fakes import run_tool

    project = make_fake_project(tmp_path / "project")
    (project / "apps" / "openastro_app" / "1.00" / "x86_64-pc-linux-gnu").mkdir(parents=True)
    (project / "apps" / "openastro_app" / "1.00" / "x86_64-pc-linux-gnu" / "version.xml").write_text("<version/>")
    assert run_tool(project, "xadd").returncode == 0
    proc = run_tool(project, "update_versions", stdin="y\n")  # the old installer answered one question only
    assert proc.returncode != 0 and "not confirmed" in proc.stderr


def test_a_shared_object_store_stays_group_writable_whoever_writes(open_tmp):
    shared = open_tmp / "var"
    shared.mkdir()
    os.chmod(shared, 0o2775)
    old = os.umask(0o022)
    try:
        store = LocalObjectStore(shared / "store")
        stored = store.put_bytes(b"an object written by an admin command")
    finally:
        os.umask(old)
    d = store.path(stored.key).parent
    while d != open_tmp:
        assert _mode(d) == 0o2775, d
        d = d.parent
    group_member = Account("member", 64998, frozenset({shared.stat().st_gid}))
    assert check_writable_tree(shared, group_member, "var dir") == []


def test_doctor_names_directories_the_project_user_cannot_write(open_tmp):
    (open_tmp / "store" / "sha256" / "ab").mkdir(parents=True)
    findings = check_writable_tree(open_tmp / "store", STRANGER, "object store")
    assert len(findings) == 1
    assert "not writable by stranger" in findings[0].problem and "chmod -R g+w" in findings[0].fix


def test_doctor_refuses_openastro_in_boincs_own_database(tmp_path):
    project = make_fake_project(tmp_path / "project")  # config.xml: <db_name>openastro</db_name>
    same = check_databases(project, "mysql+mysqldb://u:p@localhost/openastro")
    assert len(same) == 1 and "BOINC's own" in same[0].problem
    assert check_databases(project, "mysql+mysqldb://u:p@localhost/openastro_app") == []


def test_doctor_reports_a_host_that_is_not_this_machine_and_missing_daemons(tmp_path):
    project = make_fake_project(tmp_path / "project")
    text = (project / "config.xml").read_text()
    import re
    (project / "config.xml").write_text(re.sub(r"<host>.*?</host>", "<host>127.0.0.1</host>", text))
    findings = check_host_and_daemons(project)
    assert any("bin/start starts no daemons" in f.problem for f in findings)
    assert sum("has no daemon" in f.problem for f in findings) == 3


def test_doctor_command_prints_each_problem_and_exits_1(tmp_path, oa_app):
    project = make_fake_project(tmp_path / "project")
    os.chmod(project / "config.xml", 0o600)
    env = dict(settings_env(oa_app.settings), OPENASTRO_PROGRESS="false")
    result = CliRunner().invoke(cli_main, ["boinc", "doctor", "--project-dir", str(project)], env=env)
    assert result.exit_code == 1
    assert "PROBLEM" in result.output and "fix:" in result.output
    assert "has no daemon" in result.output  # nothing installed yet
    assert "cannot read BOINC's database" in result.output or "no app version" in result.output


def test_campaign_launch_on_a_database_without_tables_says_run_db_upgrade(tmp_path):
    times = tmp_path / "t.csv"
    times.write_text("epoch,time,sigma\n" + "".join(f"{i},{2455000.0 + 10.95 * i:.4f},0.001\n" for i in range(8)))
    priors = tmp_path / "p.toml"  # valid inputs: the schema is checked once they have been read
    priors.write_text("stellar_mass = 0.99\nperturber_period = [21.9, 22.4]\nperturber_mass = [1.0, 30.0]\n")
    env = {"OPENASTRO_VAR_DIR": str(tmp_path / "var"), "OPENASTRO_PROGRESS": "false"}
    result = CliRunner().invoke(cli_main, ["campaign", "launch", str(times), "--priors", str(priors), "--no-run"],
                                env=env)
    assert result.exit_code == 1
    assert "openastro db upgrade" in result.output and "Traceback" not in result.output


def test_stack_outputs_of_a_campaign_without_a_stack_is_one_clear_line(oa_app):
    env = dict(settings_env(oa_app.settings), OPENASTRO_PROGRESS="false")
    result = CliRunner().invoke(cli_main, ["pipeline", "stack-outputs", "99"], env=env)
    assert result.exit_code == 1
    assert "campaign 99 has no stack" in result.output


def test_finding_line_has_problem_and_fix():
    assert Finding("p", "f").line() == "PROBLEM p\n    fix: f"


def test_the_deploy_guides_bash_blocks_are_the_script_the_test_server_runs():
    import subprocess

    root = Path(__file__).resolve().parent.parent
    script = subprocess.run(["bash", str(root / "scripts" / "boinc-test-server.sh"), "deploy-script"],
                            capture_output=True, text=True, check=True).stdout
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    for step in ("make_project", "openastro db upgrade", "boinc package", "openastro boinc install",
                 "openastro boinc doctor", "bin/start", "-m venv"):
        assert step in script, step
    guide = (root / "docs" / "deploy.md").read_text()
    assert all(line in guide for line in script.splitlines())  # every line run is a line of the guide
