"""Fast reprojection of one image (or one output tile) onto a reference WCS grid.

Runs on volunteers' machines (frozen): imports numpy only. TAN and TAN-SIP headers (nearly every
plate-solved frame, and our output grids) are mapped by :mod:`app.tanwcs`; astropy.wcs is imported
only for other projections, for WCS objects passed in, for pairs in different celestial frames,
and ``reproject`` only for ``method="exact"``.

How it works
------------
1. **Mapping.** For every output pixel we need the input pixel it falls on. The exact answer is
   ``input_wcs.world_to_pixel(output_wcs.pixel_to_world(x, y))``, which is what costs
   ``reproject_interp`` most of its time. We evaluate it exactly only on a coarse grid of *nodes*
   every ``step`` output pixels and interpolate between nodes with a separable 4-point cubic
   Lagrange interpolant (exact for cubic polynomials, local: a pixel depends on its 4 x 4
   surrounding nodes only). Separable evaluation: along x once per node row (one row in
   ``step``), then along y per output row as a cubic in Horner form, 6 float64 operations per
   pixel and coordinate.
2. **Error bound.** :func:`plan_mapping` checks the interpolant against the exact transform at all
   half-step points (cell centres and edge midpoints; at least every 16 output px) that land on
   the input frame, starting from ``step = 64`` and halving until the largest error is
   ``<= tolerance_px`` (default **0.01 px**). If even ``step = 4`` fails, the exact per-pixel transform is used (``step = 1``).
3. **Sampling.** Bilinear, our own vectorised gather from w*d and w planes, in output blocks of
   32 rows x 1024 columns (reused buffers that stay in cache), of the data *and* of the weight map.
   Input pixels that are NaN, non-finite or have weight <= 0 are *invalid* and count as weight 0.
   We use a **weight-renormalised bilinear** rule: with bilinear coefficients c_k and input weights w_k of the four neighbours, the output value is ``sum(c_k w_k d_k) / sum(c_k w_k)``
   and the output weight is ``sum(c_k w_k)``, both evaluated as two lerps along x and one along y
   in float32. With a uniform weight map this is plain bilinear interpolation (what
   ``reproject_interp`` does); next to masked pixels and frame edges the value comes from the
   valid neighbours only and the weight falls smoothly to 0. If all four neighbours are invalid
   the output is NaN with weight 0. A block whose samples all fall on weight-1 pixels skips the
   weight plane: its lerps would give exactly 1.0, so the result is the same bit for bit.
4. **Footprint.** An output pixel is in the footprint when its centre maps inside the input frame
   (``-0.5 <= x <= nx - 0.5``). Outside the footprint data are NaN and weights 0.

Every step is elementwise IEEE arithmetic in numpy (no BLAS, whose kernels and FMA use differ
between CPUs), so results are the same on every machine.

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
**bitwise identical** to the same pixels of the whole-frame result. Which implementation maps a
pair (app.tanwcs or astropy) depends only on the header contents (WCS objects always take the
astropy path), so pass header cards on both sides, as the server and the work generator do.

``cutout_wcs_header`` in :func:`reproject_tile` is the WCS of the *full input frame* the cutout was
cut from (not re-centred); ``cutout_origin`` says where the cutout's pixel (0, 0) sits in that frame.

``method="exact"`` uses ``reproject.reproject_exact`` (spherical-polygon overlap, flux conserving
in the drizzle sense); tiles then agree with whole frames to ~1e-6 relative, not bitwise.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import numpy as np

from app.sampling import Planes, Work, block_shape, sample_block
from app.tanwcs import TanSip, tan_sip_from_cards

if TYPE_CHECKING:
    from astropy.io import fits
    from astropy.wcs import WCS

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
_MAP_CHUNK = 8192  # points per chunk of the exact (numpy) mapping
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
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

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


def _mappers(output_wcs, input_wcs):
    """The pair as :class:`app.tanwcs.TanSip` when both are TAN(-SIP) headers it models in the same
    celestial frame (no astropy import at all), else as astropy WCS objects (wcslib).

    The choice depends only on the header contents, so a tile (headers from a work unit) and the
    whole frame (headers from the server) always use the same implementation. WCS objects always
    take the astropy path.
    """
    def tan(h):
        if isinstance(h, TanSip):
            return h
        if hasattr(h, "keys") and hasattr(h, "get") and not hasattr(h, "wcs"):  # dict or FITS Header
            return tan_sip_from_cards(h)
        return None

    out_t, in_t = tan(output_wcs), tan(input_wcs)
    if out_t is not None and in_t is not None and out_t.frame == in_t.frame:
        return out_t, in_t
    if isinstance(output_wcs, TanSip) or isinstance(input_wcs, TanSip):
        raise TypeError("TanSip mappings can only be paired with a TanSip mapping in the same frame")
    return as_wcs(output_wcs), as_wcs(input_wcs)


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


def exact_mapping(output_wcs, input_wcs, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact input pixel coordinates (yin, xin) of output pixel coordinates (y, x); 0-based."""
    y, x = np.broadcast_arrays(np.asarray(y, float), np.asarray(x, float))
    if isinstance(output_wcs, TanSip) and isinstance(input_wcs, TanSip):
        # in chunks: every point is independent, and small temporaries are recycled by the
        # allocator instead of faulting in fresh pages (a fresh process pays for every new page)
        xf, yf = x.ravel(), y.ravel()
        yin, xin = np.empty(xf.size), np.empty(xf.size)
        for i in range(0, xf.size, _MAP_CHUNK):
            sl = slice(i, i + _MAP_CHUNK)
            xin[sl], yin[sl] = input_wcs.world_to_pixel(*output_wcs.pixel_to_world(xf[sl], yf[sl]))
        return yin.reshape(y.shape), xin.reshape(y.shape)
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
def _cubic_coefficients(v0, v1, v2, v3):
    """Power-basis coefficients (c0, c1, c2, c3) of the cubic through (-1, v0), (0, v1), (1, v2), (2, v3)."""
    c2 = 0.5 * (v0 + v2) - v1
    c3 = (v3 - v0) / 6.0 + 0.5 * (v1 - v2)
    c1 = v2 - v1 - c2 - c3
    return v1, c1, c2, c3


