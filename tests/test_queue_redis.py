"""The pipeline queues on a real Redis with real worker processes (scripts/redis_test_server.sh, openastro worker)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import func, select

from queue_helpers import wait_for, worker_env, workers
from server.core.context import OpenAstro
from server.core.db.models import Calibration, Observation, StageRun
from server.core.settings import load_settings
from server.ingest.service import IngestOptions, ingest_path
from server.queue import ops
from server.queue.reactive import attach

pytestmark = pytest.mark.solver


def _broker_app(tmp_path, redis_server, visibility_timeout_s):
    values = {"var_dir": str(tmp_path / "var"), "broker_url": redis_server.url,
              "queue_visibility_timeout_s": visibility_timeout_s, "progress": False}
    app = OpenAstro(load_settings(env={}, overrides=values))
    app.db.upgrade()
    attach(app)
    app.worker_env = worker_env(values)
    return app


@pytest.fixture
def broker_app(tmp_path, redis_server):
    """Redis-backed app (default visibility timeout: a running task is never delivered twice)."""
    return _broker_app(tmp_path, redis_server, 90000)


@pytest.fixture
def short_visibility_app(tmp_path, redis_server):
    """Visibility timeout 2 s: a task of a killed worker comes back within seconds."""
    return _broker_app(tmp_path, redis_server, 2)


def _frames(tmp_path, n, seed0=0):
    from server.synth import FrameSpec, render_frame, write_frame
    from imgfront_helpers import offline_catalog

    spec = FrameSpec(83.8, -5.4, (768, 768), 7.0, rotation_deg=30, zero_point=18.5, color_term=0.10, exptime_s=2.0,
                     fill_from_mag=None, mag_limit=11.0, instrument="DemoCam")
    paths = []
    for k in range(n):
        frame = render_frame(spec, np.random.default_rng(seed0 + k), offline_catalog())
        path = tmp_path / f"frame_{seed0 + k}.fits"
        write_frame(frame, path, strip_wcs=True)
        paths.append(path)
    return paths


def _stage_rows(app, oid):
    with app.db.session() as s:
        return {r.stage: (r.status, r.attempts) for r in s.scalars(select(StageRun).where(StageRun.observation_id == oid))}


def test_worker_killed_mid_solve_is_redelivered_and_the_rows_exist_once(short_visibility_app, tmp_path):
    broker_app = short_visibility_app
    (path,) = _frames(tmp_path, 1)
    result = ingest_path(broker_app, path, IngestOptions(target="Orion field"))  # queues solve on Redis
    oid = result.observation_id
    r = ops.redis_client(broker_app.settings)
    fast = {"queue": "pipeline_fast", "env": broker_app.worker_env, "log": tmp_path / "w1.log"}
    with workers(fast) as (w,):
        wait_for(lambda: any(json.loads(v)["name"] == "openastro.solve" for v in r.hvals("openastro:running")),
                 60, "the solve task to start")
        w.kill()
    assert _stage_rows(broker_app, oid).get("solve") is None  # killed before the stage finished
    with workers({**fast, "log": tmp_path / "w2.log"}):
        wait_for(lambda: _stage_rows(broker_app, oid).get("calibrate"), 90, "the re-delivered chain to finish")
    rows = _stage_rows(broker_app, oid)
    assert rows == {"solve": ("ok", 1), "calibrate": ("ok", 1)}, rows
    with broker_app.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Calibration).where(Calibration.observation_id == oid)) == 1
        assert s.get(Observation, oid).status == "calibrated"
    assert not r.hvals("openastro:failed")


N_UPLOADS = 50


def _upload_variants(tmp_path, n, seed=100):
    """``n`` distinct uploads of one rendered 384x384 frame (14"/px, WCS stripped): each with its own noise and a
    DATE-OBS two minutes after the previous one (rendering is the slow part; solve-field runs on every upload).
    Returns the paths and an isolated, unsaturated V~9 star with a catalog colour (the target)."""
    import datetime as dt

    from astropy.io import fits

    from imgfront_helpers import offline_catalog
    from server.synth import FrameSpec, render_frame

    spec = FrameSpec(83.8, -5.4, (384, 384), 14.0, rotation_deg=30, zero_point=18.5, color_term=0.10, exptime_s=2.0,
                     fill_from_mag=None, mag_limit=11.0, instrument="DemoCam")
    rng = np.random.default_rng(seed)
    frame = render_frame(spec, rng, offline_catalog())
    t = frame.truth
    inside = (t["x"] > 40) & (t["x"] < 344) & (t["y"] > 40) & (t["y"] < 344) & ~t["saturated"] \
        & ~t["color_synthetic"]
    star = None
    for i in np.argsort(np.abs(t["mag"].to_numpy() - 9.0)):
        if not inside.iloc[i]:
            continue
        d = np.hypot(t["x"] - t["x"].iloc[i], t["y"] - t["y"].iloc[i])
        if not np.any((d > 0) & (d < 12) & (t["mag"] < t["mag"].iloc[i] + 4)):
            star = t.iloc[i]
            break
    assert star is not None
    start = dt.datetime(2025, 3, 15, 3, 0, 0)
    paths = []
    for k in range(n):
        header = frame.header_nowcs.copy()
        header["DATE-OBS"] = (start + dt.timedelta(minutes=2 * k)).isoformat()
        data = (frame.data + rng.normal(0.0, 2.0, frame.data.shape)).astype(np.float32)
        path = tmp_path / f"upload_{k:02d}.fits"
        fits.writeto(path, data, header)
        paths.append(path)
    return paths, star


@pytest.mark.slow  # 50 real solve-field runs (~2.7 s each here): 153 s on the shared 2-core machine at load ~7
def test_50_uploads_are_calibrated_while_mcmc_is_held_and_their_science_triggers_coalesce(broker_app, tmp_path):
    from server.core.db.models import LightCurve, Periodogram, Target
    from server.queue.tasks import send

    marker = tmp_path / "hold-finished"
    paths, star = _upload_variants(tmp_path, N_UPLOADS)
    with broker_app.db.session() as s:
        s.add(Target(name="Field star", ra_deg=float(star["ra"]), dec_deg=float(star["dec"]), kind="variable"))
    mcmc = {"queue": "mcmc", "env": broker_app.worker_env, "log": tmp_path / "mcmc.log"}
    fast = {"queue": "pipeline_fast", "env": broker_app.worker_env, "log": tmp_path / "fast.log", "concurrency": 2}
    science = {"queue": "science_inference", "env": broker_app.worker_env, "log": tmp_path / "science.log"}
    r = ops.redis_client(broker_app.settings)
    with workers(mcmc, fast) as (mcmc_worker, _):
        send("hold", 600, str(marker))
        wait_for(lambda: any(json.loads(v)["queue"] == "mcmc" for v in r.hvals("openastro:running")), 30,
                 "the long task to start")
        # what the upload API does per file: ingest_path, whose listener queues solve
        ids = [ingest_path(broker_app, p, IngestOptions(target="Field star")).observation_id for p in paths]
        assert len(set(ids)) == N_UPLOADS

        def calibrated():
            with broker_app.db.session() as s:
                return s.scalar(select(func.count()).select_from(Observation).where(
                    Observation.id.in_(ids), Observation.status == "calibrated")) == len(ids)

        wait_for(calibrated, 600, f"{len(ids)} uploads to be solved and calibrated")
        # the long task is still running on its own worker, untouched
        assert not marker.exists()
        wait_for(lambda: [json.loads(v)["name"] for v in r.hvals("openastro:running")] == ["openastro.hold"], 30,
                 "the last calibrate task to be marked done")
        # each calibrate stored the star's photometry and triggered its light-curve update; with no science worker
        # yet, the 50 triggers coalesced into one waiting message
        (sci,) = ops.queue_status(broker_app.settings, ["science_inference"])
        assert sci.pending == 1, sci
        with workers(science):
            def science_done():
                with broker_app.db.session() as s:
                    lcs = s.scalars(select(LightCurve)).all()
                    return len(lcs) == 1 and lcs[0].meta["n_input"] == N_UPLOADS \
                        and s.scalar(select(func.count()).select_from(Periodogram)) == 1
            wait_for(science_done, 120, "one light curve of all uploads and its periodogram")
            wait_for(lambda: not r.hvals("openastro:running") or [json.loads(v)["name"] for v in
                     r.hvals("openastro:running")] == ["openastro.hold"], 30, "the science tasks to be marked done")
        mcmc_worker.kill()
    for oid in ids:
        assert _stage_rows(broker_app, oid) == {"solve": ("ok", 1), "calibrate": ("ok", 1)}
    log = (tmp_path / "science.log").read_text()
    assert sum("openastro.lightcurve_update[" in line and "received" in line for line in log.splitlines()) == 1
    assert sum("openastro.period_search[" in line and "received" in line for line in log.splitlines()) == 1
    assert not r.hvals("openastro:failed")


def test_queued_tasks_survive_a_redis_kill_and_all_run(short_visibility_app, tmp_path, redis_server):
    # short visibility: the task that was running when Redis died lost its acknowledgement and comes back in seconds
    broker_app = short_visibility_app
    from server.queue.tasks import send

    done = tmp_path / "done"
    done.mkdir()
    n = 20
    for i in range(n):
        send("hold", 0.1, str(done / f"{i}"))
    r = ops.redis_client(broker_app.settings)
    (status,) = ops.queue_status(broker_app.settings, ["mcmc"])
    assert status.pending == n and status.oldest_waiting_s is not None
    redis_server.restart(hard=True)  # SIGKILL: only the append-only file keeps the queue
    r.connection_pool.disconnect()
    assert ops.queue_status(broker_app.settings, ["mcmc"])[0].pending == n
    mcmc = {"queue": "mcmc", "env": broker_app.worker_env, "log": tmp_path / "mcmc.log"}
    with workers(mcmc):
        wait_for(lambda: len(list(done.iterdir())) >= 5, 60, "the first tasks to run")
        redis_server.restart(hard=True)  # again, mid-run: the worker reconnects and carries on
        wait_for(lambda: len(list(done.iterdir())) == n, 90, "every queued task to run")
    assert sorted(int(p.name) for p in done.iterdir()) == list(range(n))


def test_a_permanent_error_is_marked_failed_not_retried_and_queue_retry_sends_it_again(broker_app, tmp_path):
    from click.testing import CliRunner

    from server.cli import main
    from server.queue.tasks import send

    bad = send("hold", -5)  # ValueError inside the task: permanent
    env = {k: v for k, v in broker_app.worker_env.items() if k.startswith("OPENASTRO_")}
    mcmc = {"queue": "mcmc", "env": broker_app.worker_env, "log": tmp_path / "mcmc.log"}
    with workers(mcmc):
        wait_for(lambda: ops.failed_tasks(broker_app.settings), 30, "the task to be marked failed")
        out = CliRunner().invoke(main, ["queue", "status", "--failed"], env=env)
        assert out.exit_code == 0, out.output
        line = next(l for l in out.output.splitlines() if l.startswith("mcmc"))
        assert line.split()[1:4] == ["0", "0", "1"], out.output
        assert f"FAILED {bad.id} openastro.hold(-5,)" in out.output and "must be within 0-3600" in out.output
        log = (tmp_path / "mcmc.log").read_text()
        assert log.count("openastro.hold[" + bad.id + "] received") == 1  # never re-run by itself
        out = CliRunner().invoke(main, ["queue", "retry", bad.id], env=env)
        assert out.exit_code == 0 and "queued again as" in out.output, out.output
        wait_for(lambda: len(ops.failed_tasks(broker_app.settings)) == 1
                 and ops.failed_tasks(broker_app.settings)[0]["id"] != bad.id, 30, "the retried task to fail again")
        out = CliRunner().invoke(main, ["queue", "retry", "no-such-id"], env=env)
        assert out.exit_code == 1 and "no failed task with id 'no-such-id'" in out.output


def test_a_message_delivered_too_often_is_marked_failed_instead_of_run(broker_app, tmp_path):
    from server.queue.tasks import send

    marker = tmp_path / "ran"
    result = send("hold", 0, str(marker))
    r = ops.redis_client(broker_app.settings)
    # as if its worker had died on each of the allowed deliveries
    r.set(f"openastro:deliveries:{result.id}:0", broker_app.settings.queue_max_deliveries)
    with workers({"queue": "mcmc", "env": broker_app.worker_env, "log": tmp_path / "mcmc.log"}):
        (failed,) = wait_for(lambda: ops.failed_tasks(broker_app.settings), 30, "the poison task to be failed")
    assert failed["id"] == result.id and "delivered 4 times" in failed["error"]
    assert not marker.exists()
