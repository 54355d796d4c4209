"""The pipeline stages as Celery tasks, one queue each (see ``celery_app.QUEUES``).

Every task takes plain JSON arguments (ids, paths) and works through the stage runner, whose ``stage_runs`` records
decide idempotency: a task delivered again after its stage finished changes nothing and only passes the chain on.
Transient errors (database unreachable, connection or storage I/O trouble) are retried with exponential backoff, at
most ``MAX_RETRIES`` times; any other error is permanent: the task is marked failed with its error (``openastro queue
status``/``retry``) and never re-run by itself. A message delivered more than ``queue_max_deliveries`` times (its
worker died each time) is marked failed too, so a poison task cannot loop.
"""

from __future__ import annotations

import json
import os
import time

from celery import Task
from celery.signals import before_task_publish, task_postrun
from sqlalchemy.exc import InterfaceError, OperationalError

from server.core.db import DatabaseError
from server.core.storage import StorageError
from server.queue import ops
from server.queue.celery_app import QUEUES, celery, current_app

TRANSIENT_ERRORS = (OperationalError, InterfaceError, DatabaseError, StorageError, ConnectionError, TimeoutError)
MAX_RETRIES = 3
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 120.0


def backoff_s(retries: int) -> float:
    """Seconds before retry number ``retries + 1``: 2, 4, 8, ... capped at BACKOFF_MAX_S."""
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** retries)


class StageTask(Task):
    """Base of every pipeline task: per-queue time limits, bounded retries, failed state, delivery count."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    queue_name = "pipeline_fast"
    typing = True

    def __call__(self, *args, **kwargs):
        request = self.request
        if not request.is_eager and request.id:
            app = current_app()
            n = ops.begin(app.settings, request.id, request.retries or 0, self.name, self.queue_name)
            if n > app.settings.queue_max_deliveries:
                ops.record_failure(app.settings, request.id, self.name, list(args), dict(kwargs), self.queue_name,
                                   f"delivered {n} times without finishing (its worker died each time)")
                return None
        if request.is_eager:  # in-process: the same bounded retries, waiting out the backoff here
            for attempt in range(MAX_RETRIES + 1):
                try:
                    return self.run(*args, **kwargs)
                except TRANSIENT_ERRORS:
                    if attempt == MAX_RETRIES:
                        raise
                    time.sleep(backoff_s(attempt))
        try:
            return self.run(*args, **kwargs)
        except TRANSIENT_ERRORS as exc:
            if (request.retries or 0) >= MAX_RETRIES:
                raise
            raise self.retry(exc=exc, countdown=backoff_s(request.retries or 0), max_retries=MAX_RETRIES)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        if not self.request.is_eager:
            ops.record_failure(current_app().settings, task_id, self.name, list(args), dict(kwargs or {}),
                               self.queue_name, f"{type(exc).__name__}: {exc}")


def _task(name: str, queue: str):
    spec = QUEUES[queue]
    return celery.task(name=f"openastro.{name}", base=StageTask, bind=False, queue=queue, queue_name=queue,
                       soft_time_limit=spec.soft_time_limit_s, time_limit=spec.time_limit_s)


def send(task_name: str, *args, **kwargs):
    """Queue ``openastro.<task_name>`` on its queue (or run it now in embedded mode); JSON arguments only."""
    task = celery.tasks[f"openastro.{task_name}"]
    json.dumps([args, kwargs])  # TypeError here, at the caller, for anything that is not plain data
    return task.apply_async(args=args, kwargs=kwargs, queue=task.queue_name)


def send_coalesced(task_name: str, key: str, *args):
    """Queue ``openastro.<task_name>(key, *args)`` unless a message for the same task and key is already waiting
    (with a broker; embedded, it runs now). The task calls :func:`started_coalesced` before it reads its data, so
    data arriving after that queues a new message: nothing is missed, and N triggers while one message waits cost one
    run. Returns the AsyncResult, or None when coalesced into the waiting message."""
    task = celery.tasks[f"openastro.{task_name}"]
    settings = current_app().settings
    if not settings.broker_url:
        return send(task_name, key, *args)
    if not ops.claim_pending(settings, task.queue_name, task_name, str(key)):
        return None
    try:
        return send(task_name, key, *args)
    except BaseException:  # nothing was queued: the mark must not hold back the next trigger
        ops.release_pending(settings, task.queue_name, task_name, str(key))
        raise


def started_coalesced(task_name: str, key: str) -> None:
    """First call of a coalesced task: clear its pending mark before it reads any data."""
    task = celery.tasks[f"openastro.{task_name}"]
    settings = current_app().settings
    if settings.broker_url and not task.request.is_eager:
        ops.release_pending(settings, task.queue_name, task_name, str(key))


# --- pipeline_fast ---------------------------------------------------------------------------------------------


@_task("noop", "pipeline_fast")
def noop() -> str:
    """Does nothing: measures the queue's own overhead (benchmarks/bench_queue.py) and checks a worker answers."""
    return "ok"


