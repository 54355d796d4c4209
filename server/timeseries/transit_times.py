"""Stage 7b: transit mid-times from light curves of one or several instruments, and published
transit-time tables.

Conventions: times are BJD_TDB in days (full Julian dates or a constant offset such as
BJD_TDB - 2454833, as long as the light curve and ``transit_params['t0']`` agree); sigmas
in days; fluxes normalised to 1 out of transit.  By default the transit shape is fitted to all
windows first (:mod:`server.timeseries.transit_shape`), then every window is timed with it;
each sigma carries the time-averaged red-noise factor beta (Winn et al. 2008).

``transit_params`` keys (units):
  period (d), t0 (d, a reference mid-transit time), rp_rs, a_rs, inc (deg) or b (impact
  parameter), u ([u1, u2] quadratic limb darkening); optional: ecc (0), w (deg, 90),
  window (half-width of the fitting window in units of the total duration T14, 1.0),
  search (half-width of the coarse mid-time grid search in units of T14, 0.5),
  min_points (points per window, 10), min_coverage (fraction of the transit duration that
  must hold data on each side of the mid-time, 0.5), supersample (1) and exp_time (d,
  needed when supersample > 1), instruments ({name: {exp_time, supersample, dilution,
  fit_dilution}} for the light curve's ``instrument`` column).
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from server.timeseries.transit_shape import (TransitShape, batman_model, fit_transit_shape,
                                             ingress_duration, parse_instruments)

TIME_OFFSETS = {2400000.0: "JD - 2400000", 2400000.5: "MJD", 2450000.0: "JD - 2450000",
                2454833.0: "BKJD (BJD - 2454833)", 2457000.0: "BTJD (BJD - 2457000)"}
_PARAM_KEYS = {"period", "t0", "rp_rs", "a_rs", "inc", "b", "u", "ecc", "w", "window", "search",
               "min_points", "min_coverage", "supersample", "exp_time", "instruments"}
COLUMNS = ["epoch", "t_obs", "t_pred", "O_minus_C", "sigma", "flag", "n_points", "chi2_red"]
EXTRA_COLUMNS = ["chi2", "sigma_white", "beta", "coverage", "partial", "instruments"]


@dataclass(frozen=True)
class Ephemeris:
    """Weighted linear ephemeris t = t0 + period * epoch; cov is the 2x2 covariance (d^2)."""

    t0: float
    period: float
    cov: tuple[tuple[float, float], tuple[float, float]]
    chi2: float
    n: int

    def to_dict(self) -> dict:
        return {"t0": self.t0, "period": self.period, "cov": [list(r) for r in self.cov],
                "chi2": self.chi2, "n": self.n}


def fit_linear_ephemeris(epoch, t_obs, sigma) -> Ephemeris:
    """Weighted least-squares linear ephemeris with its covariance (not rescaled by chi2)."""
    epoch = np.asarray(epoch, float)
    t_obs = np.asarray(t_obs, float)
    sigma = np.asarray(sigma, float)
    if len(epoch) < 2 or len(np.unique(epoch)) < 2:
        raise ValueError(f"a linear ephemeris needs >= 2 distinct epochs, got {len(epoch)}")
    w = 1.0 / sigma ** 2
    a = np.column_stack([np.ones_like(epoch), epoch])
    fisher = a.T @ (a * w[:, None])
    cov = np.linalg.inv(fisher)
    coef = cov @ (a.T @ (w * t_obs))
    chi2 = float(np.sum(w * (t_obs - a @ coef) ** 2))
    return Ephemeris(float(coef[0]), float(coef[1]),
                     ((float(cov[0, 0]), float(cov[0, 1])), (float(cov[1, 0]), float(cov[1, 1]))),
                     chi2, len(epoch))


def _parse_params(p: dict) -> dict:
    if not isinstance(p, dict):
        raise ValueError(f"transit_params must be a dict, got {type(p).__name__}")
    unknown = sorted(set(p) - _PARAM_KEYS)
    if unknown:
        raise ValueError(f"unknown transit_params key(s) {unknown}; allowed {sorted(_PARAM_KEYS)}")
    for k in ("period", "t0", "rp_rs", "a_rs", "u"):
        if k not in p:
            raise ValueError(f"transit_params needs {k!r}")
    if ("inc" in p) == ("b" in p):
        raise ValueError("transit_params needs exactly one of 'inc' (deg) or 'b'")
    out = {"period": float(p["period"]), "t0": float(p["t0"]), "rp_rs": float(p["rp_rs"]),
           "a_rs": float(p["a_rs"]), "ecc": float(p.get("ecc", 0.0)), "w": float(p.get("w", 90.0)),
           "window": float(p.get("window", 1.0)), "search": float(p.get("search", 0.5)),
           "min_points": int(p.get("min_points", 10)),
           "min_coverage": float(p.get("min_coverage", 0.5)),
           "supersample": int(p.get("supersample", 1)), "exp_time": float(p.get("exp_time", 0.0)),
           "instruments": p.get("instruments") or {}}
    if not isinstance(out["instruments"], dict):
        raise ValueError(f"transit_params['instruments'] must map instrument names to "
                         f"{{exp_time, supersample, dilution}}, got {out['instruments']!r}")
    u = list(p["u"])
    if len(u) != 2:
        raise ValueError(f"transit_params['u'] must be a quadratic pair [u1, u2], got {u}")
    out["u"] = [float(u[0]), float(u[1])]
    if out["period"] <= 0 or out["rp_rs"] <= 0 or out["a_rs"] <= 1:
        raise ValueError(f"need period > 0, rp_rs > 0, a_rs > 1; got {out['period']}, "
                         f"{out['rp_rs']}, {out['a_rs']}")
    if "b" in p:
        b = float(p["b"])
        if not 0 <= b < 1 + out["rp_rs"]:
            raise ValueError(f"impact parameter b={b} does not transit (rp_rs={out['rp_rs']})")
        out["inc"] = math.degrees(math.acos(b / out["a_rs"]))
    else:
        out["inc"] = float(p["inc"])
    b = out["a_rs"] * math.cos(math.radians(out["inc"]))
    if b >= 1 + out["rp_rs"]:
        raise ValueError(f"inc={out['inc']} deg gives impact parameter {b:.3f}: no transit")
    out["b"] = b
    _set_duration(out)
    return out


def _set_duration(p: dict) -> None:
    inc = math.radians(p["inc"])
    arg = math.sqrt(max((1 + p["rp_rs"]) ** 2 - p["b"] ** 2, 0.0)) / (p["a_rs"] * math.sin(inc))
    p["t14"] = p["period"] / math.pi * math.asin(min(arg, 1.0))


def _with_shape(p: dict, shape: TransitShape) -> dict:
    q = dict(p, rp_rs=shape.rp_rs, a_rs=shape.a_rs, b=shape.b, inc=shape.inc, u=list(shape.u))
    _set_duration(q)
    return q


def _solve_baseline(m, dt, f, e):
    """Weighted least-squares (c0, c1) of f ~ m (c0 + c1 dt) and its chi^2."""
    w = 1.0 / e ** 2
    a11, a12, a22 = np.sum(w * m * m), np.sum(w * m * m * dt), np.sum(w * m * m * dt * dt)
    b1, b2 = np.sum(w * f * m), np.sum(w * f * m * dt)
    det = a11 * a22 - a12 * a12
    if not det > 0:
        return 1.0, 0.0, np.inf
    c0, c1 = (b1 * a22 - b2 * a12) / det, (a11 * b2 - a12 * b1) / det
    return c0, c1, float(np.sum(w * (f - m * (c0 + c1 * dt)) ** 2))


def _fit_window(p, groups, t_pred, dilution):
    """Least squares of (tc, c0_k, c1_k for each instrument k) in one window.

    ``groups``: [(Instrument, t, f, e)].  Returns a dict with tc (d, absolute), sigma_white
    (d, from the Jacobian, unscaled), chi2, dof, flag, coverage, partial and the normalised
    residuals of each instrument (for the time-correlated noise estimate).
    """
    from scipy.optimize import least_squares

    half = 0.5 * p["t14"]
    parts = []
    for inst, t, f, e in groups:
        dt = t - t_pred
        bp, model = batman_model(dt, p["period"], inst)
        bp.rp, bp.a, bp.inc, bp.u, bp.ecc, bp.w = p["rp_rs"], p["a_rs"], p["inc"], p["u"], p["ecc"], p["w"]
        parts.append((inst, dt, f, e, bp, model, float(dilution.get(inst.name, inst.dilution))))

    def shapes(tc):
        out = []
        for _, _, _, _, bp, model, d in parts:
            bp.t0 = tc
            out.append((model.light_curve(bp) + d) / (1 + d))
        return out

    def resid(x):
        ms = shapes(x[0])
        return np.concatenate([(f - m * (x[1 + 2 * k] + x[2 + 2 * k] * dt)) / e
                               for k, ((_, dt, f, e, *_), m) in enumerate(zip(parts, ms))])

    def profile(tc):
        return [_solve_baseline(m, dt, f, e) for (_, dt, f, e, *_), m in zip(parts, shapes(tc))]

    grid = np.linspace(-p["search"] * p["t14"], p["search"] * p["t14"], 41)
    chi = [sum(s[2] for s in profile(g)) for g in grid]
    start = float(grid[int(np.argmin(chi))])
    x0 = [start] + [c for s in profile(start) for c in s[:2]]
    n = sum(len(pt[1]) for pt in parts)
    n_free = 1 + 2 * len(parts)
    out = {"tc": math.nan, "sigma_white": math.nan, "chi2": math.nan, "dof": n - n_free,
           "flag": "fit_failed", "coverage": math.nan, "partial": False, "resid": []}
    sol = least_squares(resid, x0, x_scale=[half * 0.01] + [1e-3] * (n_free - 1), method="lm")
    out["chi2"] = float(np.sum(sol.fun ** 2))
    tc = float(sol.x[0])
    if not sol.success or not np.isfinite(tc):
        return out
    try:
        cov = np.linalg.inv(sol.jac.T @ sol.jac)
    except np.linalg.LinAlgError:
        return out
    sig = math.sqrt(cov[0, 0]) if cov[0, 0] > 0 else math.nan
    if not np.isfinite(sig) or abs(tc) > p["window"] * p["t14"] - half:
        return out  # no usable curvature, or the transit left the window
    # coverage: the fraction of each half of the transit that holds data, each point standing
    # for one cadence (or its exposure, if longer) around it; the smaller of the two halves
    sides = [0.0, 0.0]
    for inst, dt, *_ in parts:
        span = max(float(np.median(np.diff(dt))) if len(dt) > 1 else 0.0, inst.exp_time)
        lo, hi = dt - 0.5 * span, dt + 0.5 * span
        sides[0] += float(np.sum(np.clip(np.minimum(hi, tc) - np.maximum(lo, tc - half), 0, None)))
        sides[1] += float(np.sum(np.clip(np.minimum(hi, tc + half) - np.maximum(lo, tc), 0, None)))
    coverage = min(1.0, min(sides) / half)
    k = 0
    for inst, dt, *_ in parts:
        out["resid"].append((inst.name, sol.fun[k:k + len(dt)]))
        k += len(dt)
    out.update(tc=tc + t_pred, sigma_white=sig, coverage=coverage,
               partial=bool(coverage < p["min_coverage"]),
               flag="partial" if coverage < p["min_coverage"] else "ok")
    return out


def time_averaged_beta(residuals, n_bins, reduce: str = "max") -> float:
    """Red-noise factor beta (Pont et al. 2006; Winn et al. 2008, section 3).

    ``residuals``: normalised residual arrays (one per window, in time order); ``n_bins``: the
    numbers of points per bin to average over.  For each N the residuals of every window are
    averaged in consecutive bins of N points; beta_N = (rms of the bin means) / (rms of the
    points / sqrt(N) * sqrt(M / (M - 1))), M the number of bins.  Returns the largest beta_N, at
    least 1; 1 when no window holds two bins of any N (the noise cannot be measured).
    ``reduce``: how the beta_N combine ("max", the default, or "median").
    """
    betas = []
    allr = np.concatenate([r for r in residuals if len(r)]) if residuals else np.array([])
    if allr.size < 4:
        return 1.0
    sigma1 = math.sqrt(float(np.mean(allr ** 2)))
    for nb in n_bins:
        means = [r[:len(r) // nb * nb].reshape(-1, nb).mean(axis=1) for r in residuals
                 if len(r) >= 2 * nb]
        if not means:
            continue
        means = np.concatenate(means)
        m = len(means)
        if m < 4:
            continue
        expected = sigma1 / math.sqrt(nb) * math.sqrt(m / (m - 1))
        betas.append(math.sqrt(float(np.mean(means ** 2))) / expected)
    if not betas:
        return 1.0
    return max(1.0, float(np.max(betas) if reduce == "max" else np.median(betas)))


def _noise_model(p, fits, instruments) -> dict:
    """Per instrument: pooled reduced chi^2 (3 free parameters a window) and beta from the
    residuals of the ok windows; beta over bins from half the ingress to half the transit."""
    tau = ingress_duration(p["period"], p["rp_rs"], p["a_rs"], p["b"])
    out = {}
    for name, inst in instruments.items():
        res = [r for fit in fits if fit["flag"] == "ok" for n, r in fit["resid"] if n == name]
        n = sum(len(r) for r in res)
        if not res or n <= 3 * len(res):
            out[name] = {"chi2_red": 1.0, "beta": 1.0, "n_windows": len(res)}
            continue
        chi2_red = float(sum(np.sum(r ** 2) for r in res) / (n - 3 * len(res)))
        times = [fit["t_by_inst"][name] for fit in fits
                 if fit["flag"] == "ok" and name in fit["t_by_inst"]]
        steps = [float(np.median(np.diff(x))) for x in times if len(x) > 1]
        cadence = float(np.median(steps)) if steps else (inst.exp_time or tau)
        lo = max(2, int(round(0.5 * tau / cadence)))
        hi = max(lo, int(round(0.5 * p["t14"] / cadence)))
        n_bins = sorted(set(np.unique(np.geomspace(lo, hi, 6).round().astype(int)).tolist()))
        scale = math.sqrt(max(chi2_red, 1.0))
        beta = time_averaged_beta([r / scale for r in res], n_bins)
        out[name] = {"chi2_red": chi2_red, "beta": beta, "n_windows": len(res),
                     "bin_points": n_bins}
    return out


def _windows(t, f, e, inst, p, instruments):
    """[(epoch, t_pred, groups, n_points)] of every predicted transit with data."""
    first = math.ceil((t[0] - p["t0"]) / p["period"] - 0.5)
    last = math.floor((t[-1] - p["t0"]) / p["period"] + 0.5)
    width = p["window"] * p["t14"]
    out = []
    for n in range(first, last + 1):
        t_pred = p["t0"] + n * p["period"]
        lo, hi = np.searchsorted(t, [t_pred - width, t_pred + width])
        if hi - lo == 0:
            continue  # no data at all: not an observed transit
        groups = []
        for name in sorted(set(inst[lo:hi])):
            j = np.flatnonzero(inst[lo:hi] == name) + lo
            if len(j) >= 4:
                groups.append((instruments[name], t[j], f[j], e[j]))
        out.append((n, t_pred, groups, hi - lo))
    return out


def _time_all(p, windows, dilution):
    fits = []
    for n, t_pred, groups, n_points in windows:
        if n_points < max(p["min_points"], 4) or not groups:
            fit = {"flag": "too_few_points", "tc": math.nan, "sigma_white": math.nan,
                   "chi2": math.nan, "dof": n_points, "coverage": math.nan, "partial": False,
                   "resid": []}
        else:
            fit = _fit_window(p, groups, t_pred, dilution)
        fit.update(epoch=n, t_pred=t_pred, n_points=n_points,
                   instruments=",".join(g[0].name for g in groups),
                   t_by_inst={g[0].name: g[1] for g in groups})
        fits.append(fit)
    return fits


def extract_transit_times(light_curve: pd.DataFrame, transit_params: dict, *, fit_shape: bool = True,
                          instruments: dict | None = None, keep_partial: bool = False,
                          shape_sampler: str | None = None, shape_iterations: int = 3,
                          ld_prior=None, rho_prior=None,
                          rng: np.random.Generator | None = None) -> pd.DataFrame:
    """Mid-transit times of every predicted transit covered by ``light_curve``.

    ``light_curve``: columns time, flux, flux_err and optionally ``instrument`` (one light
    curve per instrument, all in one table).  ``instruments`` (or ``transit_params
    ['instruments']``): ``{name: {exp_time (d), supersample, dilution, fit_dilution}}``;
    instruments without an entry use the top-level ``supersample``/``exp_time``.

    With ``fit_shape`` (the default), the windows are timed once with the given shape, the
    shape (rp/rs, a/rs, b, limb darkening, fitted dilutions) is fitted to all windows at once
    on those mid-times (:func:`server.timeseries.transit_shape.fit_transit_shape`, with
    ``shape_sampler``, ``ld_prior``, ``rho_prior``, ``rng``), and the windows are timed again
    with the fitted shape; ``fit_shape=False`` keeps the given shape.

    Each mid-time's ``sigma`` = Jacobian sigma (``sigma_white``) x sqrt(max(1, the instrument's
    pooled reduced chi^2, the window's own if above its 99% point)) x ``beta``, the instrument's
    time-averaged red-noise factor (:func:`time_averaged_beta`).

    Returns a DataFrame with columns :data:`COLUMNS`; rows whose ``flag`` is not "ok"
    ("too_few_points", "partial", "fit_failed") have NaN t_obs/sigma/O_minus_C, except that
    ``keep_partial=True`` keeps the time of a "partial" window (``partial`` is True whenever
    less than ``min_coverage`` of a half of the transit holds data).
    ``df.attrs["ephemeris"]`` holds the linear ephemeris fitted to the "ok" rows
    (:meth:`Ephemeris.to_dict`), and t_pred/O_minus_C refer to it (with fewer than two ok
    rows, to the input ephemeris); ``attrs["shape"]`` the fitted shape
    (:meth:`TransitShape.to_dict`, or None) and ``attrs["noise"]`` the per-instrument chi^2
    and beta.
    """
    from scipy.stats import chi2 as chi2_dist

    p = _parse_params(transit_params)
    for col in ("time", "flux", "flux_err"):
        if col not in light_curve.columns:
            raise ValueError(f"light curve needs column {col!r}; has {list(light_curve.columns)}")
    lc = light_curve[["time", "flux", "flux_err"]].astype(float)
    lc["instrument"] = (light_curve["instrument"].astype(str) if "instrument" in light_curve.columns
                        else "default")
    lc = lc[np.isfinite(lc["time"]) & np.isfinite(lc["flux"]) & np.isfinite(lc["flux_err"])
            & (lc["flux_err"] > 0)].sort_values("time", kind="stable")
    if lc.empty:
        raise ValueError("light curve has no finite points with flux_err > 0")
    if fit_shape and p["ecc"] != 0:
        raise ValueError(f"the shape fit assumes a circular orbit (ecc={p['ecc']}); pass "
                         f"fit_shape=False to time with the given eccentric shape")
    t, f, e = (lc[c].to_numpy() for c in ("time", "flux", "flux_err"))
    inst = lc["instrument"].to_numpy()
    check_time_convention(t, p["t0"], p["period"], what="light-curve times")
    spec = dict(p["instruments"])
    spec.update(instruments or {})
    insts = parse_instruments(spec, sorted(set(inst)), exp_time=p["exp_time"],
                              supersample=p["supersample"])
    windows = _windows(t, f, e, inst, p, insts)
    dilution = {n: i.dilution for n, i in insts.items()}
    fits = _time_all(p, windows, dilution)
    shape = None
    for it in range(shape_iterations if fit_shape else 0):
        # alternate shape (mid-times held) and mid-times (shape held): this climbs to the
        # joint optimum; folding once on the first, noisy mid-times would smear the ingress
        mids = {fit["epoch"]: fit["tc"] for fit in fits if fit["flag"] == "ok"}
        if not mids:
            break
        last = it == shape_iterations - 1
        shape = fit_transit_shape(lc, mids, period=p["period"], start=p, instruments=insts,
                                  window=p["window"], ld_prior=ld_prior, rho_prior=rho_prior,
                                  sampler=shape_sampler if last else None, rng=rng)
        p = _with_shape(p, shape)
        dilution.update(dict(shape.dilution))
        windows = _windows(t, f, e, inst, p, insts)
        fits = _time_all(p, windows, dilution)
    noise = _noise_model(p, fits, insts)
    rows = []
    for fit in fits:
        names = fit["instruments"].split(",") if fit["instruments"] else []
        beta = max([noise[n]["beta"] for n in names] or [1.0])
        scale = max([1.0] + [noise[n]["chi2_red"] for n in names])
        if fit["dof"] > 0 and np.isfinite(fit["chi2"]) and \
                fit["chi2"] > chi2_dist.ppf(0.99, fit["dof"]):
            scale = max(scale, fit["chi2"] / fit["dof"])
        keep = fit["flag"] == "ok" or (keep_partial and fit["flag"] == "partial")
        rows.append({"epoch": fit["epoch"], "t_obs": fit["tc"] if keep else math.nan,
                     "sigma": fit["sigma_white"] * math.sqrt(scale) * beta if keep else math.nan,
                     "flag": fit["flag"], "n_points": fit["n_points"],
                     "chi2_red": fit["chi2"] / fit["dof"] if fit["dof"] > 0 else math.nan,
                     "chi2": fit["chi2"], "sigma_white": fit["sigma_white"] if keep else math.nan,
                     "beta": beta, "coverage": fit["coverage"], "partial": fit["partial"],
                     "instruments": fit["instruments"]})
    out = pd.DataFrame(rows, columns=[c for c in COLUMNS + EXTRA_COLUMNS
                                      if c not in ("t_pred", "O_minus_C")])
    out["epoch"] = out["epoch"].astype(np.int64)
    out["partial"] = out["partial"].astype(bool)
    ok = out["flag"] == "ok"
    if ok.sum() >= 2:
        eph = fit_linear_ephemeris(out.loc[ok, "epoch"], out.loc[ok, "t_obs"], out.loc[ok, "sigma"])
        t0, period = eph.t0, eph.period
        out.attrs["ephemeris"] = eph.to_dict()
    else:
        t0, period = p["t0"], p["period"]
        out.attrs["ephemeris"] = None
    out["t_pred"] = t0 + period * out["epoch"]
    out["O_minus_C"] = out["t_obs"] - out["t_pred"]
    out = out[COLUMNS + EXTRA_COLUMNS]
    out.attrs["shape"] = shape.to_dict() if shape is not None else None
    out.attrs["noise"] = noise
    return out


def check_time_convention(times, reference: float, period: float, what: str = "times") -> None:
    """ValueError with a hint when ``times`` and ``reference`` differ by a known JD offset."""
    times = np.asarray(times, float)
    if times.size == 0:
        return
    gap = float(np.median(times)) - reference
    if abs(gap) < 2000.0 * max(period, 1.0) and abs(gap) < 1.5e5:
        return
    off, sign = min(((o, sg) for o in TIME_OFFSETS for sg in (1.0, -1.0)),
                    key=lambda c: abs(gap - c[1] * c[0]))
    if abs(gap - sign * off) < 1.0e4:
        direction = "subtract" if sign > 0 else "add"
        raise ValueError(
            f"{what} (median {np.median(times):.3f}) and the reference time {reference:.3f} "
            f"differ by ~{gap:.0f} d: they look like different conventions "
            f"({TIME_OFFSETS[off]}, offset {off}); {direction} {off} so both are BJD_TDB or "
            f"both the same BJD_TDB offset")
    raise ValueError(f"{what} (median {np.median(times):.3f}) are {gap:.0f} d away from the "
                     f"reference time {reference:.3f}; check the time convention")


_TABLE_ALIASES = {"epoch": ("epoch", "n", "transit"), "t_obs": ("t_obs", "time", "bjd", "tc"),
                  "sigma": ("sigma", "err", "error", "sigma_days", "t_err"),
                  "planet": ("planet",)}


def load_transit_time_table(path_or_df, *, time_offset: float = 0.0, sigma_unit: str = "d",
                            planet: str | None = None) -> pd.DataFrame:
    """A published transit-time table as [planet, epoch, t_obs, sigma] (days, sorted).

    Accepts a DataFrame or a CSV/whitespace file with columns epoch, time (aliases t_obs, bjd,
    tc) and sigma (aliases err, error); an optional planet column (else ``planet``, default
    "b").  Times are BJD_TDB or an offset from it: ``time_offset`` is added (e.g. 2454833.0
    for BKJD) when you want full BJD_TDB; keep 0 to stay in the table's convention.
    ``sigma_unit``: "d", "min" or "s".  Duplicate epochs of one planet, NaN or non-positive
    sigmas raise ValueError; unsorted rows are sorted.
    """
    df, where = table_frame(path_or_df, "transit-time table")
    lower = {str(c).lower().strip(): c for c in df.columns}
    cols = {}
    for name, aliases in _TABLE_ALIASES.items():
        for a in aliases:
            if a in lower:
                cols[name] = lower[a]
                break
    missing = [k for k in ("epoch", "t_obs", "sigma") if k not in cols]
    if missing:
        raise ValueError(f"{where} needs columns {missing} (aliases "
                         f"{[_TABLE_ALIASES[m] for m in missing]}); has {list(df.columns)}")
    scale = {"d": 1.0, "min": 1.0 / 1440.0, "s": 1.0 / 86400.0}
    if sigma_unit not in scale:
        raise ValueError(f"sigma_unit must be one of {sorted(scale)}, got {sigma_unit!r}")
    out = pd.DataFrame({
        "planet": (df[cols["planet"]].astype(str) if "planet" in cols
                   else pd.Series([planet or "b"] * len(df), index=df.index)),
        "epoch": pd.to_numeric(df[cols["epoch"]], errors="coerce"),
        "t_obs": pd.to_numeric(df[cols["t_obs"]], errors="coerce") + float(time_offset),
        "sigma": pd.to_numeric(df[cols["sigma"]], errors="coerce") * scale[sigma_unit]})
    try:
        validate_ttv_table(out)
    except ValueError as exc:
        rows = " (rows are line numbers)" if where != "transit-time table" else ""
        raise ValueError(f"{where}{rows}: {exc}") from None
    out["epoch"] = out["epoch"].astype(np.int64)
    return out.sort_values(["planet", "epoch"]).reset_index(drop=True)


MAX_TABLE_BYTES = 16 * 2**20
MAX_EPOCH = 10_000_000  # |epoch| beyond this is a typo (10^7 orbits of even a 1-day planet is 27,000 years)


def table_frame(path_or_df, what: str) -> tuple[pd.DataFrame, str]:
    """A copy of the DataFrame, or the file read by :func:`read_transit_time_file`; and how errors name it."""
    if isinstance(path_or_df, pd.DataFrame):
        return path_or_df.copy(), what
    return read_transit_time_file(path_or_df), f"{what} {os.fspath(path_or_df)}"


def read_transit_time_file(path) -> pd.DataFrame:
    """The rows of a transit-time text file as strings, indexed by 1-based line number.

    UTF-8 text (a BOM is dropped); ``#`` starts a comment; the first non-comment line names the columns, which are
    separated by commas, semicolons or tabs (the first of these the header contains), else by whitespace. Every
    problem is a ValueError naming the file (and the line): missing, too large, binary, empty, header only, a row
    with the wrong number of fields, duplicate column names.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"transit-time table {path} does not exist")
    size = os.path.getsize(path)
    if size > MAX_TABLE_BYTES:
        raise ValueError(f"transit-time table {path} is {size} bytes, more than the {MAX_TABLE_BYTES} allowed")
    with open(path, "rb") as fh:
        data = fh.read(MAX_TABLE_BYTES + 1)
    if b"\x00" in data:
        raise ValueError(f"transit-time table {path} is binary (or UTF-16) content; save it as UTF-8 text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"transit-time table {path} is not UTF-8 text (byte {exc.start}); "
                         "save it as UTF-8") from None
    lines = [(n, ln.split("#", 1)[0]) for n, ln in enumerate(text.splitlines(), start=1)]
    lines = [(n, ln) for n, ln in lines if ln.strip()]
    if not lines:
        raise ValueError(f"transit-time table {path} is empty: it needs a header row naming epoch, time and "
                         "sigma columns, then one row per transit")
    header_line, header = lines[0]
    delim = next((d for d in (",", ";", "\t") if d in header), None)

    def split(line: str) -> list[str]:
        if delim is None:
            return line.split()
        return [f.strip() for f in next(csv.reader([line], delimiter=delim))]

    names = split(header)
    seen: set[str] = set()
    for name in names:
        key = name.lower().strip()
        if key in seen:
            raise ValueError(f"transit-time table {path} line {header_line}: column {name!r} appears twice")
        seen.add(key)
    if len(lines) == 1:
        raise ValueError(f"transit-time table {path} has a header (line {header_line}) but no rows")
    rows, index = [], []
    for number, line in lines[1:]:
        fields = split(line)
        if len(fields) != len(names):
            raise ValueError(f"transit-time table {path} line {number}: expected {len(names)} fields "
                             f"({', '.join(names)[:200]}), found {len(fields)}")
        rows.append(fields)
        index.append(number)
    return pd.DataFrame(rows, columns=names, index=index)


