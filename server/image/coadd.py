"""Streaming SNR^2-weighted, median/MAD sigma-clipped co-addition of reprojected frames.

Inputs are frames already on one output grid (same shape, same WCS), in one common flux unit
(:mod:`server.image.normalise`), each with a weight map whose values are the per-pixel weights
``w_i = SNR_i^2`` (0 = masked: NaN, saturated, off-frame or bad pixels).

Rule, per output pixel, over the frames with finite data and weight > 0:

1. **Clipping** (``max_iters`` rounds, stopping early for pixels where nothing changes): centre
   ``med`` = median of the surviving values; residuals normalised by each frame's noise,
   ``z_i = |d_i - med| * sqrt(w_i)`` (``w = SNR^2 = 1/sigma_i^2`` in the common unit); scale
   ``s = max(1.4826 * MAD(z), 1)`` over the survivors; survivors are those with
   ``|d_i - med| <= k s sigma_i + a |med|`` (``k = clip_sigma``, ``a = clip_ampfrac`` = 0.3, as
   SWarp's CLIP_AMPFRAC after Gruen et al. 2014: frames with sharper or softer PSFs differ at
   bright star cores by much more than the noise, and clipping them biased star fluxes by 1-2 %).
   Why normalised residuals: a plain MAD clip over frames whose noise differs (here 5x) keeps
   rejecting the good frames' values and raised the stack noise by 8 % in our tests. Why the
   floor at 1 (the frames' own noise): the MAD of a few values is itself noisy (about +-25 % at
   N = 16), and clipping below the known noise threw away 1.7-2.6 % of pure-noise values and
   raised the stack noise by 8-10 %. Star cores, whose scatter exceeds the sky noise (Poisson,
   PSF differences), raise the MAD above 1 and are not clipped.
   Median/MAD, not mean/std: a mean/std clip cannot reject a single outlier when N < 11
   (max z = (N-1)/sqrt(N)), while a median/MAD clip rejects it from N = 3 on. N = 1 and 2 keep all.
2. **Combination**: ``stack = sum(w d) / sum(w)`` over survivors, ``uncertainty = 1 / sqrt(sum w)``
   (exact for inverse-variance weights), ``coverage`` = number of survivors. Pixels without any
   survivor are NaN in the stack and uncertainty and 0 in the coverage.

Streaming: the frames are read row-chunk by row-chunk with plain seek/readinto (no memory map,
so resident memory stays bounded), chunk height chosen from ``memory_limit_bytes``. Every pixel is
computed independently, so the result does not depend on the chunking at all (tested bitwise).

Speed (``python -m benchmarks.bench_coadd``; see docs/image_back.md): each frame's chunk rows
are read contiguously into a frame-major buffer and byte-swapped in place; inner blocks of
pixels are transposed to pixel-major float32 in cache; a value that is not a member (invalid or
clipped) is NaN in the working data, so one numpy sort per round (NaN last) gives every median;
the MAD (a second sort) is computed only for pixels where some value exceeds ``k`` (elsewhere
nothing can be rejected, since ``s >= 1``). After a round only the pixels whose survivors
changed can change again, and of those, pixels where a bound on the next median shows that
the next round cannot reject anything are final at once (:func:`_settled`); the rest are
queued and their later rounds run together. Sums are accumulated in float64 per pixel, so no
result depends on the chunk height or the blocking.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from server.image.fitsimage import write_fits_atomic

__all__ = ["ChunkPlan", "CoaddArrays", "co_add", "coAdd", "combine_stack", "plan_chunks"]

MAD_TO_SIGMA = 1.4826
#: tolerance for PSF differences at bright sources (SWarp's CLIP_AMPFRAC; Gruen et al. 2014)
DEFAULT_AMPFRAC = 0.3
DEFAULT_MEMORY_LIMIT = 512 * 1024**2
#: bytes per frame per pixel of a chunk: the frame-major data and weight buffers (float32). The
#: clipping itself runs on inner blocks of ``_INNER_VALUES`` values (work arrays of ~40 bytes
#: per value: 8-16 MB, independent of the chunk).
BYTES_PER_FRAME_PIXEL = 8
#: bytes per pixel of a chunk independent of N (inner-block results before they are stored)
BYTES_PER_PIXEL = 16
# (the outputs - stack, uncertainty float32, coverage int16 - are held for the whole grid: 10 B/pixel)

_WCS_KEYS = ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1",
             "CD2_2", "PC1_1", "PC1_2", "PC2_1", "PC2_2", "CDELT1", "CDELT2", "RADESYS", "EQUINOX")


@dataclass(frozen=True)
class ChunkPlan:
    n_frames: int
    shape: tuple[int, int]
    chunk_rows: int
    n_chunks: int
    bytes_per_row: int  # working memory estimate for one output row of a chunk
    working_bytes: int  # chunk_rows * bytes_per_row: the bound the plan keeps to


@dataclass(frozen=True)
class CoaddArrays:
    stack: np.ndarray  # float32, NaN where coverage == 0
    uncertainty: np.ndarray  # float32, 1/sqrt(sum w); NaN where coverage == 0
    coverage: np.ndarray  # int16, frames contributing
    n_rejected: int  # valid values rejected by clipping


def plan_chunks(n_frames: int, shape, *, memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT,
                chunk_rows: int | None = None) -> ChunkPlan:
    """Rows per chunk so the working memory stays under ``memory_limit_bytes`` (at least 1 row)."""
    ny, nx = (int(v) for v in shape)
    if n_frames < 1:
        raise ValueError(f"need at least one frame, got n_frames={n_frames!r}")
    if ny < 1 or nx < 1:
        raise ValueError(f"shape must be positive, got {shape!r}")
    bytes_per_row = nx * (BYTES_PER_FRAME_PIXEL * n_frames + BYTES_PER_PIXEL)
    if chunk_rows is None:
        if memory_limit_bytes <= 0:
            raise ValueError(f"memory_limit_bytes must be > 0, got {memory_limit_bytes!r}")
        chunk_rows = max(1, int(memory_limit_bytes // bytes_per_row))
    elif chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows!r}")
    chunk_rows = min(int(chunk_rows), ny)
    n_chunks = -(-ny // chunk_rows)
    return ChunkPlan(n_frames=n_frames, shape=(ny, nx), chunk_rows=chunk_rows, n_chunks=n_chunks,
                     bytes_per_row=bytes_per_row, working_bytes=chunk_rows * bytes_per_row)


# --------------------------------------------------------------------------- the combination
# Inside a block, values are pixel-major (P pixels, N frames; frames along the contiguous axis)
# and a value that is not (or no longer) a member - invalid or clipped - is NaN in the working
# copy of the data: np.sort puts NaN last, so the members of a row are its first m sorted values,
# and every residual computed from a non-member is NaN, which no comparison selects.
_ONES = np.ones(1 << 12, np.float32)


def _row_counts(mask: np.ndarray) -> np.ndarray:
    """True values per row of a (P, N) bool array (float32 BLAS product: exact for N < 2**24)."""
    n = mask.shape[1]
    ones = _ONES[:n] if n <= _ONES.size else np.ones(n, np.float32)
    return (mask.astype(np.float32) @ ones).astype(np.int32)


def _sorted_median(s, m):
    """Median of the first ``m`` values of each row of the row-sorted (P, N) array ``s`` (float64)."""
    P, N = s.shape
    flat = s.ravel()
    base = np.arange(0, P * N, N, dtype=np.int64)
    lo = np.maximum(m - 1, 0) // 2
    hi = np.minimum(m // 2, N - 1)
    return 0.5 * (flat.take(base + lo).astype(np.float64) + flat.take(base + hi).astype(np.float64))


class _Scratch:
    """Reusable (rows, N) work arrays, grown on demand (allocating per block costs page faults)."""

    def __init__(self, n):
        self.n, self.rows, self.arrays = n, 0, {}

    def get(self, rows, *specs):
        if rows > self.rows:
            self.rows, self.arrays = max(rows, 2 * self.rows), {}
        out = []
        for name, dtype in specs:
            if name not in self.arrays:
                self.arrays[name] = np.empty((self.rows, self.n), dtype)
            out.append(self.arrays[name][:rows])
        return out


def _clip_rounds(d, sqw, m, act, n_rounds, clip_sigma, ampfrac, scratch):
    """Up to ``n_rounds`` median/MAD clipping rounds on rows ``act`` of ``d`` (P, N), in place.

    ``d`` holds NaN for every non-member and clipped values become NaN; ``sqw`` = sqrt(w); ``m``
    = members per row, updated. A round revisits only the rows that lost a value in the previous
    one (a row whose members did not change would reproduce them); while most rows are active
    the whole array is processed in place instead, which gives the same result without
    gather/scatter copies. Returns the rows that lost a value in the last round and still have
    more than 2 members: the only rows another round can change.
    """
    P = d.shape[0]
    kf = np.float32(clip_sigma)
    af = np.float32(ampfrac)
    for _ in range(n_rounds):
        if act.size == 0:
            break
        if act.size > P // 2:
            act_rows, dd, ww, mm = None, d, sqw, m
        else:
            act_rows, dd, ww, mm = act, d[act], sqw[act], m[act]
        s, z, u, over = scratch.get(dd.shape[0], ("s", np.float32), ("z", np.float32), ("u", np.float32),
                                    ("over", bool))
        np.copyto(s, dd)
        s.sort(axis=1)
        med32 = _sorted_median(s, mm).astype(np.float32)[:, None]
        np.subtract(dd, med32, out=z)
        np.abs(z, out=z)
        z *= ww
        # u = z - a|med| sqrt(w): a value is kept when u <= k s, and s >= 1 (the floor)
        if ampfrac > 0:
            np.multiply(ww, af * np.abs(med32), out=u)
            np.subtract(z, u, out=u)
        else:
            np.copyto(u, z)
        # only rows where some member has u > k can lose a value (non-members have u = NaN)
        np.greater(u, kf, out=over)
        cand = np.flatnonzero(_row_counts(over))
        if cand.size == 0:
            return cand
        zc = z[cand]
        zc.sort(axis=1)
        mad = _sorted_median(zc, mm[cand])
        # never clip tighter than the frames' own noise (z = 1): w are inverse variances
        thr = (clip_sigma * np.maximum(MAD_TO_SIGMA * mad, 1.0)).astype(np.float32)[:, None]
        dc = dd[cand]
        reject = u[cand] <= thr
        np.logical_not(reject, out=reject)
        reject &= ~np.isnan(dc)  # members only
        n_out = _row_counts(reject)
        hit = n_out > 0
        rows, reject, dc = cand[hit], reject[hit], dc[hit]
        np.copyto(dc, np.float32(np.nan), where=reject)
        m_new = mm[rows] - n_out[hit]
        # rows the next round provably leaves alone are final now
        more = m_new > 2
        more &= ~_settled(s, rows, dc, ww[rows], m_new, n_out[hit], kf, af)
        if act_rows is not None:
            rows = act_rows[rows]
        d[rows] = dc
        m[rows] = m_new
        act = rows[more]
    return act


def _settled(s, loc, dv, sv, m, r, kf, af):
    """True for rows whose next clipping round cannot reject anything (so need not be run).

    ``s`` = this round's row-sorted values (members first), ``loc`` = the rows, ``dv``/``sv`` =
    their data (NaN for non-members) and sqrt(w) after this round, ``m`` = members left (> 2),
    ``r`` = values just removed. Removing r values moves each order statistic by at most r
    places (``s[j] <= s'[j] <= s[j + r]``), so the next median lies between the medians ``a``
    and ``b`` below, computed as :func:`_sorted_median` computes medians. Every float32 step of
    ``u`` is monotonic in the median, so ``u`` evaluated at the worse end of [a, b] for each
    value bounds the next round's ``u`` from above; a row where this bound is <= k for every
    member has no candidate in the next round (the threshold is >= k), exactly as if the
    round had been run.
    """
    N = s.shape[1]
    flat = s.ravel()
    base = loc.astype(np.int64) * N
    lo, hi = np.maximum(m - 1, 0) // 2, np.minimum(m // 2, N - 1)
    a = 0.5 * (flat.take(base + lo).astype(np.float64) + flat.take(base + hi).astype(np.float64))
    b = 0.5 * (flat.take(base + np.minimum(lo + r, N - 1)).astype(np.float64)
               + flat.take(base + np.minimum(hi + r, N - 1)).astype(np.float64))
    a32, b32 = a.astype(np.float32)[:, None], b.astype(np.float32)[:, None]
    z = np.subtract(dv, a32)
    np.abs(z, out=z)
    t = np.subtract(dv, b32)
    np.abs(t, out=t)
    np.maximum(z, t, out=z)
    z *= sv
    if af > 0:
        m_abs = np.minimum(np.abs(a32), np.abs(b32))
        m_abs[(a32 <= 0) & (b32 >= 0)] = 0
        np.multiply(sv, af * m_abs, out=t)
        z -= t
    # every value either passes or is a non-member (NaN data); a NaN bound for a member fails
    fail = z <= kf
    np.logical_not(fail, out=fail)
    return _row_counts(fail) == N - m


def _weighted_sums(d, w, c, scratch):
    """Stack and uncertainty of rows with survivors ``c``; ``d`` NaN for non-members (d, w modified)."""
    bad = np.isnan(d)
    if bad.any():
        np.copyto(w, np.float32(0), where=bad)
        np.copyto(d, np.float32(0), where=bad)
    # float64 sums; einsum's per-row loop does not depend on the number of rows (BLAS would), so
    # no result depends on the chunking
    (w64,) = scratch.get(d.shape[0], ("w64", np.float64))
    np.copyto(w64, w)
    sw = np.einsum("ij->i", w64)
    w *= d
    np.copyto(w64, w)
    swd = np.einsum("ij->i", w64)
    with np.errstate(divide="ignore"):
        return np.where(c > 0, swd / sw, np.nan), np.where(c > 0, 1.0 / np.sqrt(sw), np.nan)


#: values (pixels x frames) per inner block: large enough that each numpy call does real work
#: (the per-block cost of ~100 calls was 4 ns/value at 80k values), small enough for L2/L3 cache
_INNER_VALUES = 200_000


def _combine_frames(D, W, clip_sigma, max_iters, ampfrac):
    """Combine frame-major arrays D, W of shape (N, P): returns stack, unc, cov (P,), n_rejected.

    Each inner block of pixels is copied to a contiguous frame-major float32 scratch array and
    transposed to pixel-major in cache (a direct strided transposition out of a large buffer was
    5x slower), so any dtype, byte order and strides are accepted. The first clipping round runs
    on the whole block; the few pixels that lost a value are queued and their later rounds run
    together once a block's worth has gathered (each numpy call then does enough work).
    """
    N, P = D.shape
    stack = np.empty(P, np.float32)
    unc = np.empty(P, np.float32)
    cov = np.empty(P, np.int16)
    nrej = 0
    step = max(1, min(P, _INNER_VALUES // N))
    nan, zero = np.float32(np.nan), np.float32(0)
    # frame-major copy of a block; its row stride is an odd number of cache lines, so that the
    # transposition (reading one value from each of N rows) does not keep hitting the same cache sets
    lines = -(-step // 16) | 1
    fm = np.empty((N, lines * 16), np.float32)
    scratch = _Scratch(N)
    queue, queued = [], 0  # (pixel index, d, w, sqrt w, members) of rows needing further rounds

    def flush():
        nonlocal nrej, queue, queued
        idx, d, w, sqw, m = (np.concatenate(a) for a in zip(*queue))
        queue, queued = [], 0
        m0 = int(m.sum())
        _clip_rounds(d, sqw, m, np.arange(m.size), max_iters - 1, clip_sigma, ampfrac, scratch)
        stack[idx], unc[idx] = _weighted_sums(d, w, m, scratch)
        cov[idx] = m
        nrej += m0 - int(m.sum())

    with np.errstate(invalid="ignore"):  # NaN data and weights, sqrt of negative weights
        for p0 in range(0, P, step):
            p1 = min(p0 + step, P)
            p = p1 - p0
            d, w, sqw, bad, tmp = scratch.get(p, ("d", np.float32), ("w", np.float32), ("sqw", np.float32),
                                              ("bad", bool), ("tmp", bool))
            np.copyto(fm[:, :p], D[:, p0:p1], casting="unsafe")
            np.copyto(d, fm[:, :p].T)
            np.copyto(fm[:, :p], W[:, p0:p1], casting="unsafe")
            np.copyto(w, fm[:, :p].T)
            # members: finite data with finite weight > 0; d is NaN for every non-member from here on
            np.greater(w, 0, out=bad)
            np.less(w, np.inf, out=tmp)
            bad &= tmp
            np.isfinite(d, out=tmp)
            bad &= tmp
            np.logical_not(bad, out=bad)
            if bad.any():
                np.copyto(d, nan, where=bad)
                np.copyto(w, zero, where=bad)
                count = N - _row_counts(bad)
            else:
                count = np.full(p, N, np.int32)
            n_valid = int(count.sum())
            np.sqrt(w, out=sqw)
            act = np.flatnonzero(count > 2)  # 0, 1 or 2 values: nothing can be rejected
            more = _clip_rounds(d, sqw, count, act, min(max_iters, 1), clip_sigma, ampfrac, scratch)
            if max_iters > 1 and more.size:
                queue.append((p0 + more, d[more], w[more], sqw[more], count[more]))
                queued += more.size
            stack[p0:p1], unc[p0:p1] = _weighted_sums(d, w, count, scratch)  # queued rows: redone later
            cov[p0:p1] = count
            nrej += n_valid - int(count.sum())
            if queued >= step:
                flush()
        if queued:
            flush()
    return stack, unc, cov, nrej


def combine_stack(data: np.ndarray, weight: np.ndarray, *, clip_sigma: float = 3.0,
                  max_iters: int = 3, clip_ampfrac: float = DEFAULT_AMPFRAC) -> CoaddArrays:
    """Combine an in-memory stack ``data``/``weight`` of shape (N, ny, nx) (the reference path)."""
    data = np.asarray(data)
    weight = np.asarray(weight)
    if data.ndim != 3 or weight.shape != data.shape:
        raise ValueError(f"data and weight must be (N, ny, nx) of equal shape, got {data.shape} and {weight.shape}")
    _check_clip(clip_sigma, max_iters, clip_ampfrac)
    N, ny, nx = data.shape
    stack, unc, cov, nrej = _combine_frames(data.reshape(N, -1), weight.reshape(N, -1), float(clip_sigma),
                                            int(max_iters), float(clip_ampfrac))
    return CoaddArrays(stack=stack.reshape(ny, nx), uncertainty=unc.reshape(ny, nx), coverage=cov.reshape(ny, nx),
                       n_rejected=nrej)


def _check_clip(clip_sigma, max_iters, ampfrac):
    if not (np.isfinite(ampfrac) and ampfrac >= 0):
        raise ValueError(f"clip_ampfrac must be a finite number >= 0, got {ampfrac!r}")
    if not (np.isfinite(clip_sigma) and clip_sigma > 0):
        raise ValueError(f"clip_sigma must be a positive number, got {clip_sigma!r}")
    if int(max_iters) != max_iters or max_iters < 0:
        raise ValueError(f"max_iters must be a non-negative integer, got {max_iters!r}")


# ------------------------------------------------------------------------------------- I/O
class _RowReader:
    """Reads row ranges of a 2-D float FITS primary image with seek + readinto (no memmap)."""

    def __init__(self, path, stack: ExitStack):
        self.path = str(path)
        with fits.open(self.path, memmap=False, lazy_load_hdus=True) as hdul:
            hdu = hdul[0]
            hdr = hdu.header
            if hdr.get("NAXIS") != 2:
                raise ValueError(f"{self.path}: expected a 2-D primary image, NAXIS={hdr.get('NAXIS')!r}")
            if hdr.get("BITPIX") not in (-32, -64):
                raise ValueError(f"{self.path}: expected a float image (BITPIX -32/-64), BITPIX={hdr.get('BITPIX')!r}")
            if hdr.get("BSCALE", 1) != 1 or hdr.get("BZERO", 0) != 0:
                raise ValueError(f"{self.path}: scaled images (BSCALE/BZERO) are not supported")
            self.header = hdr.copy()
            self.offset = hdul.fileinfo(0)["datLoc"]
        self.shape = (int(self.header["NAXIS2"]), int(self.header["NAXIS1"]))
        self.dtype = np.dtype(">f4" if self.header["BITPIX"] == -32 else ">f8")
        self.fh = stack.enter_context(open(self.path, "rb"))

    def read(self, r0: int, r1: int, out: np.ndarray) -> None:
        """Rows ``r0:r1`` into ``out``, a C-contiguous native float32 array of r1 - r0 rows."""
        direct = self.dtype.itemsize == 4  # big-endian float32 bytes go straight into ``out``
        buf = out if direct else np.empty((r1 - r0, self.shape[1]), dtype=self.dtype)
        self.fh.seek(self.offset + r0 * self.shape[1] * self.dtype.itemsize)
        n = self.fh.readinto(memoryview(buf).cast("B"))
        if n != buf.nbytes:
            raise ValueError(f"{self.path}: truncated image data (rows {r0}:{r1})")
        if not direct:
            out[...] = buf
        elif np.little_endian:
            out.byteswap(inplace=True)


def _wcs_signature(hdr):
    return {k: hdr[k] for k in _WCS_KEYS if k in hdr}


def _same_grid(a, b) -> bool:
    if set(a) != set(b):
        return False
    for k, v in a.items():
        w = b[k]
        if isinstance(v, str) or isinstance(w, str):
            if str(v).strip() != str(w).strip():
                return False
        elif not np.isclose(float(v), float(w), rtol=1e-9, atol=1e-12):
            return False
    return True


def co_add(reprojected_paths: list, weight_paths: list, *, out_dir=None, name: str = "stack",
           clip_sigma: float = 3.0, max_iters: int = 3, clip_ampfrac: float = DEFAULT_AMPFRAC,
           chunk_rows: int | None = None,
           memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT) -> dict:
    """Co-add reprojected frames (FITS on one grid) with their weight maps; streaming by row chunks.

    Returns ``stacked_path``, ``uncertainty_path``, ``coverage_path`` and statistics
    (``n_frames``, ``shape``, ``chunk_rows``, ``n_chunks``, ``working_bytes``, ``n_rejected``,
    ``n_covered``, ``seconds``). Output FITS carry the input grid's WCS and provenance cards.
    """
    paths = [str(p) for p in reprojected_paths]
    wpaths = [str(p) for p in weight_paths]
    if not paths:
        raise ValueError("co_add needs at least one reprojected frame, got an empty list")
    if len(wpaths) != len(paths):
        raise ValueError(f"{len(paths)} frames but {len(wpaths)} weight maps")
    _check_clip(clip_sigma, max_iters, clip_ampfrac)
    out = Path(out_dir) if out_dir is not None else Path(paths[0]).parent
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with ExitStack() as es:
        frames = [_RowReader(p, es) for p in paths]
        weights = [_RowReader(p, es) for p in wpaths]
        ref = frames[0]
        ref_wcs = _wcs_signature(ref.header)
        if "CTYPE1" not in ref_wcs:
            raise ValueError(f"{ref.path}: no WCS in the header; co_add needs reprojected frames")
        for r in frames[1:] + weights:
            if r.shape != ref.shape:
                raise ValueError(f"{r.path}: shape {r.shape} differs from {ref.path} shape {ref.shape}")
        for r in frames[1:]:
            if not _same_grid(_wcs_signature(r.header), ref_wcs):
                raise ValueError(f"{r.path}: WCS differs from {ref.path}; reproject all frames onto one grid first")
        plan = plan_chunks(len(frames), ref.shape, memory_limit_bytes=memory_limit_bytes, chunk_rows=chunk_rows)
        ny, nx = ref.shape
        stack = np.empty((ny, nx), np.float32)
        unc = np.empty((ny, nx), np.float32)
        cov = np.empty((ny, nx), np.int16)
        n_rej = 0
        N = len(frames)
        Dbuf = np.empty((N, plan.chunk_rows * nx), np.float32)  # frame-major: contiguous reads
        Wbuf = np.empty_like(Dbuf)
        for r0 in range(0, ny, plan.chunk_rows):
            r1 = min(r0 + plan.chunk_rows, ny)
            P = (r1 - r0) * nx
            Df, Wf = Dbuf[:, :P], Wbuf[:, :P]
            for i, (fr, wr) in enumerate(zip(frames, weights)):
                fr.read(r0, r1, Df[i].reshape(r1 - r0, nx))
                wr.read(r0, r1, Wf[i].reshape(r1 - r0, nx))
            s_, u_, c_, nr = _combine_frames(Df, Wf, float(clip_sigma), int(max_iters), float(clip_ampfrac))
            stack[r0:r1], unc[r0:r1], cov[r0:r1] = (v.reshape(r1 - r0, nx) for v in (s_, u_, c_))
            n_rej += nr
        hdr = fits.Header()
        for k, v in ref_wcs.items():
            hdr[k] = v
    hdr["BUNIT"] = (ref.header.get("BUNIT", "common flux"), "see docs/image_back.md")
    hdr["COMBINE"] = ("SNR2-weighted mean", "w_i = SNR_i^2 per pixel (weight maps)")
    hdr["CLIPMETH"] = ("median/MAD", "keep |d - median| <= k * 1.4826 MAD")
    hdr["CLIPSIG"] = (float(clip_sigma), "clipping k")
    hdr["CLIPITER"] = (int(max_iters), "maximum clipping rounds")
    hdr["CLIPAMPF"] = (float(clip_ampfrac), "extra tolerance, fraction of |median|")
    hdr["NINPUT"] = (len(paths), "number of input frames")
    hdr["NREJECT"] = (n_rej, "valid values rejected by clipping")
    for i, (p, wp) in enumerate(zip(paths, wpaths)):
        hdr[f"INP{i:05d}"] = os.path.basename(p)[:68]
        hdr[f"WGT{i:05d}"] = os.path.basename(wp)[:68]
    hdr.add_history("openastro co_add: streaming median/MAD clip, SNR^2-weighted mean")
    outputs = {}
    for key, arr, what in (("stacked_path", stack, "stack"), ("uncertainty_path", unc, "1/sqrt(sum w)"),
                           ("coverage_path", cov, "frames contributing")):
        suffix = {"stacked_path": "", "uncertainty_path": "_unc", "coverage_path": "_cov"}[key]
        path = out / f"{name}{suffix}.fits"
        h = hdr.copy()
        h["PRODUCT"] = (what, "content of this image")
        write_fits_atomic(path, arr, h)
        outputs[key] = str(path)
    return {**outputs, "n_frames": len(paths), "shape": (ny, nx), **{k: v for k, v in asdict(plan).items()
            if k in ("chunk_rows", "n_chunks", "working_bytes")}, "n_rejected": n_rej,
            "n_covered": int((cov > 0).sum()), "seconds": time.perf_counter() - t0}


coAdd = co_add  # the seed's name
