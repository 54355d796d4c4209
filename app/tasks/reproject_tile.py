"""``reproject-tile``: one output tile of one frame.

Spec::

    "inputs": {"cutout": "<open name of a FITS file>"}
    "params": {"output_wcs": {FITS WCS cards of the output grid},
               "tile_bounds": [y0, y1, x0, x1],     # pixel bounds in the output grid, half-open
               "cutout_origin": [y0, x0],           # cutout's first pixel in the input frame
               "method": "bilinear",                # optional; the only method shipped frozen
               "step": 16,                          # optional: the frame's mapping step from
                                                    #   app.reproject_kernel.plan_mapping, so the
                                                    #   tile is bitwise equal to the whole frame
               "conserve_flux": false}              # optional

The cutout FITS holds the image (with its WCS) in the primary HDU, or in the first image HDU,
and the weight map in an image HDU named ``WEIGHT`` (same shape); no WEIGHT HDU means unit weight.

Result arrays: ``tile`` and ``weight`` (float32, tile shape; tile NaN outside), ``footprint``
(bool) and ``bounds`` (int64 [y0, y1, x0, x1]); meta ``method``, ``step`` (mapping node spacing
used) and ``max_error_px`` (the kernel's checked mapping error).

``method="exact"`` (reproject_exact, which drags in dask, PIL and pyavm) is not part of the
volunteer app: exact tiles run server-side only, keeping the frozen app small.

A tile takes seconds, so there is no checkpoint: a killed tile is redone from scratch, and the
kernel is deterministic, so the redone output is identical.
"""

from __future__ import annotations

from typing import Any

from app.spec import SpecError
from app.tasks import InputError, Interrupted, TaskContext, TaskOutput

_METHODS = ("bilinear",)
_PARAM_KEYS = {"output_wcs", "tile_bounds", "cutout_origin", "method", "step", "conserve_flux"}


def _int_list(value: Any, n: int, name: str) -> tuple[int, ...]:
    if (not isinstance(value, list) or len(value) != n
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise SpecError(f"params.{name} must be a list of {n} integers, got {value!r}")
    return tuple(value)


def parse_params(params: dict) -> dict:
    unknown = sorted(set(params) - _PARAM_KEYS)
    if unknown:
        raise SpecError(f"reproject-tile params: unknown keys {unknown}")
    for key in ("output_wcs", "tile_bounds", "cutout_origin"):
        if key not in params:
            raise SpecError(f"reproject-tile params: missing {key!r}")
    wcs_cards = params["output_wcs"]
    if not isinstance(wcs_cards, dict) or not wcs_cards:
        raise SpecError(f"params.output_wcs must be a non-empty object of FITS cards, got {wcs_cards!r}")
    for key, value in wcs_cards.items():
        if not isinstance(key, str) or not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise SpecError(f"params.output_wcs card {key!r}={value!r} is not a FITS string/number")
    y0, y1, x0, x1 = _int_list(params["tile_bounds"], 4, "tile_bounds")
    if not (0 <= y0 < y1 and 0 <= x0 < x1) or (y1 - y0) * (x1 - x0) > 16384 * 16384:
        raise SpecError(f"params.tile_bounds {params['tile_bounds']!r} is not a non-empty "
                        "[y0, y1, x0, x1] box with 0 <= y0 < y1, 0 <= x0 < x1")
    origin = _int_list(params["cutout_origin"], 2, "cutout_origin")
    if min(origin) < 0:
        raise SpecError(f"params.cutout_origin {params['cutout_origin']!r} must be >= 0")
    method = params.get("method", "bilinear")
    if method not in _METHODS:
        raise SpecError(f"params.method {method!r} is not one of {', '.join(_METHODS)}")
    step = params.get("step")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or not 1 <= step <= 1024):
        raise SpecError(f"params.step must be an integer in 1..1024 or absent, got {step!r}")
    conserve_flux = params.get("conserve_flux", False)
    if not isinstance(conserve_flux, bool):
        raise SpecError(f"params.conserve_flux must be true or false, got {conserve_flux!r}")
    return {"output_wcs": dict(wcs_cards), "tile_bounds": (y0, y1, x0, x1),
            "cutout_origin": origin, "method": method, "step": step, "conserve_flux": conserve_flux}


def read_cutout(path):
    """(data, weight, header cards) of a cutout FITS; InputError on anything malformed.

    Read with :mod:`app.fitsio` (uncompressed image HDUs; the work generator writes exactly
    that), so a reproject-tile work unit never imports astropy: start-up is numpy only.
    """
    import numpy as np

    from app.fitsio import read_images

    try:
        hdus = read_images(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"cutout {path.name} is not a readable FITS file: {exc}") from exc
    image_hdus = [h for h in hdus if h.data is not None]
    data_hdu = next((h for h in image_hdus if h.name != "WEIGHT"), None)
    if data_hdu is None:
        raise InputError(f"cutout {path.name}: no image HDU with data")
    data = np.asarray(data_hdu.data, dtype=np.float64)
    weight_hdu = next((h for h in image_hdus if h.name == "WEIGHT"), None)
    weight = np.ones_like(data) if weight_hdu is None else np.asarray(weight_hdu.data, dtype=np.float64)
    if data.ndim != 2 or data.size == 0:
        raise InputError(f"cutout {path.name}: image must be 2-D and non-empty, got shape {data.shape}")
    if weight.shape != data.shape:
        raise InputError(f"cutout {path.name}: WEIGHT shape {weight.shape} != image shape {data.shape}")
    if not np.all(np.isfinite(weight)) or np.any(weight < 0):
        raise InputError(f"cutout {path.name}: WEIGHT has negative or non-finite values")
    return data, weight, data_hdu.cards


def run(ctx: TaskContext) -> TaskOutput:
    import numpy as np

    from app.reproject_kernel import reproject_tile

    if set(ctx.spec.inputs) != {"cutout"}:
        raise SpecError(f"reproject-tile takes exactly one input 'cutout', got {sorted(ctx.spec.inputs)}")
    params = parse_params(ctx.spec.params)
    data, weight, header = read_cutout(ctx.inputs["cutout"])
    ctx.progress(0.1)
    if ctx.should_stop():
        raise Interrupted()
    try:
        tile = reproject_tile(data, weight, header, params["cutout_origin"], params["output_wcs"],
                              params["tile_bounds"], method=params["method"], step=params["step"],
                              conserve_flux=params["conserve_flux"])
    except ValueError as exc:
        # The kernel validates its geometry (WCS cards, bounds vs cutout); those values came
        # from the spec.
        raise SpecError(f"reproject-tile: {exc}") from exc
    if ctx.should_stop():
        raise Interrupted()
    ctx.progress(0.95)
    arrays = {"tile": np.asarray(tile.data), "weight": np.asarray(tile.weight),
              "footprint": np.asarray(tile.footprint),
              "bounds": np.asarray(tile.bounds, dtype=np.int64)}
    return TaskOutput(arrays=arrays, meta={"method": params["method"], "step": int(tile.step),
                                           "max_error_px": float(tile.max_error_px)})
