"""The reactive pipeline: new data sets the stages going by itself.

An ingested image (a CLI ingest, an upload through the API, an ``ingest`` task) queues ``solve``; a solved frame
queues ``calibrate`` (see ``tasks``). With a broker the ingest returns as soon as the message is queued; embedded, the
chain runs in the ingesting process before it returns. ``reactive = auto`` (the default) attaches the pipeline only
when a broker is set, so an embedded ``openastro pipeline ingest`` stays a quick step and ``pipeline process`` the
explicit one, as in the README's demo.
"""

from __future__ import annotations

from server.core.context import OpenAstro
from server.core.settings import Settings


def reactive_enabled(settings: Settings) -> bool:
    return settings.reactive == "on" or (settings.reactive == "auto" and bool(settings.broker_url))


def on_ingested(result) -> None:
    from server.queue.tasks import send

    if result.kind == "image":
        send("solve", int(result.observation_id))


def attach(app: OpenAstro) -> None:
    """Configure the task queue for ``app`` and subscribe the pipeline to its ingests (once)."""
    from server.queue import tasks  # noqa: F401 - registers the tasks
    from server.queue.celery_app import configure

    configure(app)
    if on_ingested not in app.ingest_listeners:
        app.ingest_listeners.append(on_ingested)
