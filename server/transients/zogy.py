"""ZOGY image subtraction (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27): proper difference image and score image.

Inputs are the new image N and the reference R on the same pixel grid, background-subtracted, with their PSFs
P_n, P_r (stamps summing to 1), their flux scalings F_n, F_r (counts per unit of true flux: here per unit of the
common flux F of ``server.image.normalise``, ``F_n = 1 / flux_scale(zp_n, t_n)``, ``F_r = 1`` for a normalised
stack) and their background noise sigma_n, sigma_r (ADU per pixel). With hats for Fourier transforms
(paper equations in brackets)::

    den^2  = sigma_n^2 F_r^2 |P_r|^2 + sigma_r^2 F_n^2 |P_n|^2
    D      = (F_r P_r N - F_n P_n R) / den                      proper difference image, unit white noise (13)
    F_D    = F_r F_n / sqrt(sigma_n^2 F_r^2 + sigma_r^2 F_n^2)                                              (15)
    k_n    = F_n F_r^2 conj(P_n) |P_r|^2 / den^2,   k_r = F_r F_n^2 conj(P_r) |P_n|^2 / den^2                (28)
    S      = k_n N - k_r R                                      matched-filter score                        (12)
    V_S    = V_n (x) k_n^2 + V_r (x) k_r^2 (+ V_ast)            its variance, source noise included         (26-30)
    S_corr = S / sqrt(V_S)                                                                                   (25)
    F_S    = sum F_n^2 F_r^2 |P_n|^2 |P_r|^2 / den^2 / n_pix,    alpha = S / F_S                              (41-42)

so S_corr is the detection significance at each pixel (positive: brighter in N, negative: fainter) and alpha the
PSF-fit flux of a point source there, in the common flux unit, with error sqrt(V_S) / F_S. V_n is sigma_n^2 plus
the Poisson variance of the sources (N / gain_n), likewise for R; with ``astrometric_rms_px`` the astrometric
noise term sigma^2 ((dS_n/dx)^2 + (dS_r/dx)^2) (and y) is added (eq. 31). The difference image is also returned
in ADU of the new frame, ``D * F_n / F_D``, whose per-pixel noise is ``F_n / F_D``.

Numerics: real FFTs (``scipy.fft.rfft2`` in single precision, ``workers`` threads, default 1), the arrays padded
to a fast FFT length. FFT convolution is circular: ``edge_px`` pixels (default the PSF half-size) at the border
and pixels within that distance of an invalid (NaN) pixel of either image get S_corr = NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server.transients.psf import PSFModel


@dataclass(frozen=True)
class ZogyResult:
    score: np.ndarray  # S_corr, float32, NaN where invalid
    flux: np.ndarray  # alpha = S / F_S [common flux unit], float32
    flux_err: np.ndarray  # sqrt(V_S) / F_S, float32
    difference: np.ndarray  # D in ADU of the new frame (D * F_n / F_D), float32, NaN where invalid
    difference_noise_adu: float  # per-pixel noise of ``difference`` (F_n / F_D)
    psf_difference: np.ndarray  # P_D as a stamp (the PSF of the proper difference image), sums to 1
    f_d: float
    f_s: float
    score_rms: float  # robust (MAD) rms of S_corr over valid pixels before any renormalisation
    valid: np.ndarray  # bool mask of pixels with a valid score


def _check_inputs(new, ref, psf_new, psf_ref, f_new, f_ref, sigma_new, sigma_ref):
    new = np.asarray(new)
    ref = np.asarray(ref)
    if new.ndim != 2 or new.shape != ref.shape:
        raise ValueError(f"new and reference must be 2-D images of the same shape, got {new.shape} and {ref.shape}")
    for name, v in (("f_new", f_new), ("f_ref", f_ref), ("sigma_new", sigma_new), ("sigma_ref", sigma_ref)):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    for name, p in (("psf_new", psf_new), ("psf_ref", psf_ref)):
        s = np.asarray(p.stamp)
        if s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape[0] % 2 == 0 or s.shape[0] > min(new.shape):
            raise ValueError(f"{name} stamp must be square, odd-sized and smaller than the image, got {s.shape}")
    return new, ref


def _padded_psf(stamp: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The stamp in an image of ``shape`` with its centre on pixel (0, 0) (wrapped), float32."""
    n = stamp.shape[0]
    half = n // 2
    out = np.zeros(shape, dtype=np.float32)
    out[:n, :n] = stamp / stamp.sum()
    return np.roll(out, (-half, -half), axis=(0, 1))


def _full_sum(half_spectrum: np.ndarray, nx: int) -> float:
    """Sum over the full 2-D spectrum of a real-FFT half spectrum (Hermitian columns counted twice)."""
    s = half_spectrum.sum(axis=0, dtype=np.float64)
    last = nx // 2 if nx % 2 == 0 else None
    total = s[0] + 2.0 * s[1:].sum()
    if last is not None:
        total -= s[last]
    return float(total)


def _stamp_from(image: np.ndarray, size: int) -> np.ndarray:
    half = size // 2
    rolled = np.roll(image, (half, half), axis=(0, 1))[:size, :size]
    return rolled / rolled.sum()