def validate_ttv_table(df: pd.DataFrame) -> None:
    """Raise ValueError for no rows, NaN times/epochs, non-integer or absurd epochs, bad sigmas, duplicates."""
    for col in ("planet", "epoch", "t_obs", "sigma"):
        if col not in df.columns:
            raise ValueError(f"transit times need column {col!r}; have {list(df.columns)}")
    if len(df) == 0:
        raise ValueError("no transit times: the table has no rows")
    bad = df.index[~np.isfinite(df["t_obs"].to_numpy(float))
                   | ~np.isfinite(df["epoch"].to_numpy(float))].tolist()
    if bad:
        raise ValueError(f"rows {bad[:10]} have a missing or non-numeric epoch or time")
    ep = df["epoch"].to_numpy(float)
    if np.any(ep != np.rint(ep)):
        raise ValueError(f"epochs must be integers, got {ep[ep != np.rint(ep)][:5].tolist()}")
    bad = df.index[np.abs(ep) > MAX_EPOCH].tolist()
    if bad:
        raise ValueError(f"rows {bad[:10]} have an epoch beyond +-{MAX_EPOCH}: "
                         f"{df.loc[bad[:10], 'epoch'].tolist()}")
    sig = df["sigma"].to_numpy(float)
    bad = df.index[~(np.isfinite(sig) & (sig > 0))].tolist()
    if bad:
        raise ValueError(f"sigma must be finite and > 0 days; rows {bad[:10]} have "
                         f"{df.loc[bad[:10], 'sigma'].tolist()}")
    dup = df.duplicated(["planet", "epoch"], keep=False)
    if dup.any():
        raise ValueError(f"duplicate epochs: {df.loc[dup, ['planet', 'epoch']].values.tolist()[:10]}")


def write_oc_png(table: pd.DataFrame, path, title: str = "") -> None:
    """O-C diagram (minutes, against the table's linear ephemeris) with 1-sigma error bars,
    one colour per instrument combination; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from app.atomic import atomic_path

    ok = table[np.isfinite(table["t_obs"])]
    if ok.empty:
        raise ValueError("no measured transit times to plot")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    groups = ok.groupby("instruments") if "instruments" in ok.columns else [("", ok)]
    for name, g in groups:
        ax.errorbar(g["epoch"], g["O_minus_C"] * 1440, yerr=g["sigma"] * 1440, fmt="o", ms=3,
                    capsize=2, label=name or None)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("O - C (min)")
    eph = table.attrs.get("ephemeris")
    if eph:
        title = (f"{title}: " if title else "") + (f"P = {eph['period']:.7f} d, O-C chi2 = "
                                                   f"{eph['chi2']:.1f} for {eph['n'] - 2} dof")
    ax.set_title(title, fontsize=9)
    if "instruments" in ok.columns and ok["instruments"].nunique() > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
