"""Multi-band period search: one periodogram over every band of a target (shared period).

Model (VanderPlas & Ivezic 2015, ApJ 812, 18: the multiband periodogram with ``N_base = 0`` shared terms and
``N_band = nterms`` terms per band): in band ``b`` the light curve is ``y_b(t) = c_b + sum_k a_bk cos(2 pi k f t)
+ b_bk sin(2 pi k f t)``: one frequency ``f`` for all bands, each band with its own offset and its own amplitudes
and phases.  The power is ``1 - sum_b chi2_b(f) / sum_b chi2_0,b`` (standard normalisation; ``chi2_0,b``: the
weighted chi^2 of band ``b`` about its weighted mean).  Since each band's best fit at ``f`` is independent of the
others, ``chi2_b(f) = chi2_0,b * (1 - P_b(f))`` with ``P_b`` the single-band generalised Lomb-Scargle power of
:mod:`server.timeseries.periodogram`, so the whole grid costs one nifty-ls transform per band (astropy's
``LombScargleMultiband(nterms_base=0, nterms_band=nterms)`` gives the same power; the tests check it).

Units: times in days (any common zero point), frequencies in cycles/day, values in mag or flux (any unit; each band
may have its own zero point: offsets are fitted per band).

Frequency grid: :func:`server.timeseries.periodogram.frequency_grid` over the times of all bands together (give
``min_period``: surveys that take the bands within minutes of each other otherwise set a very high cadence limit).

Peak (the multiterm pick of VanderPlas & Ivezic 2015, section 4): the ``n_candidates`` highest local maxima of the
grid power are each refined on a fine local grid (``+-df`` in steps of ``df / (4 pick_nterms)``; the grid itself
resolves the fundamental, not the ``k``-th harmonic, whose peak is ``k`` times narrower) with models of
``1 .. pick_nterms`` terms per band sharing the frequency, then by bounded minimisation of the exact total chi^2
around the best fine point.  Each candidate scores ``min_K BIC = N ln chi2_K + (B (2K + 1) + 1) ln N`` (the BIC of
a Gaussian model whose error scale is fitted: real errors are often underestimated, and ``chi2 + p ln N`` then
over-rewards extra terms; on the 24 Stripe 82 stars of the tests it picked 2P for one RRc); the lowest BIC wins.  Why: at 20 epochs per band the true peak of a sharp (many-harmonic) light curve often falls between grid
points and reads below an alias; and a K-term model at ``2P`` fits as well as a K/2-term model at ``P`` plus noise,
which the BIC penalises (measured by ``python -m benchmarks.bench_multiband``, docs/lightcurves.md).  The
uncertainty of ``f`` comes from the linearised (Fisher) covariance of the winning model (all band parameters and
``f``), inflated by ``max(1, chi2_red)`` as in the single-band search.  ``best_power`` is the ``nterms`` power at
the picked frequency; the FAP is that of the highest grid power (the detection statistic, whichever peak is
picked); ``params`` and :meth:`MultibandResult.model` use the winning ``model_nterms``.

False-alarm probability (probability that noise alone gives a peak this high anywhere on the grid)
    ``'analytic'``: at one frequency, for Gaussian noise with the stated errors, ``Z`` follows
    ``Beta(p/2, (N - B - p)/2)`` (``N`` points, ``B`` bands, ``p = 2 nterms B`` harmonic parameters); over the grid
    ``FAP = 1 - (1 - P_single)^M`` with ``M = nterms * (fmax - fmin) * T`` effective independent frequencies
    (``T`` the baseline; each harmonic k resolves k times finer).  Its calibration on pure noise is measured by
    ``python -m benchmarks.bench_multiband --fap`` and asserted in tests/test_multiband.py (docs/lightcurves.md).
    ``'bootstrap'``: ``n_bootstrap`` resamplings of the (value, error) pairs within each band at that band's
    times, the grid maximum of each; ``FAP = (1 + #{max >= Z}) / (n_bootstrap + 1)``.
    ``'none'``: NaN.

Bands with fewer than ``2 nterms + 3`` points are left out with a warning (``sparse_band``).  With ``nterms > 1``
a ``subharmonic`` warning says when the model at ``P / k`` (k <= nterms) reaches >= 0.98 of the best power (a
K-term model of a near-sinusoid peaks at P and 2P alike), as in the single-band search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
from scipy import optimize, special

from server.timeseries.periodogram import (
    SUBHARMONIC_POWER_RATIO,
    Engine,
    FrequencyGrid,
    PeriodogramWarning,
    _chi2_ref,
    _design,
    _wls,
    frequency_grid,
    grid_power,
)

__all__ = ["MultibandResult", "multiband_periodogram", "multiband_grid_power", "analytic_fap"]

MultibandFap = Literal["analytic", "bootstrap", "none"]
_BOOTSTRAP_BATCH = 64


@dataclass(frozen=True)
class MultibandResult:
    """Result of :func:`multiband_periodogram`. ``params[band]``: offset and harmonic amplitudes of that band at the
    best frequency, for times relative to ``t_ref`` (days)."""

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
    bands: tuple[str, ...]
    n_points: dict
    nterms: int
    baseline: float
    t_ref: float
    params: dict
    warnings: tuple[PeriodogramWarning, ...] = field(default_factory=tuple)
    model_nterms: int | None = None  # terms per band of the BIC-picked model (params, model()); None: nterms

    def model(self, times, band: str) -> np.ndarray:
        """Best-fit model of ``band`` at ``times`` (days, same zero point as the input)."""
        if band not in self.params:
            raise ValueError(f"band {band!r} is not in this result's bands {list(self.bands)}")
        tau = np.asarray(times, dtype=float) - self.t_ref
        return _design(tau, self.best_frequency, self.model_nterms or self.nterms) @ self.params[band]

    def to_dict(self) -> dict:
        return {
            "best_period": self.best_period, "best_period_err": self.best_period_err,
            "best_frequency": self.best_frequency, "best_frequency_err": self.best_frequency_err,
            "best_power": self.best_power, "fap": self.fap, "fap_method": self.fap_method,
            "n_bootstrap": self.n_bootstrap, "bands": list(self.bands), "n_points": dict(self.n_points),
            "nterms": self.nterms, "model_nterms": self.model_nterms or self.nterms, "baseline": self.baseline,
            "power_spectrum": {"frequency": self.frequency, "power": self.power},
            "warnings": [{"kind": w.kind, "message": w.message} for w in self.warnings],
            "result": self,
        }


def _split(times, values, errors, bands, nterms):
    t = np.asarray(times, dtype=float)
    y = np.asarray(values, dtype=float)
    if t.ndim != 1 or y.shape != t.shape:
        raise ValueError(f"times and values must be 1-D of equal length, got shapes {t.shape} and {y.shape}")
    dy = np.ones_like(t) if errors is None else np.asarray(errors, dtype=float)
    labels = np.asarray(bands).astype(str)
    if dy.shape != t.shape or labels.shape != t.shape:
        raise ValueError(f"errors and bands must have the shape of times {t.shape}, got {dy.shape} and "
                         f"{labels.shape}")
    if not isinstance(nterms, (int, np.integer)) or nterms < 1:
        raise ValueError(f"nterms must be a positive integer, got {nterms!r}")
    for name, arr in (("times", t), ("values", y), ("errors", dy)):
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{int(bad.sum())} non-finite {name}, first at index {i}: {arr[i]!r}")
    if np.any(dy <= 0):
        i = int(np.argmax(dy <= 0))
        raise ValueError(f"uncertainties must be > 0; errors[{i}] = {dy[i]!r}")
    n_min = 2 * nterms + 3
    out, warns = {}, []
    for band in sorted(set(labels.tolist())):
        sel = labels == band
        tb, yb, db = t[sel], y[sel], dy[sel]
        if tb.size < n_min or np.ptp(tb) <= 0 or _chi2_ref(yb, db) <= 0:
            warns.append(PeriodogramWarning(
                "sparse_band", f"band {band!r} left out: {tb.size} points (need >= {n_min} with a time span and "
                f"non-constant values for nterms={nterms})"))
            continue
        order = np.argsort(tb, kind="stable")
        out[band] = (tb[order], yb[order], db[order])
    if not out:
        raise ValueError(f"no band has enough points for an nterms={nterms} periodogram (need >= {n_min} each); "
                         f"bands: {sorted(set(labels.tolist()))}")
    return out, warns, errors is None


def multiband_grid_power(data: dict, grid: FrequencyGrid, *, nterms: int = 1, threads: int = 1,
                         engine: Engine = "nifty") -> np.ndarray:
    """Multiband power on ``grid``; ``data``: {band: (t, y, dy)} (sorted, validated)."""
    chi2 = np.zeros(grid.n)
    ref_total = 0.0
    for t, y, dy in data.values():
        ref = _chi2_ref(y, dy)
        chi2 += ref * (1.0 - grid_power(t, y, dy, grid, nterms=nterms, threads=threads, engine=engine))
        ref_total += ref
    return 1.0 - chi2 / ref_total


def _total_chi2(data, t_ref, frequency, nterms) -> float:
    return sum(_wls(t - t_ref, y, dy, frequency, nterms)[1] for t, y, dy in data.values())


def _band_chi2_many(tau, y, dy, freqs, nterms) -> np.ndarray:
    """chi^2 of the ``nterms``-term weighted least-squares fit of one band at each frequency of ``freqs``
    (batched normal equations; ``tau`` centred)."""
    w = 1.0 / dy
    phase = 2.0 * np.pi * freqs[:, None] * tau[None, :]
    cols = [np.broadcast_to(w, phase.shape)]
    for k in range(1, nterms + 1):
        cols += [np.cos(k * phase) * w, np.sin(k * phase) * w]
    a = np.stack(cols, axis=-1)                      # (F, N, p)
    b = y * w
    ata = np.einsum("fnp,fnq->fpq", a, a)
    atb = np.einsum("fnp,n->fp", a, b)
    try:
        sol = np.linalg.solve(ata, atb[..., None])[..., 0]
    except np.linalg.LinAlgError:  # a degenerate frequency (e.g. all points at one phase): least squares one by one
        sol = np.array([np.linalg.lstsq(a[i], b, rcond=None)[0] for i in range(freqs.size)])
    resid = b[None, :] - np.einsum("fnp,fp->fn", a, sol)
    return np.sum(resid * resid, axis=1)


def _total_chi2_many(data, t_ref, freqs, nterms) -> np.ndarray:
    return sum(_band_chi2_many(t - t_ref, y, dy, freqs, nterms) for t, y, dy in data.values())


def _peak_indices(power: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest local maxima of ``power`` (ends included), highest first."""
    inner = np.ones(power.size, dtype=bool)
    inner[1:] &= power[1:] >= power[:-1]
    inner[:-1] &= power[:-1] >= power[1:]
    idx = np.flatnonzero(inner)
    return idx[np.argsort(power[idx])[::-1][:n]]


