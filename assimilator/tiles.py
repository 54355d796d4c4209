"""Assimilating reprojection tiles: frames from tiles, and the stack once every frame is in.

* A frame is complete when every tile work unit of that frame is ``done``; its tiles are pasted into the
  output grid (they partition it, so no pixel is written twice) and the reprojected frame and its weight
  map are stored as FITS with the grid's WCS. The frame is then handed on to normalisation
  (``server.image.normalise``, when that module provides ``normalise_frame``), else it is co-added as is.
* When every frame of the campaign is complete (or failed), the frames are co-added with
  ``server.image.coadd.co_add`` and the stack's products are stored on the ``Stack`` row.

Everything is rebuilt from stored tiles, so a repeated call produces the same objects (content-addressed).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from sqlalchemy import select

from server.core.db.models import Campaign, Result, Stack, WorkUnit


def _fits_bytes(data: np.ndarray, header_cards: dict, extra: dict | None = None) -> bytes:
    from astropy.io import fits

    header = fits.Header()
    for key, value in header_cards.items():
        if key.upper() in ("NAXIS", "NAXIS1", "NAXIS2", "SIMPLE", "BITPIX", "EXTEND"):
            continue
        header[key] = value
    for key, value in (extra or {}).items():
        header[key] = value
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.asarray(data, dtype=np.float32), header=header).writeto(buffer)
    return buffer.getvalue()


def assemble_frame(shape, tiles: list[tuple[list[int], np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Paste tiles (bounds, data, weight) into NaN/zero-weight canvases of ``shape``."""
    data = np.full(tuple(shape), np.nan, dtype=np.float32)
    weight = np.zeros(tuple(shape), dtype=np.float32)
    filled = np.zeros(tuple(shape), dtype=bool)
    for (y0, y1, x0, x1), tile, w in tiles:
        if filled[y0:y1, x0:x1].any():
            raise ValueError(f"tile {[y0, y1, x0, x1]} overlaps an already placed tile")
        data[y0:y1, x0:x1] = tile
        weight[y0:y1, x0:x1] = w
        filled[y0:y1, x0:x1] = True
    return data, weight


def _frame_states(session, campaign_id: int) -> dict[int, list[WorkUnit]]:
    frames: dict[int, list[WorkUnit]] = {}
    for wu in session.scalars(select(WorkUnit).where(WorkUnit.campaign_id == campaign_id)):
        frames.setdefault(int(wu.bin_index), []).append(wu)
    return frames


def update_stack(app, session, campaign: Campaign) -> dict:
    """Assemble complete frames (once each) and co-add when all frames are complete."""
    from app.spec import read_result

    grid = campaign.config["grid"]
    shape = [int(v) for v in grid["shape"]]
    stack = session.get(Stack, campaign.config["stack_id"]) if campaign.config.get("stack_id") else None
    meta = dict(stack.meta or {}) if stack is not None else dict(campaign.summary or {})
    frames_done = dict(meta.get("frames", {}))
    failed = []
    for index, wus in sorted(_frame_states(session, campaign.id).items()):
        if any(w.state == "error" for w in wus):
            failed.append(index)
            continue
        if str(index) in frames_done or any(w.state != "done" for w in wus):
            continue
        tiles = []
        for wu in wus:
            result = session.get(Result, wu.canonical_result_id)
            with app.store.open(result.storage_key) as fh:
                env = read_result(io.BytesIO(fh.read()))
            tiles.append(([int(v) for v in env.arrays["bounds"]], env.arrays["tile"], env.arrays["weight"]))
        data, weight = assemble_frame(shape, tiles)
        data_key = app.store.put_bytes(_fits_bytes(data, grid["header"], {"OA_FRAME": index})).key
        weight_key = app.store.put_bytes(_fits_bytes(weight, grid["header"], {"OA_FRAME": index})).key
        frames_done[str(index)] = {"reprojected_key": data_key, "weight_key": weight_key, "n_tiles": len(wus)}
        frames_done[str(index)].update(_normalise(app, data_key, weight_key, campaign, index))
    n_frames = len(campaign.config["frames"])
    summary = {"frames_total": n_frames, "frames_complete": len(frames_done), "frames_failed": failed,
               "frames": frames_done}
    if frames_done and len(frames_done) + len(failed) == n_frames and not meta.get("stacked_key"):
        summary.update(_co_add(app, frames_done))
    elif meta.get("stacked_key"):
        summary.update({k: meta[k] for k in ("stacked_key", "uncertainty_key", "coverage_key") if k in meta})
    if stack is not None:
        stack.meta = {**meta, **summary}
        stack.n_frames = len(frames_done)
        if summary.get("stacked_key"):
            stack.stacked_key = summary["stacked_key"]
            stack.uncertainty_key = summary["uncertainty_key"]
            stack.coverage_key = summary["coverage_key"]
            stack.status = "done"
    return summary


def _normalise(app, data_key: str, weight_key: str, campaign: Campaign, index: int) -> dict:
    """Hand a complete frame to normalisation (server.image.normalise) when its zero point is known.

    The campaign's frame entry carries ``zero_point`` (mag of 1 ADU/s) and ``exptime_s`` from the
    photometric calibration; a frame without them is co-added in its own units and marked so.
    """
    from server.image.normalise import normalise_image

    entry = campaign.config["frames"][index]
    if entry.get("zero_point") is None or entry.get("exptime_s") is None:
        return {"normalised": False}
    with tempfile.TemporaryDirectory(prefix="oa-norm-") as tmp:
        out = normalise_image(app.store.path(data_key), zero_point=float(entry["zero_point"]),
                              weight_path=app.store.path(weight_key), exptime_s=float(entry["exptime_s"]),
                              out_path=Path(tmp) / "frame.fits", weight_out_path=Path(tmp) / "weight.fits")
        return {"normalised": True, "data_key": app.store.put_file(out["path"]).key,
                "weight_key": app.store.put_file(out["weight_path"]).key, "snr_weight": out["snr_weight"],
                "raw_weight_key": weight_key}


def _co_add(app, frames_done: dict) -> dict:
    from server.image.coadd import co_add

    items = [frames_done[k] for k in sorted(frames_done, key=int)]
    data_paths = [app.store.path(f.get("data_key", f["reprojected_key"])) for f in items]
    weight_paths = [app.store.path(f.get("weight_key")) for f in items]
    with tempfile.TemporaryDirectory(prefix="oa-coadd-") as tmp:
        out = co_add(data_paths, weight_paths, out_dir=tmp)
        keys = {name.replace("_path", "_key"): app.store.put_file(out[name]).key
                for name in ("stacked_path", "uncertainty_path", "coverage_path")}
    return {**keys, "coadd": {k: v for k, v in out.items() if not str(k).endswith("_path")
                               and isinstance(v, (int, float, str, list))}}


def frame_path(app, key: str) -> Path:
    return app.store.path(key)
