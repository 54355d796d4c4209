"""Candidates in the ZOGY score image, their measurements and 63x63 cutout triplets.

Detection: ``sep.extract`` on S_corr (already the matched-filter output: no further filtering) at ``threshold``
(default 5 sigma) for positive candidates and on -S_corr for negative ones (sources that faded or vanished).
Each candidate's position is the score-weighted centroid of its pixels above threshold, its S/N the peak S_corr,
its flux the ZOGY PSF-fit flux alpha at the peak (common flux unit; mag = 25 - 2.5 log10(alpha) when positive).
Shape (FWHM, elongation, position angle) comes from Gaussian-weighted second moments of the difference image
around the candidate, with the weight (sigma of the difference PSF) deconvolved, so a point source reads the
difference PSF's FWHM and a cosmic ray or a dipole reads narrower or elongated.

Cutouts: ``CUTOUT_SIZE`` x ``CUTOUT_SIZE`` (63, the ZTF alert layout) centred on the candidate's nearest pixel,
NaN outside the image, stacked as (science, reference, difference) along the last axis: shape (N, 63, 63, 3)
float32, the input of ``server.transients.classify.score_triplets``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server.transients.psf import FWHM_PER_SIGMA, moments_fwhm
from server.transients.zogy import ZogyResult

CUTOUT_SIZE = 63
COMMON_ZERO_POINT = 25.0


@dataclass(frozen=True)
class Candidate:
    x: float  # 0-based pixel in the new frame
    y: float
    sign: int  # +1 brighter in the new frame, -1 fainter
    snr: float  # |peak S_corr|
    flux: float  # alpha at the peak [common flux unit], signed
    flux_err: float
    fwhm_px: float  # NaN when the moments do not converge
    elongation: float  # a / b >= 1
    theta_deg: float  # position angle of the major axis, from +x towards +y
    npix: int  # pixels above threshold
    ra_deg: float | None = None
    dec_deg: float | None = None

    @property
    def mag(self) -> float | None:
        """Magnitude of |flux| in the common system (difference magnitude), None if not a measurable flux."""
        f = abs(self.flux)
        return float(COMMON_ZERO_POINT - 2.5 * np.log10(f)) if f > 0 else None

    @property
    def mag_err(self) -> float | None:
        f = abs(self.flux)
        return float(1.0857362 * self.flux_err / f) if f > 0 else None


@dataclass(frozen=True)
class Detections:
    candidates: tuple[Candidate, ...]
    triplets: np.ndarray  # (N, 63, 63, 3) float32: science, reference, difference


def cutout(image: np.ndarray, x: float, y: float, size: int = CUTOUT_SIZE) -> np.ndarray:
    """``size`` x ``size`` float32 cutout centred on pixel (round(x), round(y)), NaN outside ``image``."""
    if size % 2 == 0:
        raise ValueError(f"cutout size must be odd, got {size!r}")
    half = size // 2
    ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    out = np.full((size, size), np.nan, dtype=np.float32)
    ny, nx = image.shape
    y0, y1, x0, x1 = iy - half, iy + half + 1, ix - half, ix + half + 1
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, ny), max(x0, 0), min(x1, nx)
    if sy0 < sy1 and sx0 < sx1:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def triplet(science: np.ndarray, reference: np.ndarray, difference: np.ndarray, x: float, y: float) -> np.ndarray:
    return np.stack([cutout(science, x, y), cutout(reference, x, y), cutout(difference, x, y)], axis=-1)


def shape_moments(difference: np.ndarray, x: float, y: float, sign: int, sigma_w: float) -> tuple[float, float, float]:
    """(FWHM px, elongation, theta deg) from Gaussian-weighted moments of ``sign * difference`` near (x, y)."""
    r = int(np.ceil(4 * sigma_w))
    st = cutout(difference, x, y, 2 * r + 1).astype(np.float64) * sign
    st = np.where(np.isfinite(st), st, 0.0)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(float)
    ix, iy = np.floor(x + 0.5), np.floor(y + 0.5)
    xx -= x - ix
    yy -= y - iy
    w = np.exp(-0.5 * (xx**2 + yy**2) / sigma_w**2) * np.clip(st, 0.0, None)
    tot = w.sum()
    if tot <= 0:
        return float("nan"), float("nan"), float("nan")
    mx, my = (w * xx).sum() / tot, (w * yy).sum() / tot
    cxx = (w * (xx - mx) ** 2).sum() / tot
    cyy = (w * (yy - my) ** 2).sum() / tot
    cxy = (w * (xx - mx) * (yy - my)).sum() / tot
    tr, det = cxx + cyy, cxx * cyy - cxy**2
    disc = np.sqrt(max(tr**2 / 4 - det, 0.0))
    l1, l2 = tr / 2 + disc, max(tr / 2 - disc, 1e-6)
    w2 = sigma_w**2

    def deconv(m):  # a Gaussian of variance s2 seen through a Gaussian window of variance w2 reads s2 w2 / (s2 + w2)
        return m * w2 / (w2 - m) if m < 0.98 * w2 else float("inf")

    s1, s2 = deconv(l1), deconv(l2)
    if not np.isfinite(s1):
        return float("nan"), float("nan"), float(np.degrees(0.5 * np.arctan2(2 * cxy, cxx - cyy)))
    fwhm = FWHM_PER_SIGMA * np.sqrt(0.5 * (s1 + s2))
    return float(fwhm), float(np.sqrt(s1 / s2)), float(np.degrees(0.5 * np.arctan2(2 * cxy, cxx - cyy)))


def detect(zres: ZogyResult, science: np.ndarray, reference: np.ndarray, *, threshold: float = 5.0,
           wcs=None, min_area: int = 1, max_candidates: int = 10_000) -> Detections:
    """Positive and negative candidates at >= ``threshold`` in ``zres.score`` with their cutout triplets."""
    import sep

    if not (np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be > 0 sigma, got {threshold!r}")
    score = np.where(zres.valid, zres.score, 0.0).astype(np.float32)
    mask = ~zres.valid
    sigma_w = moments_fwhm(zres.psf_difference) / FWHM_PER_SIGMA
    found: list[Candidate] = []
    sep.set_extract_pixstack(max(300_000, score.size // 4))
    for sign in (1, -1):
        img = np.ascontiguousarray(score * sign)
        objs = sep.extract(img, threshold, mask=mask, minarea=min_area, filter_kernel=None, deblend_cont=0.005)
        for o in objs:
            px, py = int(o["xpeak"]), int(o["ypeak"])
            fwhm, elong, theta = shape_moments(zres.difference, o["x"], o["y"], sign, sigma_w)
            found.append(Candidate(
                x=float(o["x"]), y=float(o["y"]), sign=sign, snr=float(img[py, px]),
                flux=float(zres.flux[py, px]), flux_err=float(zres.flux_err[py, px]),
                fwhm_px=fwhm, elongation=elong, theta_deg=theta, npix=int(o["npix"])))
    found.sort(key=lambda c: -c.snr)
    if len(found) > max_candidates:
        raise ValueError(f"{len(found)} candidates (more than max_candidates={max_candidates}): "
                         "the subtraction failed (misalignment or wrong PSF?)")
    if wcs is not None and found:
        ra, dec = wcs.all_pix2world([c.x for c in found], [c.y for c in found], 0)
        found = [Candidate(**{**c.__dict__, "ra_deg": float(r), "dec_deg": float(d)})
                 for c, r, d in zip(found, ra, dec)]
    trips = (np.stack([triplet(science, reference, zres.difference, c.x, c.y) for c in found])
             if found else np.zeros((0, CUTOUT_SIZE, CUTOUT_SIZE, 3), dtype=np.float32))
    return Detections(tuple(found), trips.astype(np.float32))
