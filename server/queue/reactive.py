"""The reactive pipeline: new data sets the stages going by itself.

An ingested image (a CLI ingest, an upload through the API, an ``ingest`` task) queues ``solve``; a solved frame
queues ``calibrate`` (see ``tasks``); a calibrated frame that stored a target's photometry queues the science chain
(``science``: light curves, period search, transit timing; coalesced per target). An ingested transit-time table
(ETD) queues ``ttv_reinfer`` on the mcmc queue for each target it added times to that has a stored posterior, by
the ``ttv_reinference`` policy (``server/ttv/reinfer.py``). With a broker the ingest returns as soon as the message
is queued; embedded, the chain runs in the ingesting process before it returns. ``reactive = auto`` (the default)
attaches the pipeline only when a broker is set, so an embedded ``openastro pipeline ingest`` stays a quick step
and ``pipeline process`` the explicit one, as in the README's demo.
"""

from __future__ import annotations

from server.core.context import OpenAstro
from server.core.settings import Settings


def reactive_enabled(settings: Settings) -> bool:
    return settings.reactive == "on" or (settings.reactive == "auto" and bool(settings.broker_url))


def on_ingested(result) -> None:
    from server.queue.celery_app import current_app
    from server.queue.tasks import send, send_coalesced

    if result.kind == "image":
        send("solve", int(result.observation_id))
    elif result.kind == "transit_times" and current_app().settings.ttv_reinference == "on_new_transit":
        from server.ttv.reinfer import latest_posterior, targets_of_observation

        app = current_app()
        for name in targets_of_observation(app, int(result.observation_id)):
            if latest_posterior(app, name) is not None:
                send_coalesced("ttv_reinfer", name)


def register_tasks() -> None:
    """Import every task module, so that this process (a worker, or the embedded caller) knows every task."""
    from server.queue import science, slow, tasks, transients  # noqa: F401


def attach(app: OpenAstro) -> None:
    """Configure the task queue for ``app`` and subscribe the pipeline to its ingests (once)."""
    register_tasks()
    from server.queue.celery_app import configure

    configure(app)
    if on_ingested not in app.ingest_listeners:
        app.ingest_listeners.append(on_ingested)
