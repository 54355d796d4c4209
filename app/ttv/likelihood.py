"""Gaussian log-likelihood of observed transit times under the TTVFast model.

Likelihood spec (plain data, part of a work unit)::

    {"prior": {...prior spec, see app.ttv.priors...},
     "observed": {"b": {"epoch": [...], "time": [...], "sigma": [...]}},   # days
     "dt": null,               # integration step (days); null = choose (see below)
     "dt_tolerance_s": null,   # accuracy target for the automatic dt (seconds)
     "t_start": null}          # reference time of the osculating elements (days); null = default

Every fitted element (osculating period, mean anomaly from tconj, e, omega) is the Jacobi
osculating value at ``t_start``, where the integration starts.  Default: the first observed transit
minus half the lower edge of the shortest observed planet's period prior (so it moves with that
prior's width); give ``t_start`` to fix the epoch of the elements, e.g. to compare with elements
published at a given date.  It must precede the first observed transit by less than the shortest
observed planet's lower period bound, so that the first transit after it is the first observed one
or the one before.

Epochs are integers counted from the planet's ``tconj`` (epoch 0 transits near tconj).
The automatic dt is the largest min_period/f (f in 10..80) whose model times, after
removing a linear ephemeris (exactly degenerate with the free period and tconj), agree
with a step four times finer (dt/320 of the shortest period) to ``dt_tolerance_s``
(default: 0.1 x the smallest sigma), at the centre of the prior.

The likelihood never raises for a parameter vector of the right length: every vector the
integrator cannot handle (see app.ttv.model.FAILURES), every non-finite or unphysical
parameter and every non-finite result gives ln L = -inf, and the reason is counted in
``diagnostics`` ({"calls": n, "rejected": {reason: count}}), which the samplers store in
the result meta (``likelihood_diagnostics``) and carry through checkpoints.
"""
from __future__ import annotations

import math

import numpy as np

from .model import FAILURES, ObservedPlanet, TTVModel, estimate_max_events
from .priors import PriorTransform

_LOG_2PI = math.log(2.0 * math.pi)
_LIKE_KEYS = ("prior", "observed", "dt", "dt_tolerance_s", "t_start")
# reasons for ln L = -inf besides the model's FAILURES
REJECTIONS = FAILURES + ("invalid_parameters",   # non-finite x, mass or period <= 0 (to_model)
                         "nonfinite_loglike",    # the Gaussian sum came out NaN / +inf
                         "exception")            # an arithmetic error caught as a last resort


def start_time(first_transit: float, min_period_bound: float, given=None, *, name: str = "t_start") -> float:
    """Where the integration starts and the elements osculate: ``given``, checked, or the default
    ``first_transit - min_period_bound / 2``.  ``min_period_bound``: the lower edge of the shortest
    observed planet's period prior; a given start must lie less than that before the first transit."""
    if given is None:
        return first_transit - 0.5 * min_period_bound
    if isinstance(given, bool) or not isinstance(given, (int, float)) or not math.isfinite(given):
        raise ValueError(f"{name} must be a finite number of days, got {given!r}")
    if not first_transit - min_period_bound < given < first_transit:
        raise ValueError(f"{name} {given} must precede the first transit at {first_transit} by less than "
                         f"{min_period_bound:.6g} d (the lower period bound), i.e. lie within one period "
                         f"before the first observed transit")
    return float(given)


