"""A plain-numpy ZOGY, written straight from the paper's equations: the anchor for ``server.transients.zogy``.

Not used by the pipeline. ``benchmarks/bench_transients.py`` times it beside our implementation on the same
pair, and the tests compare the two (independent code paths: complex128 full FFTs with ``numpy.fft`` here,
single-precision real FFTs with ``scipy.fft`` there). Background-limited variance only (no source noise).
"""

from __future__ import annotations

import numpy as np


def zogy_plain(new, ref, psf_new, psf_ref, f_new, f_ref, sigma_new, sigma_ref):
    """(S_corr, alpha, D) for background-subtracted, aligned images; PSFs are odd square stamps summing to 1."""
    ny, nx = new.shape

    def otf(stamp):
        big = np.zeros((ny, nx))
        n = stamp.shape[0]
        big[:n, :n] = stamp / stamp.sum()
        big = np.roll(big, (-(n // 2), -(n // 2)), axis=(0, 1))
        return np.fft.fft2(big)

    Pn, Pr = otf(psf_new), otf(psf_ref)
    Nh, Rh = np.fft.fft2(new), np.fft.fft2(ref)
    den2 = sigma_new**2 * f_ref**2 * np.abs(Pr) ** 2 + sigma_ref**2 * f_new**2 * np.abs(Pn) ** 2
    D = np.real(np.fft.ifft2((f_ref * Pr * Nh - f_new * Pn * Rh) / np.sqrt(den2)))
    S_hat = (f_new * f_ref**2 * np.conj(Pn) * np.abs(Pr) ** 2 * Nh
             - f_ref * f_new**2 * np.conj(Pr) * np.abs(Pn) ** 2 * Rh) / den2
    S = np.real(np.fft.ifft2(S_hat))
    F_S = np.sum(f_new**2 * f_ref**2 * np.abs(Pn) ** 2 * np.abs(Pr) ** 2 / den2) / (ny * nx)
    return S / np.sqrt(F_S), S / F_S, D
