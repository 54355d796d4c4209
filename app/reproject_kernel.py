"""Fast reprojection of one image (or one output tile) onto a reference WCS grid.

Runs on volunteers' machines (frozen): imports numpy and astropy only (plus ``reproject``, lazily,
for ``method="exact"``).

How it works
------------
1. **Mapping.** For every output pixel we need the input pixel it falls on. The exact answer is
   ``input_wcs.world_to_pixel(output_wcs.pixel_to_world(x, y))``, which is what costs
   ``reproject_interp`` most of its time. We evaluate it exactly only on a coarse grid of *nodes*
   every ``step`` output pixels and interpolate between nodes with a separable 4-point cubic
   Lagrange interpolant (exact for cubic polynomials, local: a pixel depends on its 4 x 4
   surrounding nodes only).
2. **Error bound.** :func:`plan_mapping` checks the interpolant against the exact transform at all
   half-step points (cell centres and edge midpoints; at least every 16 output px) that land on
   the input frame, starting from ``step = 64`` and halving until the largest error is
   ``<= tolerance_px`` (default **0.01 px**). If even ``step = 4`` fails, the exact per-pixel transform is used (``step = 1``).
3. **Sampling.** Bilinear (our own vectorised gather from w*d and w planes, in 256 x 256 output
   blocks so a block's input footprint stays in cache) of the data *and* of the weight map.
   Input pixels that are NaN, non-finite or have weight <= 0 are *invalid* and count as weight 0.
   We use a **weight-renormalised bilinear** rule: with bilinear coefficients c_k and input weights w_k of the four neighbours, the output value is ``sum(c_k w_k d_k) / sum(c_k w_k)``
   and the output weight is ``sum(c_k w_k)``. With a uniform weight map this is plain bilinear
   interpolation (what ``reproject_interp`` does); next to masked pixels and frame edges the value
   comes from the valid neighbours only and the weight falls smoothly to 0. If all four neighbours
   are invalid the output is NaN with weight 0.
4. **Footprint.** An output pixel is in the footprint when its centre maps inside the input frame
   (``-0.5 <= x <= nx - 0.5``). Outside the footprint data are NaN and weights 0.

Units: by default values are interpolated like ``reproject_interp`` (surface brightness per *input*
pixel). With ``conserve_flux=True`` each value is multiplied by the local ratio of output to input
pixel area (the Jacobian determinant of the mapping, evaluated exactly at the nodes and
interpolated like the mapping), so the sum over a source equals its flux in the input frame.
Weights are relative (masks/exposure maps) and are not rescaled.

Tiles
-----
The node grid is anchored to the *global* output grid (nodes sit at output pixel multiples of
``step``), every exact evaluation is per point (our own fixed-iteration inverse for distorted WCS,
so no point depends on which others are evaluated with it), and the bilinear weights depend only on
the fractional part of the input coordinate. A tile computed from a cutout with a >= 2 px margin
(see :func:`cutout_for_tile`) with the frame's ``step`` from :func:`plan_mapping` is therefore
**bitwise identical** to the same pixels of the whole-frame result.

``cutout_wcs_header`` in :func:`reproject_tile` is the WCS of the *full input frame* the cutout was
cut from (not re-centred); ``cutout_origin`` says where the cutout's pixel (0, 0) sits in that frame.

``method="exact"`` uses ``reproject.reproject_exact`` (spherical-polygon overlap, flux conserving
in the drizzle sense); tiles then agree with whole frames to ~1e-6 relative, not bitwise.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

__all__ = [
    "DEFAULT_TOLERANCE_PX",
    "MappingPlan",
    "TileResult",
    "as_wcs",
    "cutout_for_tile",
    "exact_mapping",
    "interpolated_mapping",
    "plan_mapping",
    "reproject_array",
    "reproject_tile",
]

DEFAULT_TOLERANCE_PX = 0.01
CANDIDATE_STEPS = (64, 32, 16, 8, 4)
_CHECK_SPACING = 16  # check points at least this dense [output px]
_BLOCK = 256  # output pixels per side of a processing block
_INVERSE_ITERATIONS = 20
_INVERSE_TOLERANCE_PX = 1e-6
_METHODS = ("bilinear", "exact")


@dataclass(frozen=True)
class MappingPlan:
    """Node spacing for the interpolated mapping and the error measured at half-step points."""

    step: int  # 1 means the exact transform at every pixel
    max_error_px: float  # largest |interpolated - exact| at checked points (0.0 when none checked)
    n_checked: int  # number of half-step points checked (those landing on the input frame)
    tolerance_px: float


@dataclass(frozen=True)
class TileResult:
    """One reprojected output tile. ``bounds`` = (y0, y1, x0, x1) in the global output grid."""

    data: np.ndarray  # float32, NaN outside the footprint or where no valid input neighbour
    weight: np.ndarray  # float32, 0 where data is NaN
    footprint: np.ndarray  # bool, output pixel centre inside the input frame
    bounds: tuple[int, int, int, int]
    step: int
    max_error_px: float


# --------------------------------------------------------------------------------------- WCS
def as_wcs(header: "WCS | fits.Header | Mapping") -> WCS:
    """A 2-D celestial WCS from a WCS, a FITS header, or a plain dict of header cards."""
    if isinstance(header, WCS):
        wcs = header
    elif isinstance(header, (fits.Header, Mapping)):
        hdr = header if isinstance(header, fits.Header) else fits.Header(dict(header))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(hdr, naxis=2)
    else:
        raise TypeError(f"expected a WCS, FITS Header or dict of header cards, got {type(header).__name__}")
    if not wcs.has_celestial or wcs.naxis != 2:
        raise ValueError(f"not a 2-D celestial WCS (CTYPE={list(wcs.wcs.ctype)})")
    return wcs


def _has_distortion(wcs: WCS) -> bool:
    return any(d is not None for d in (wcs.sip, wcs.cpdis1, wcs.cpdis2, wcs.det2im1, wcs.det2im2))


def _frames_differ(a: WCS, b: WCS) -> bool:
    from astropy.wcs.utils import wcs_to_celestial_frame

    return not wcs_to_celestial_frame(a).is_equivalent_frame(wcs_to_celestial_frame(b))


def _world_to_pixel(wcs: WCS, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-point inverse (no cross-point coupling, unlike astropy's all_world2pix iteration)."""
    world = np.empty((lon.size, 2))
    world[:, wcs.wcs.lng] = lon.ravel()
    world[:, wcs.wcs.lat] = lat.ravel()
    pix0 = wcs.wcs_world2pix(world, 0)
    if _has_distortion(wcs):
        finite = np.all(np.isfinite(pix0), axis=1)
        pix = pix0.copy()
        good = pix0[finite]
        cur = good.copy()
        for _ in range(_INVERSE_ITERATIONS):
            cur = cur - (wcs.pix2foc(cur, 0) - good)
        resid = np.hypot(*(wcs.pix2foc(cur, 0) - good).T)
        cur[resid > _INVERSE_TOLERANCE_PX] = np.nan
        pix[finite] = cur
        pix0 = pix
    return pix0[:, 0].reshape(lon.shape), pix0[:, 1].reshape(lon.shape)


