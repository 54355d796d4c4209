"""Ephemeris models for O-C diagrams: linear, orbital decay and apsidal precession.

Pure functions over a :class:`TimingData` table (transit and occultation mid-times of one planet);
each model is fitted by dynesty static nested sampling (posterior and ln Z) and a least-squares
maximum-likelihood point (BIC), and :func:`compare_ephemerides` ranks the models.

Conventions (days and BJD_TDB throughout; epochs are orbit counts):

- transits have integer epochs E = N, occultations half-integer epochs E = N + 1/2 (the occultation
  after transit N);
- ``linear``: t(E) = t0 + P E (occultations of a circular orbit fall half a period after transits);
- ``decay``: t(E) = t0 + P E + 1/2 dP/dN E^2 (Patra et al. 2017; Yee et al. 2020); dP/dt = dP/dN / P,
  reported in ms/yr (1 d/d = 86,400,000 ms/d x 365.25 d/yr);
- ``precession`` (Gimenez & Bastero 1995 to first order in e, in the form of Patra et al. 2017 eqs. 3-4):
  omega(N) = omega0 + domega/dN N, P_a = P_s / (1 - (domega/dN) / (2 pi)),
  t_tra(N) = t0 + P_s N - (e P_a / pi) cos omega(N),
  t_occ(N) = t0 + P_s N + P_a / 2 + (e P_a / pi) cos omega(N);
  omega in radians, domega/dN in rad/epoch, P_s the sidereal and P_a the anomalistic period.

The likelihood is Gaussian in the timing errors (no jitter term): ln L = -1/2 sum[(r/sigma)^2 + ln(2 pi sigma^2)].
BIC = -2 ln L_max + k ln n with the same constant in every model, so differences are comparable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

__all__ = ["MODELS", "MS_PER_YR_PER_D_PER_D", "EphemerisFit", "EphemerisComparison", "TimingData",
           "compare_ephemerides", "default_priors", "fit_ephemeris", "load_timing_table", "predict_times"]

MS_PER_YR_PER_D_PER_D = 86_400_000.0 * 365.25  # dP/dt in d/d -> ms/yr
MODELS = ("linear", "decay", "precession")
PARAMS = {"linear": ("t0", "period"),
          "decay": ("t0", "period", "dpdn"),
          "precession": ("t0", "period", "ecc", "omega0", "domega_dn")}
PERIODIC = {"omega0"}

_EPOCH = ("epoch", "n", "transit", "e")
_TIME = ("t_obs", "time", "bjd", "tc", "bjd_tdb", "mid_time")
_SIGMA = ("sigma", "err", "error", "sigma_days", "t_err", "uncertainty")
_TYPE = ("type", "kind", "event")
_TRANSIT = {"transit", "tra", "t", "primary", "tr"}
_OCCULTATION = {"occultation", "occ", "o", "secondary", "eclipse", "sec"}


@dataclass(frozen=True)
class TimingData:
    """Mid-times of one planet: ``epoch`` (float, half-integer for occultations), ``time`` (d, BJD_TDB or
    one constant offset from it), ``sigma`` (d), ``occultation`` (bool)."""

    epoch: np.ndarray
    time: np.ndarray
    sigma: np.ndarray
    occultation: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.epoch)
        for name in ("time", "sigma", "occultation"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, epoch has {n}")
        if n < 3:
            raise ValueError(f"an ephemeris fit needs at least 3 mid-times, got {n}")
        if not np.all(np.isfinite(self.time)):
            raise ValueError(f"non-finite times at rows {np.flatnonzero(~np.isfinite(self.time)).tolist()}")
        bad = ~(np.isfinite(self.sigma) & (self.sigma > 0))
        if bad.any():
            raise ValueError(f"sigma must be finite and > 0; rows {np.flatnonzero(bad).tolist()} have "
                             f"{self.sigma[bad][:5].tolist()}")
        twice = 2.0 * self.epoch
        bad = ~np.isfinite(twice) | (np.abs(twice - np.round(twice)) > 1e-6)
        if bad.any():
            raise ValueError(f"epochs must be integers (transits) or half-integers (occultations); rows "
                             f"{np.flatnonzero(bad).tolist()[:5]} have {self.epoch[bad][:5].tolist()}")
        half = np.abs(self.epoch - np.round(self.epoch)) > 0.25
        if np.any(half != self.occultation):
            rows = np.flatnonzero(half != self.occultation).tolist()[:5]
            raise ValueError(f"occultations must have half-integer epochs and transits integer ones; rows {rows} "
                             f"do not (epochs {self.epoch[rows].tolist()})")

    @property
    def n(self) -> int:
        return len(self.epoch)


def load_timing_table(path_or_df, *, time_offset: float = 0.0, sigma_unit: str = "d") -> TimingData:
    """Transit and occultation times of one planet from a CSV/whitespace file or a DataFrame.

    Columns: epoch, time (aliases t_obs, bjd, tc), sigma (aliases err, error) and optionally a type column
    (``type``/``kind``/``event``: transit|tra|primary or occultation|occ|secondary|eclipse).  Without a type
    column, half-integer epochs are occultations.  With one, an occultation's epoch may be given as the
    half-integer E + 1/2 or as the integer E of the transit before it (then 1/2 is added); a transit's epoch
    must be an integer.  ``time_offset`` (d) is added to the times; ``sigma_unit`` is "d", "min" or "s".
    Several times at one epoch (different observers) are kept.
    """
    from server.timeseries.transit_times import table_frame

    df, where = table_frame(path_or_df, "timing table")
    lower = {str(c).lower().strip(): c for c in df.columns}

    def column(aliases, required=True):
        for a in aliases:
            if a in lower:
                return df[lower[a]]
        if required:
            raise ValueError(f"{where} needs a column named one of {list(aliases)}; has {list(df.columns)}")
        return None

    scale = {"d": 1.0, "min": 1.0 / 1440.0, "s": 1.0 / 86400.0}
    if sigma_unit not in scale:
        raise ValueError(f"sigma_unit must be one of {sorted(scale)}, got {sigma_unit!r}")
    epoch = pd.to_numeric(column(_EPOCH), errors="coerce").to_numpy(float)
    time = pd.to_numeric(column(_TIME), errors="coerce").to_numpy(float) + float(time_offset)
    sigma = pd.to_numeric(column(_SIGMA), errors="coerce").to_numpy(float) * scale[sigma_unit]
    kind = column(_TYPE, required=False)
    if kind is None:
        occ = np.abs(epoch - np.round(epoch)) > 0.25
    else:
        labels = kind.astype(str).str.strip().str.lower()
        unknown = sorted(set(labels) - _TRANSIT - _OCCULTATION)
        if unknown:
            raise ValueError(f"{where}: unknown event types {unknown[:5]} (use transit or occultation)")
        occ = labels.isin(_OCCULTATION).to_numpy()
        whole = np.abs(epoch - np.round(epoch)) < 1e-6
        epoch = np.where(occ & whole, epoch + 0.5, epoch)
    try:
        return TimingData(epoch=epoch, time=time, sigma=sigma, occultation=np.asarray(occ, bool))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def predict_times(model: str, theta, epoch, occultation) -> np.ndarray:
    """Mid-times (d) of ``model`` with parameters ``theta`` (in :data:`PARAMS` order) at ``epoch``."""
    e = np.asarray(epoch, float)
    if model == "linear":
        t0, p = theta
        return t0 + p * e
    if model == "decay":
        t0, p, dpdn = theta
        return t0 + p * e + 0.5 * dpdn * e * e
    if model == "precession":
        t0, ps, ecc, w0, dwdn = theta
        occ = np.asarray(occultation, bool)
        n = np.where(occ, e - 0.5, e)
        pa = ps / (1.0 - dwdn / (2.0 * math.pi))
        shift = ecc * pa / math.pi * np.cos(w0 + dwdn * n)
        return t0 + ps * n + np.where(occ, 0.5 * pa + shift, -shift)
    raise ValueError(f"unknown ephemeris model {model!r}; choose from {MODELS}")


def _linear_lsq(data: TimingData):
    w = 1.0 / data.sigma ** 2
    a = np.vstack([np.ones(data.n), data.epoch]).T
    cov = np.linalg.inv(a.T @ (a * w[:, None]))
    t0, p = cov @ (a.T @ (w * data.time))
    return float(t0), float(p), cov


def default_priors(data: TimingData, *, max_abs_dpdt_ms_yr: float = 1000.0, max_ecc: float = 0.1,
                   max_domega_dn: float = 0.01) -> dict[str, tuple[float, float]]:
    """Uniform prior ranges for every parameter, from the weighted linear fit of the data.

    t0 within +-5% of a period of the linear fit's t0 (larger than any precession offset e P/pi with e < 0.15),
    P within the change that moves the farthest epoch by the same amount, dP/dN within +-``max_abs_dpdt_ms_yr``
    (converted with the linear period), e in [0, ``max_ecc``], omega0 in [0, 2 pi), domega/dN in
    [0, ``max_domega_dn``] rad/epoch (Patra et al. 2017's ranges).  The same t0 and P ranges serve every
    model, so their Occam factors cancel in evidence ratios.
    """
    for name, v in (("max_abs_dpdt_ms_yr", max_abs_dpdt_ms_yr), ("max_ecc", max_ecc),
                    ("max_domega_dn", max_domega_dn)):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be > 0, got {v}")
    if max_ecc >= 1:
        raise ValueError(f"max_ecc must be < 1, got {max_ecc}")
    t0, p, _ = _linear_lsq(data)
    if not p > 0:
        raise ValueError(f"the linear fit gives a non-positive period {p} d: check the epochs")
    half_t0 = 0.05 * p
    half_p = half_t0 / max(1.0, float(np.max(np.abs(data.epoch))))
    dpdn = max_abs_dpdt_ms_yr / MS_PER_YR_PER_D_PER_D * p
    return {"t0": (t0 - half_t0, t0 + half_t0), "period": (p - half_p, p + half_p),
            "dpdn": (-dpdn, dpdn), "ecc": (0.0, float(max_ecc)), "omega0": (0.0, 2.0 * math.pi),
            "domega_dn": (0.0, float(max_domega_dn))}


@dataclass(frozen=True)
class EphemerisFit:
    """One model fitted to one table: posterior summaries, evidence and the maximum-likelihood point."""

    model: str
    params: tuple[str, ...]
    n: int
    log_z: float
    log_z_err: float
    bic: float
    chi2_min: float
    best: dict[str, float]
    median: dict[str, float]
    interval68: dict[str, tuple[float, float]]
    std: dict[str, float]
    samples: np.ndarray = field(repr=False)  # equally weighted posterior draws (columns: params, then derived)
    sample_names: tuple[str, ...] = ()

    @property
    def k(self) -> int:
        return len(self.params)

    def summary(self) -> dict:
        """Plain data (JSON-ready)."""
        return {"model": self.model, "n": self.n, "k": self.k, "log_z": self.log_z, "log_z_err": self.log_z_err,
                "bic": self.bic, "chi2_min": self.chi2_min, "best": dict(self.best),
                "median": dict(self.median), "std": dict(self.std),
                "interval68": {k: list(v) for k, v in self.interval68.items()}}


@dataclass(frozen=True)
class EphemerisComparison:
    fits: tuple[EphemerisFit, ...]

    def fit(self, model: str) -> EphemerisFit:
        for f in self.fits:
            if f.model == model:
                return f
        raise KeyError(f"model {model!r} was not fitted; fitted: {[f.model for f in self.fits]}")

    @property
    def preferred_by_evidence(self) -> str:
        return max(self.fits, key=lambda f: f.log_z).model

    @property
    def preferred_by_bic(self) -> str:
        return min(self.fits, key=lambda f: f.bic).model

    def ln_bayes_factor(self, a: str, b: str) -> float:
        return self.fit(a).log_z - self.fit(b).log_z

    def summary(self) -> dict:
        return {"fits": [f.summary() for f in self.fits], "preferred_by_evidence": self.preferred_by_evidence,
                "preferred_by_bic": self.preferred_by_bic}


def _derived(model: str, names: tuple[str, ...], s: np.ndarray):
    """Derived columns: dP/dt (ms/yr) for decay; anomalistic period and domega/dt (deg/yr) for precession."""
    col = {n: s[:, i] for i, n in enumerate(names)}
    if model == "decay":
        return ("dpdt_ms_yr",), (col["dpdn"] / col["period"] * MS_PER_YR_PER_D_PER_D)[:, None]
    if model == "precession":
        pa = col["period"] / (1.0 - col["domega_dn"] / (2.0 * math.pi))
        dwdt = np.degrees(col["domega_dn"] / col["period"]) * 365.25
        return ("period_anomalistic", "domega_dt_deg_yr"), np.column_stack([pa, dwdt])
    return (), np.empty((len(s), 0))


def fit_ephemeris(data: TimingData, model: str, *, rng: np.random.Generator, nlive: int = 400,
                  dlogz: float = 0.1, priors: dict | None = None,
                  status: Callable[[str, dict], None] | None = None) -> EphemerisFit:
    """Fit ``model`` to ``data`` by dynesty nested sampling (uniform priors, :func:`default_priors` updated by
    ``priors``); the maximum-likelihood point for the BIC is refined by least squares from the best sample.
    ``status(model, {"iteration", "log_z", "ncall"})`` is called as the sampler runs."""
    import dynesty
    from scipy.optimize import least_squares

    if model not in PARAMS:
        raise ValueError(f"unknown ephemeris model {model!r}; choose from {MODELS}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if int(nlive) < 10:
        raise ValueError(f"nlive must be >= 10, got {nlive}")
    names = PARAMS[model]
    if data.n <= len(names):
        raise ValueError(f"model {model} has {len(names)} parameters and needs more than {len(names)} times, "
                         f"got {data.n}")
    ranges = default_priors(data)
    for key, value in (priors or {}).items():
        if key not in ranges:
            raise ValueError(f"unknown prior {key!r}; known: {sorted(ranges)}")
        lo, hi = (float(v) for v in value)
        if not hi > lo:
            raise ValueError(f"prior {key} needs lo < hi, got {value}")
        ranges[key] = (lo, hi)
    # work relative to a reference time so that t0 is a small number (precision of the least squares)
    tref = round(ranges["t0"][0], 1)
    t = data.time - tref
    lo = np.array([ranges[n][0] - (tref if n == "t0" else 0.0) for n in names])
    width = np.array([ranges[n][1] - ranges[n][0] for n in names])
    inv_sigma = 1.0 / data.sigma
    norm = -0.5 * float(np.sum(np.log(2.0 * math.pi * data.sigma ** 2)))
    epoch, occ = data.epoch, data.occultation

    def resid(theta):
        return (t - predict_times(model, theta, epoch, occ)) * inv_sigma

    def loglike(theta):
        r = resid(theta)
        return norm - 0.5 * float(r @ r)

    def transform(u):
        return lo + width * u

    periodic = [i for i, n in enumerate(names) if n in PERIODIC] or None
    sampler = dynesty.NestedSampler(loglike, transform, len(names), nlive=int(nlive), bound="multi",
                                    sample="unif" if len(names) <= 3 else "rwalk", periodic=periodic,
                                    rstate=rng)

    def report(results, niter, ncall, **_):
        if status is not None:
            status(model, {"iteration": int(niter), "ncall": int(ncall),
                           "log_z": float(getattr(results, "logz", float("nan")))})

    sampler.run_nested(dlogz=float(dlogz), print_progress=status is not None, print_func=report)
    res = sampler.results
    log_z, log_z_err = float(res.logz[-1]), float(res.logzerr[-1])
    weights = np.exp(res.logwt - res.logz[-1])
    draws = res.samples[rng.choice(len(weights), size=min(4000, 4 * len(weights)), p=weights / weights.sum())]
    start = res.samples[int(np.argmax(res.logl))]
    bounds = (np.where([n in PERIODIC for n in names], -np.inf, lo),
              np.where([n in PERIODIC for n in names], np.inf, lo + width))
    fit = least_squares(resid, np.clip(start, *bounds), bounds=bounds, x_scale=width, method="trf",
                        xtol=1e-12, ftol=1e-12, gtol=1e-12)
    best = fit.x if loglike(fit.x) >= loglike(start) else start
    lnl_max = loglike(best)
    chi2 = float(resid(best) @ resid(best))
    shift = np.array([tref if n == "t0" else 0.0 for n in names])
    draws = draws + shift
    best = best + shift
    if model == "precession":  # report omega0 in [0, 2 pi)
        iw = names.index("omega0")
        draws[:, iw] = np.mod(draws[:, iw], 2.0 * math.pi)
        best[iw] = math.fmod(best[iw], 2.0 * math.pi) % (2.0 * math.pi)
    dnames, dcols = _derived(model, names, draws)
    all_names = names + dnames
    samples = np.column_stack([draws, dcols])
    best_all = dict(zip(names, map(float, best)))
    if dnames:
        best_all.update(zip(dnames, map(float, _derived(model, names, best[None, :])[1][0])))
    q16, q50, q84 = np.percentile(samples, [15.865525, 50.0, 84.134475], axis=0)
    return EphemerisFit(model=model, params=names, n=data.n, log_z=log_z, log_z_err=log_z_err,
                        bic=-2.0 * lnl_max + len(names) * math.log(data.n), chi2_min=chi2, best=best_all,
                        median=dict(zip(all_names, map(float, q50))),
                        interval68={k: (float(a), float(b)) for k, a, b in zip(all_names, q16, q84)},
                        std=dict(zip(all_names, map(float, samples.std(axis=0)))),
                        samples=samples, sample_names=all_names)


def compare_ephemerides(data: TimingData, models=MODELS, *, rng: np.random.Generator, nlive: int = 400,
                        dlogz: float = 0.1, priors: dict | None = None,
                        status: Callable[[str, dict], None] | None = None,
                        done: Callable[[EphemerisFit], None] | None = None) -> EphemerisComparison:
    """Fit each of ``models`` (each with its own child of ``rng``) and compare them by ln Z and BIC."""
    models = tuple(models)
    if not models:
        raise ValueError("no ephemeris models to compare")
    for m in models:
        if m not in PARAMS:
            raise ValueError(f"unknown ephemeris model {m!r}; choose from {MODELS}")
    if len(set(models)) != len(models):
        raise ValueError(f"models repeated: {models}")
    fits = []
    for m, child in zip(models, rng.spawn(len(models))):
        f = fit_ephemeris(data, m, rng=child, nlive=nlive, dlogz=dlogz,
                          priors={k: v for k, v in (priors or {}).items()}, status=status)
        fits.append(f)
        if done is not None:
            done(f)
    return EphemerisComparison(fits=tuple(fits))
