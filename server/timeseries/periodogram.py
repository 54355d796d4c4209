"""Lomb-Scargle period search with honest false-alarm probabilities and period uncertainties.

Units: ``times`` in days (BJD_TDB for our light curves; any origin works, the periodogram is shift invariant),
frequencies in cycles/day, periods in days. Fluxes and errors in any common unit (flux or magnitude).

Model and normalisation
    The generalised (floating-mean, error-weighted) Lomb-Scargle periodogram with ``nterms`` harmonics and the
    "standard" normalisation: ``power(f) = 1 - chi2(f) / chi2_0``, chi2_0 being the weighted chi^2 about the
    weighted mean. Power lies in [0, 1].

Engine
    nifty-ls (``finufft`` backend for ``nterms == 1``, ``finufft_chi2`` for ``nterms > 1``) with ``threads``
    OpenMP threads (default 1: on small shared machines two OpenMP threads were measured 70x slower). Times are
    shifted to start at 0 before the transform. For nterms = 1 finufft runs at nifty's default (eps 1e-9,
    upsampfac 1.25), which agrees with astropy's exact ``method='slow'`` to ~2e-10 in power. For nterms > 1 that
    default gave up to 1e-7 at frequencies where daily sampling makes the harmonic normal equations
    ill-conditioned, so there finufft runs at eps 1e-12 with upsampfac 2 (~1.5x slower), agreeing with astropy's
    exact ``'chi2'`` to ~1e-11. Both are checked in tests to 1e-8 (references run on times relative to the first
    one: at t ~ 2.46e6 d the references themselves lose ~1e-7 to float64 phase rounding).
    ``engine='astropy'`` runs astropy's exact methods instead (reference/fallback; O(N M), slow).

Frequency grid rule (:func:`frequency_grid`)
    Baseline ``T = max(t) - min(t)``; step ``df = 1 / (oversampling * T)`` (``oversampling`` grid points per
    peak width 1/T); ``fmin = 1 / max_period`` (default ``1 / T``: longer periods are not constrained);
    ``fmax = 1 / min_period`` (default: the cadence pseudo-Nyquist ``0.5 / median(dt)``, dt over consecutive
    distinct times, so intra-night cadence sets the limit even with daily gaps).

Peak and its uncertainty
    The highest grid point is refined off-grid by bounded maximisation of the exact power (own weighted
    least-squares evaluation) within +-df. The frequency uncertainty is the Fisher/least-squares one: the
    ``2*nterms + 2`` parameter model (mean, harmonics, frequency) is linearised at the optimum and
    ``sigma_f = sqrt(C_ff)`` with ``C = (J^T W J)^-1 * max(1, chi2_red)`` (``chi2_red`` alone when no errors were
    given). The inflation by ``chi2_red`` keeps the error honest when the model is incomplete (e.g. a sawtooth
    fitted with one harmonic) or the errors are underestimated. ``sigma_P = sigma_f / f^2``. This is the local
    (within-peak) uncertainty; a wrong alias peak is a different failure, reported by the alias warnings.

False-alarm probability (probability that pure noise gives a peak at least this high anywhere on the grid)
    ``'baluev'``: Baluev (2008, MNRAS 385, 1279) upper bound for the standard normalisation, nterms = 1:
    ``FAP = 1 - (1 - (1-Z)^((N-3)/2)) * exp(-tau)`` with
    ``tau = gamma(N-1) * W * (1-Z)^((N-4)/2) * sqrt((N-1) Z / 2)``, ``W = (fmax - fmin) * sqrt(4 pi var_w(t))``,
    ``gamma(n) = sqrt(2/n) Gamma(n/2) / Gamma((n-1)/2)``. Accurate for small FAP, conservative for large.
    ``'bootstrap'``: ``n_bootstrap`` resamplings of (flux, error) pairs with replacement at the observed times,
    the full-grid maximum power of each (computed in batches by nifty-ls), ``FAP = (1 + #{max_b >= Z}) /
    (n_bootstrap + 1)``; its resolution is ``1 / (n_bootstrap + 1)``. Any ``nterms``.
    ``'none'``: no FAP (NaN), e.g. for quick batch scans.

Warnings (flagged, not raised)
    ``window``: the best peak lies within 1.5/T of a spectral-window peak (window power > 0.5): probably a
    sampling artefact. ``alias``: for each strong window peak f_w, a periodogram peak at ``|f_best +- f_w|``
    reaches >= 0.6 of the best power (the true period may be the alias). ``baseline``: ``max_period`` exceeds
    the baseline, or the best period covers fewer than two cycles. ``bootstrap_resolution``: the bootstrap FAP
    is at its floor. ``unit_weights``: no errors given. ``subharmonic`` (nterms > 1): the model at ``P/k``
    (k <= nterms) reaches >= 0.98 of the best power, so the best period may be k times the true one (a pure
    sinusoid fitted with 2 harmonics peaks at P and 2P with equal power).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from app.atomic import atomic_open
from scipy import optimize
from scipy.special import gammaln

__all__ = [
    "FINUFFT_DEFAULT",
    "FINUFFT_PRECISE",
    "FrequencyGrid",
    "PeriodogramResult",
    "PeriodogramWarning",
    "frequency_grid",
    "grid_power",
    "exact_power",
    "baluev_fap",
    "lomb_scargle",
    "lomb_scargle_result",
    "lomb_scargle_batch",
    "plot_phase_folded",
]

# finufft settings: (eps, upsampfac). nifty's default suffices for nterms = 1; see the module docstring.
FINUFFT_DEFAULT = {"eps": 1e-9, "upsampfac": 1.25}
FINUFFT_PRECISE = {"eps": 1e-12, "upsampfac": 2.0}
MAX_GRID_POINTS = 20_000_000
WINDOW_PEAK_THRESHOLD = 0.5
ALIAS_POWER_RATIO = 0.6
SUBHARMONIC_POWER_RATIO = 0.98
_BOOTSTRAP_BATCH_BYTES = 128 * 1024 * 1024

Engine = Literal["nifty", "astropy"]
FapMethod = Literal["baluev", "bootstrap", "none"]


@dataclass(frozen=True)
class FrequencyGrid:
    """Regular grid ``fmin + df * arange(n)`` in cycles/day."""

    fmin: float
    df: float
    n: int

    @property
    def fmax(self) -> float:
        return self.fmin + self.df * (self.n - 1)

    def frequencies(self) -> np.ndarray:
        return self.fmin + self.df * np.arange(self.n)


@dataclass(frozen=True)
class PeriodogramWarning:
    kind: str
    message: str


@dataclass(frozen=True)
class PeriodogramResult:
    """Typed result behind :func:`lomb_scargle`. Times relative to ``t_ref`` (days) in ``model_params``."""

    best_frequency: float
    best_frequency_err: float
    best_period: float
    best_period_err: float
    best_power: float
    fap: float
    fap_method: str
    n_bootstrap: int | None
    frequency: np.ndarray
    power: np.ndarray
    window_power: np.ndarray
    nterms: int
    n_points: int
    baseline: float
    t_ref: float
    model_params: np.ndarray
    engine: str
    warnings: tuple[PeriodogramWarning, ...] = field(default_factory=tuple)

    def model(self, times) -> np.ndarray:
        """Best-fit ``nterms``-harmonic model evaluated at ``times`` (same units as the input fluxes)."""
        tau = np.asarray(times, dtype=float) - self.t_ref
        return _design(tau, self.best_frequency, self.nterms) @ self.model_params

    def to_dict(self) -> dict:
        return {
            "best_period": self.best_period,
            "best_period_err": self.best_period_err,
            "best_frequency": self.best_frequency,
            "best_frequency_err": self.best_frequency_err,
            "best_power": self.best_power,
            "fap": self.fap,
            "fap_method": self.fap_method,
            "n_bootstrap": self.n_bootstrap,
            "nterms": self.nterms,
            "n_points": self.n_points,
            "baseline": self.baseline,
            "engine": self.engine,
            "power_spectrum": {"frequency": self.frequency, "power": self.power},
            "window_power": self.window_power,
            "warnings": [{"kind": w.kind, "message": w.message} for w in self.warnings],
            "result": self,
        }


# ----------------------------------------------------------------------------------------------- validation


def _validate(times, fluxes, errors, nterms: int):
    t = np.asarray(times, dtype=float)
    y = np.asarray(fluxes, dtype=float)
    if t.ndim != 1 or y.shape != t.shape:
        raise ValueError(f"times and fluxes must be 1-D of equal length, got shapes {t.shape} and {y.shape}")
    if not isinstance(nterms, (int, np.integer)) or nterms < 1:
        raise ValueError(f"nterms must be a positive integer, got {nterms!r}")
    unit_weights = errors is None
    dy = np.ones_like(t) if unit_weights else np.asarray(errors, dtype=float)
    if dy.shape != t.shape:
        raise ValueError(f"errors must have the shape of times {t.shape}, got {dy.shape}")
    for name, arr in (("times", t), ("fluxes", y), ("errors", dy)):
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{int(bad.sum())} non-finite {name}, first at index {i}: {arr[i]!r}")
    if np.any(dy <= 0):
        i = int(np.argmax(dy <= 0))
        raise ValueError(f"uncertainties must be > 0; errors[{i}] = {dy[i]!r}")
    n_min = 2 * nterms + 3
    if t.size < n_min:
        raise ValueError(f"too few points for an nterms={nterms} periodogram: {t.size} < {n_min}")
    if np.ptp(t) <= 0:
        raise ValueError(f"all {t.size} times are equal ({t[0]!r}): no baseline for a period search")
    w = dy**-2
    if np.sum(w * (y - np.sum(w * y) / np.sum(w)) ** 2) <= 0:
        raise ValueError(f"fluxes are constant ({y[0]!r}): nothing to search")
    order = np.argsort(t, kind="stable")
    return t[order], y[order], dy[order], unit_weights


def frequency_grid(times, *, min_period=None, max_period=None, oversampling: float = 5) -> FrequencyGrid:
    """Frequency grid (cycles/day) from baseline and cadence; the rule is in the module docstring."""
    t = np.sort(np.asarray(times, dtype=float))
    baseline = float(t[-1] - t[0]) if t.size else 0.0
    if not baseline > 0:
        raise ValueError(f"times span no baseline (ptp = {baseline!r}); cannot build a frequency grid")
    if not (np.isfinite(oversampling) and oversampling >= 1):
        raise ValueError(f"oversampling must be >= 1, got {oversampling!r}")
    for name, value in (("min_period", min_period), ("max_period", max_period)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of days, got {value!r}")
    if min_period is not None and max_period is not None and min_period >= max_period:
        raise ValueError(f"min_period {min_period!r} must be smaller than max_period {max_period!r}")
    df = 1.0 / (oversampling * baseline)
    fmin = 1.0 / (max_period if max_period is not None else baseline)
    if min_period is not None:
        fmax = 1.0 / min_period
    else:
        steps = np.diff(np.unique(t))
        fmax = 0.5 / float(np.median(steps))
    if fmax <= fmin:
        raise ValueError(
            f"empty frequency range: fmin {fmin!r} >= fmax {fmax!r} c/d (min_period={min_period!r}, "
            f"max_period={max_period!r}, baseline {baseline!r} d)"
        )
    n = int(math.floor((fmax - fmin) / df)) + 1
    if n < 3:
        raise ValueError(
            f"the period range [{1 / fmax!r}, {1 / fmin!r}] d spans {n} grid point(s) for a {baseline!r} d "
            "baseline: too narrow to locate a peak; widen it or raise oversampling"
        )
    if n > MAX_GRID_POINTS:
        raise ValueError(f"frequency grid of {n} points exceeds {MAX_GRID_POINTS}; set min_period to limit fmax")
    return FrequencyGrid(fmin=fmin, df=df, n=n)


# ----------------------------------------------------------------------------------------------- engines


def grid_power(t, y, dy, grid: FrequencyGrid, *, nterms: int = 1, threads: int = 1, engine: Engine = "nifty",
               precise: bool = True):
    """Standard-normalised power on ``grid``; ``y``/``dy`` may be 2-D (a batch sharing the times ``t``).

    ``precise=False`` (bootstrap maxima only) uses finufft's faster default tolerance."""
    t = np.asarray(t, dtype=float)
    t = t - t.min()
    y = np.asarray(y, dtype=float)
    dy = np.broadcast_to(np.asarray(dy, dtype=float), y.shape)
    if engine == "nifty":
        import nifty_ls

        if not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        backend = "finufft" if nterms == 1 else "finufft_chi2"
        res = nifty_ls.lombscargle(
            np.ascontiguousarray(t), np.ascontiguousarray(y), np.ascontiguousarray(dy),
            fmin=grid.fmin, fmax=grid.fmax, Nf=grid.n, nterms=nterms, backend=backend,
            nthreads=int(threads), normalization="standard", center_data=True, fit_mean=True,
            finufft_kwargs=dict(FINUFFT_PRECISE if precise and nterms > 1 else FINUFFT_DEFAULT),
        )
        return np.asarray(res.power, dtype=float)
    if engine == "astropy":
        from astropy.timeseries import LombScargle

        freq = grid.frequencies()
        method = "slow" if nterms == 1 else "chi2"
        rows = [
            LombScargle(t, yi, di, nterms=nterms).power(freq, method=method)
            for yi, di in zip(np.atleast_2d(y), np.atleast_2d(dy))
        ]
        return np.asarray(rows if y.ndim == 2 else rows[0], dtype=float)
    raise ValueError(f"engine must be 'nifty' or 'astropy', got {engine!r}")