@_task("ingest", "pipeline_fast")
def ingest(path: str, site_id: int | None = None, target: str | None = None, original_name: str | None = None) -> dict:
    """Ingest one file visible to the worker (idempotent: the same content gives the first record back). With the
    reactive pipeline attached, a new image goes on to solve through the ingest listener."""
    from server.ingest.service import IngestOptions, ingest_path, result_json

    result = ingest_path(current_app(), path,
                         IngestOptions(site_id=site_id, target=target, original_name=original_name))
    return result_json(result)


def _stage(stage: str, observation_id: int, follow: bool, then: str | None) -> dict:
    from server.pipeline.runner import run_pipeline

    (outcome,) = run_pipeline(current_app(), [int(observation_id)], [stage])
    if follow and then is not None and outcome.status in ("ok", "skipped"):
        send(then, int(observation_id))
    if follow and stage == "calibrate" and outcome.status in ("ok", "skipped"):
        from server.pipeline.science import targets_of_photometry

        for name in targets_of_photometry(current_app(), int(observation_id)):
            send_coalesced("lightcurve_update", name)  # server/queue/science.py
        from server.pipeline.runner import has_reference

        if outcome.status == "ok" and has_reference(current_app(), int(observation_id)):
            send("find_transients", int(observation_id))  # server/queue/transients.py (pipeline_slow)
    return {"observation_id": outcome.observation_id, "stage": stage, "status": outcome.status,
            "message": outcome.message}


@_task("solve", "pipeline_fast")
def solve(observation_id: int, follow: bool = True) -> dict:
    """Plate-solve one observation (skipped when already solved), then queue its calibration."""
    return _stage("solve", observation_id, follow, "calibrate")


@_task("calibrate", "pipeline_fast")
def calibrate(observation_id: int, follow: bool = True) -> dict:
    """Calibrate one observation (skipped when already calibrated), then queue the science chain of the target
    whose photometry it stored (``lightcurve_update``, coalesced per target)."""
    return _stage("calibrate", observation_id, follow, None)


# --- mcmc ------------------------------------------------------------------------------------------------------


@_task("run_campaign", "mcmc")
def run_campaign(campaign_id: int) -> dict:
    """Run a campaign's work units through its executor (local replicas, or BOINC submission and collection), on
    the mcmc queue so that a campaign never holds a fast-pipeline worker. Finished work units are not re-run."""
    from server.boinc.campaigns import run_campaign as run

    progress = run(current_app(), int(campaign_id))
    return {"campaign_id": int(campaign_id), "total": progress.total, "finished": progress.finished,
            "error": progress.error}


@_task("ttv_reinfer", "mcmc")
def ttv_reinfer(target_name: str) -> dict | None:
    """Re-run a target's TTV inference on its current transit times, warm-started from its newest posterior
    (nothing when that posterior already used these data, so re-delivery and duplicate triggers are free)."""
    from server.ttv.reinfer import reinfer

    started_coalesced("ttv_reinfer", target_name)
    out = reinfer(current_app(), str(target_name))
    if out is None:
        return None
    return {k: out[k] for k in ("campaign_id", "data_sha256", "n_transits", "warm_started_from", "likelihood_calls")}


@_task("hold", "mcmc")
def hold(seconds: float, marker: str | None = None) -> float:
    """Occupies a worker for ``seconds`` (at most one hour): the operator's check that a long job on one queue leaves
    the others flowing. ``marker``: a file written when it finishes (how the queue tests see it ran to the end)."""
    seconds = float(seconds)
    if not 0 <= seconds <= 3600:
        raise ValueError(f"hold seconds must be within 0-3600, got {seconds}")
    time.sleep(seconds)
    if marker:
        with open(marker, "a") as fh:
            fh.write(f"{os.getpid()}\n")
    return seconds


def retry_failed(settings, task_id: str) -> str:
    """Send a failed task again (a new message with a new id); returns the new id."""
    record = ops.take_failed(settings, task_id)
    result = celery.send_task(record["name"], args=record["args"], kwargs=record["kwargs"], queue=record["queue"])
    return result.id


@before_task_publish.connect
def _stamp_enqueued(headers=None, **_):
    if headers is not None:
        headers.setdefault("enqueued_at", time.time())


@task_postrun.connect
def _mark_done(task_id=None, task=None, **_):
    if isinstance(task, StageTask) and not task.request.is_eager:
        ops.mark_done(current_app().settings, task_id)
