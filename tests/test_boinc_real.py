"""Campaigns through a real BOINC server and the Debian client (issue #18; tests/boinc_real.py, docs/deploy.md).

The project is deployed by docs/deploy.md's own steps; the admin commands here run as root (as an admin might),
the daemons as the project user, so these tests also check that the shared object store stays usable for them.
Work is tiny (nlive 30 / 16 walkers x 150 steps, 2 bins, 60x60-pixel tiles) so the module runs in a few minutes
on 2 cores. Truths and tolerances: the validator's own statistical comparison (validator.checks.compare_envelopes)
between the BOINC result and the local executor's result of the same work unit.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from sqlalchemy import select

from server.boinc.campaigns import campaign_status, cancel_campaign, create_campaign, create_stack_campaign
from server.core.boinc_contract import TILE_MAX_NBYTES, TTV_MAX_NBYTES
from server.core.db.models import Result, Stack, WorkUnit

pytestmark = [pytest.mark.boinc_real, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(boinc_server):
    return boinc_server


def _ttv_config(sampler: dict) -> dict:
    from test_local_executor import small_ttv_campaign_config

    config = small_ttv_campaign_config()  # 2 bins, replicas (quorum) 2
    config["sampler"] = sampler
    return config


def _wait_done(server, app, cid, timeout):
    def finished():
        st = campaign_status(app, cid)
        return st if st.status in ("done", "failed", "cancelled") else None
    return server.wait(finished, timeout, f"campaign {cid} to finish")


def _canonical(app, cid) -> dict[int, tuple[str, str]]:
    """bin (or tile label) -> (kind, storage key of the canonical result)."""
    with app.db.session() as s:
        rows = s.execute(select(WorkUnit.bin_index, WorkUnit.kind, Result.storage_key)
                         .join(Result, Result.id == WorkUnit.canonical_result_id)
                         .where(WorkUnit.campaign_id == cid)).all()
    return {r.bin_index: (r.kind, r.storage_key) for r in rows}


def _envelope(app, kind, key):
    from validator.checks import load_checked

    return load_checked(app.store.path(key), TTV_MAX_NBYTES if kind.startswith("ttv") else TILE_MAX_NBYTES, kind)


def _local_run(oa_app, config, seed, kind="ttv", frozen_app=None):
    from server.boinc.campaigns import run_campaign
    from server.boinc.executors import LocalExecutor
    from work_generator.generate import materialise
    from test_local_executor import small_estimate

    cid = create_campaign(oa_app, None, kind, config, seed=seed)
    materialise(oa_app, cid, estimate=small_estimate)
    progress = run_campaign(oa_app, cid, executor=LocalExecutor(oa_app, echo=lambda m: None))
    assert progress.error == 0
    return cid


SAMPLERS = {"dynesty": {"name": "dynesty", "nlive": 30, "sample": "rwalk", "dlogz": 0.5},
            "emcee": {"name": "emcee", "nwalkers": 16, "nsteps": 150}}


def _stack_inputs(app):
    from test_local_executor import _frame, _tan

    rng = np.random.default_rng(5)
    grid_shape = (120, 120)
    grid = _tan((150.0, 2.0), 2.0, 0.0, grid_shape)
    frames, keys = [], []
    for rot, scale in ((8.0, 1.8), (-5.0, 2.3)):
        header = _tan((150.002, 1.999), scale, rot, (130, 130))
        data, blob = _frame(rng, (130, 130), header)
        frames.append((data, header))
        keys.append({"key": app.store.put_bytes(blob).key, "zero_point": 22.0, "exptime_s": 60.0})
    return frames, keys, grid, grid_shape


@pytest.fixture(scope="module")
def launched(server):
    """The TTV campaigns (dynesty, emcee) and the stack, launched together so the client runs them side by side."""
    app = server.app()
    t0 = time.monotonic()
    ids = {name: create_campaign(app, None, "ttv", _ttv_config(sampler), executor="boinc", seed=21)
           for name, sampler in SAMPLERS.items()}
    frames, keys, grid, grid_shape = _stack_inputs(app)
    ids["stack"] = create_stack_campaign(app, keys, grid, grid_shape, tile=60, replicas=1, seed=3, executor="boinc")
    return {"ids": ids, "t0": t0, "stack": (frames, grid, grid_shape)}


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_ttv_campaign_through_boinc_is_assimilated_and_agrees_with_the_local_executor(server, launched, oa_app,
                                                                                      sampler):
    app = server.app()
    cid = launched["ids"][sampler]
    local_cid = _local_run(oa_app, _ttv_config(SAMPLERS[sampler]), seed=21)  # meanwhile, on this machine
    st = _wait_done(server, app, cid, timeout=420)
    assert st.status == "done" and st.counts == {"done": 2}, (st, server.logs())
    print(f"{sampler} campaign through BOINC: done {time.monotonic() - launched['t0']:.0f} s after launch")
    # quorum 2 in BOINC: two valid results per work unit, compared by the validator
    rows = server.boinc_sql("SELECT w.name, COUNT(*) FROM result r JOIN workunit w ON w.id = r.workunitid "
                            "WHERE w.batch = :b AND r.validate_state = 1 GROUP BY w.name", b=cid)
    assert len(rows) == 2 and all(n >= 2 for _, n in rows), rows
    boinc_results, local_results = _canonical(app, cid), _canonical(oa_app, local_cid)
    assert set(boinc_results) == set(local_results) == {0, 1}
    from validator.checks import compare_envelopes

    for b in (0, 1):
        verdict = compare_envelopes(_envelope(app, *boinc_results[b]), _envelope(oa_app, *local_results[b]))
        assert verdict.equivalent, (b, verdict.reason)


def test_reprojection_tile_stack_through_boinc_equals_the_whole_frame_reprojection(server, launched):
    from astropy.io import fits

    from app.reproject_kernel import reproject_array

    app = server.app()
    cid = launched["ids"]["stack"]
    frames, grid, grid_shape = launched["stack"]
    st = _wait_done(server, app, cid, timeout=300)
    assert st.status == "done", (st, server.logs())
    with app.db.session() as s:
        stack = s.query(Stack).filter_by(campaign_id=cid).one()
        assert stack.status == "done" and stack.n_frames == 2
        meta = stack.meta
    for index, (data, header) in enumerate(frames):
        whole = reproject_array(data, np.ones_like(data), header, grid, grid_shape, conserve_flux=True)
        with fits.open(app.store.path(meta["frames"][str(index)]["reprojected_key"])) as hdul:
            np.testing.assert_array_equal(hdul[0].data, whole.data)


def test_a_work_unit_whose_app_exits_nonzero_reaches_the_assimilators_error_path_and_is_recorded(server):
    from work_generator.generate import materialise

    app = server.app()
    config = _ttv_config({"name": "dynesty", "nlive": 30, "sample": "rwalk", "dlogz": 0.5})
    config["bins"] = config["bins"][:1]
    config["replicas"] = 1
    cid = create_campaign(app, None, "ttv", config, executor="local", seed=31)
    materialise(app, cid)
    bad = b'{"format": "openastro.wu", "version": 1, "kind": "ttv-nested"}'  # no seed, no params: app exits 3
    stored = app.store.put_bytes(bad)
    with app.db.session() as s:
        wu = s.scalars(select(WorkUnit).where(WorkUnit.campaign_id == cid)).one()
        files = dict(wu.input_files["files"])
        name = wu.input_files["order"][0]
        files[name] = {**files[name], "key": stored.key, "sha256": stored.sha256, "size": stored.size,
                       "physical": f"oa_bad_spec_{stored.sha256[:16]}.json"}
        wu.input_files = {**wu.input_files, "files": files}
        wu_name = wu.name
    from work_generator.generate import submit_to_boinc

    submit_to_boinc(app, server.project(), cid)  # the daemon only takes campaigns whose executor is boinc

    def recorded():
        with app.db.session() as s:
            w = s.scalars(select(WorkUnit).where(WorkUnit.name == wu_name)).one()
            return (w.state, w.error_mask) if w.state == "error" else None
    state, mask = server.wait(recorded, 300, "the failed work unit to be recorded")
    assert mask & (2 | 8)  # too many errors / too many results: the app exited non-zero on every try
    results = server.boinc_sql("SELECT r.outcome, r.exit_status, r.stderr_out FROM result r JOIN workunit w "
                               "ON w.id = r.workunitid WHERE w.name = :n AND r.server_state = 5", n=wu_name)
    assert results and all(outcome == 3 and status == 195 for outcome, status, _ in results), results
    stderr = results[0][2]
    stderr = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr  # a BLOB column
    assert "exit" in stderr.lower()
    errors = campaign_status(app, cid).errors
    assert any(e["wu"] == wu_name and e["error_mask"] == mask for e in errors)


def test_campaign_cancel_cancels_the_jobs_in_boinc_and_the_cancellation_is_recorded(server):
    from click.testing import CliRunner

    from server.cli import main as cli_main

    app = server.app()
    config = _ttv_config({"name": "dynesty", "nlive": 400, "sample": "rwalk", "dlogz": 0.01})  # minutes of work
    cid = create_campaign(app, None, "ttv", config, executor="boinc", seed=41)
    server.wait(lambda: server.boinc_sql("SELECT COUNT(*) FROM workunit WHERE batch = :b", b=cid)[0][0] == 2,
                120, "the generator daemon to create the jobs")
    result = CliRunner().invoke(cli_main, ["campaign", "cancel", str(cid)], env=server.settings_env())
    assert result.exit_code == 0, result.output
    masks = [m for (m,) in server.boinc_sql("SELECT error_mask FROM workunit WHERE batch = :b", b=cid)]
    assert len(masks) == 2 and all(m & 16 for m in masks)  # cancelled in BOINC, not by hand

    def assimilated():
        with app.db.session() as s:
            rows = s.scalars(select(WorkUnit).where(WorkUnit.campaign_id == cid)).all()
            return all(w.state == "cancelled" and w.error_mask & 16 and w.assimilated_at for w in rows)
    server.wait(assimilated, 180, "BOINC's --error 16 for the cancelled jobs to be recorded")
    # the client stops running its tasks of the cancelled jobs (the scheduler tells it to abort them)
    server.wait(lambda: not [t for t in server.tasks() if t.get("WU name", "").startswith(f"oa_c{cid}_")
                             and t.get("active_task_state") == "EXECUTING"], 180, "the client to drop the tasks")


def test_a_client_stopped_mid_task_resumes_from_its_checkpoint(server):
    app = server.app()
    config = _ttv_config({"name": "dynesty", "nlive": 300, "sample": "rwalk", "dlogz": 0.05})
    config["bins"] = config["bins"][:1]
    config["replicas"] = 1
    cid = create_campaign(app, None, "ttv", config, executor="boinc", seed=51)

    def running_with_progress():
        for t in server.tasks():
            if t.get("WU name", "").startswith(f"oa_c{cid}_") and t.get("active_task_state") == "EXECUTING" and float(t.get("fraction done", 0)) >= 0.15 \
                    and float(t.get("CPU time at last checkpoint", 0)) > 0:
                return t
        return None
    task = server.wait(running_with_progress, 300, "a task with progress and a checkpoint")
    before = float(task["fraction done"])
    server.client_stop()
    server.client_start()

    def resumed():
        for t in server.tasks():
            if t.get("name") == task["name"] and t.get("active_task_state") == "EXECUTING":
                return t
        return None
    server.wait(resumed, 120, "the task to run again after the restart", poke_every=1e9)
    time.sleep(5)
    after = next(t for t in server.tasks() if t.get("name") == task["name"])
    # from its checkpoint: not back to 0 (the wrapper rewrites fraction done right after loading a checkpoint)
    assert float(after["fraction done"]) >= 0.5 * before > 0, (before, after)
    cancel_campaign(app, cid)


def test_a_generator_killed_between_create_work_and_its_commit_recovers_from_boincs_workunit_table(
        server, monkeypatch):
    from work_generator.boinc_project import BoincProject
    from work_generator.generate import generate, materialise

    app = server.app()
    config = _ttv_config({"name": "dynesty", "nlive": 30, "sample": "rwalk", "dlogz": 0.5})
    # executor local: the generator daemon leaves it alone; this test plays the generator itself
    cid = create_campaign(app, None, "ttv", config, executor="local", seed=61)
    materialise(app, cid)
    real_create_work = BoincProject.run_create_work

    def create_work_then_die(self, call):
        real_create_work(self, call)
        raise KeyboardInterrupt("generator killed in the crash window")

    monkeypatch.setattr(BoincProject, "run_create_work", create_work_then_die)
    with pytest.raises(KeyboardInterrupt):
        generate(app, cid, project=server.project())
    monkeypatch.setattr(BoincProject, "run_create_work", real_create_work)
    with app.db.session() as s:
        names = {w.name: w.state for w in s.scalars(select(WorkUnit).where(WorkUnit.campaign_id == cid))}
    assert set(names.values()) == {"created"}
    in_boinc = dict(server.boinc_sql("SELECT name, id FROM workunit WHERE batch = :b", b=cid))
    assert set(in_boinc) == set(names)
    report = generate(app, cid, project=server.project())  # the next pass (a fresh BoincProject, as after a restart)
    assert report.recovered == 2 and report.submitted == 0
    with app.db.session() as s:
        rows = s.scalars(select(WorkUnit).where(WorkUnit.campaign_id == cid)).all()
        assert {w.state for w in rows} == {"sent"} and {w.name: w.boinc_wu_id for w in rows} == in_boinc
    assert server.boinc_sql("SELECT COUNT(*) FROM workunit WHERE batch = :b", b=cid)[0][0] == 2
    server.project().cancel_workunits(list(names))  # free the client


def test_boinc_status_reads_boincs_database(server):
    from click.testing import CliRunner

    from server.cli import main as cli_main

    result = CliRunner().invoke(cli_main, ["boinc", "status"], env=server.settings_env())
    assert result.exit_code == 0, result.output
    assert "in BOINC's database" in result.output and "host 1:" in result.output
    done = [line for line in result.output.splitlines()[1:] if " done " in line]
    assert done  # at least the TTV campaigns above


def test_boinc_hosts_lists_the_attached_debian_client_as_able_to_take_the_linux_version(server):
    from click.testing import CliRunner

    from server.cli import main as cli_main

    result = CliRunner().invoke(cli_main, ["boinc", "hosts"], env=server.settings_env())
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # the app version the fixture packaged, with the glibc floor `boinc package` recorded beside it
    assert "x86_64-pc-linux-gnu glibc >= 2." in lines[0], lines[0]
    host = next(line for line in lines if line.strip().startswith("1 "))
    assert " yes " in host and "x86_64-pc-linux-gnu" in host and "Linux" in host
    assert host.rstrip().endswith("x86_64-pc-linux-gnu") and "none:" not in host
    assert "with no usable app version: 0.0% of active hosts" in result.output