def _design(tau, frequency: float, nterms: int) -> np.ndarray:
    cols = [np.ones_like(tau)]
    for k in range(1, nterms + 1):
        phase = 2.0 * np.pi * k * frequency * tau
        cols += [np.cos(phase), np.sin(phase)]
    return np.column_stack(cols)


def _wls(tau, y, dy, frequency: float, nterms: int):
    """Weighted least-squares fit of the harmonic model; returns (params, chi2)."""
    a = _design(tau, frequency, nterms) / dy[:, None]
    b = y / dy
    try:  # normal equations: (2 nterms + 1)^2 system, well conditioned with times centred on their mean
        params = np.linalg.solve(a.T @ a, a.T @ b)
    except np.linalg.LinAlgError:
        params, *_ = np.linalg.lstsq(a, b, rcond=None)
    resid = b - a @ params
    return params, float(resid @ resid)


def _chi2_ref(y, dy) -> float:
    w = dy**-2
    return float(np.sum(w * (y - np.sum(w * y) / np.sum(w)) ** 2))


def exact_power(times, fluxes, errors, frequencies, *, nterms: int = 1) -> np.ndarray:
    """Exact standard-normalised power by direct weighted least squares at each frequency (O(N) each)."""
    t = np.asarray(times, dtype=float)
    y = np.asarray(fluxes, dtype=float)
    dy = np.asarray(errors, dtype=float)
    tau = t - t.mean()
    ref = _chi2_ref(y, dy)
    freqs = np.atleast_1d(np.asarray(frequencies, dtype=float))
    return np.array([1.0 - _wls(tau, y, dy, f, nterms)[1] / ref for f in freqs])


