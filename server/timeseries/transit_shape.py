"""Stage 7a: the transit shape of one planet, fitted to all its light curves at once.

Conventions: times BJD_TDB days (or one constant offset of it, as in
:mod:`server.timeseries.transit_times`); fluxes normalised to ~1 out of transit; ``exp_time`` in
days; stellar density in g cm^-3.

The model of a point at time t of the transit window w (one epoch seen by one instrument k) is

    flux = [T_k(t - tc_w) + D_k] / (1 + D_k) * (c0_w + c1_w (t - tc_w))

with T_k the batman quadratic-limb-darkening transit (Mandel & Agol 2002) integrated over the
instrument's exposure (``supersample`` sub-exposures over ``exp_time``), D_k the instrument's
dilution (contaminating flux / target flux; fixed, or fitted for instruments that ask for it:
one instrument must keep it fixed, else it is degenerate with rp/rs), and (c0_w, c1_w) a linear
baseline of each window: c0_w also holds the instrument's flux offset.  The baselines enter
linearly and are solved exactly for every shape (profiled for the least-squares fit,
marginalised with a flat prior for the posterior), so the fit has only the shape parameters:
rp/rs, a/rs, b, the Kipping (2013) q1, q2 in [0, 1] (u1 = 2 sqrt(q1) q2, u2 = sqrt(q1)(1 - 2 q2))
and the fitted dilutions.  The mid-times tc_w are held at the values given (from a first timing
pass), so a planet with TTVs is folded on its own transits, not on a linear ephemeris.

Optional priors: ``ld_prior=((u1, u2), (sigma_u1, sigma_u2))`` (from the star's Teff, log g,
[Fe/H], e.g. Claret's tables), ``rho_prior=(rho, sigma)`` (stellar density, g cm^-3; constrains
a/rs through Kepler's third law for a circular orbit).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

G_CGS = 6.674e-8
DAY_S = 86400.0


@dataclass(frozen=True)
class Instrument:
    """Exposure and dilution of one instrument (``exp_time`` in days)."""

    name: str
    exp_time: float = 0.0
    supersample: int = 1
    dilution: float = 0.0
    fit_dilution: bool = False


def parse_instruments(spec, names, *, exp_time: float = 0.0, supersample: int = 1) -> dict:
    """``{name: Instrument}`` for every name in ``names``.

    ``spec`` maps an instrument name to a dict (``exp_time`` d, ``supersample``, ``dilution``,
    ``fit_dilution``) or an :class:`Instrument`; names without an entry take ``exp_time`` and
    ``supersample`` (the light curve's defaults).  An entry for an instrument that has no data
    is refused: it is usually a misspelt name.
    """
    spec = dict(spec or {})
    unknown = sorted(set(spec) - set(names))
    if unknown:
        raise ValueError(f"instrument(s) {unknown} have no data; the light curve has {sorted(names)}")
    out = {}
    for name in names:
        s = spec.get(name, {})
        if isinstance(s, Instrument):
            inst = s
        else:
            if not isinstance(s, dict):
                raise ValueError(f"instrument {name!r}: expected a dict, got {s!r}")
            bad = sorted(set(s) - {"exp_time", "supersample", "dilution", "fit_dilution"})
            if bad:
                raise ValueError(f"instrument {name!r}: unknown key(s) {bad}; allowed exp_time, "
                                 f"supersample, dilution, fit_dilution")
            inst = Instrument(str(name), float(s.get("exp_time", exp_time)),
                              int(s.get("supersample", supersample)), float(s.get("dilution", 0.0)),
                              bool(s.get("fit_dilution", False)))
        if inst.supersample < 1:
            raise ValueError(f"instrument {name!r}: supersample must be >= 1, got {inst.supersample}")
        if inst.supersample > 1 and not inst.exp_time > 0:
            raise ValueError(f"instrument {name!r}: supersample {inst.supersample} needs exp_time > 0 "
                             f"(days), got {inst.exp_time}")
        if not 0 <= inst.dilution < 100:
            raise ValueError(f"instrument {name!r}: dilution must be in [0, 100), got {inst.dilution}")
        out[str(name)] = inst
    if out and all(i.fit_dilution for i in out.values()):
        raise ValueError("every instrument has fit_dilution: keep at least one fixed (it is "
                         "degenerate with rp_rs)")
    return out


def u_from_q(q1: float, q2: float) -> tuple[float, float]:
    """Kipping (2013) q1, q2 -> quadratic u1, u2."""
    s = math.sqrt(q1)
    return 2 * s * q2, s * (1 - 2 * q2)


def q_from_u(u1: float, u2: float) -> tuple[float, float]:
    """Quadratic u1, u2 -> Kipping q1, q2 (clipped into [0, 1])."""
    q1 = (u1 + u2) ** 2
    q2 = u1 / (2 * (u1 + u2)) if u1 + u2 != 0 else 0.5
    return min(max(q1, 0.0), 1.0), min(max(q2, 0.0), 1.0)


def a_rs_from_density(rho_cgs: float, period_d: float) -> float:
    """a/R* of a circular orbit from the stellar density (g cm^-3) and the period (d)."""
    return (G_CGS * rho_cgs * (period_d * DAY_S) ** 2 / (3 * math.pi)) ** (1 / 3)


def density_from_a_rs(a_rs: float, period_d: float) -> float:
    return 3 * math.pi * a_rs ** 3 / (G_CGS * (period_d * DAY_S) ** 2)


def t14(period: float, rp_rs: float, a_rs: float, b: float) -> float:
    """Total transit duration (d) of a circular orbit."""
    inc = math.acos(min(b / a_rs, 1.0))
    arg = math.sqrt(max((1 + rp_rs) ** 2 - b * b, 0.0)) / (a_rs * math.sin(inc))
    return period / math.pi * math.asin(min(arg, 1.0))


def ingress_duration(period: float, rp_rs: float, a_rs: float, b: float) -> float:
    """(T14 - T23) / 2 in days; T14 / 2 for a grazing transit."""
    full = t14(period, rp_rs, a_rs, b)
    if b >= 1 - rp_rs:
        return 0.5 * full
    inc = math.acos(min(b / a_rs, 1.0))
    arg = math.sqrt((1 - rp_rs) ** 2 - b * b) / (a_rs * math.sin(inc))
    return 0.5 * (full - period / math.pi * math.asin(min(arg, 1.0)))


def batman_model(times, period: float, inst: Instrument):
    """(params, model) of batman for ``times`` relative to mid-transit, with ``inst``'s exposure."""
    import batman

    bp = batman.TransitParams()
    bp.t0, bp.per, bp.rp, bp.a, bp.inc = 0.0, period, 0.1, 10.0, 90.0
    bp.ecc, bp.w, bp.limb_dark, bp.u = 0.0, 90.0, "quadratic", [0.4, 0.2]
    kw = {}
    if inst.supersample > 1:
        kw = {"supersample_factor": inst.supersample, "exp_time": inst.exp_time}
    return bp, batman.TransitModel(bp, np.ascontiguousarray(times, float), **kw)


@dataclass(frozen=True)
class TransitShape:
    """A fitted transit shape: best values (median of the posterior with emcee), covariance and,
    with emcee, the posterior samples (columns ``param_names``)."""

    rp_rs: float
    a_rs: float
    b: float
    q1: float
    q2: float
    dilution: tuple[tuple[str, float], ...]
    param_names: tuple[str, ...]
    cov: tuple[tuple[float, ...], ...]
    chi2: float
    n_points: int
    n_windows: int
    period: float
    method: str
    samples: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def u(self) -> tuple[float, float]:
        return u_from_q(self.q1, self.q2)

    @property
    def inc(self) -> float:
        return math.degrees(math.acos(self.b / self.a_rs))

    @property
    def t14(self) -> float:
        return t14(self.period, self.rp_rs, self.a_rs, self.b)

    @property
    def density(self) -> float:
        return density_from_a_rs(self.a_rs, self.period)

    def errors(self) -> dict:
        return {n: math.sqrt(max(self.cov[i][i], 0.0)) for i, n in enumerate(self.param_names)}

    def to_dict(self) -> dict:
        return {"rp_rs": self.rp_rs, "a_rs": self.a_rs, "b": self.b, "q1": self.q1, "q2": self.q2,
                "u": list(self.u), "inc": self.inc, "t14": self.t14, "density_cgs": self.density,
                "dilution": dict(self.dilution), "errors": self.errors(), "chi2": self.chi2,
                "n_points": self.n_points, "n_windows": self.n_windows, "method": self.method}


class _ShapeProblem:
    """Points of every window, grouped by instrument, with the baselines solved per window."""

    def __init__(self, dt, f, e, window, inst_names, instruments, period, ld_prior, rho_prior):
        self.period = period
        order = np.lexsort((dt, window, inst_names))
        self.dt, self.f, self.e = dt[order], f[order], e[order]
        self.window = window[order]
        self.nwin = int(self.window.max()) + 1
        names = inst_names[order]
        self.groups = []  # (instrument, slice, batman params, batman model)
        for name in dict.fromkeys(names):
            idx = np.flatnonzero(names == name)
            sl = slice(int(idx[0]), int(idx[-1]) + 1)
            bp, model = batman_model(self.dt[sl], period, instruments[name])
            self.groups.append((instruments[name], sl, bp, model))
        self.fit_dil = [inst.name for inst, *_ in self.groups if inst.fit_dilution]
        self.names = ("rp_rs", "a_rs", "b", "q1", "q2") + tuple(f"dilution_{n}" for n in self.fit_dil)
        self.lower = np.array([1e-3, 1.2, 0.0, 0.0, 0.0] + [0.0] * len(self.fit_dil))
        self.upper = np.array([0.5, 300.0, 1.5, 1.0, 1.0] + [20.0] * len(self.fit_dil))
        self.w = 1.0 / self.e ** 2
        self.ld_prior = ld_prior
        self.rho_prior = rho_prior

    def shape_flux(self, theta) -> np.ndarray:
        rp, a, b, q1, q2 = theta[:5]
        dil = dict(zip(self.fit_dil, theta[5:]))
        u = list(u_from_q(q1, q2))
        inc = math.degrees(math.acos(min(b / a, 1.0)))
        m = np.empty_like(self.dt)
        for inst, sl, bp, model in self.groups:
            bp.rp, bp.a, bp.inc, bp.u = rp, a, inc, u
            d = dil.get(inst.name, inst.dilution)
            m[sl] = (model.light_curve(bp) + d) / (1 + d)
        return m

    def solve(self, theta):
        """(normalised residuals, sum of log det of the baselines' normal matrices)."""
        m = self.shape_flux(theta)
        dt, w, win = self.dt, self.w, self.window
        s = [np.bincount(win, wt, minlength=self.nwin) for wt in
             (w * m * m, w * m * m * dt, w * m * m * dt * dt, w * self.f * m, w * self.f * m * dt)]
        a11, a12, a22, b1, b2 = s
        det = a11 * a22 - a12 * a12
        det = np.where(det > 0, det, np.inf)
        c0 = (b1 * a22 - b2 * a12) / det
        c1 = (a11 * b2 - a12 * b1) / det
        r = (self.f - m * (c0[win] + c1[win] * dt)) / self.e
        return r, float(np.sum(np.log(det)))

    def prior_residuals(self, theta) -> list:
        out = []
        if self.ld_prior is not None:
            (mu1, mu2), (s1, s2) = self.ld_prior
            u1, u2 = u_from_q(theta[3], theta[4])
            out += [(u1 - mu1) / s1, (u2 - mu2) / s2]
        if self.rho_prior is not None:
            rho, srho = self.rho_prior
            out.append((density_from_a_rs(theta[1], self.period) - rho) / srho)
        return out

    def residuals(self, theta) -> np.ndarray:
        r, _ = self.solve(theta)
        return np.concatenate([r, self.prior_residuals(theta)])

    def log_prob(self, theta) -> float:
        theta = np.asarray(theta, float)
        if np.any(theta < self.lower) or np.any(theta > self.upper) or theta[2] >= 1 + theta[0]:
            return -np.inf
        r, logdet = self.solve(theta)
        if not np.all(np.isfinite(r)):
            return -np.inf
        pr = self.prior_residuals(theta)
        return float(-0.5 * (np.dot(r, r) + np.dot(pr, pr) + logdet))


def _start_vector(start: dict, prob: _ShapeProblem) -> np.ndarray:
    for k in ("rp_rs", "a_rs", "u"):
        if k not in start:
            raise ValueError(f"start shape needs {k!r}; has {sorted(start)}")
    a = float(start["a_rs"])
    if "b" in start:
        b = float(start["b"])
    elif "inc" in start:
        b = a * math.cos(math.radians(float(start["inc"])))
    else:
        raise ValueError("start shape needs 'b' or 'inc'")
    q1, q2 = q_from_u(*[float(x) for x in start["u"]])
    x = [float(start["rp_rs"]), a, b, q1, q2]
    x += [float(prob.groups[[g[0].name for g in prob.groups].index(n)][0].dilution)
          for n in prob.fit_dil]
    return np.clip(np.array(x), prob.lower + 1e-9, prob.upper - 1e-9)


def fit_transit_shape(light_curve: pd.DataFrame, mid_times: dict, *, period: float, start: dict,
                      instruments: dict | None = None, window: float = 1.0, ld_prior=None,
                      rho_prior=None, sampler: str | None = None, nwalkers: int = 32,
                      nsteps: int = 1000, rng: np.random.Generator | None = None) -> TransitShape:
    """Fit rp/rs, a/rs, b, q1, q2 (and fitted dilutions) to every window at once.

    ``light_curve``: columns time, flux, flux_err and optionally instrument.  ``mid_times``:
    ``{epoch: tc}`` (BJD_TDB d) of the transits to use; points within ``window`` x T14 (of the
    ``start`` shape) of a mid-time belong to it.  ``instruments``: an ``{name: Instrument}``
    from :func:`parse_instruments` (default: every instrument unbinned, undiluted).
    ``sampler=None`` gives the least-squares optimum with its covariance (Jacobian, scaled by
    max(1, reduced chi^2)); ``"emcee"`` continues from it with an ensemble of ``nwalkers`` for
    ``nsteps`` (first half discarded) seeded from ``rng``, and reports posterior medians and
    the sample covariance.
    """
    from scipy.optimize import least_squares

    if sampler not in (None, "emcee"):
        raise ValueError(f"sampler must be None or 'emcee', got {sampler!r}")
    if not mid_times:
        raise ValueError("fit_transit_shape needs at least one mid-time")
    if not period > 0:
        raise ValueError(f"period must be > 0 d, got {period}")
    lc = light_curve
    inst_col = (lc["instrument"].astype(str).to_numpy() if "instrument" in lc.columns
                else np.full(len(lc), "default"))
    t = lc["time"].to_numpy(float)
    f = lc["flux"].to_numpy(float)
    e = lc["flux_err"].to_numpy(float)
    good = np.isfinite(t) & np.isfinite(f) & np.isfinite(e) & (e > 0)
    t, f, e, inst_col = t[good], f[good], e[good], inst_col[good]
    if instruments is None:
        instruments = parse_instruments({}, sorted(set(inst_col)))
    b0 = (float(start["b"]) if "b" in start
          else float(start["a_rs"]) * math.cos(math.radians(float(start["inc"]))))
    half = window * t14(period, float(start["rp_rs"]), float(start["a_rs"]), b0)
    sel_dt, sel_i, sel_w = [], [], []
    wid = 0
    for tc in mid_times.values():
        idx = np.flatnonzero(np.abs(t - tc) < half)
        for name in sorted(set(inst_col[idx])):
            j = idx[inst_col[idx] == name]
            if len(j) < 3:
                continue
            sel_dt.append(t[j] - tc)
            sel_i.append(j)
            sel_w.append(np.full(len(j), wid))
            wid += 1
    if wid == 0:
        raise ValueError("no light-curve points near the given mid-times")
    j = np.concatenate(sel_i)
    prob = _ShapeProblem(np.concatenate(sel_dt), f[j], e[j], np.concatenate(sel_w), inst_col[j],
                         instruments, float(period), ld_prior, rho_prior)
    n_par = len(prob.names)
    if len(j) < 2 * wid + n_par + 1:
        raise ValueError(f"{len(j)} points in {wid} windows cannot fit {n_par} shape parameters; "
                         f"time with the given shape (fit_shape=False, CLI --given-shape)")
    x0 = _start_vector(start, prob)
    sol = least_squares(prob.residuals, x0, bounds=(prob.lower, prob.upper), x_scale="jac",
                        diff_step=1e-6)
    x = sol.x
    r, _ = prob.solve(x)
    chi2 = float(np.dot(r, r))
    dof = len(r) - 2 * wid - n_par
    jac = sol.jac
    try:
        cov = np.linalg.pinv(jac.T @ jac) * max(1.0, chi2 / max(dof, 1))
    except np.linalg.LinAlgError:
        cov = np.full((n_par, n_par), np.nan)
    samples = None
    method = "least_squares"
    if sampler == "emcee":
        import emcee

        rng = rng if rng is not None else np.random.default_rng(0)
        if nwalkers < 2 * n_par or nwalkers % 2:
            raise ValueError(f"nwalkers must be even and >= {2 * n_par}, got {nwalkers}")
        scale = np.sqrt(np.clip(np.diag(cov), 1e-14, None))
        scale = np.where(np.isfinite(scale), scale, 1e-4)
        p0 = x + 0.1 * scale * rng.standard_normal((nwalkers, n_par))
        p0 = np.clip(p0, prob.lower + 1e-9, prob.upper - 1e-9)
        p0[:, 2] = np.minimum(p0[:, 2], 1 + p0[:, 0] - 1e-6)
        es = emcee.EnsembleSampler(nwalkers, n_par, prob.log_prob)
        state = emcee.State(p0, random_state=np.random.RandomState(
            np.random.MT19937(int(rng.integers(2 ** 63)))).get_state())
        es.run_mcmc(state, int(nsteps), progress=False)
        samples = es.get_chain(discard=int(nsteps) // 2, flat=True)
        x = np.median(samples, axis=0)
        cov = np.cov(samples, rowvar=False)
        r, _ = prob.solve(x)
        chi2 = float(np.dot(r, r))
        method = "emcee"
    dil = tuple((n, float(v)) for n, v in zip(prob.fit_dil, x[5:]))
    dil += tuple((inst.name, inst.dilution) for inst, *_ in prob.groups if not inst.fit_dilution)
    return TransitShape(float(x[0]), float(x[1]), float(x[2]), float(x[3]), float(x[4]), dil,
                        prob.names, tuple(tuple(float(c) for c in row) for row in np.atleast_2d(cov)),
                        chi2, int(len(r)), wid, float(period), method, samples)