def _pick_peak(data, t_ref, freq, power, df, n_candidates, pick_nterms, n_polish: int = 3):
    """The BIC pick among the refined top grid peaks (module docstring): (frequency, terms per band, BIC).
    Every (candidate, K) is scored on its fine local grid; the ``n_polish`` best are polished by bounded
    minimisation (the fine step, df / (4 pick_nterms), leaves a chi^2 error far below the gaps between aliases)."""
    n_total = sum(d[0].size for d in data.values())
    n_bands = len(data)
    steps = 4 * pick_nterms
    offsets = df * np.arange(-steps, steps + 1) / steps
    scored = []  # (BIC on the fine grid, K, frequency, chi2, lo, hi)
    for i in _peak_indices(power, n_candidates):
        local = np.maximum(freq[i] + offsets, 1e-12)
        for k in range(1, pick_nterms + 1):
            n_par = n_bands * (2 * k + 1) + 1
            if n_par >= n_total:  # K = 1 always fits: every band has >= 2 nterms + 3 points
                break
            chi2 = _total_chi2_many(data, t_ref, local, k)
            j = int(np.argmin(chi2))
            scored.append((_bic(chi2[j], n_par, n_total), k, float(local[j]), float(chi2[j]),
                           float(local[max(j - 1, 0)]), float(local[min(j + 1, local.size - 1)])))
    best = (float("inf"), float("nan"), 1)
    for _, k, f_j, c_j, lo, hi in sorted(scored)[:n_polish]:
        opt = optimize.minimize_scalar(lambda f: _total_chi2(data, t_ref, f, k), bounds=(lo, hi),
                                       method="bounded", options={"xatol": df * 1e-7})
        f_k, c_k = (float(opt.x), float(opt.fun)) if opt.fun < c_j else (f_j, c_j)
        bic = _bic(c_k, n_bands * (2 * k + 1) + 1, n_total)
        if bic < best[0]:
            best = (bic, f_k, k)
    return best


