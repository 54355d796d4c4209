"""The assimilator program, called exactly as script_assimilator calls it (cwd tmp_HOST, bare name)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from boinc_fakes import make_fake_project, run_as_boinc, small_ttv_params, small_ttv_result_bytes, spec_for
from server.boinc.install import write_launchers
from server.boinc.campaigns import campaign_status, create_campaign
from server.cli import main as cli_main
from server.core.db.models import Campaign, Posterior, Result, WorkUnit
from server.boinc.executors import settings_env
from test_validator import SEED_A, SEED_B, upload


def validated_upload(project, data: bytes, replica: int, wu_name: str):
    """An upload the validator's init script has accepted (and recorded valid), as BOINC does before assimilating."""
    path = upload(project, data, replica, wu_name)
    proc = run_as_boinc(project, "openastro-validate-init", path)
    assert proc.returncode == 0, proc.stderr
    return path


@pytest.fixture
def world(tmp_path, oa_app):
    project = make_fake_project(tmp_path / "project")
    write_launchers(project / "bin", settings_env(oa_app.settings))
    params = small_ttv_params()
    config = {"kind": "ttv", "likelihood": params["likelihood"], "perturber": "c", "sampler": params["sampler"],
              "replicas": 2, "bins": [{"index": 0, "period_min": 22.2, "period_max": 22.3, "prior_mass": 0.5},
                                      {"index": 1, "period_min": 22.3, "period_max": 22.4, "prior_mass": 0.5}]}
    cid = create_campaign(oa_app, "assim", "ttv", config, seed=7)
    ids = {}
    with oa_app.db.session() as session:
        for name, b, r, seed in (("oa_as_b00_r00", 0, 0, SEED_A), ("oa_as_b01_r00", 1, 0, SEED_B),
                                 ("oa_as_b01_r01", 1, 1, SEED_A)):
            wu = WorkUnit(campaign_id=cid, name=name, kind="ttv-nested", bin_index=b, run_index=r,
                          spec=spec_for(params, seed), input_files={"quorum": 2}, state="sent")
            session.add(wu)
            session.flush()
            ids[name] = wu.id
        session.get(Campaign, cid).status = "running"
    return oa_app, project, cid, ids


def test_success_stores_a_copy_and_builds_bin_and_campaign_posteriors(world):
    app, project, cid, ids = world
    path = validated_upload(project, small_ttv_result_bytes(SEED_A), 0, "oa_as_b00_r00")
    proc = run_as_boinc(project, "openastro-assimilate", 1001, path)
    assert proc.returncode == 0, proc.stderr
    assert path.is_file()  # copied from upload/, never moved
    with app.db.session() as session:
        wu = session.get(WorkUnit, ids["oa_as_b00_r00"])
        assert wu.state == "done" and wu.boinc_wu_id == 1001 and wu.assimilated_at is not None
        result = session.get(Result, wu.canonical_result_id)
        assert app.store.exists(result.storage_key) and result.name == "oa_as_b00_r00_0"
        posts = {p.bin_index: p for p in session.query(Posterior).filter_by(campaign_id=cid)}
        assert set(posts) == {0, None} and posts[0].n_runs == 1
        assert posts[None].summary["bins"][0]["probability"] == pytest.approx(1.0)
        assert session.get(Campaign, cid).summary["bins_missing"] == [1]


def test_the_same_work_unit_handed_over_twice_changes_nothing(world):
    app, project, cid, ids = world
    path = validated_upload(project, small_ttv_result_bytes(SEED_A), 0, "oa_as_b00_r00")
    assert run_as_boinc(project, "openastro-assimilate", 1001, path).returncode == 0
    with app.db.session() as session:
        before = [(p.bin_index, p.storage_key, p.log_evidence) for p in session.query(Posterior).order_by(Posterior.id)]
    proc = run_as_boinc(project, "openastro-assimilate", 1001, path)
    assert proc.returncode == 0 and "already assimilated" in proc.stderr
    with app.db.session() as session:
        after = [(p.bin_index, p.storage_key, p.log_evidence) for p in session.query(Posterior).order_by(Posterior.id)]
        assert after == before and session.query(Result).count() == 1


