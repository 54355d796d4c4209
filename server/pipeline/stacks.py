"""Deep stacks as a workflow: select calibrated frames -> output grid -> tile work units -> co-add.

``plan_stack`` picks the calibrated image observations of one target and band, refuses (and reports) frames
without a WCS or a calibration, chooses the output grid (``server.image.reproject.output_grid``: the reference frame's
pixel scale, covering every frame's footprint unless a region is given) and creates an image campaign whose
reprojection tiles run through the campaign's executor (local or BOINC). The assimilator assembles the tiles into
frames, normalises each frame with its calibrated zero point (``server.image.normalise``) and co-adds them
(``server.image.coadd``) once every frame is in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from server.core.context import OpenAstro
from server.core.db.models import Calibration, Observation, Stack, Target


@dataclass(frozen=True)
class StackPlan:
    campaign_id: int
    n_frames: int
    grid_shape: tuple[int, int]
    pixel_scale_arcsec: float
    refused: list[tuple[int, str]] = field(default_factory=list)  # (observation id, reason)


def plan_stack(app: OpenAstro, target: str, band: str, *, executor: str = "local", tile: int = 512,
               region: tuple[float, float, float, float] | None = None, replicas: int = 1,
               name: str | None = None, seed: int | None = None, max_frames: int | None = None) -> StackPlan:
    from server.boinc.campaigns import create_stack_campaign
    from server.image.reproject import frame_info, output_grid, select_reference

    with app.db.session() as s:
        tgt = s.scalars(select(Target).where(Target.name == target)).one_or_none()
        if tgt is None:
            raise ValueError(f"no target named {target!r}")
        rows = s.execute(
            select(Observation, Calibration).outerjoin(Calibration, Calibration.observation_id == Observation.id)
            .where(Observation.target_id == tgt.id, Observation.kind == "image").order_by(Observation.id)
        ).all()
        candidates, refused = [], []
        for obs, cal in rows:
            obs_band = (cal.band if cal is not None else None) or obs.filter
            if obs_band != band:
                continue
            if obs.solved_storage_key is None:
                refused.append((obs.id, f"no WCS ({obs.wcs_failed_reason or 'not plate-solved yet'})"))
            elif cal is None:
                refused.append((obs.id, "not photometrically calibrated"))
            elif not obs.exptime:
                refused.append((obs.id, "no exposure time"))
            else:
                candidates.append((obs.id, obs.solved_storage_key, cal.zero_point, float(obs.exptime)))
    if max_frames is not None:
        candidates = candidates[:max_frames]
    if not candidates:
        reasons = "; ".join(f"#{i}: {r}" for i, r in refused) or "no image observations"
        raise ValueError(f"no calibrated {band} frames of {target!r} to stack ({reasons})")

    infos = [frame_info(str(app.store.path(key))) for _, key, _, _ in candidates]
    grid_header, grid_shape = output_grid(infos, region=region)
    reference = select_reference(infos)
    frames = [{"key": key, "zero_point": zp, "exptime_s": exptime, "observation_id": oid}
              for oid, key, zp, exptime in candidates]
    cid = create_stack_campaign(app, frames, grid_header, grid_shape, name=name, executor=executor, tile=tile,
                                replicas=replicas, seed=seed)
    with app.db.session() as s:
        stack = s.scalars(select(Stack).where(Stack.campaign_id == cid)).one()
        stack.target_id, stack.band = tgt.id, band
    return StackPlan(cid, len(frames), tuple(int(v) for v in grid_shape), float(reference.pixel_scale_arcsec),
                     refused)


def stack_outputs(app: OpenAstro, campaign_id: int) -> dict:
    """Storage keys and paths of a finished stack (stacked image, uncertainty, coverage)."""
    with app.db.session() as s:
        stack = s.scalars(select(Stack).where(Stack.campaign_id == campaign_id)).one()
        if stack.status != "done":
            raise ValueError(f"stack of campaign {campaign_id} is {stack.status}, not done")
        keys = {"stacked": stack.stacked_key, "uncertainty": stack.uncertainty_key, "coverage": stack.coverage_key}
        meta = dict(stack.meta or {})
    return {"keys": keys, "paths": {k: str(app.store.path(v)) for k, v in keys.items()},
            "frames_complete": meta.get("frames_complete"), "frames_failed": meta.get("frames_failed", [])}


def export_stack(app: OpenAstro, campaign_id: int, directory=None) -> dict[str, str]:
    """Copy a finished stack's FITS files out of the object store (where they are named by hash) to
    ``<directory>/stack_<campaign>_<kind>.fits`` (default directory ``<var_dir>/results``); {kind: path}."""
    import os
    import shutil

    from app.atomic import atomic_open

    out = stack_outputs(app, campaign_id)
    directory = os.fspath(directory if directory is not None else app.var_dir / "results")
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for kind, key in out["keys"].items():
        path = os.path.join(directory, f"stack_{campaign_id}_{kind}.fits")
        with app.store.open(key) as src, atomic_open(path) as dst:
            shutil.copyfileobj(src, dst)
        paths[kind] = path
    return paths