def exact_mapping(output_wcs: WCS, input_wcs: WCS, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact input pixel coordinates (yin, xin) of output pixel coordinates (y, x); 0-based."""
    y, x = np.broadcast_arrays(np.asarray(y, float), np.asarray(x, float))
    world = output_wcs.all_pix2world(np.column_stack([x.ravel(), y.ravel()]), 0)
    lon = world[:, output_wcs.wcs.lng]
    lat = world[:, output_wcs.wcs.lat]
    if _frames_differ(output_wcs, input_wcs):
        from astropy.coordinates import SkyCoord
        from astropy.wcs.utils import wcs_to_celestial_frame

        sc = SkyCoord(lon, lat, unit="deg", frame=wcs_to_celestial_frame(output_wcs))
        sc = sc.transform_to(wcs_to_celestial_frame(input_wcs))
        lon, lat = sc.spherical.lon.deg, sc.spherical.lat.deg
    xin, yin = _world_to_pixel(input_wcs, lon, lat)
    return yin.reshape(y.shape), xin.reshape(y.shape)


# ------------------------------------------------------------------------ interpolated mapping
def _lagrange_weights(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """4-point cubic Lagrange weights for nodes at -1, 0, 1, 2 and 0 <= t < 1."""
    tm1, tp1, tm2 = t - 1.0, t + 1.0, t - 2.0
    return (-t * tm1 * tm2 / 6.0, tp1 * tm1 * tm2 / 2.0, -tp1 * t * tm2 / 2.0, tp1 * t * tm1 / 6.0)


class _NodeGrid:
    """Exact mapping values at global nodes (multiples of ``step``) covering rows/cols of a region."""

    def __init__(self, output_wcs, input_wcs, step, y0, y1, x0, x1, with_jacobian=False):
        self.step = step
        self.iy0 = y0 // step - 1
        self.ix0 = x0 // step - 1
        iy1 = (y1 - 1) // step + 2
        ix1 = (x1 - 1) // step + 2
        ny = np.arange(self.iy0, iy1 + 1) * float(step)
        nx = np.arange(self.ix0, ix1 + 1) * float(step)
        gy, gx = np.meshgrid(ny, nx, indexing="ij")
        self.yin, self.xin = exact_mapping(output_wcs, input_wcs, gy, gx)
        self.area = None
        if with_jacobian:
            h = 0.5
            ya, xa = exact_mapping(output_wcs, input_wcs, gy, gx + h)
            yb, xb = exact_mapping(output_wcs, input_wcs, gy, gx - h)
            yc, xc = exact_mapping(output_wcs, input_wcs, gy + h, gx)
            yd, xd = exact_mapping(output_wcs, input_wcs, gy - h, gx)
            dxin_dx, dyin_dx = (xa - xb) / (2 * h), (ya - yb) / (2 * h)
            dxin_dy, dyin_dy = (xc - xd) / (2 * h), (yc - yd) / (2 * h)
            # output pixel area / input pixel area = |det d(in)/d(out)| (input pixels per output pixel)
            self.area = np.abs(dxin_dx * dyin_dy - dxin_dy * dyin_dx)

    def _axis(self, coords: np.ndarray, origin: int):
        cell = np.floor_divide(coords, self.step)
        t = (coords - cell * self.step) / float(self.step)
        return cell - 1 - origin, _lagrange_weights(t.astype(float))

    def evaluate(self, field: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Interpolate a node field at the grid rows x cols (global integer output pixels)."""
        ly, wy = self._axis(rows, self.iy0)
        lx, wx = self._axis(cols, self.ix0)
        a = wy[0][:, None] * field[ly]
        for m in (1, 2, 3):
            a = a + wy[m][:, None] * field[ly + m]
        out = wx[0][None, :] * a[:, lx]
        for m in (1, 2, 3):
            out = out + wx[m][None, :] * a[:, lx + m]
        return out


def interpolated_mapping(output_wcs, input_wcs, step, rows, cols):
    """(yin, xin) at global output rows x cols via the node interpolant (step=1: exact)."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    if step == 1:
        gy, gx = np.meshgrid(rows.astype(float), cols.astype(float), indexing="ij")
        return exact_mapping(output_wcs, input_wcs, gy, gx)
    grid = _NodeGrid(output_wcs, input_wcs, step, int(rows.min()), int(rows.max()) + 1,
                     int(cols.min()), int(cols.max()) + 1)
    return grid.evaluate(grid.yin, rows, cols), grid.evaluate(grid.xin, rows, cols)


def _check_step(output_wcs, input_wcs, step, bounds, frame_box, margin=2.0):
    """Max |interpolated - exact| at half-step points of ``bounds`` landing within ``frame_box``."""
    y0, y1, x0, x1 = bounds
    half = min(step // 2, _CHECK_SPACING)
    rows = np.arange((y0 // half) * half, y1, half)
    cols = np.arange((x0 // half) * half, x1, half)
    rows, cols = rows[rows >= y0], cols[cols >= x0]
    if rows.size == 0 or cols.size == 0:
        return 0.0, 0
    grid = _NodeGrid(output_wcs, input_wcs, step, y0, y1, x0, x1)
    yi, xi = grid.evaluate(grid.yin, rows, cols), grid.evaluate(grid.xin, rows, cols)
    gy, gx = np.meshgrid(rows.astype(float), cols.astype(float), indexing="ij")
    ye, xe = exact_mapping(output_wcs, input_wcs, gy, gx)
    fy0, fy1, fx0, fx1 = frame_box
    on = (ye >= fy0 - 0.5 - margin) & (ye <= fy1 - 0.5 + margin) & (xe >= fx0 - 0.5 - margin) & (xe <= fx1 - 0.5 + margin)
    if not on.any():
        return 0.0, 0
    err = np.hypot(yi[on] - ye[on], xi[on] - xe[on])
    if not np.all(np.isfinite(err)):
        return math.inf, int(on.sum())
    return float(err.max()), int(on.sum())


def plan_mapping(input_wcs, output_wcs, bounds, frame_box, *, tolerance_px=DEFAULT_TOLERANCE_PX,
                 start_step=None) -> MappingPlan:
    """Choose the coarsest node step whose interpolated mapping meets ``tolerance_px``.

    ``bounds`` = (y0, y1, x0, x1) of the output region; ``frame_box`` = (y0, y1, x0, x1) of the input
    pixels available (the whole frame, or a cutout in frame coordinates). Only half-step points that
    land on ``frame_box`` (+2 px) are checked: elsewhere the mapping is never used.
    """
    if not tolerance_px > 0:
        raise ValueError(f"tolerance_px must be > 0, got {tolerance_px!r}")
    in_wcs, out_wcs = as_wcs(input_wcs), as_wcs(output_wcs)
    bounds = _check_bounds(bounds, "bounds")
    steps = CANDIDATE_STEPS
    if start_step is not None:
        if start_step not in CANDIDATE_STEPS and start_step != 1:
            raise ValueError(f"step must be 1 or one of {CANDIDATE_STEPS}, got {start_step!r}")
        steps = tuple(s for s in CANDIDATE_STEPS if s <= start_step)
    for step in steps:
        err, n = _check_step(out_wcs, in_wcs, step, bounds, frame_box)
        if err <= tolerance_px:
            return MappingPlan(step=step, max_error_px=err, n_checked=n, tolerance_px=tolerance_px)
    return MappingPlan(step=1, max_error_px=0.0, n_checked=0, tolerance_px=tolerance_px)


# ---------------------------------------------------------------------------------- tiles
def _check_bounds(bounds, name):
    try:
        y0, y1, x0, x1 = (int(v) for v in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (y0, y1, x0, x1) integers, got {bounds!r}") from None
    if not (y1 > y0 and x1 > x0):
        raise ValueError(f"{name} must satisfy y1 > y0 and x1 > x0, got {bounds!r}")
    return y0, y1, x0, x1


def cutout_for_tile(input_shape, input_wcs, output_wcs, tile_bounds, margin_px: int = 2):
    """Input pixel box (y0, y1, x0, x1) needed for an output tile, or None if they do not overlap.

    The tile's edges (every pixel) and an interior lattice (every 16 px) are mapped exactly; the
    box is their bounding box grown by ``margin_px`` (>= 2 keeps tiles bitwise equal to whole frames
    for bilinear sampling) and clipped to the frame.
    """
    if margin_px < 2:
        raise ValueError(f"margin_px must be >= 2 for tile/whole-frame equality, got {margin_px!r}")
    ny, nx = (int(v) for v in input_shape)
    y0, y1, x0, x1 = _check_bounds(tile_bounds, "tile_bounds")
    in_wcs, out_wcs = as_wcs(input_wcs), as_wcs(output_wcs)
    ys = np.unique(np.concatenate([np.arange(y0, y1, 16), [y1 - 1]]))
    xs = np.unique(np.concatenate([np.arange(x0, x1, 16), [x1 - 1]]))
    ey = np.arange(y0, y1)
    ex = np.arange(x0, x1)
    py = np.concatenate([np.repeat(ys, xs.size), ey, ey, np.full(ex.size, y0), np.full(ex.size, y1 - 1)])
    px = np.concatenate([np.tile(xs, ys.size), np.full(ey.size, x0), np.full(ey.size, x1 - 1), ex, ex])
    yin, xin = exact_mapping(out_wcs, in_wcs, py.astype(float), px.astype(float))
    ok = np.isfinite(yin) & np.isfinite(xin)
    # keep points that land on (or near) the frame: others do not need input pixels
    ok &= (yin >= -0.5 - margin_px) & (yin <= ny - 0.5 + margin_px) & (xin >= -0.5 - margin_px) & (xin <= nx - 0.5 + margin_px)
    if not ok.any():
        return None
    cy0 = max(0, int(math.floor(yin[ok].min())) - margin_px)
    cy1 = min(ny, int(math.ceil(yin[ok].max())) + margin_px + 1)
    cx0 = max(0, int(math.floor(xin[ok].min())) - margin_px)
    cx1 = min(nx, int(math.ceil(xin[ok].max())) + margin_px + 1)
    if cy1 <= cy0 or cx1 <= cx0:
        return None
    return cy0, cy1, cx0, cx1


def _prepare_input(data, weight):
    """Weighted data and weights with invalid pixels at weight 0: (w*d, w), float32."""
    data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"input data must be 2-D, got shape {data.shape}")
    if weight is None:
        weight = np.ones(data.shape, dtype=np.float32)
    weight = np.asarray(weight)
    if weight.ndim != 2 or weight.shape != data.shape:
        raise ValueError(f"weight shape {weight.shape} != data shape {data.shape}")
    # weight > 0 is False for NaN weights; data * weight is non-finite for non-finite data
    vw = np.where(weight > 0, weight, 0).astype(np.float32)
    wd = (data * vw).astype(np.float32)
    bad = ~np.isfinite(wd)
    if bad.any():
        vw[bad] = 0.0
        wd[bad] = 0.0
    return wd, vw


def _padded_planes(data, weight):
    """Flattened (h+2)*(w+2) float32 planes of w*d and w (invalid pixels: 0) with a zero border."""
    data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"input data must be 2-D, got shape {data.shape}")
    h, w = data.shape
    planes = np.zeros((2, h + 2, w + 2), dtype=np.float32)
    pd, pw = planes[0, 1:-1, 1:-1], planes[1, 1:-1, 1:-1]
    if weight is None:
        pw[...] = 1.0
    else:
        weight = np.asarray(weight)
        if weight.ndim != 2 or weight.shape != data.shape:
            raise ValueError(f"weight shape {weight.shape} != data shape {data.shape}")
        np.copyto(pw, weight, casting="unsafe")
        with np.errstate(invalid="ignore"):
            pw[~(pw > 0)] = 0.0  # negative and NaN weights
    with np.errstate(invalid="ignore", over="ignore"):
        np.multiply(data, pw, out=pd, casting="unsafe")
    bad = ~np.isfinite(pd)  # NaN/inf data, inf weights
    if bad.any():
        pd[bad] = 0.0
        pw[bad] = 0.0
    return planes[0].reshape(-1), planes[1].reshape(-1), w + 2


def _bilinear_pairs(pd, pw, width, yc, xc):
    """Bilinear samples of both planes at cutout coordinates (-0.5 <= c <= n - 0.5).

    The weights depend only on the fractional parts of the coordinates, so integer shifts of the
    cutout origin do not change a single bit of the result. Weights and sums are float32.
    """
    iy = np.floor(yc)
    ix = np.floor(xc)
    fy = (yc - iy).astype(np.float32).reshape(-1)
    fx = (xc - ix).astype(np.float32).reshape(-1)
    idx = iy.astype(np.int64).reshape(-1)
    idx += 1
    idx *= width
    idx += ix.astype(np.int64).reshape(-1)
    idx += 1
    gy = np.float32(1) - fy
    gx = np.float32(1) - fx
    corners = ((idx, gy * gx), (idx + 1, gy * fx), (idx + width, fy * gx), (idx + (width + 1), fy * fx))
    sd = sw = None
    for at, c in corners:
        td = pd.take(at)
        td *= c
        tw = pw.take(at)
        tw *= c
        if sd is None:
            sd, sw = td, tw
        else:
            sd += td
            sw += tw
    return sd, sw


def reproject_tile(cutout_data, cutout_weight, cutout_wcs_header, cutout_origin, output_wcs_header,
                   tile_bounds, *, method: str = "bilinear", step: int | None = None,
                   conserve_flux: bool = False, tolerance_px: float = DEFAULT_TOLERANCE_PX) -> TileResult:
    """Reproject a cutout of an input frame onto one output tile.

    ``cutout_wcs_header`` is the full input frame's WCS; ``cutout_origin`` = (y0, x0) of the cutout
    in that frame; ``tile_bounds`` = (y0, y1, x0, x1) in the global output grid. Pass the frame's
    ``step`` from :func:`plan_mapping` (whole frame) to get tiles bitwise equal to the whole frame;
    the step is still verified on this tile and refined if it misses ``tolerance_px``.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    in_wcs, out_wcs = as_wcs(cutout_wcs_header), as_wcs(output_wcs_header)
    ty0, ty1, tx0, tx1 = bounds = _check_bounds(tile_bounds, "tile_bounds")
    try:
        oy, ox = (int(v) for v in cutout_origin)
    except (TypeError, ValueError):
        raise ValueError(f"cutout_origin must be (y0, x0) integers, got {cutout_origin!r}") from None
    shape = np.shape(cutout_data)
    if len(shape) != 2:
        raise ValueError(f"input data must be 2-D, got shape {shape}")
    if cutout_weight is not None and np.shape(cutout_weight) != shape:
        raise ValueError(f"weight shape {np.shape(cutout_weight)} != data shape {shape}")
    h, w = shape
    frame_box = (oy, oy + h, ox, ox + w)
    plan = plan_mapping(in_wcs, out_wcs, bounds, frame_box, tolerance_px=tolerance_px, start_step=step)
    if method == "exact":
        return _reproject_tile_exact(cutout_data, cutout_weight, in_wcs, (oy, ox), out_wcs, bounds, plan, conserve_flux)

    H, W = ty1 - ty0, tx1 - tx0
    out_d = np.full((H, W), np.nan, dtype=np.float32)
    out_w = np.zeros((H, W), dtype=np.float32)
    foot = np.zeros((H, W), dtype=bool)
    pd, pw, width = _padded_planes(cutout_data, cutout_weight)
    grid = None
    if plan.step > 1:
        grid = _NodeGrid(out_wcs, in_wcs, plan.step, ty0, ty1, tx0, tx1, with_jacobian=conserve_flux)
    # square blocks keep the input footprint of a block in cache (rotated frames)
    for r0 in range(ty0, ty1, _BLOCK):
        rows = np.arange(r0, min(r0 + _BLOCK, ty1))
        for c0 in range(tx0, tx1, _BLOCK):
            cols = np.arange(c0, min(c0 + _BLOCK, tx1))
            if grid is not None:
                yin, xin = grid.evaluate(grid.yin, rows, cols), grid.evaluate(grid.xin, rows, cols)
            else:
                gy, gx = np.meshgrid(rows.astype(float), cols.astype(float), indexing="ij")
                yin, xin = exact_mapping(out_wcs, in_wcs, gy, gx)
            yc, xc = yin - oy, xin - ox
            inside = (yc >= -0.5) & (yc <= h - 0.5) & (xc >= -0.5) & (xc <= w - 0.5)
            blk = (slice(r0 - ty0, r0 - ty0 + rows.size), slice(c0 - tx0, c0 - tx0 + cols.size))
            foot[blk] = inside
            if not inside.any():
                continue
            sd, sw = _bilinear_pairs(pd, pw, width, np.where(inside, yc, -1.0), np.where(inside, xc, -1.0))
            sd = sd.reshape(inside.shape)
            sw = sw.reshape(inside.shape)
            good = inside & (sw > 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                val = np.where(good, sd / sw, np.nan)
            if conserve_flux:
                area = grid.evaluate(grid.area, rows, cols) if grid is not None else _exact_area(out_wcs, in_wcs, rows, cols)
                val = val * area
            out_d[blk] = val
            out_w[blk] = np.where(good, sw, 0.0)
    return TileResult(data=out_d, weight=out_w, footprint=foot, bounds=bounds, step=plan.step,
                      max_error_px=plan.max_error_px)


def _exact_area(out_wcs, in_wcs, rows, cols):
    gy, gx = np.meshgrid(rows.astype(float), cols.astype(float), indexing="ij")
    h = 0.5
    ya, xa = exact_mapping(out_wcs, in_wcs, gy, gx + h)
    yb, xb = exact_mapping(out_wcs, in_wcs, gy, gx - h)
    yc, xc = exact_mapping(out_wcs, in_wcs, gy + h, gx)
    yd, xd = exact_mapping(out_wcs, in_wcs, gy - h, gx)
    return np.abs((xa - xb) * (yc - yd) - (xc - xd) * (ya - yb)) / (4 * h * h)


def _reproject_tile_exact(data, weight, in_wcs, origin, out_wcs, bounds, plan, conserve_flux):
    from reproject import reproject_exact

    oy, ox = origin
    ty0, ty1, tx0, tx1 = bounds
    wd, vw = _prepare_input(data, weight)
    cut_wcs = in_wcs[oy:oy + wd.shape[0], ox:ox + wd.shape[1]]
    tile_wcs = out_wcs[ty0:ty1, tx0:tx1]
    shape = (ty1 - ty0, tx1 - tx0)
    d, foot = reproject_exact((wd.astype(np.float64), cut_wcs), tile_wcs, shape_out=shape)
    wv, _ = reproject_exact((vw.astype(np.float64), cut_wcs), tile_wcs, shape_out=shape)
    inside = foot > 0
    good = inside & (wv > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        val = np.where(good, d / wv, np.nan)
    if conserve_flux:
        val = val * _exact_area(out_wcs, in_wcs, np.arange(ty0, ty1), np.arange(tx0, tx1))
    return TileResult(data=val.astype(np.float32), weight=np.where(good, wv, 0.0).astype(np.float32),
                      footprint=inside, bounds=bounds, step=plan.step, max_error_px=plan.max_error_px)


def reproject_array(data, weight, input_wcs, output_wcs, output_shape, *, method: str = "bilinear",
                    conserve_flux: bool = False, tolerance_px: float = DEFAULT_TOLERANCE_PX) -> TileResult:
    """Whole-frame reprojection: the single tile covering ``output_shape`` from the whole frame."""
    ny, nx = (int(v) for v in output_shape)
    if ny < 1 or nx < 1:
        raise ValueError(f"output_shape must be positive, got {output_shape!r}")
    return reproject_tile(data, weight, input_wcs, (0, 0), output_wcs, (0, ny, 0, nx), method=method,
                          conserve_flux=conserve_flux, tolerance_px=tolerance_px)
