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


@pytest.fixture
def broker_app(tmp_path, redis_server):
    values = {"var_dir": str(tmp_path / "var"), "broker_url": redis_server.url, "queue_visibility_timeout_s": 2,
              "progress": False}
    app = OpenAstro(load_settings(env={}, overrides=values))
    app.db.upgrade()
    attach(app)
    app.worker_env = worker_env(values)
    return app


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


def test_worker_killed_mid_solve_is_redelivered_and_the_rows_exist_once(broker_app, tmp_path):
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