def validate_observed(name: str, obs: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check one planet's observed times; returns (epoch, time, sigma) arrays."""
    if not isinstance(obs, dict):
        raise ValueError(f"observed[{name!r}] must be a table, got {obs!r}")
    unknown = sorted(set(obs) - {"epoch", "time", "sigma"})
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in observed[{name!r}]")
    try:
        epoch = np.asarray(obs["epoch"], dtype=np.float64)
        time = np.asarray(obs["time"], dtype=np.float64)
        sigma = np.asarray(obs["sigma"], dtype=np.float64)
    except KeyError as exc:
        raise ValueError(f"observed[{name!r}] is missing {exc.args[0]!r}") from None
    if not (epoch.ndim == time.ndim == sigma.ndim == 1) or not (
            len(epoch) == len(time) == len(sigma)):
        raise ValueError(f"observed[{name!r}]: epoch, time, sigma must be 1-D and equally long, "
                         f"got {epoch.shape}, {time.shape}, {sigma.shape}")
    if len(epoch) == 0:
        raise ValueError(f"observed[{name!r}] has no transits")
    if not np.all(np.isfinite(epoch)) or np.any(epoch != np.rint(epoch)):
        raise ValueError(f"observed[{name!r}]: epochs must be integers, got {epoch[:5]}...")
    if not np.all(np.isfinite(time)):
        bad = np.flatnonzero(~np.isfinite(time))
        raise ValueError(f"observed[{name!r}]: non-finite times at rows {bad.tolist()[:10]}")
    bad = np.flatnonzero(~(np.isfinite(sigma) & (sigma > 0)))
    if len(bad):
        raise ValueError(f"observed[{name!r}]: sigma must be finite and > 0; rows "
                         f"{bad.tolist()[:10]} have {sigma[bad][:10].tolist()}")
    epoch = epoch.astype(np.int64)
    if np.any(np.diff(epoch) <= 0):
        dup = np.unique(epoch[1:][np.diff(epoch) <= 0])
        raise ValueError(f"observed[{name!r}]: epochs must be strictly increasing (no duplicates, "
                         f"sorted); offending epochs {dup.tolist()[:10]}")
    return epoch, time, sigma


class TTVLikelihood:
    """Callable: free parameter vector -> log-likelihood.  Picklable (rebuilt from the spec)."""

    def __init__(self, spec: dict):
        if not isinstance(spec, dict):
            raise ValueError(f"likelihood spec must be a table, got {type(spec).__name__}")
        unknown = sorted(set(spec) - set(_LIKE_KEYS))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in likelihood spec; allowed {_LIKE_KEYS}")
        self.spec = spec
        self.prior = PriorTransform(spec["prior"])
        names = [p.name for p in self.prior.spec.planets]
        observed = spec.get("observed") or {}
        if not observed:
            raise ValueError("likelihood spec has no observed transit times")
        obs_planets, times, sigmas = [], [], []
        for name, obs in observed.items():
            if name not in names:
                raise ValueError(f"observed planet {name!r} is not in the prior's planets {names}")
            epoch, time, sigma = validate_observed(name, obs)
            obs_planets.append(ObservedPlanet(names.index(name), epoch))
            times.append(time)
            sigmas.append(sigma)
        n_obs = sum(len(t) for t in times)
        if n_obs <= self.prior.ndim:
            raise ValueError(f"{n_obs} transit times cannot constrain {self.prior.ndim} free "
                             f"parameters {list(self.prior.names)}; need more transits than "
                             f"free parameters")
        self.n_obs = n_obs
        self._t_obs = np.concatenate(times)
        self._var_obs = np.concatenate(sigmas) ** 2
        bounds = self.prior.period_bounds()
        p_min_obs = min(bounds[o.index][0] for o in obs_planets)
        self.t_start = start_time(float(self._t_obs.min()), p_min_obs, spec.get("t_start"))
        self.t_end = float(self._t_obs.max() + 0.5 * p_min_obs)
        self.max_events = estimate_max_events(self.t_start, self.t_end, [b[0] for b in bounds])
        self._obs_planets = obs_planets
        self._slices = np.cumsum([0] + [len(t) for t in times])
        dt = spec.get("dt")
        self.dt_note = None
        if dt is None:
            tol_s = spec.get("dt_tolerance_s")
            if tol_s is None:
                tol_s = 0.1 * float(np.sqrt(self._var_obs.min())) * 86400.0
            dt = self.choose_dt(tol_s / 86400.0)
        self.dt = float(dt)
        self.model = self._make_model(self.dt)
        self._resid = np.empty(n_obs)
        # per-call constants: 1/sigma and the normalisation of the no-jitter Gaussian
        self._inv_sigma = 1.0 / np.sqrt(self._var_obs)
        self._norm = -0.5 * (float(np.sum(np.log(self._var_obs))) + n_obs * _LOG_2PI)
        self.reset_diagnostics()

    def reset_diagnostics(self) -> None:
        self.n_calls = 0
        self.rejected = dict.fromkeys(REJECTIONS, 0)

    @property
    def diagnostics(self) -> dict:
        """Plain data: calls so far and, per reason, how many gave ln L = -inf."""
        return {"calls": int(self.n_calls), "rejected": {k: int(v) for k, v in self.rejected.items()}}

    def restore_diagnostics(self, diag: dict | None) -> None:
        """Continue counting from ``diag`` (a checkpoint's copy of :attr:`diagnostics`)."""
        self.reset_diagnostics()
        if not diag:
            return
        self.n_calls = int(diag.get("calls", 0))
        for k, v in (diag.get("rejected") or {}).items():
            self.rejected[str(k)] = int(v)

    def __getstate__(self):
        return {"spec": dict(self.spec, dt=self.dt), "diagnostics": self.diagnostics}

    def __setstate__(self, state):
        self.__init__(state["spec"])
        self.restore_diagnostics(state.get("diagnostics"))

    def _make_model(self, dt: float) -> TTVModel:
        return TTVModel(len(self.prior.spec.planets), self.prior.spec.stellar_mass,
                        self._obs_planets, self.t_start, self.t_end, dt, self.max_events)

    def choose_dt(self, tol_days: float) -> float:
        theta, _ = self.prior.to_model(self.prior(np.full(self.prior.ndim, 0.5)))
        p_min = float(theta[:, 1].min())
        fractions = (10, 15, 20, 30, 40, 60, 80)
        ref = self._make_model(p_min / 320).transit_times(theta)
        if ref is None:
            self.dt_note = ("dt not checked: the prior centre does not produce every observed "
                            "transit; using P_min/40")
            return p_min / 40
        ref = np.concatenate(ref)
        ep = np.concatenate([o.epochs for o in self._obs_planets]).astype(float)
        design = np.column_stack([np.ones_like(ep), ep])
        for f in fractions:
            got = self._make_model(p_min / f).transit_times(theta)
            if got is None:
                continue
            d = np.concatenate(got) - ref
            coef, *_ = np.linalg.lstsq(design, d, rcond=None)
            if float(np.max(np.abs(d - design @ coef))) <= tol_days:
                return p_min / f
        self.dt_note = (f"no step down to P/{fractions[-1]} reaches {tol_days * 86400:.3g} s at "
                        f"the prior centre; using P_min/{fractions[-1]}")
        return p_min / fractions[-1]

    def model_times(self, x: np.ndarray) -> np.ndarray | None:
        theta, _ = self.prior.to_model(x)
        out = self.model.transit_times(theta)
        return None if out is None else np.concatenate(out)

    def _reject(self, reason: str) -> float:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        return -math.inf

    def __call__(self, x: np.ndarray) -> float:
        """ln L (float): finite, or -inf for any vector the model cannot handle; never raises."""
        self.n_calls += 1
        try:
            value = self._loglike(x)
        except (ValueError, ArithmeticError):  # last resort: no such vector is known
            return self._reject("exception")
        if isinstance(value, str):
            return self._reject(value)
        if not math.isfinite(value):
            return self._reject("nonfinite_loglike")
        return value

    def _loglike(self, x: np.ndarray) -> float | str:
        """ln L, or the reason (a REJECTIONS entry) why there is none."""
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)) or not self.prior.physical(x):
            return "invalid_parameters"
        theta, jitter = self.prior.to_model(x)
        out = self.model.transit_times(theta)
        if out is None:
            return self.model.last_failure or "missing_transit"
        r = self._resid
        for k, arr in enumerate(out):
            r[self._slices[k]:self._slices[k + 1]] = arr
        r -= self._t_obs
        if jitter:
            var = self._var_obs + jitter * jitter
            return float(-0.5 * (np.dot(r * r, 1.0 / var) + np.sum(np.log(var))
                                 + self.n_obs * _LOG_2PI))
        r *= self._inv_sigma
        return self._norm - 0.5 * float(np.dot(r, r))