def test_error_path_records_the_failure_and_the_campaign_shows_it(world):
    app, project, cid, ids = world
    proc = run_as_boinc(project, "openastro-assimilate", "--error", 2, "oa_as_b01_r01", 1003, cid)
    assert proc.returncode == 0, proc.stderr
    with app.db.session() as session:
        wu = session.get(WorkUnit, ids["oa_as_b01_r01"])
        assert wu.state == "error" and wu.error_mask == 2
    status = campaign_status(app, cid)
    assert status.errors[0]["wu"] == "oa_as_b01_r01" and "too many errors" in status.errors[0]["reason"]
    out = CliRunner().invoke(cli_main, ["campaign", "status", str(cid)], obj=None,
                             env={"OPENASTRO_" + k.split("OPENASTRO_")[1]: v
                                  for k, v in settings_env(app.settings).items()})
    assert out.exit_code == 0, out.output
    assert "FAILED work unit oa_as_b01_r01: too many errors" in out.output
    # the rest of the campaign still completes: the posterior uses the runs that arrived
    for name, seed, wu_id in (("oa_as_b00_r00", SEED_A, 1001), ("oa_as_b01_r00", SEED_B, 1002)):
        path = validated_upload(project, small_ttv_result_bytes(seed), 0, name)
        assert run_as_boinc(project, "openastro-assimilate", wu_id, path).returncode == 0
    with app.db.session() as session:
        campaign = session.get(Campaign, cid)
        assert campaign.status == "done" and campaign.summary["bins_missing"] == []
        combined = session.query(Posterior).filter_by(campaign_id=cid, bin_index=None).one()
        assert combined.n_runs == 2
        probs = [b["probability"] for b in combined.summary["bins"]]
        assert sum(probs) == pytest.approx(1.0)


def test_unexpected_calls_are_recorded_or_ignored_with_exit_zero(world):
    app, project, cid, ids = world
    unknown = upload(project, small_ttv_result_bytes(SEED_A), 0, "oa_not_ours")
    for args in ((5, unknown), ("--error", 2, "oa_not_ours", 5, 0), ("--error", "x"), ("notanid", unknown), ()):
        proc = run_as_boinc(project, "openastro-assimilate", *args)
        assert proc.returncode == 0, (args, proc.stderr)
    bad = upload(project, b"not an npz", 0, "oa_as_b00_r00")
    assert run_as_boinc(project, "openastro-assimilate", 1001, bad).returncode == 0
    with app.db.session() as session:
        assert session.get(WorkUnit, ids["oa_as_b00_r00"]).state == "error"


def test_database_down_spools_the_call_and_the_next_call_replays_it(world):
    app, project, cid, ids = world
    good_env = settings_env(app.settings)
    write_launchers(project / "bin", good_env | {"OPENASTRO_DATABASE_URL": "mysql+mysqldb://u:p@127.0.0.1:9/x"})
    proc = run_as_boinc(project, "openastro-assimilate", "--error", 8, "oa_as_b01_r01", 1003, cid)
    assert proc.returncode == 0 and "spooled" in proc.stderr
    write_launchers(project / "bin", good_env)
    proc = run_as_boinc(project, "openastro-assimilate", "--error", 2, "oa_nobody", 9, cid)
    assert proc.returncode == 0 and "replaying" in proc.stderr
    with app.db.session() as session:
        assert session.get(WorkUnit, ids["oa_as_b01_r01"]).error_mask == 8


def test_a_cancelled_work_unit_is_recorded_as_cancelled_not_failed(world):
    app, project, cid, ids = world
    proc = run_as_boinc(project, "openastro-assimilate", "--error", 16, "oa_as_b01_r01", 1003, cid)
    assert proc.returncode == 0 and "cancelled" in proc.stderr
    with app.db.session() as session:
        wu = session.get(WorkUnit, ids["oa_as_b01_r01"])
        assert wu.state == "cancelled" and wu.error_mask == 16