def zogy(new: np.ndarray, ref: np.ndarray, psf_new: PSFModel, psf_ref: PSFModel, *, f_new: float, f_ref: float,
         sigma_new: float, sigma_ref: float, gain_new: float | None = None, gain_ref: float | None = None,
         astrometric_rms_px: float = 0.0, edge_px: int | None = None, renormalise: bool = False,
         workers: int = 1) -> ZogyResult:
    """Subtract ``ref`` from ``new`` (same grid, backgrounds removed) and compute the ZOGY score image.

    ``gain_*`` (e-/ADU) switch on the Poisson variance of the sources (V = sigma^2 + max(image, 0) / gain);
    ``None`` leaves it out (background-limited). ``renormalise`` divides S_corr by its measured robust rms
    (for references with correlated noise, e.g. resampled stacks); the raw rms is reported either way.
    """
    import scipy.fft as sfft
    from scipy.ndimage import binary_dilation

    new, ref = _check_inputs(new, ref, psf_new, psf_ref, f_new, f_ref, sigma_new, sigma_ref)
    ny, nx = new.shape
    shape = (sfft.next_fast_len(ny, real=True), sfft.next_fast_len(nx, real=True))
    half = max(psf_new.size, psf_ref.size) // 2
    edge = half if edge_px is None else int(edge_px)
    invalid = ~np.isfinite(new) | ~np.isfinite(ref)

    def padded(img):
        out = np.zeros(shape, dtype=np.float32)
        out[:ny, :nx] = np.where(invalid, np.float32(0), img)
        return out

    N, R = padded(new), padded(ref)
    rfft = lambda a: sfft.rfft2(a, workers=workers)  # noqa: E731
    irfft = lambda a: sfft.irfft2(a, s=shape, workers=workers)  # noqa: E731

    Pn = rfft(_padded_psf(psf_new.stamp, shape))
    Pr = rfft(_padded_psf(psf_ref.stamp, shape))
    Nh, Rh = rfft(N), rfft(R)
    fn, fr = np.float32(f_new), np.float32(f_ref)
    sn2, sr2 = np.float32(sigma_new**2), np.float32(sigma_ref**2)
    Pn2 = (Pn.real**2 + Pn.imag**2).astype(np.float32)
    Pr2 = (Pr.real**2 + Pr.imag**2).astype(np.float32)
    den2 = sn2 * fr**2 * Pr2 + sr2 * fn**2 * Pn2
    den2 = np.maximum(den2, np.float32(np.finfo(np.float32).tiny) * 1e6)
    inv_den2 = np.float32(1.0) / den2
    # proper difference image and its flux scale
    den = np.sqrt(den2)
    D = irfft((fr * Pr * Nh - fn * Pn * Rh) / den)[:ny, :nx]
    f_d = float(f_ref * f_new / np.sqrt(sigma_new**2 * f_ref**2 + sigma_ref**2 * f_new**2))
    PD = fr * fn * Pr * Pn / (np.float32(f_d) * den)
    psf_d = _stamp_from(irfft(PD), max(psf_new.size, psf_ref.size))
    # score and its variance
    kn_h = (fn * fr**2) * np.conj(Pn) * (Pr2 * inv_den2)
    kr_h = (fr * fn**2) * np.conj(Pr) * (Pn2 * inv_den2)
    Sn = irfft(kn_h * Nh)
    Sr = irfft(kr_h * Rh)
    S = (Sn - Sr)[:ny, :nx]
    f_s = _full_sum((fn**2 * fr**2) * Pn2 * Pr2 * inv_den2, shape[1]) / (shape[0] * shape[1])
    if gain_new is None and gain_ref is None:
        vs = np.full((ny, nx), f_s, dtype=np.float32)  # sigma_n^2 sum k_n^2 + sigma_r^2 sum k_r^2 == F_S
    else:
        kn2 = rfft(irfft(kn_h) ** 2)
        kr2 = rfft(irfft(kr_h) ** 2)
        vn = np.full(shape, sn2, dtype=np.float32)
        vr = np.full(shape, sr2, dtype=np.float32)
        if gain_new is not None:
            vn += np.clip(N, 0, None) / np.float32(gain_new)
        if gain_ref is not None:
            vr += np.clip(R, 0, None) / np.float32(gain_ref)
        vs = irfft(kn2 * rfft(vn) + kr2 * rfft(vr))[:ny, :nx]
    if astrometric_rms_px > 0:
        a2 = np.float32(astrometric_rms_px**2)
        gny, gnx = np.gradient(Sn[:ny, :nx])
        gry, grx = np.gradient(Sr[:ny, :nx])
        vs = vs + a2 * (gnx**2 + grx**2 + gny**2 + gry**2)
    vs = np.maximum(vs, np.float32(f_s * 1e-6))
    sqrt_vs = np.sqrt(vs)
    score = S / sqrt_vs
    bad = invalid.copy()
    if edge > 0:
        bad[:edge, :] = bad[-edge:, :] = True
        bad[:, :edge] = bad[:, -edge:] = True
        if invalid.any():
            bad |= binary_dilation(invalid, iterations=edge)
    valid = ~bad
    sample = score[valid]
    if sample.size > 200_000:
        sample = sample[:: sample.size // 200_000]
    mad = float(np.median(np.abs(sample - np.median(sample)))) * 1.4826 if sample.size else float("nan")
    if renormalise and np.isfinite(mad) and mad > 0:
        score = score / np.float32(mad)
    score = np.where(valid, score, np.float32(np.nan)).astype(np.float32)
    diff = np.where(valid, D * np.float32(f_new / f_d), np.float32(np.nan)).astype(np.float32)
    return ZogyResult(score=score, flux=(S / np.float32(f_s)).astype(np.float32),
                      flux_err=(sqrt_vs / np.float32(f_s)).astype(np.float32), difference=diff,
                      difference_noise_adu=float(f_new / f_d), psf_difference=psf_d, f_d=f_d, f_s=float(f_s),
                      score_rms=mad, valid=valid)
