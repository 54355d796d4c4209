"""Synthetic multi-band RR Lyrae light curves with survey-like sampling (tests and benchmarks).

Our own templates (no public template set is copied): a light curve in magnitudes is
``m_b(t) = mean_b + amp_b * shape(phase + lag_b)``, ``phase = (t - t0) / P mod 1``, with

* RRab (fraction ``ab_fraction``, default 0.75): ``P`` log-uniform in [0.45, 0.85] d; ``shape`` the first 8 Fourier
  harmonics of an asymmetric triangle wave (a fast rise over a fraction ``r`` in [0.12, 0.22] of the cycle, a slow
  decline), normalised to peak-to-peak 1; g amplitude uniform in [0.6, 1.1] mag;
* RRc: ``P`` log-uniform in [0.25, 0.42] d; ``shape = cos(2 pi phase) + a2 cos(4 pi phase + phi2)`` with ``a2`` in
  [0.05, 0.2], normalised to peak-to-peak 1; g amplitude uniform in [0.3, 0.55] mag.

Magnitudes get brighter upward: ``shape`` is the magnitude excursion (positive = fainter).  Band amplitudes relative
to g (u, g, r, i, z) = (1.25, 1.0, 0.75, 0.62, 0.55) and band colours (mean_b - mean_g) = (1.15, 0, -0.2, -0.25,
-0.25) follow the trend of published SDSS RR Lyrae (amplitude falling to the red); ``lag_b`` up to 0.02 cycles.

Sampling (``sdss``, the default): epochs over ``n_seasons`` observing seasons of ~90 nights in a ~``years``-year
span; the star is observed near the same sidereal time each night (a 1/sidereal-day alias, as in drift-scan
surveys), all five bands within ~6 minutes of each other (SDSS's r, i, u, z, g order, 72 s apart).  ``lsst``: each
band on its own nights (no simultaneous colours).  Brightness: g mean uniform in [15, 21] mag.  Errors per band
``sigma_b(m) = sqrt(0.01^2 + (0.217 * 10^(0.4 (m - m5_b)))^2)`` at the point's magnitude ``m``, with single-epoch
5-sigma depths ``m5`` (u, g, r, i, z) = (22.0, 22.2, 22.2, 21.3, 20.5) (SDSS-like: 0.217 mag = 1.0857 / 5);
Gaussian noise with those sigmas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BANDS = ("u", "g", "r", "i", "z")
AMP_RATIO = {"u": 1.25, "g": 1.0, "r": 0.75, "i": 0.62, "z": 0.55}
COLOUR = {"u": 1.15, "g": 0.0, "r": -0.2, "i": -0.25, "z": -0.25}
DEPTH_5SIGMA = {"u": 22.0, "g": 22.2, "r": 22.2, "i": 21.3, "z": 20.5}
SDSS_ORDER_S = {"r": 0.0, "i": 72.0, "u": 144.0, "z": 216.0, "g": 288.0}  # seconds after the r exposure
SIDEREAL_DAY = 0.99726957


@dataclass(frozen=True)
class RRLyrae:
    kind: str              # "ab" or "c"
    period: float          # days
    times: np.ndarray      # days
    mags: np.ndarray
    errors: np.ndarray
    bands: np.ndarray      # one label per point


def _triangle_coefficients(rise: float, n_harm: int = 8, n_grid: int = 4096):
    """Fourier (a_k, b_k), k = 1..n_harm, of a triangle wave falling from 1 to 0 over [0, rise) and back to 1
    over [rise, 1) (magnitudes: 0 = maximum light, reached fast)."""
    x = np.arange(n_grid) / n_grid
    f = np.where(x < rise, 1.0 - x / rise, (x - rise) / (1.0 - rise))
    c = np.fft.rfft(f)[1:n_harm + 1] / n_grid
    return 2.0 * c.real, -2.0 * c.imag


def _shape_raw(kind: str, phase: np.ndarray, p: dict) -> np.ndarray:
    if kind == "c":
        return np.cos(2 * np.pi * phase) + p["a2"] * np.cos(4 * np.pi * phase + p["phi2"])
    k = np.arange(1, len(p["a"]) + 1)
    arg = 2 * np.pi * np.outer(phase, k)
    return np.cos(arg) @ p["a"] + np.sin(arg) @ p["b"]


def _shape(kind: str, phase: np.ndarray, p: dict) -> np.ndarray:
    """The template normalised to [0, 1] (0 = maximum light)."""
    ref = _shape_raw(kind, np.linspace(0.0, 1.0, 2001), p)
    return (_shape_raw(kind, phase, p) - ref.min()) / np.ptp(ref)


def survey_epochs(rng: np.random.Generator, n_epochs: int, *, n_seasons: int = 4, years: float = 8.0,
                  t_start: float = 51000.0) -> np.ndarray:
    """Nightly epochs (days) spread over ``n_seasons`` ~90-night seasons within ``years`` years, near a fixed
    sidereal time (+-0.12 d: the star is scanned within ~3 hours of the same hour angle)."""
    starts = t_start + np.sort(rng.choice(int(years), size=n_seasons, replace=False)) * 365.25
    season = rng.integers(0, n_seasons, size=n_epochs)
    night = rng.choice(90, size=n_epochs)
    days = np.unique(np.round(starts[season] + night))
    while days.size < n_epochs:  # duplicates merged: draw more nights
        extra = np.round(starts[rng.integers(0, n_seasons)] + rng.integers(0, 90))
        days = np.unique(np.append(days, extra))
    days = np.sort(rng.choice(days, size=n_epochs, replace=False))
    # the same sidereal time every night: the clock time drifts by 1 - SIDEREAL_DAY per day
    return days - (days - t_start) * (1 - SIDEREAL_DAY) % 1.0 + rng.uniform(-0.12, 0.12, n_epochs)


def simulate(rng: np.random.Generator, *, n_epochs: int = 55, cadence: str = "sdss",
             ab_fraction: float = 0.75) -> RRLyrae:
    """One synthetic RR Lyrae in five bands (rules in the module docstring)."""
    if cadence not in ("sdss", "lsst"):
        raise ValueError(f"cadence must be 'sdss' or 'lsst', got {cadence!r}")
    kind = "ab" if rng.random() < ab_fraction else "c"
    if kind == "ab":
        period = float(np.exp(rng.uniform(np.log(0.45), np.log(0.85))))
        a, b = _triangle_coefficients(rng.uniform(0.12, 0.22))
        params = {"a": a, "b": b}
        amp_g = rng.uniform(0.6, 1.1)
    else:
        period = float(np.exp(rng.uniform(np.log(0.25), np.log(0.42))))
        params = {"a2": rng.uniform(0.05, 0.2), "phi2": rng.uniform(0, 2 * np.pi)}
        amp_g = rng.uniform(0.3, 0.55)
    t0 = rng.uniform(0, period)
    mean_g = rng.uniform(15.0, 21.0)
    times, mags, errs, labels = [], [], [], []
    epochs = survey_epochs(rng, n_epochs)
    for band in BANDS:
        if cadence == "sdss":
            t = epochs + SDSS_ORDER_S[band] / 86400.0
        else:
            t = survey_epochs(rng, n_epochs)
        lag = rng.uniform(-0.02, 0.02)
        phase = ((t - t0) / period + lag) % 1.0
        m = mean_g + COLOUR[band] + amp_g * AMP_RATIO[band] * _shape(kind, phase, params)
        sig = np.hypot(0.01, 0.217 * 10.0 ** (0.4 * (m - DEPTH_5SIGMA[band])))
        times.append(t)
        mags.append(m + sig * rng.standard_normal(t.size))
        errs.append(sig)
        labels.append(np.full(t.size, band))
    return RRLyrae(kind, period, np.concatenate(times), np.concatenate(mags), np.concatenate(errs),
                   np.concatenate(labels))