def _bic(chi2: float, n_par: int, n_total: int) -> float:
    """BIC of a Gaussian model with a fitted error scale (module docstring)."""
    return n_total * math.log(max(chi2, 1e-300)) + n_par * math.log(n_total)


def analytic_fap(power, *, n_points: int, n_bands: int, nterms: int, fmin: float, fmax: float,
                 baseline: float) -> float:
    """Grid false-alarm probability of a multiband peak ``power`` (the rule is in the module docstring)."""
    p = 2 * nterms * n_bands
    dof = n_points - n_bands - p
    if dof <= 0:
        return float("nan")
    single = float(special.betaincc(0.5 * p, 0.5 * dof, min(max(float(power), 0.0), 1.0)))
    m = max(1.0, nterms * (fmax - fmin) * baseline)
    return float(-np.expm1(m * np.log1p(-min(single, 1.0 - 1e-300))))


def _bootstrap_maxima(data, grid, nterms, n_bootstrap, rng, threads, engine) -> np.ndarray:
    out = np.empty(n_bootstrap)
    done = 0
    while done < n_bootstrap:
        m = min(_BOOTSTRAP_BATCH, n_bootstrap - done)
        chi2 = np.zeros((m, grid.n))
        ref_total = np.zeros(m)
        for t, y, dy in data.values():
            idx = rng.integers(0, t.size, size=(m, t.size))
            yb, db = y[idx], dy[idx]
            w = db ** -2
            ref = np.sum(w * (yb - (np.sum(w * yb, axis=1) / np.sum(w, axis=1))[:, None]) ** 2, axis=1)
            ok = ref > 0  # a resample of identical values has no power: it adds nothing
            power = np.atleast_2d(grid_power(t, yb, db, grid, nterms=nterms, threads=threads, engine=engine,
                                             precise=False))
            chi2 += np.where(ok[:, None], ref[:, None] * (1.0 - power), 0.0)
            ref_total += np.where(ok, ref, 0.0)
        out[done:done + m] = (1.0 - chi2 / ref_total[:, None]).max(axis=1)
        done += m
    return out


