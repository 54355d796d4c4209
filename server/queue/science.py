"""The science chain on ``science_inference``: calibrate (new photometry) -> ``lightcurve_update`` -> ``period_search``
and ``transit_timing`` -> (new transit times) -> ``ttv_reinfer`` on ``mcmc`` by the ``ttv_reinference`` policy.

Each task takes a target name and is queued with ``send_coalesced``: while one message per (task, target) waits,
further triggers add nothing (50 frames of one target calibrated in a burst queue one light-curve update, or a few,
not 50). Each task clears its mark when it starts, before it reads the photometry, so a frame calibrated while it
runs queues the next one. The steps themselves (``server.pipeline.science``) skip when their stored photometry
fingerprint equals the current one, so re-delivery and surplus triggers change nothing. Embedded (no broker) there is
no queue to coalesce in: each calibrated frame runs the chain in-process, and the fingerprint check keeps the
repeated steps cheap.
"""

from __future__ import annotations

from dataclasses import asdict

from server.queue.celery_app import current_app
from server.queue.tasks import _task, send_coalesced, started_coalesced


def _out(outcome) -> dict:
    d = asdict(outcome)
    d["row_ids"] = list(d["row_ids"])
    return d


@_task("lightcurve_update", "science_inference")
def lightcurve_update(target_name: str) -> dict:
    """Re-assemble and store the target's light curves, then queue its period search and (with a transit ephemeris)
    its transit timing."""
    from server.pipeline.science import has_transit_params, update_lightcurves

    started_coalesced("lightcurve_update", target_name)
    outcome = update_lightcurves(current_app(), target_name)
    if outcome.status in ("ok", "skipped"):
        send_coalesced("period_search", target_name)
        if has_transit_params(current_app(), target_name):
            send_coalesced("transit_timing", target_name)
    return _out(outcome)


@_task("period_search", "science_inference")
def period_search(target_name: str) -> dict:
    """Lomb-Scargle (one band) or multi-band period search on the target's photometry, stored as a Periodogram."""
    from server.pipeline.science import search_period

    started_coalesced("period_search", target_name)
    return _out(search_period(current_app(), target_name))


@_task("transit_timing", "science_inference")
def transit_timing(target_name: str) -> dict:
    """Time the target's transits; new transit times queue ``ttv_reinfer`` (policy ``ttv_reinference``) when the
    target has a stored posterior to warm-start from."""
    from server.pipeline.science import time_transits
    from server.ttv.reinfer import latest_posterior

    started_coalesced("transit_timing", target_name)
    app = current_app()
    outcome = time_transits(app, target_name)
    if outcome.new_times and app.settings.ttv_reinference == "on_new_transit" \
            and latest_posterior(app, target_name) is not None:
        send_coalesced("ttv_reinfer", target_name)
    return _out(outcome)