def _frequency_uncertainty(tau, y, dy, frequency, params, nterms, unit_weights) -> float:
    """sigma_f from the linearised (Fisher) covariance of the full model, inflated by max(1, chi2_red)."""
    design = _design(tau, frequency, nterms)
    dm_df = np.zeros_like(tau)
    for k in range(1, nterms + 1):
        phase = 2.0 * np.pi * k * frequency * tau
        a_k, b_k = params[2 * k - 1], params[2 * k]
        dm_df += 2.0 * np.pi * k * tau * (-a_k * np.sin(phase) + b_k * np.cos(phase))
    jac = np.column_stack([design, dm_df]) / dy[:, None]
    resid = (y - design @ params) / dy
    dof = tau.size - jac.shape[1]
    chi2_red = float(resid @ resid) / dof if dof > 0 else float("inf")
    scale = chi2_red if unit_weights else max(1.0, chi2_red)
    fisher = jac.T @ jac
    try:
        cov = np.linalg.inv(fisher)
    except np.linalg.LinAlgError:
        return float("inf")
    var = cov[-1, -1] * scale
    return float(math.sqrt(var)) if var > 0 and np.isfinite(var) else float("inf")


# ----------------------------------------------------------------------------------------------- FAP


def baluev_fap(power, *, n_points: int, times, errors, fmin: float, fmax: float) -> np.ndarray:
    """Baluev (2008) false-alarm probability for standard-normalised nterms=1 power (formula in module doc)."""
    z = np.clip(np.asarray(power, dtype=float), 0.0, 1.0)
    n = int(n_points)
    nh, nk = n - 1, n - 3
    w = np.asarray(errors, dtype=float) ** -2
    t = np.asarray(times, dtype=float)
    tm = np.sum(w * t) / np.sum(w)
    var_t = np.sum(w * (t - tm) ** 2) / np.sum(w)
    bandwidth = (fmax - fmin) * math.sqrt(4.0 * math.pi * var_t)
    log_gamma = 0.5 * math.log(2.0 / nh) + gammaln(nh / 2.0) - gammaln((nh - 1) / 2.0)
    with np.errstate(divide="ignore"):
        log1mz = np.log1p(-z)
        fap_single = np.exp(0.5 * nk * log1mz)
        tau = np.exp(log_gamma + 0.5 * (nk - 1) * log1mz) * bandwidth * np.sqrt(0.5 * nh * z)
    fap = -np.expm1(np.log1p(-np.minimum(fap_single, 1.0 - 1e-300)) - tau)
    return np.clip(fap, 0.0, 1.0)