def _fisher_sigma_f(data, t_ref, frequency, params, nterms, unit_weights) -> float:
    blocks, dfs, resid = [], [], []
    for band, (t, y, dy) in data.items():
        tau = t - t_ref
        design = _design(tau, frequency, nterms)
        p = params[band]
        dm = np.zeros_like(tau)
        for k in range(1, nterms + 1):
            phase = 2.0 * np.pi * k * frequency * tau
            dm += 2.0 * np.pi * k * tau * (-p[2 * k - 1] * np.sin(phase) + p[2 * k] * np.cos(phase))
        blocks.append(design / dy[:, None])
        dfs.append(dm / dy)
        resid.append((y - design @ p) / dy)
    n_par = sum(b.shape[1] for b in blocks) + 1
    n = sum(b.shape[0] for b in blocks)
    jac = np.zeros((n, n_par))
    row = col = 0
    for b, d in zip(blocks, dfs):
        jac[row:row + b.shape[0], col:col + b.shape[1]] = b
        jac[row:row + b.shape[0], -1] = d
        row += b.shape[0]
        col += b.shape[1]
    r = np.concatenate(resid)
    dof = n - n_par
    chi2_red = float(r @ r) / dof if dof > 0 else float("inf")
    scale = chi2_red if unit_weights else max(1.0, chi2_red)
    try:
        cov = np.linalg.inv(jac.T @ jac)
    except np.linalg.LinAlgError:
        return float("inf")
    var = cov[-1, -1] * scale
    return float(math.sqrt(var)) if var > 0 and np.isfinite(var) else float("inf")


