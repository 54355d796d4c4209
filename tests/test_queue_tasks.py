"""The pipeline tasks without a broker (embedded mode) and the queue's policies: retries, limits, JSON only."""
from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from server.core.context import OpenAstro
from server.core.db.models import StageRun
from server.core.settings import load_settings
from server.queue import tasks
from server.queue.celery_app import QUEUES, celery, configure, scaled_concurrency
from server.queue.reactive import attach, reactive_enabled, register_tasks


def _settings(tmp_path, **values):
    return load_settings(env={}, overrides={"var_dir": str(tmp_path / "var"), "progress": False, **values})


def test_queues_have_the_seed_concurrency_scaled_to_the_machine():
    assert {q: QUEUES[q].concurrency for q in QUEUES} == {"pipeline_fast": 4, "pipeline_slow": 2,
                                                          "science_inference": 2, "mcmc": 1}
    assert scaled_concurrency("pipeline_fast", 2) == 2 and scaled_concurrency("pipeline_fast", 16) == 4
    assert scaled_concurrency("mcmc", 16) == 1
    with pytest.raises(ValueError, match="unknown queue 'gpu'"):
        scaled_concurrency("gpu", 4)


def test_every_task_is_on_its_queue_with_late_acks_and_the_queue_time_limits():
    expected = {"openastro.noop": "pipeline_fast", "openastro.ingest": "pipeline_fast",
                "openastro.solve": "pipeline_fast", "openastro.calibrate": "pipeline_fast",
                "openastro.run_campaign": "mcmc", "openastro.hold": "mcmc", "openastro.ttv_reinfer": "mcmc",
                "openastro.lightcurve_update": "science_inference", "openastro.period_search": "science_inference",
                "openastro.transit_timing": "science_inference", "openastro.stack": "pipeline_slow",
                "openastro.stack_run": "pipeline_slow", "openastro.find_transients": "pipeline_slow"}
    register_tasks()
    for name, queue in expected.items():
        task = celery.tasks[name]
        assert task.queue_name == queue and task.acks_late and task.reject_on_worker_lost
        assert task.time_limit == QUEUES[queue].time_limit_s > task.soft_time_limit


def test_reactive_auto_is_on_exactly_when_a_broker_is_set(tmp_path):
    assert not reactive_enabled(_settings(tmp_path))
    assert reactive_enabled(_settings(tmp_path, broker_url="redis://127.0.0.1:6379/0"))
    assert reactive_enabled(_settings(tmp_path, reactive="on"))
    assert not reactive_enabled(_settings(tmp_path, reactive="off", broker_url="redis://127.0.0.1:6379/0"))


def test_a_broker_that_is_not_redis_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'amqp://x' is not a redis:// URL"):
        configure(OpenAstro(_settings(tmp_path, broker_url="amqp://x")))


def test_task_arguments_must_be_plain_json(tmp_path):
    configure(OpenAstro(_settings(tmp_path)))
    with pytest.raises(TypeError):
        tasks.send("solve", np.arange(3))  # an array, not JSON: refused before anything is queued
    assert tasks.send("noop").get() == "ok"  # embedded: ran in this process


def test_backoff_doubles_and_is_capped():
    assert [tasks.backoff_s(n) for n in range(3)] == [2.0, 4.0, 8.0]
    assert tasks.backoff_s(20) == tasks.BACKOFF_MAX_S


@celery.task(name="openastro.test_flaky", base=tasks.StageTask, queue_name="pipeline_fast")
def _flaky(counter_path: str, transient_failures: int, permanent: bool = False) -> int:
    with open(counter_path, "a+") as fh:
        fh.write("x")
        fh.seek(0)
        calls = len(fh.read())
    if permanent:
        raise ValueError("bad input: not retried")
    if calls <= transient_failures:
        raise OperationalError("SELECT 1", {}, Exception("database is locked"))
    return calls


def test_transient_errors_are_retried_with_backoff_then_given_up(tmp_path, monkeypatch):
    configure(OpenAstro(_settings(tmp_path)))
    monkeypatch.setattr(tasks, "BACKOFF_BASE_S", 0.01)
    assert tasks.send("test_flaky", str(tmp_path / "a"), 2).get() == 3  # two transient failures, then success
    with pytest.raises(OperationalError):
        tasks.send("test_flaky", str(tmp_path / "b"), 99)
    assert len((tmp_path / "b").read_text()) == tasks.MAX_RETRIES + 1  # bounded: first try + MAX_RETRIES
    with pytest.raises(ValueError, match="not retried"):
        tasks.send("test_flaky", str(tmp_path / "c"), 0, True)
    assert len((tmp_path / "c").read_text()) == 1


@pytest.mark.solver
def _frame_file(tmp_path):
    """A 384x384 synthetic frame of the Orion field without WCS (solve-field finds it from the offline index)."""
    from imgfront_helpers import offline_catalog
    from server.synth import FrameSpec, render_frame, write_frame

    spec = FrameSpec(83.8, -5.4, (384, 384), 14.0, rotation_deg=30, zero_point=18.5, color_term=0.10,
                     exptime_s=2.0, fill_from_mag=None, mag_limit=11.0, instrument="DemoCam")
    path = tmp_path / "frame.fits"
    write_frame(render_frame(spec, np.random.default_rng(5), offline_catalog()), path, strip_wcs=True)
    return path


def test_embedded_ingest_of_an_image_solves_and_calibrates_it_before_returning(tmp_path):
    from server.ingest.service import IngestOptions, ingest_path

    app = OpenAstro(_settings(tmp_path, reactive="on"))
    app.db.upgrade()
    attach(app)
    path = _frame_file(tmp_path)
    result = ingest_path(app, path, IngestOptions(target="Orion field"))
    with app.db.session() as s:
        rows = {r.stage: r.status for r in s.scalars(select(StageRun).where(StageRun.observation_id == result.observation_id))}
    assert rows == {"solve": "ok", "calibrate": "ok"}
    # the same file again is a duplicate: nothing is queued or re-run
    again = ingest_path(app, path, IngestOptions(target="Orion field"))
    assert not again.created
    with app.db.session() as s:
        assert [r.attempts for r in s.scalars(select(StageRun))] == [1, 1]


def test_a_calibrated_frame_of_a_field_with_a_reference_goes_on_to_the_transient_stage(tmp_path, monkeypatch):
    from server.ingest.service import IngestOptions, ingest_path
    from server.pipeline import runner

    app = OpenAstro(_settings(tmp_path, reactive="on"))
    app.db.upgrade()
    attach(app)
    asked = []
    # the reference check decides; the stage itself then finds no reference image and records "skipped"
    monkeypatch.setattr(runner, "has_reference", lambda a, oid: asked.append(oid) or True)
    path = _frame_file(tmp_path)
    result = ingest_path(app, path, IngestOptions(target="Orion field"))
    with app.db.session() as s:
        rows = {r.stage: r.status for r in s.scalars(select(StageRun).where(StageRun.observation_id == result.observation_id))}
    assert asked == [result.observation_id]
    assert rows == {"solve": "ok", "calibrate": "ok", "transients": "skipped"}