def _bootstrap_max_power(t, y, dy, grid, nterms, n_bootstrap, rng, threads, engine) -> np.ndarray:
    batch = max(1, min(n_bootstrap, _BOOTSTRAP_BATCH_BYTES // (8 * max(grid.n, t.size) * 4)))
    out = np.empty(n_bootstrap)
    done = 0
    while done < n_bootstrap:
        m = min(batch, n_bootstrap - done)
        idx = rng.integers(0, t.size, size=(m, t.size))
        power = grid_power(t, y[idx], dy[idx], grid, nterms=nterms, threads=threads, engine=engine, precise=False)
        out[done:done + m] = np.atleast_2d(power).max(axis=1)
        done += m
    return out


# ----------------------------------------------------------------------------------------------- main


def _window_peaks(freq, window, baseline):
    """Frequencies of local maxima of the spectral window above the threshold, strongest first."""
    inner = (window[1:-1] > window[:-2]) & (window[1:-1] >= window[2:]) & (window[1:-1] > WINDOW_PEAK_THRESHOLD)
    idx = np.nonzero(inner)[0] + 1
    idx = idx[freq[idx] > 2.0 / baseline]
    return freq[idx[np.argsort(window[idx])[::-1]]]


def _diagnostics(freq, power, window, best_f, best_power, baseline, max_period, unit_weights):
    found: list[PeriodogramWarning] = []
    if unit_weights:
        found.append(PeriodogramWarning(
            "unit_weights", "no uncertainties given: unit weights, errors scaled by the scatter"))
    if max_period is not None and max_period > baseline:
        found.append(PeriodogramWarning(
            "baseline", f"max_period {max_period:.6g} d exceeds the {baseline:.6g} d baseline: "
            "longer periods are unconstrained"))
    if 1.0 / best_f > 0.5 * baseline:
        found.append(PeriodogramWarning(
            "baseline", f"best period {1.0 / best_f:.6g} d covers fewer than two cycles of the "
            f"{baseline:.6g} d baseline"))
    half_width = 1.5 / baseline
    for fw in _window_peaks(freq, window, baseline)[:3]:
        if abs(best_f - fw) < half_width:
            found.append(PeriodogramWarning(
                "window", f"best peak at {1 / best_f:.6g} d coincides with a spectral-window peak at {1 / fw:.6g} d "
                "(sampling artefact?)"))
            continue
        for alias in (best_f + fw, abs(best_f - fw)):
            near = np.abs(freq - alias) < half_width
            if near.any() and alias > freq[0] and power[near].max() >= ALIAS_POWER_RATIO * best_power:
                found.append(PeriodogramWarning(
                    "alias", f"peak at {1 / alias:.6g} d (alias of {1 / best_f:.6g} d through the {1 / fw:.6g} d "
                    f"sampling window) reaches {power[near].max() / best_power:.2f} of the best power"))
    return found


def lomb_scargle_result(
    times, fluxes, errors, *, min_period=None, max_period=None, oversampling: float = 5, nterms: int = 1,
    fap_method: FapMethod = "baluev", n_bootstrap: int = 1000, rng: np.random.Generator | None = None,
    threads: int = 1, engine: Engine = "nifty", _power=None, _window_power=None,
) -> PeriodogramResult:
    """Typed form of :func:`lomb_scargle` (see module docstring for every rule)."""
    t, y, dy, unit_weights = _validate(times, fluxes, errors, nterms)
    if fap_method not in ("baluev", "bootstrap", "none"):
        raise ValueError(f"fap_method must be 'baluev', 'bootstrap' or 'none', got {fap_method!r}")
    if fap_method == "baluev" and nterms != 1:
        raise ValueError(f"the Baluev FAP is defined for nterms=1 (got nterms={nterms}); use fap_method='bootstrap'")
    if fap_method == "bootstrap":
        if not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 1:
            raise ValueError(f"n_bootstrap must be a positive integer, got {n_bootstrap!r}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"bootstrap FAP needs an explicit numpy Generator as rng, got {type(rng).__name__}")
    grid = frequency_grid(t, min_period=min_period, max_period=max_period, oversampling=oversampling)
    baseline = float(t[-1] - t[0])
    freq = grid.frequencies()
    power = _power if _power is not None else grid_power(t, y, dy, grid, nterms=nterms, threads=threads, engine=engine)
    window = _window_power if _window_power is not None else _window(t, dy, grid, threads, engine)

    # Off-grid refinement of the highest peak with the exact power.
    t_ref = float(np.sum(t * dy**-2) / np.sum(dy**-2))
    tau = t - t_ref
    ref = _chi2_ref(y, dy)
    k = int(np.argmax(power))
    lo, hi = max(freq[k] - grid.df, 1e-12), freq[k] + grid.df
    opt = optimize.minimize_scalar(
        lambda f: _wls(tau, y, dy, f, nterms)[1], bounds=(lo, hi), method="bounded",
        options={"xatol": grid.df * 1e-7},
    )
    best_f = float(opt.x)
    params, chi2 = _wls(tau, y, dy, best_f, nterms)
    best_power = 1.0 - chi2 / ref
    if best_power < power[k]:  # the bounded search never loses to the grid point itself
        best_f = float(freq[k])
        params, chi2 = _wls(tau, y, dy, best_f, nterms)
        best_power = 1.0 - chi2 / ref
    sigma_f = _frequency_uncertainty(tau, y, dy, best_f, params, nterms, unit_weights)

    exceed = None
    n_boot = None
    if fap_method == "baluev":
        fap = float(baluev_fap(best_power, n_points=t.size, times=t, errors=dy, fmin=grid.fmin, fmax=grid.fmax))
    elif fap_method == "none":
        fap = float("nan")
    else:
        maxima = _bootstrap_max_power(t, y, dy, grid, nterms, int(n_bootstrap), rng, threads, engine)
        # Compare with the grid maximum: the bootstrap maxima are grid maxima too.
        exceed = int(np.sum(maxima >= power[k]))
        fap = (1 + exceed) / (n_bootstrap + 1)
        n_boot = int(n_bootstrap)

    warns = _diagnostics(freq, power, window, best_f, best_power, baseline, max_period, unit_weights)
    for mult in range(2, nterms + 1):  # a multi-harmonic model at P also fits a signal of period P/mult
        f_k = mult * best_f
        if f_k > grid.fmax:
            break
        opt_k = optimize.minimize_scalar(
            lambda f: _wls(tau, y, dy, f, nterms)[1], bounds=(f_k - grid.df, f_k + grid.df), method="bounded",
            options={"xatol": grid.df * 1e-4},
        )
        power_k = 1.0 - float(opt_k.fun) / ref
        if power_k >= SUBHARMONIC_POWER_RATIO * best_power:
            warns.append(PeriodogramWarning(
                "subharmonic", f"period {1 / float(opt_k.x):.6g} d (= best / {mult}) fits nearly as well (power "
                f"{power_k:.4f} vs {best_power:.4f}): the signal may have that period, the best one being its "
                f"{mult}-fold multiple"))
    if fap_method == "bootstrap" and exceed == 0:
        warns.append(PeriodogramWarning(
            "bootstrap_resolution", f"FAP is at the bootstrap floor 1/(n+1) = {fap:.3g}; the true value is smaller"))

    for arr in (freq, power, window, params):
        arr.setflags(write=False)
    return PeriodogramResult(
        best_frequency=best_f, best_frequency_err=sigma_f, best_period=1.0 / best_f,
        best_period_err=sigma_f / best_f**2, best_power=float(best_power), fap=float(fap), fap_method=fap_method,
        n_bootstrap=n_boot, frequency=freq, power=power, window_power=window, nterms=int(nterms),
        n_points=int(t.size), baseline=baseline, t_ref=t_ref, model_params=params,
        engine=engine, warnings=tuple(warns),
    )


def _window(t, dy, grid, threads, engine) -> np.ndarray:
    """Spectral window |sum w exp(2 pi i f t)|^2 / (sum w)^2 on the grid (classical, no mean fit)."""
    if engine == "nifty":
        import nifty_ls

        res = nifty_ls.lombscargle(
            np.ascontiguousarray(t - t.min()), np.ones_like(t), np.ascontiguousarray(dy),
            fmin=grid.fmin, fmax=grid.fmax, Nf=grid.n, backend="finufft", nthreads=int(threads),
            normalization="standard", center_data=False, fit_mean=False,
            finufft_kwargs=dict(FINUFFT_DEFAULT),
        )
        return np.asarray(res.power, dtype=float)
    from astropy.timeseries import LombScargle

    return np.asarray(
        LombScargle(t, np.ones_like(t), dy, fit_mean=False, center_data=False).power(grid.frequencies(), method="slow"),
        dtype=float,
    )


def lomb_scargle(
    times, fluxes, errors, *, min_period=None, max_period=None, oversampling: float = 5, nterms: int = 1,
    fap_method: FapMethod = "baluev", n_bootstrap: int = 1000, rng: np.random.Generator | None = None,
    threads: int = 1, engine: Engine = "nifty",
) -> dict:
    """Lomb-Scargle period search. Returns a dict with ``best_period``, ``best_period_err``, ``fap``,
    ``power_spectrum`` {``frequency``, ``power``}, ``warnings`` (list of {kind, message}) and more; the typed
    :class:`PeriodogramResult` is under ``"result"``. Units: days and cycles/day."""
    return lomb_scargle_result(
        times, fluxes, errors, min_period=min_period, max_period=max_period, oversampling=oversampling,
        nterms=nterms, fap_method=fap_method, n_bootstrap=n_bootstrap, rng=rng, threads=threads, engine=engine,
    ).to_dict()


def lomb_scargle_batch(
    light_curves: Sequence[tuple], *, min_period=None, max_period=None, oversampling: float = 5, nterms: int = 1,
    fap_method: FapMethod = "baluev", n_bootstrap: int = 1000, rng: np.random.Generator | None = None,
    threads: int = 1, engine: Engine = "nifty",
) -> list[PeriodogramResult]:
    """Many light curves ``[(times, fluxes, errors), ...]`` at once.

    Curves sharing identical (sorted) times are transformed together in one batched nifty-ls call; the rest one
    by one. With ``fap_method='bootstrap'`` each curve gets its own child generator ``rng.spawn``-ed in input
    order, so results do not depend on the grouping.
    """
    prepared = [_validate(t, y, dy, nterms) for (t, y, dy) in light_curves]
    children: list = [None] * len(prepared)
    if fap_method == "bootstrap":
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"bootstrap FAP needs an explicit numpy Generator as rng, got {type(rng).__name__}")
        children = rng.spawn(len(prepared))
    groups: dict[bytes, list[int]] = {}
    for i, (t, *_rest) in enumerate(prepared):
        groups.setdefault(t.tobytes(), []).append(i)
    powers: list = [None] * len(prepared)
    windows: list = [None] * len(prepared)
    for members in groups.values():
        t = prepared[members[0]][0]
        grid = frequency_grid(t, min_period=min_period, max_period=max_period, oversampling=oversampling)
        ys = np.stack([prepared[i][1] for i in members])
        dys = np.stack([prepared[i][2] for i in members])
        block = np.atleast_2d(grid_power(t, ys, dys, grid, nterms=nterms, threads=threads, engine=engine))
        window_cache: dict[bytes, np.ndarray] = {}
        for row, i in enumerate(members):
            powers[i] = block[row]
            key = prepared[i][2].tobytes()
            if key not in window_cache:
                window_cache[key] = _window(t, prepared[i][2], grid, threads, engine)
            windows[i] = window_cache[key]
    results = []
    for i, (t, y, dy, unit_weights) in enumerate(prepared):
        results.append(lomb_scargle_result(
            t, y, None if unit_weights else dy, min_period=min_period, max_period=max_period,
            oversampling=oversampling, nterms=nterms, fap_method=fap_method, n_bootstrap=n_bootstrap,
            rng=children[i], threads=threads, engine=engine, _power=powers[i], _window_power=windows[i],
        ))
    return results


# ----------------------------------------------------------------------------------------------- plot


def plot_phase_folded(times, fluxes, errors, result: PeriodogramResult, path, *, title: str | None = None,
                      ylabel: str = "flux", invert_y: bool = False) -> str:
    """Write a plot of the light curve folded at ``result.best_period`` with the fitted model (atomic write), in
    the format the suffix of ``path`` names (.png, .pdf, .svg, ...; ValueError for others)."""
    from server.core.plotformat import plot_format

    fmt = plot_format(path)
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg renders the PNG

    t = np.asarray(times, dtype=float)
    y = np.asarray(fluxes, dtype=float)
    dy = None if errors is None else np.asarray(errors, dtype=float)
    period = result.best_period
    phase = np.mod((t - result.t_ref) / period, 1.0)
    grid = np.linspace(0.0, 1.0, 400)
    model = result.model(result.t_ref + grid * period)

    fig = Figure(figsize=(7, 4.2), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    for shift in (0.0, 1.0):
        ax.errorbar(phase + shift, y, yerr=dy, fmt=".", ms=3, color="0.25", ecolor="0.7", elinewidth=0.6,
                    label="data" if shift == 0 else None)
        ax.plot(grid + shift, model, color="tab:red", lw=1.5,
                label=f"{result.nterms}-term model" if shift == 0 else None)
    ax.set_xlim(0, 2)
    ax.set_xlabel(f"phase (P = {period:.7g} +- {result.best_period_err:.2g} d)")
    ax.set_ylabel(ylabel)
    if invert_y:
        ax.invert_yaxis()
    ax.set_title(title or f"FAP {result.fap:.3g} ({result.fap_method}), power {result.best_power:.3f}")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()

    with atomic_open(path) as fh:
        fig.savefig(fh, format=fmt)
    return os.fspath(path)
