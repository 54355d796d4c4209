"""`openastro boinc install` into a project laid out like a real one; the admin CLI around campaigns."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
from click.testing import CliRunner

from boinc_fakes import fake_db, make_fake_project, run_as_boinc
from server.core.boinc_contract import APP_NAME, ASSIMILATE_SCRIPT, VALIDATE_COMPARE_SCRIPT, VALIDATE_INIT_SCRIPT
from server.boinc.install import daemon_entries, install
from server.cli import main as cli_main
from server.boinc.executors import settings_env
from work_generator.templates import rendered_templates


def _cli_env(app) -> dict:
    return dict(settings_env(app.settings), OPENASTRO_PROGRESS="false")


def test_install_lays_out_launchers_templates_daemons_and_registers_the_app(tmp_path, oa_app):
    project = make_fake_project(tmp_path / "project")
    apps = tmp_path / "apps" / APP_NAME / "1.00" / "x86_64-pc-linux-gnu"
    apps.mkdir(parents=True)
    (apps / "wrapper_26016_x86_64-pc-linux-gnu").write_bytes(b"\x7fELF wrapper")
    (apps / "openastro_app_1.00_x86_64-pc-linux-gnu.zip").write_bytes(b"PK zip")
    (apps / "openastro_app_job_1.00_x86_64-pc-linux-gnu.xml").write_text("<job_desc/>")
    (apps / "version.xml").write_text(
        "<version><file><physical_name>wrapper_26016_x86_64-pc-linux-gnu</physical_name><main_program/></file>"
        "<file><physical_name>openastro_app_1.00_x86_64-pc-linux-gnu.zip</physical_name>"
        "<logical_name>openastro_app.zip</logical_name></file>"
        "<file><physical_name>openastro_app_job_1.00_x86_64-pc-linux-gnu.xml</physical_name>"
        "<logical_name>job.xml</logical_name></file><is_wrapper/></version>")
    report = install(project, settings_env(oa_app.settings), apps_dir=tmp_path / "apps")
    for name in (VALIDATE_INIT_SCRIPT, VALIDATE_COMPARE_SCRIPT, ASSIMILATE_SCRIPT, "openastro-work-generator"):
        assert os.access(project / "bin" / name, os.X_OK)
    for name, text in rendered_templates().items():
        assert (project / "templates" / name).read_text() == text
    daemons = ET.parse(project / "config.xml").getroot().findall("daemons/daemon")
    cmds = [d.findtext("cmd") for d in daemons]
    for entry in daemon_entries():
        assert cmds.count(entry.cmd) == 1
    ours = [d for d in daemons if "openastro" in d.findtext("cmd")]
    outputs = [d.findtext("output") for d in ours]
    pids = [d.findtext("pid_file") for d in ours]
    assert len(set(outputs)) == len(set(pids)) == len(ours) == 3
    validator_cmd = next(c for c in cmds if c.startswith("script_validator"))
    # bare script names (argument tokens are broken in server 1.6.2) and runtime-based credit
    assert f"--init_script {VALIDATE_INIT_SCRIPT} --compare_script {VALIDATE_COMPARE_SCRIPT}" in validator_cmd
    assert "--credit_from_runtime" in validator_cmd
    assert any(c == f"script_assimilator -d 3 --app {APP_NAME} --script {ASSIMILATE_SCRIPT}" for c in cmds)
    assert "<!-- written by make_project -->" in (project / "config.xml").read_text()  # comments kept
    assert APP_NAME in fake_db(project, "apps")["apps"]
    assert {"app": APP_NAME, "version": "1.00", "platform": "x86_64-pc-linux-gnu"} in fake_db(project, "versions")
    assert report.commands_run == ["bin/xadd", "bin/update_versions --noconfirm"]
    # the launchers reach this installation's programs and database, run as BOINC runs them
    proc = run_as_boinc(project, ASSIMILATE_SCRIPT, "--error", 2, "oa_nobody", 1, 1)
    assert proc.returncode == 0 and "not in the OpenAstro database" in proc.stderr


def test_install_twice_changes_nothing(tmp_path, oa_app):
    project = make_fake_project(tmp_path / "project")
    install(project, settings_env(oa_app.settings))
    before = (project / "config.xml").read_text(), (project / "project.xml").read_text()
    again = install(project, settings_env(oa_app.settings))
    assert not again.launchers and not again.templates and not again.daemons and not again.project_xml
    assert ((project / "config.xml").read_text(), (project / "project.xml").read_text()) == before


def test_install_refuses_a_directory_that_is_not_a_project(tmp_path, oa_app):
    result = CliRunner().invoke(cli_main, ["boinc", "install", "--project-dir", str(tmp_path)], env=_cli_env(oa_app))
    assert result.exit_code == 1 and "not a BOINC project directory" in result.output


def test_campaign_cli_launch_generate_status_cancel(tmp_path, oa_app):
    from app.ttv.synthetic import kepler88_like

    system = kepler88_like(np.random.default_rng(3), n_transits=40)
    times = tmp_path / "times.csv"
    pd.DataFrame({"epoch": system.epochs, "time": system.times, "sigma": system.sigma}).to_csv(times, index=False)
    priors = tmp_path / "priors.json"
    priors.write_text(json.dumps({"stellar_mass": 0.99, "perturber_period": [18.0, 30.0],
                                  "perturber_mass": [10.0, 1000.0], "nlive": 50}))
    env = _cli_env(oa_app)
    runner = CliRunner()
    result = runner.invoke(cli_main, ["campaign", "launch", str(times), "--priors", str(priors), "--executor", "boinc",
                                      "--no-run", "--name", "k88", "--seed", "1"], env=env)
    assert result.exit_code == 0, result.output
    n_bins = int(result.output.split(":")[1].split()[0])
    assert n_bins > 3  # automatic resonance bins over 18-30 d
    project = make_fake_project(tmp_path / "project")
    install(project, settings_env(oa_app.settings))
    result = runner.invoke(cli_main, ["boinc", "generate", "--campaign", "1", "--project-dir", str(project),
                                      "--dry_run"], env=env)
    assert result.exit_code == 0, result.output
    assert f"{n_bins} work units planned" in result.output and "bin/create_work" in result.output
    result = runner.invoke(cli_main, ["boinc", "generate", "--project-dir", str(project), "--one_pass"], env=env)
    assert result.exit_code == 0, result.output
    assert len(fake_db(project, "workunits")) == n_bins
    result = runner.invoke(cli_main, ["boinc", "status"], env=env)
    assert result.exit_code == 0 and "k88" in result.output
    result = runner.invoke(cli_main, ["campaign", "status", "1"], env=env)
    assert result.exit_code == 0 and "running" in result.output
    result = runner.invoke(cli_main, ["campaign", "cancel", "1"], env=env)
    assert result.exit_code == 1 and "OPENASTRO_BOINC_PROJECT_DIR" in result.output  # BOINC's jobs must go too
    result = runner.invoke(cli_main, ["campaign", "cancel", "1"], env=dict(env, OPENASTRO_BOINC_PROJECT_DIR=str(project)))
    assert result.exit_code == 0 and f"{n_bins} unfinished" in result.output
    assert all(job["error_mask"] & 16 for job in fake_db(project, "workunits"))  # cancelled in BOINC too
    result = runner.invoke(cli_main, ["results", "posterior", "1"], env=env)
    assert result.exit_code == 1 and "no combined posterior yet" in result.output
