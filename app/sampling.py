"""Weight-renormalised bilinear sampling of an input cutout in output blocks (the inner loop of
:func:`app.reproject_kernel.reproject_tile`; see its module docstring for the rule and why tiles
equal whole frames bit for bit).

Given input-frame coordinates (yin, xin) of a block of output pixels, :func:`sample_block` fills
the block's value, weight and footprint. Everything is elementwise numpy in reused buffers.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["BLOCK_PIXELS", "Planes", "Work", "block_shape", "lerp2", "sample_block"]

BLOCK_PIXELS = 32768  # output pixels per processing block (its float64 buffers stay in L2 cache)
STAGGER = 1344  # bytes between the page offsets of successive work buffers (a multiple of 64)
COARSE = 64  # input pixels per side of a cell of the "weight is not exactly 1" map


class Planes:
    """The cutout as flattened float32 planes of w*d and w (invalid pixels 0) with a 1 px zero border.

    ``coarse`` marks the 64 x 64 input cells holding any pixel whose weight is not exactly 1 (None:
    no such pixel). An output block whose samples all fall on weight-1 pixels takes the fast path
    in :func:`sample_block`, which skips the weight plane: there the weight-plane interpolation
    would give exactly 1.0, so the result is bit for bit the same either way.
    """

    def __init__(self, data, weight):
        data = np.asarray(data)
        if data.ndim != 2:
            raise ValueError(f"input data must be 2-D, got shape {data.shape}")
        h, w = data.shape
        self.h, self.w, self.width = h, w, w + 2
        pd_full = np.zeros((h + 2, w + 2), dtype=np.float32)
        # unit weights: a uint8 plane of 0/1 (a quarter of the memory to touch); exactly the same
        # weights as a float32 plane once converted (see lerp2)
        pw_full = np.zeros((h + 2, w + 2), dtype=np.uint8 if weight is None else np.float32)
        pd, pw = pd_full[1:-1, 1:-1], pw_full[1:-1, 1:-1]
        if weight is None:
            np.copyto(pd, data, casting="unsafe")  # = data * 1.0, bit for bit
            pw[...] = 1
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
        nonunit = bad if weight is None else pw != 1.0
        self.coarse = None
        if nonunit.any():
            starts_y, starts_x = np.arange(0, h, COARSE), np.arange(0, w, COARSE)
            self.coarse = np.logical_or.reduceat(np.logical_or.reduceat(nonunit, starts_y, axis=0), starts_x, axis=1)
        self.pd, self.pw = pd_full.reshape(-1), pw_full.reshape(-1)

    def unit_weight(self, r0: int, r1: int, c0: int, c1: int) -> bool:
        """True if all cutout pixels r0..r1 x c0..c1 (inclusive) exist and have weight exactly 1."""
        if r0 < 0 or c0 < 0 or r1 >= self.h or c1 >= self.w:
            return False
        if self.coarse is None:
            return True
        return not self.coarse[r0 // COARSE : r1 // COARSE + 1, c0 // COARSE : c1 // COARSE + 1].any()


class Work:
    """Reusable per-block buffers (no allocation, and no fresh pages, inside the block loop).

    Buffers start at staggered offsets modulo 4 KiB: large allocations are page aligned, and
    arrays streamed together whose addresses agree in their low 12 bits stall on "4K aliasing"
    (a load is held up by an unrelated store to the same page offset), which made the in-place
    block arithmetic 2-3x slower.
    """

    def __init__(self, n: int):
        self.n = n
        self._bufs = {}
        self._views = {}

    def get(self, name: str, dtype, shape) -> np.ndarray:
        view = self._views.get((name, shape))
        if view is not None:
            return view
        buf = self._bufs.get(name)
        if buf is None:
            dtype = np.dtype(dtype)
            offset = (len(self._bufs) * STAGGER) % 4096
            raw = np.empty(self.n * dtype.itemsize + 4096 + 64, dtype=np.uint8)
            start = offset - raw.ctypes.data % 4096
            start += 4096 if start < 0 else 0
            buf = self._bufs[name] = raw[start : start + self.n * dtype.itemsize].view(dtype)
        view = self._views[(name, shape)] = buf[: shape[0] * shape[1]].reshape(shape)
        return view


def lerp2(plane, width, idx, fy, fx, out, work):
    """Bilinear interpolation of a padded plane: two lerps along x, one along y (float32).

    ``idx`` is the flat index of each sample's lower-left neighbour; the weights depend only on the
    fractional coordinates (fy, fx), so shifting the cutout origin changes no bit of the result.
    """
    shape = idx.shape
    a, b, c = (work.get(n, np.float32, shape) for n in ("lerp_a", "lerp_b", "lerp_c"))

    def take(offset, out):  # indices are valid: mode "clip" only avoids a buffered copy
        if plane.dtype == np.float32:
            plane[offset:].take(idx, out=out, mode="clip")
        else:  # 0/1 uint8 weights
            np.copyto(out, plane[offset:].take(idx, out=work.get("take_u8", plane.dtype, shape), mode="clip"))

    take(0, a)
    take(1, b)
    b -= a
    b *= fx
    b += a  # lower row
    take(width, a)
    take(width + 1, c)
    c -= a
    c *= fx
    c += a  # upper row
    c -= b
    c *= fy
    return np.add(b, c, out=out)


def sample_block(planes, origin, yin, xin, area, out_d, out_w, foot, work):
    """Weight-renormalised bilinear samples at input-frame coordinates (yin, xin); fills the outputs.

    ``yin`` and ``xin`` are used as scratch space (overwritten).
    """
    oy, ox = origin
    ylo, yhi, xlo, xhi = oy - 0.5, oy + planes.h - 0.5, ox - 0.5, ox + planes.w - 0.5
    ymin, ymax, xmin, xmax = float(yin.min()), float(yin.max()), float(xin.min()), float(xin.max())
    inside = None  # None: every pixel of the block is inside the footprint
    if not (ymin >= ylo and ymax <= yhi and xmin >= xlo and xmax <= xhi):  # (NaN compares False)
        if ymax < ylo or ymin > yhi or xmax < xlo or xmin > xhi:
            inside = np.zeros(yin.shape, dtype=bool)
        else:
            inside = (yin >= ylo) & (yin <= yhi) & (xin >= xlo) & (xin <= xhi)
        if not inside.any():
            out_d.fill(np.nan)
            out_w.fill(0.0)
            foot.fill(False)
            return
        yin = np.where(inside, yin, float(oy))  # outside pixels: any valid position
        xin = np.where(inside, xin, float(ox))
    shape = yin.shape
    # few live buffers, so the block's working set stays in cache: once their fractions are taken,
    # the coordinate arrays are reused for the x floor and the flat index (callers pass scratch)
    if not (yin.flags.c_contiguous and xin.flags.c_contiguous and yin.dtype == xin.dtype == np.float64):
        yin, xin = np.array(yin, dtype=np.float64), np.array(xin, dtype=np.float64)
    iy = np.floor(yin, out=work.get("iy", np.float64, shape))
    fy = np.subtract(yin, iy, out=work.get("fy", np.float32, shape), casting="same_kind")
    ix = np.floor(xin, out=yin)  # yin is no longer needed
    fx = np.subtract(xin, ix, out=work.get("fx", np.float32, shape), casting="same_kind")
    width = planes.width
    iy *= width
    iy += ix  # exact: integers far below 2**53
    idx = np.add(iy, (1 - oy) * width + (1 - ox), out=xin.view(np.int64), casting="unsafe")
    if inside is None and planes.unit_weight(math.floor(ymin) - oy, math.floor(ymax) + 1 - oy,
                                             math.floor(xmin) - ox, math.floor(xmax) + 1 - ox):
        lerp2(planes.pd, width, idx, fy, fx, out_d, work)  # = sd / sw with sw == 1.0 exactly
        out_w.fill(1.0)
        foot.fill(True)
    else:
        sd = lerp2(planes.pd, width, idx, fy, fx, work.get("sd", np.float32, shape), work)
        sw = lerp2(planes.pw, width, idx, fy, fx, work.get("sw", np.float32, shape), work)
        good = sw > 0
        if inside is not None:
            good &= inside
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(sd, sw, out=out_d)
        np.copyto(out_d, np.float32(np.nan), where=~good)
        np.multiply(sw, good, out=out_w)
        if inside is None:
            foot.fill(True)
        else:
            foot[...] = inside
    if area is not None:
        out_d *= area


def block_shape(step: int) -> tuple[int, int]:
    """(rows, cols) of an output block; rows divide ``step``, so a block never straddles a node row."""
    rows = min(step, 32) if step > 1 else 32
    return rows, max(64, BLOCK_PIXELS // rows)
