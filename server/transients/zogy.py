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
    rows = (np.arange(n) - half) % shape[0]
    cols = (np.arange(n) - half) % shape[1]
    out[np.ix_(rows, cols)] = stamp / stamp.sum()
    return out


def _centred(kernel: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` part of a kernel stored with its centre on pixel (0, 0)."""
    half = size // 2
    return np.roll(kernel, (half, half), axis=(0, 1))[:size, :size]


@dataclass(frozen=True)
class _Kernels:
    """Real-space kernels of the PSF pair on a small grid (they are compact: a few PSF widths)."""

    psf_d: np.ndarray  # P_D stamp, sums to 1
    k_n: np.ndarray  # k_n (centred stamp)
    k_r: np.ndarray
    f_s: float


def _kernels(psf_new: PSFModel, psf_ref: PSFModel, fn: float, fr: float, sn2: float, sr2: float,
             size: int) -> _Kernels:
    """P_D, k_n, k_r and F_S computed on a grid of 4x the stamp (Parseval: sum |Q|^2 / n = sum |q|^2 as long as
    the kernel fits the grid), so none of them costs a full-frame FFT."""
    m = int(4 * size)
    shape = (m, m)
    Pn = np.fft.fft2(_padded_psf(psf_new.stamp, shape).astype(np.float64))
    Pr = np.fft.fft2(_padded_psf(psf_ref.stamp, shape).astype(np.float64))
    den2 = sn2 * fr**2 * np.abs(Pr) ** 2 + sr2 * fn**2 * np.abs(Pn) ** 2
    f_d = fr * fn / np.sqrt(sn2 * fr**2 + sr2 * fn**2)
    pd = np.real(np.fft.ifft2(fr * fn * Pr * Pn / (f_d * np.sqrt(den2))))
    kn = np.real(np.fft.ifft2(fn * fr**2 * np.conj(Pn) * np.abs(Pr) ** 2 / den2))
    kr = np.real(np.fft.ifft2(fr * fn**2 * np.conj(Pr) * np.abs(Pn) ** 2 / den2))
    f_s = float(np.sum(fn**2 * fr**2 * np.abs(Pn) ** 2 * np.abs(Pr) ** 2 / den2) / (m * m))
    k = 2 * size + 1
    psf_d = _centred(pd, size)
    return _Kernels(psf_d / psf_d.sum(), _centred(kn, k), _centred(kr, k), f_s)


def zogy(new: np.ndarray, ref: np.ndarray, psf_new: PSFModel, psf_ref: PSFModel, *, f_new: float, f_ref: float,
         sigma_new: float, sigma_ref: float, gain_new: float | None = None, gain_ref: float | None = None,
         astrometric_rms_px: float = 0.0, edge_px: int | None = None, renormalise: bool = False,
         workers: int = 1) -> ZogyResult:
    """Subtract ``ref`` from ``new`` (same grid, backgrounds removed) and compute the ZOGY score image.

    ``gain_*`` (e-/ADU) switch on the Poisson variance of the sources (V = sigma^2 + max(image, 0) / gain);
    ``None`` leaves it out (background-limited). ``renormalise`` divides S_corr by its measured robust rms and
    multiplies the flux error by it (for references with correlated noise, e.g. resampled stacks); the raw rms is
    reported either way. With background-limited variance ``flux_err`` is a read-only broadcast constant.

    Cost: 4 real FFTs forward and 2 inverse of the (padded) frame; the source-noise variance adds 4 forward and
    1 inverse, the astrometric term 1 inverse. The PSF-pair kernels are computed on a small grid.
    """
    import scipy.fft as sfft
    from scipy.ndimage import binary_dilation

    new, ref = _check_inputs(new, ref, psf_new, psf_ref, f_new, f_ref, sigma_new, sigma_ref)
    ny, nx = new.shape
    shape = (sfft.next_fast_len(ny, real=True), sfft.next_fast_len(nx, real=True))
    size = max(psf_new.size, psf_ref.size)
    edge = size // 2 if edge_px is None else int(edge_px)
    invalid = ~np.isfinite(new) | ~np.isfinite(ref)
    any_invalid = bool(invalid.any())

    def padded(img):
        out = np.zeros(shape, dtype=np.float32)
        out[:ny, :nx] = img
        if any_invalid:
            out[:ny, :nx][invalid] = 0.0
        return out

    def rfft(a):
        return sfft.rfft2(a, workers=workers, overwrite_x=True)

    def irfft(a):
        return sfft.irfft2(a, s=shape, workers=workers, overwrite_x=True)

    fn, fr = float(f_new), float(f_ref)
    sn2, sr2 = float(sigma_new) ** 2, float(sigma_ref) ** 2
    kern = _kernels(psf_new, psf_ref, fn, fr, sn2, sr2, size)
    f_d = fr * fn / np.sqrt(sn2 * fr**2 + sr2 * fn**2)
    N, R = padded(new), padded(ref)
    Nh, Rh = rfft(N if gain_new is None else N.copy()), rfft(R if gain_ref is None else R.copy())
    Pn = rfft(_padded_psf(psf_new.stamp, shape))
    Pr = rfft(_padded_psf(psf_ref.stamp, shape))
    # inv_den = 1 / sqrt(sigma_n^2 F_r^2 |P_r|^2 + sigma_r^2 F_n^2 |P_n|^2), in place
    inv_den = np.square(Pr.real)
    inv_den += np.square(Pr.imag)
    inv_den *= np.float32(sn2 * fr**2)
    tmp = np.square(Pn.real)
    tmp += np.square(Pn.imag)
    tmp *= np.float32(sr2 * fn**2)
    inv_den += tmp
    del tmp
    np.maximum(inv_den, np.float32(1e-30), out=inv_den)
    np.sqrt(inv_den, out=inv_den)
    np.reciprocal(inv_den, out=inv_den)
    Sn = None
    if astrometric_rms_px > 0:  # S_n = k_n N on its own for the astrometric term
        kn_h = np.conj(Pn) * np.square(np.abs(Pr) * inv_den) * np.float32(fn * fr**2)
        Sn = irfft(kn_h * Nh)[:ny, :nx]
        del kn_h
    # D_hat = (F_r P_r N_hat - F_n P_n R_hat) / den, built in Nh
    Nh *= Pr
    Rh *= Pn
    Rh *= np.float32(fn / fr)
    Nh -= Rh
    del Rh
    Nh *= inv_den
    Nh *= np.float32(fr)
    D = irfft(Nh.copy())[:ny, :nx]
    # S_hat = F_r F_n conj(P_r P_n) / den * D_hat  (= k_n N_hat - k_r R_hat)
    Pr *= Pn
    del Pn
    np.conjugate(Pr, out=Pr)
    Pr *= inv_den
    del inv_den
    Nh *= Pr
    del Pr
    Nh *= np.float32(fr * fn)
    S = irfft(Nh)[:ny, :nx]
    del Nh
    f_s = kern.f_s
    if gain_new is None and gain_ref is None:
        vs = None  # sigma_n^2 sum k_n^2 + sigma_r^2 sum k_r^2 == F_S: a constant
    else:
        vn = np.square(kern.k_n).astype(np.float32)
        vr = np.square(kern.k_r).astype(np.float32)
        src_n = np.clip(N, 0, None) / np.float32(gain_new) if gain_new is not None else None
        src_r = np.clip(R, 0, None) / np.float32(gain_ref) if gain_ref is not None else None
        acc = None
        for src, k2, s2 in ((src_n, vn, sn2), (src_r, vr, sr2)):
            if src is None:
                continue
            term = rfft(src) * rfft(_padded_psf_raw(k2, shape))
            acc = term if acc is None else acc + term
        vs = irfft(acc)[:ny, :nx] + np.float32(f_s)  # background part: the constant F_S
    if astrometric_rms_px > 0:
        a2 = np.float32(astrometric_rms_px**2)
        Sr = Sn - S
        gny, gnx = np.gradient(Sn)
        gry, grx = np.gradient(Sr)
        extra = a2 * (gnx**2 + grx**2 + gny**2 + gry**2)
        vs = extra + np.float32(f_s) if vs is None else vs + extra
    bad = invalid
    if edge > 0:
        bad = invalid.copy()
        bad[:edge, :] = bad[-edge:, :] = True
        bad[:, :edge] = bad[:, -edge:] = True
        if any_invalid:
            bad |= binary_dilation(invalid, iterations=edge)
    valid = ~bad
    if vs is None:
        score = S * np.float32(1.0 / np.sqrt(f_s))
        flux_err = np.broadcast_to(np.float32(1.0 / np.sqrt(f_s)), (ny, nx))
    else:
        np.maximum(vs, np.float32(f_s * 1e-6), out=vs)
        sqrt_vs = np.sqrt(vs)
        score = S / sqrt_vs
        flux_err = sqrt_vs / np.float32(f_s)
    sample = score[valid]
    if sample.size > 200_000:
        sample = sample[:: sample.size // 200_000]
    mad = float(np.median(np.abs(sample - np.median(sample)))) * 1.4826 if sample.size else float("nan")
    if renormalise and np.isfinite(mad) and mad > 0:
        score /= np.float32(mad)
        flux_err = flux_err * np.float32(mad)  # keeps flux / flux_err == S_corr
    score[bad] = np.nan
    diff = D * np.float32(fn / f_d)
    diff[bad] = np.nan
    return ZogyResult(score=score, flux=S * np.float32(1.0 / f_s), flux_err=flux_err, difference=diff,
                      difference_noise_adu=float(fn / f_d), psf_difference=kern.psf_d, f_d=float(f_d),
                      f_s=float(f_s), score_rms=mad, valid=valid)


def _padded_psf_raw(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A centred odd kernel in an image of ``shape``, centre on (0, 0), not renormalised, float32."""
    n = kernel.shape[0]
    half = n // 2
    out = np.zeros(shape, dtype=np.float32)
    out[np.ix_((np.arange(n) - half) % shape[0], (np.arange(n) - half) % shape[1])] = kernel
    return out
