"""What ``openastro queue`` reads and changes in Redis: pending, running and failed tasks per queue.

Key layout (all under ``openastro:``): ``running`` and ``failed`` are hashes task id -> JSON record,
``deliveries:<id>:<retry>`` counts how often one message was started. Pending tasks are the broker's own lists
(kombu's Redis transport keeps one list per queue; priority variants carry a suffix). In embedded mode there is no
queue: every task has finished before the call that queued it returns.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from server.core.settings import Settings

PREFIX = "openastro:"
DELIVERY_TTL_S = 7 * 86400
_clients: dict[str, object] = {}


class QueueError(ValueError):
    """A queue operation cannot be done (embedded mode, unknown task id or queue)."""


def redis_client(settings: Settings):
    if not settings.broker_url:
        raise QueueError("no broker: broker_url is empty, tasks run in-process (set OPENASTRO_BROKER_URL=redis://...)")
    client = _clients.get(settings.broker_url)
    if client is None:
        import redis

        client = _clients[settings.broker_url] = redis.Redis.from_url(settings.broker_url, socket_timeout=10)
    return client


def begin(settings: Settings, task_id: str, retry: int, name: str, queue: str) -> int:
    """Count this start of the message and mark the task running (one round trip); returns the start count."""
    import os
    import socket

    key = f"{PREFIX}deliveries:{task_id}:{retry}"
    record = {"id": task_id, "name": name, "queue": queue, "started_at": time.time(),
              "host": socket.gethostname(), "pid": os.getpid()}
    pipe = redis_client(settings).pipeline(transaction=False)
    pipe.incr(key).expire(key, DELIVERY_TTL_S).hset(f"{PREFIX}running", task_id, json.dumps(record))
    return int(pipe.execute()[0])


def record_failure(settings: Settings, task_id: str, name: str, args: list, kwargs: dict, queue: str,
                   error: str) -> None:
    record = {"id": task_id, "name": name, "args": args, "kwargs": kwargs, "queue": queue, "error": error[:4000],
              "failed_at": time.time()}
    r = redis_client(settings)
    r.hset(f"{PREFIX}failed", task_id, json.dumps(record, default=str))
    r.hdel(f"{PREFIX}running", task_id)


def mark_done(settings: Settings, task_id: str) -> None:
    redis_client(settings).hdel(f"{PREFIX}running", task_id)


def _queue_keys(r, queue: str) -> list[bytes]:
    # kombu's Redis transport: the queue's list, plus "<queue>\x06\x16<priority>" lists when priorities are used
    return [queue.encode()] + sorted(k for k in r.scan_iter(match=f"{queue}\x06\x16*".encode()))


@dataclass(frozen=True)
class QueueStatus:
    queue: str
    pending: int
    running: int
    failed: int
    oldest_waiting_s: float | None  # age of the oldest pending message, seconds


def _enqueued_at(raw: bytes) -> float | None:
    try:
        return float(json.loads(raw)["headers"]["enqueued_at"])
    except (ValueError, KeyError, TypeError):
        return None


def queue_status(settings: Settings, queues) -> list[QueueStatus]:
    r = redis_client(settings)
    running = [json.loads(v) for v in r.hvals(f"{PREFIX}running")]
    failed = [json.loads(v) for v in r.hvals(f"{PREFIX}failed")]
    now = time.time()
    out = []
    for queue in queues:
        pending, oldest = 0, None
        for key in _queue_keys(r, queue):
            pending += int(r.llen(key))
            tail = r.lindex(key, -1)  # kombu pushes on the left and pops on the right: the oldest is last
            t = _enqueued_at(tail) if tail is not None else None
            if t is not None:
                oldest = t if oldest is None else min(oldest, t)
        out.append(QueueStatus(queue, pending, sum(1 for x in running if x["queue"] == queue),
                               sum(1 for x in failed if x["queue"] == queue),
                               None if oldest is None else max(0.0, now - oldest)))
    return out


def failed_tasks(settings: Settings) -> list[dict]:
    r = redis_client(settings)
    return sorted((json.loads(v) for v in r.hvals(f"{PREFIX}failed")), key=lambda x: x["failed_at"])


def take_failed(settings: Settings, task_id: str) -> dict:
    """Remove a failed task's record and return it (the caller sends it again)."""
    r = redis_client(settings)
    raw = r.hget(f"{PREFIX}failed", task_id)
    if raw is None:
        raise QueueError(f"no failed task with id {task_id!r} (see `openastro queue status --failed`)")
    r.hdel(f"{PREFIX}failed", task_id)
    return json.loads(raw)


def purge(settings: Settings, queue: str) -> int:
    """Drop every pending message of ``queue`` (and its coalescing marks); returns how many were dropped."""
    r = redis_client(settings)
    n = 0
    for key in _queue_keys(r, queue):
        n += int(r.llen(key))
        r.delete(key)
    for key in list(r.scan_iter(match=f"{PREFIX}pending:{queue}:*")):
        r.delete(key)
    return n


# --- coalescing: at most one pending message per (task, key) ------------------------------------------------------

PENDING_TTL_S = 6 * 3600  # a bound only: a mark older than this lets a second message through (which then skips)


def _pending_key(queue: str, name: str, key: str) -> str:
    return f"{PREFIX}pending:{queue}:{name}:{key}"


def claim_pending(settings: Settings, queue: str, name: str, key: str) -> bool:
    """Mark ``name(key)`` pending; False when a message for it is already waiting (the caller sends nothing)."""
    return bool(redis_client(settings).set(_pending_key(queue, name, key), time.time(), nx=True, ex=PENDING_TTL_S))


def release_pending(settings: Settings, queue: str, name: str, key: str) -> None:
    """Called when the task starts, before it reads its data: a later trigger queues a new message."""
    redis_client(settings).delete(_pending_key(queue, name, key))
