"""Deep stacks on ``pipeline_slow``: ``stack`` (plan: frames, output grid, tile work units) -> ``stack_run``
(reprojection of every tile by the local executor, then the co-add).

``stack`` names its campaign after the task id, so a re-delivered ``stack`` finds the campaign it already planned
instead of planning a second one. ``stack_run`` runs only unfinished tile work units (the campaign's records
decide), so a re-delivered run resumes. A BOINC-executed stack leaves the slow queue at once: its submission and
collection are ``run_campaign`` on ``mcmc``, and the assimilator co-adds when the tiles come back.

Difference imaging is per calibrated frame, not per stack: ``find_transients`` (server/queue/transients.py).
"""

from __future__ import annotations

import re

from sqlalchemy import select

from server.queue.celery_app import current_app
from server.queue.tasks import _task, send

def _campaign_name(target: str, band: str, task_id: str | None) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", target)[:60]
    return f"stack-{safe}-{band}-{(task_id or 'manual')[:12]}"


@_task("stack", "pipeline_slow")
def stack(target: str, band: str, executor: str = "local", tile: int = 512, region: list | None = None,
          replicas: int = 1, name: str | None = None, max_frames: int | None = None, seed: int | None = None) -> dict:
    """Plan a deep stack of the target's calibrated ``band`` frames and queue its reprojection and co-add.
    ``region``: [ra, dec, width, height] in degrees (default: the union of the frames' footprints)."""
    from server.core.db.models import Campaign, Stack, Target
    from server.pipeline.stacks import plan_stack

    app = current_app()
    name = name or _campaign_name(target, band, stack.request.id)
    with app.db.session() as s:
        existing = s.execute(select(Campaign.id, Target.name, Stack.band).join(Stack, Stack.campaign_id == Campaign.id)
                             .join(Target, Stack.target_id == Target.id).where(Campaign.name == name)).first()
    if existing is not None and (existing[1], existing[2]) == (target, band):
        # re-delivered after planning: carry on with the campaign planned then
        campaign_id, refused, n_frames = int(existing[0]), [], None
    else:  # (a name taken by another campaign is refused by plan_stack)
        plan = plan_stack(app, target, band, executor=executor, tile=int(tile), max_frames=max_frames, seed=seed,
                          region=tuple(region) if region else None, replicas=int(replicas), name=name)
        campaign_id, refused, n_frames = plan.campaign_id, [list(r) for r in plan.refused], plan.n_frames
    if executor == "local":
        send("stack_run", campaign_id)
    else:
        send("run_campaign", campaign_id)  # BOINC submission and collection: mcmc, never the slow workers
    return {"campaign_id": campaign_id, "n_frames": n_frames, "refused": refused}


@_task("stack_run", "pipeline_slow")
def stack_run(campaign_id: int) -> dict:
    """Reproject the stack's unfinished tiles and co-add (local executor)."""
    from server.boinc.campaigns import run_campaign
    from server.core.db.models import Stack

    app = current_app()
    progress = run_campaign(app, int(campaign_id))
    with app.db.session() as s:
        status = s.scalar(select(Stack.status).where(Stack.campaign_id == int(campaign_id)))
    return {"campaign_id": int(campaign_id), "total": progress.total, "finished": progress.finished,
            "error": progress.error, "stack_status": status}