def _horner(coeffs, t, out=None):
    """c0 + t (c1 + t (c2 + t c3)), broadcasting; the same operations in the same order everywhere."""
    c0, c1, c2, c3 = coeffs
    u = np.multiply(c3, t, out=out)
    u += c2
    u *= t
    u += c1
    u *= t
    u += c0
    return u


class _NodeGrid:
    """Exact mapping values at global nodes (multiples of ``step``) covering rows/cols of a region.

    Interpolation is separable and done in two passes: along x at every node row for the wanted
    columns (:meth:`along_x`, cheap: one row in ``step``), then along y for each output row
    (:meth:`along_y`). Within one node cell a row is 6 multiply-adds per pixel (a cubic in Horner
    form). Every value depends only on its global (row, col) and the node values, never on which
    other pixels are evaluated with it.
    """

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

    def _cell(self, coords, origin):
        """Index of the node at t = -1 (relative to ``origin``) and t = fraction of the cell (exact)."""
        cell = np.floor_divide(coords, self.step)
        return cell - 1 - origin, (coords - cell * self.step) / float(self.step)

    def along_x(self, field: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(node rows, cols): ``field`` interpolated along x at every node row."""
        lx, t = self._cell(np.asarray(cols, dtype=np.int64), self.ix0)
        return _horner(_cubic_coefficients(*(field[:, lx + m] for m in range(4))), t)

    @staticmethod
    def y_cubics(bx: np.ndarray):
        """Cubic coefficients along y of every node cell, from :meth:`along_x` output (4 arrays)."""
        return _cubic_coefficients(bx[:-3], bx[1:-2], bx[2:-1], bx[3:])

    def along_y(self, cubics, rows: np.ndarray) -> np.ndarray:
        """(rows, cols) from :meth:`y_cubics` output, for any global rows."""
        ly, s = self._cell(np.asarray(rows, dtype=np.int64), self.iy0)
        return _horner([c[ly] for c in cubics], s[:, None])

    def evaluate(self, field: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Interpolate a node field at the grid rows x cols (global integer output pixels)."""
        return self.along_y(self.y_cubics(self.along_x(field, cols)), rows)


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
    out_wcs, in_wcs = _mappers(output_wcs, input_wcs)
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
    out_wcs, in_wcs = _mappers(output_wcs, input_wcs)
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
    out_wcs, in_wcs = _mappers(output_wcs_header, cutout_wcs_header)
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
        return _reproject_tile_exact(cutout_data, cutout_weight, as_wcs(cutout_wcs_header), (oy, ox),
                                     as_wcs(output_wcs_header), bounds, plan, conserve_flux)

    H, W = ty1 - ty0, tx1 - tx0
    out_d = np.empty((H, W), dtype=np.float32)
    out_w = np.empty((H, W), dtype=np.float32)
    foot = np.empty((H, W), dtype=bool)
    planes = Planes(cutout_data, cutout_weight)
    cols = np.arange(tx0, tx1)
    nrows, ncols = block_shape(plan.step)
    work = Work(nrows * ncols)
    grid = None
    if plan.step > 1:
        grid = _NodeGrid(out_wcs, in_wcs, plan.step, ty0, ty1, tx0, tx1, with_jacobian=conserve_flux)
        # per field: cubic coefficients along y of every node cell, at every column of the tile
        fields = [grid.y_cubics(grid.along_x(f, cols))
                  for f in ((grid.yin, grid.xin, grid.area) if conserve_flux else (grid.yin, grid.xin))]
    r0 = ty0
    while r0 < ty1:
        r1 = min(ty1, (r0 // nrows + 1) * nrows)  # block edges at global multiples of nrows
        rows = np.arange(r0, r1)
        if grid is not None:
            s = ((rows - (r0 // plan.step) * plan.step) / float(plan.step))[:, None]  # exact
            cell = r0 // plan.step - 1 - grid.iy0  # the node cell holding this block (its node at t = -1)
            coeffs = [[c[cell] for c in cubics] for cubics in fields]
        for c0 in range(0, W, ncols):
            c1 = min(W, c0 + ncols)
            blk = (slice(r0 - ty0, r1 - ty0), slice(c0, c1))
            area = None
            if grid is not None:
                mapped = []
                for i, cf in enumerate(coeffs):
                    # a private copy of this block's coefficients: slices of the big coefficient
                    # arrays share page offsets with the output buffer (4K aliasing, 3x slower)
                    local = work.get(f"coef{i}", np.float64, (4, c1 - c0))
                    for n, c in enumerate(cf):
                        local[n] = c[c0:c1]
                    mapped.append(_horner(local, s, out=work.get(f"map{i}", np.float64, (rows.size, c1 - c0))))
                yin, xin = mapped[0], mapped[1]
                if conserve_flux:
                    area = mapped[2]
            else:
                gy, gx = np.meshgrid(rows.astype(float), cols[c0:c1].astype(float), indexing="ij")
                yin, xin = exact_mapping(out_wcs, in_wcs, gy, gx)
                if conserve_flux:
                    area = _exact_area(out_wcs, in_wcs, rows, cols[c0:c1])
            sample_block(planes, (oy, ox), yin, xin, area, out_d[blk], out_w[blk], foot[blk], work)
        r0 = r1
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