def multiband_periodogram(
    times, values, errors, bands: Sequence, *, min_period=None, max_period=None, oversampling: float = 5,
    nterms: int = 1, fap_method: MultibandFap = "analytic", n_bootstrap: int = 1000,
    rng: np.random.Generator | None = None, threads: int = 1, engine: Engine = "nifty",
    n_candidates: int = 20, pick_nterms: int | None = None,
) -> MultibandResult:
    """Shared-period search over all bands (model, grid, peak pick, FAP: module docstring). ``bands``: one label per
    point.  ``n_candidates`` grid peaks are refined and scored with 1..``pick_nterms`` terms per band (default
    ``max(nterms, 4)``); ``n_candidates=1, pick_nterms=nterms`` refines the highest grid peak only."""
    data, warns, unit_weights = _split(times, values, errors, bands, nterms)
    if not isinstance(n_candidates, (int, np.integer)) or n_candidates < 1:
        raise ValueError(f"n_candidates must be a positive integer, got {n_candidates!r}")
    if pick_nterms is None:
        pick_nterms = max(int(nterms), 4)
    if not isinstance(pick_nterms, (int, np.integer)) or pick_nterms < 1:
        raise ValueError(f"pick_nterms must be a positive integer, got {pick_nterms!r}")
    if fap_method not in ("analytic", "bootstrap", "none"):
        raise ValueError(f"fap_method must be 'analytic', 'bootstrap' or 'none', got {fap_method!r}")
    if fap_method == "bootstrap":
        if not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 1:
            raise ValueError(f"n_bootstrap must be a positive integer, got {n_bootstrap!r}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"bootstrap FAP needs an explicit numpy Generator as rng, got {type(rng).__name__}")
    t_all = np.concatenate([d[0] for d in data.values()])
    grid = frequency_grid(t_all, min_period=min_period, max_period=max_period, oversampling=oversampling)
    baseline = float(np.ptp(t_all))
    freq = grid.frequencies()
    power = multiband_grid_power(data, grid, nterms=nterms, threads=threads, engine=engine)

    w_all = np.concatenate([d[2] for d in data.values()]) ** -2
    t_ref = float(np.sum(w_all * t_all) / np.sum(w_all))
    ref_total = sum(_chi2_ref(y, dy) for _, y, dy in data.values())
    k = int(np.argmax(power))
    _, best_f, model_nterms = _pick_peak(data, t_ref, freq, power, grid.df, int(n_candidates), int(pick_nterms))
    best_power = 1.0 - _total_chi2(data, t_ref, best_f, nterms) / ref_total
    params = {b: _wls(t - t_ref, y, dy, best_f, model_nterms)[0] for b, (t, y, dy) in data.items()}
    sigma_f = _fisher_sigma_f(data, t_ref, best_f, params, model_nterms, unit_weights)

    n_points = {b: int(d[0].size) for b, d in data.items()}
    n_boot = None
    if fap_method == "analytic":
        fap = analytic_fap(power[k], n_points=int(t_all.size), n_bands=len(data), nterms=nterms,
                           fmin=grid.fmin, fmax=grid.fmax, baseline=baseline)
    elif fap_method == "bootstrap":
        maxima = _bootstrap_maxima(data, grid, nterms, int(n_bootstrap), rng, threads, engine)
        exceed = int(np.sum(maxima >= power[k]))
        fap = (1 + exceed) / (n_bootstrap + 1)
        n_boot = int(n_bootstrap)
        if exceed == 0:
            warns.append(PeriodogramWarning(
                "bootstrap_resolution", f"FAP is at the bootstrap floor 1/(n+1) = {fap:.3g}; the true value is "
                "smaller"))
    else:
        fap = float("nan")
    for mult in range(2, nterms + 1):  # as in the single-band search: a K-term model at P also fits P/k
        f_k = mult * best_f
        if f_k > grid.fmax:
            break
        opt_k = optimize.minimize_scalar(lambda f: _total_chi2(data, t_ref, f, nterms),
                                         bounds=(f_k - grid.df, f_k + grid.df), method="bounded",
                                         options={"xatol": grid.df * 1e-4})
        power_k = 1.0 - float(opt_k.fun) / ref_total
        if power_k >= SUBHARMONIC_POWER_RATIO * best_power:
            warns.append(PeriodogramWarning(
                "subharmonic", f"period {1 / float(opt_k.x):.6g} d (= best / {mult}) fits nearly as well (power "
                f"{power_k:.4f} vs {best_power:.4f}): the signal may have that period"))
    if unit_weights:
        warns.append(PeriodogramWarning("unit_weights", "no uncertainties given: unit weights"))
    for arr in (freq, power):
        arr.setflags(write=False)
    return MultibandResult(
        best_frequency=best_f, best_frequency_err=sigma_f, best_period=1.0 / best_f,
        best_period_err=sigma_f / best_f ** 2, best_power=float(best_power), fap=float(fap),
        fap_method=fap_method, n_bootstrap=n_boot, frequency=freq, power=power, bands=tuple(data),
        n_points=n_points, nterms=int(nterms), baseline=baseline, t_ref=t_ref, params=params,
        warnings=tuple(warns), model_nterms=int(model_nterms))
