"""Difference imaging on ``pipeline_slow``: a calibrated frame whose target has a reference image in its band goes on
to ``find_transients`` (ZOGY subtraction, candidates, real/bogus, cross-match, alerts: server/transients/).

Queued by ``calibrate`` (server/queue/tasks.py) only when the reference exists, so frames of fields without one cost
no message. The stage runner's records make a re-delivered message a no-op (the stage ran: its outcome stands).
"""

from __future__ import annotations

from server.queue.tasks import _stage, _task


@_task("find_transients", "pipeline_slow")
def find_transients(observation_id: int) -> dict:
    """Run the transient stage of one calibrated frame (recorded by the stage runner)."""
    return _stage("transients", int(observation_id), follow=False, then=None)
