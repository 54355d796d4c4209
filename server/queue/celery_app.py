"""One Celery application, configured from the settings registry at start-up (never at import time).

Without ``broker_url`` the application runs in *embedded* mode: Celery's eager mode runs every task in the calling
process through the same task functions, retries and idempotency checks as a worker would (the README's demo needs
no broker). With ``OPENASTRO_BROKER_URL=redis://...`` the same calls put messages on Redis lists, one per queue.

Messages are JSON only (ids, keys, paths), never pickles. Tasks acknowledge late (after they finish), so a worker
that dies mid-task leaves its message to be delivered again after ``queue_visibility_timeout_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery

from server.core.context import OpenAstro
from server.core.settings import Settings


@dataclass(frozen=True)
class QueueSpec:
    name: str
    concurrency: int      # worker processes on a machine with enough cores (the seed's table)
    soft_time_limit_s: int
    time_limit_s: int
    what: str


QUEUES: dict[str, QueueSpec] = {q.name: q for q in (
    QueueSpec("pipeline_fast", 4, 300, 360, "ingest, plate solve, calibration"),
    QueueSpec("pipeline_slow", 2, 3600, 3900, "reprojection, co-addition"),
    QueueSpec("science_inference", 2, 1800, 2100, "light curves, Lomb-Scargle, transit timing"),
    QueueSpec("mcmc", 1, 86400 - 600, 86400, "TTV inference, campaign replicas, BOINC submit/collect"),
)}

celery = Celery("openastro", set_as_current=False)

_state: dict[str, OpenAstro] = {}


def scaled_concurrency(queue: str, ncores: int) -> int:
    """The seed's per-queue concurrency, never more processes than the machine's cores."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; queues are {', '.join(QUEUES)}")
    return max(1, min(QUEUES[queue].concurrency, ncores))


def longest_time_limit_s() -> int:
    return max(q.time_limit_s for q in QUEUES.values())


def embedded(settings: Settings) -> bool:
    return not settings.broker_url


def configure(app: OpenAstro) -> Celery:
    """Point the Celery application at ``app``'s settings; tasks use ``app`` for the database and the store."""
    settings = app.settings
    broker = settings.broker_url or "memory://"
    if broker and not broker.startswith(("redis://", "rediss://", "memory://")):
        raise ValueError(f"broker_url {broker!r} is not a redis:// URL")
    celery.close()  # drop pooled connections to a previously configured broker (and the producer pool on them)
    if "amqp" in celery.__dict__:
        celery.amqp._producer_pool = None
    celery.conf.update(
        broker_url=broker,
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_always_eager=embedded(settings),
        task_eager_propagates=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.queue_visibility_timeout_s,
            # sweep for messages of dead workers often enough to honour a short visibility timeout
            "unacked_restore_interval": max(1.0, min(10.0, settings.queue_visibility_timeout_s / 2)),
            "unacked_restore_throttle": 1,
        },
        task_default_queue="pipeline_fast",
        task_queues=None,
        task_create_missing_queues=True,
        enable_utc=True,
    )
    _state["app"] = app
    return celery


def current_app() -> OpenAstro:
    """The OpenAstro object tasks work on (set by :func:`configure` in the process running them)."""
    try:
        return _state["app"]
    except KeyError:
        raise RuntimeError("the task queue is not configured: call server.queue.celery_app.configure(app)") from None
