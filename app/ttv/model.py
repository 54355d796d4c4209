"""TTVFast forward model: planet parameters -> model transit times at the observed epochs.

Units and conventions (used everywhere in ``app.ttv``):

* times in days, on the same zero point as the observed transit times (BJD_TDB or
  BJD_TDB - offset; the model never assumes one, it only needs consistency);
* masses as ``log10(M_planet / M_star)``; ``stellar_mass`` in M_sun;
* per planet, five parameters in this order (:data:`PLANET_PARAMS`):
  ``log10_mu`` (mass ratio), ``period`` (days, Jacobi osculating at ``t_start``),
  ``secosw`` = sqrt(e) cos(omega), ``sesinw`` = sqrt(e) sin(omega),
  ``tconj`` (days: Keplerian time of conjunction, i.e. mid-transit, in the osculating
  orbit at ``t_start``).  Coplanar edge-on orbits (inclination 90 deg, node 0) unless
  ``inclinations`` are given.

The likelihood calls the TTVFast C function through ``ctypes`` with a pre-allocated
transit buffer (a numpy structured array), so no Python objects are created per call;
the ``ttvfast.ttvfast`` wrapper builds ~25k Python floats per call instead.  It calls
``TTVFast_main``, which returns a status code (hyperbolic orbit, Kepler step not converging,
transit buffer full); the exported ``TTVFast`` symbol calls ``exit()`` on those, which would
kill the whole process (the volunteer's task with it).

:meth:`TTVModel.transit_times` never raises for a parameter vector: every configuration it
cannot turn into the observed transits returns ``None`` and leaves the reason, one of
:data:`FAILURES`, in ``last_failure``.
"""
from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass

import numpy as np

PLANET_PARAMS = ("log10_mu", "period", "secosw", "sesinw", "tconj")
G_AU3_DAY2_MSUN = 0.000295994511  # the value the ttvfast package passes to its C core
_EMPTY = -2.0  # TTVFast leaves unused transit slots at this time

# why transit_times returned None (TTVModel.last_failure); docs/ttv.md "Failure modes"
FAILURES = ("bad_elements",        # non-finite element, period <= 0, mass ratio <= 0, e >= 1
            "hyperbolic_orbit",    # TTVFast status 3: an orbit became unbound (ejection)
            "kepler_not_converging",  # TTVFast status 5 (close encounter, dt too coarse)
            "buffer_full",         # TTVFast status 2 or every slot used: runaway transit events
            "ttvfast_error",       # any other non-zero TTVFast status
            "nonfinite_times",     # NaN or inf model times
            "double_transit",      # two transits of one planet closer than half its period
            "missing_transit")     # an observed epoch has no model transit
_STATUS = {2: "buffer_full", 3: "hyperbolic_orbit", 5: "kepler_not_converging"}

# struct CalcTransit {int planet; int epoch; double time; double rsky; double vsky;}
_TRANSIT_DTYPE = np.dtype(
    [("planet", np.int32), ("epoch", np.int32), ("time", np.float64),
     ("rsky", np.float64), ("vsky", np.float64)], align=True)
_RV_DTYPE = np.dtype([("time", np.float64), ("rv", np.float64)], align=True)

_CORE = None


def _core():
    """The TTVFast C entry point of the installed ``ttvfast`` extension, via ctypes:
    ``TTVFast_main`` (returns a status, 0 = OK), never ``TTVFast`` (exits the process on error)."""
    global _CORE
    if _CORE is None:
        from ttvfast import _ttvfast  # the extension module exports the C symbol TTVFast_main

        lib = ctypes.CDLL(_ttvfast.__file__)
        fn = lib.TTVFast_main
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.c_double, ctypes.c_double, ctypes.c_double,
                       ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                       ctypes.c_int, ctypes.c_int]
        _CORE = fn
    return _CORE


def conj_to_mean_anomaly_deg(period: float, ecc: float, omega_rad: float, tconj: float,
                             t_start: float) -> float:
    """Mean anomaly (deg) at ``t_start`` of an orbit whose conjunction is at ``tconj``.

    Conjunction (transit, observer on +z in TTVFast's frame) is at true anomaly
    f = pi/2 - omega.
    """
    f = 0.5 * math.pi - omega_rad
    ecc_anom = 2.0 * math.atan2(math.sqrt(1.0 - ecc) * math.sin(0.5 * f),
                                math.sqrt(1.0 + ecc) * math.cos(0.5 * f))
    mean_tr = ecc_anom - ecc * math.sin(ecc_anom)
    mean = mean_tr + 2.0 * math.pi * (t_start - tconj) / period
    return math.degrees(mean % (2.0 * math.pi))


@dataclass(frozen=True)
class ObservedPlanet:
    """Observed epochs of one transiting planet (index into the planet list)."""

    index: int
    epochs: np.ndarray  # int64, strictly increasing


class TTVModel:
    """Model transit times of N planets at the observed epochs, through the TTVFast C core.

    ``observed``: list of :class:`ObservedPlanet`; epochs are counted from the planet's
    ``tconj`` (epoch 0 is the transit at ``tconj`` of the osculating orbit at ``t_start``).
    The first transit after ``t_start`` gets epoch ``round((t - tconj) / period)`` (exact
    for that orbit, whether or not tconj precedes t_start) and later ones are counted in
    order, so the mean-vs-osculating period difference never shifts an epoch.
    """

    def __init__(self, n_planets: int, stellar_mass: float, observed: list[ObservedPlanet],
                 t_start: float, t_end: float, dt: float, max_events: int,
                 inclinations_deg: list[float] | None = None):
        if n_planets < 1:
            raise ValueError(f"n_planets must be >= 1, got {n_planets}")
        if not stellar_mass > 0:
            raise ValueError(f"stellar_mass must be > 0 M_sun, got {stellar_mass}")
        if not t_end > t_start:
            raise ValueError(f"t_end ({t_end}) must be after t_start ({t_start})")
        if not dt > 0:
            raise ValueError(f"dt must be > 0 days, got {dt}")
        self.n_planets = int(n_planets)
        self.stellar_mass = float(stellar_mass)
        self.observed = list(observed)
        self.t_start = float(t_start)
        self.t_end = float(t_end)
        self.dt = float(dt)
        self.max_events = int(max_events)
        incl = inclinations_deg if inclinations_deg is not None else [90.0] * self.n_planets
        if len(incl) != self.n_planets:
            raise ValueError(f"need {self.n_planets} inclinations, got {len(incl)}")
        self.inclinations_deg = [float(i) for i in incl]
        self.last_failure = None
        self._init_buffers()

    # pickling rebuilds the ctypes buffers (dynesty checkpoints pickle the likelihood)
    def __getstate__(self):
        return {"n_planets": self.n_planets, "stellar_mass": self.stellar_mass,
                "observed": [(o.index, o.epochs) for o in self.observed],
                "t_start": self.t_start, "t_end": self.t_end, "dt": self.dt,
                "max_events": self.max_events, "inclinations_deg": self.inclinations_deg}

    def __setstate__(self, state):
        state = dict(state)
        state["observed"] = [ObservedPlanet(i, np.asarray(e)) for i, e in state["observed"]]
        self.__init__(**state)

    def _init_buffers(self):
        self._params = np.zeros(2 + 7 * self.n_planets, dtype=np.float64)
        self._params[0] = G_AU3_DAY2_MSUN
        self._params[1] = self.stellar_mass
        self._transits = np.zeros(self.max_events, dtype=_TRANSIT_DTYPE)
        self._rv = np.zeros(1, dtype=_RV_DTYPE)
        self._params_ptr = self._params.ctypes.data
        self._transits_ptr = self._transits.ctypes.data
        self._rv_ptr = self._rv.ctypes.data
        self._times = self._transits["time"]
        self._planet = self._transits["planet"]
        self._out = [np.empty(len(o.epochs)) for o in self.observed]
        self._gaps = np.empty(self.max_events)
        self._fn = _core()

    def set_elements(self, theta: np.ndarray) -> bool:
        """Fill the C parameter block from ``theta`` (n_planets x 5, see PLANET_PARAMS).

        False (block not usable) for a non-finite element, period <= 0, a mass that is not
        positive and finite, or e >= 1."""
        p = self._params
        if not np.all(np.isfinite(theta)):
            return False
        for i in range(self.n_planets):
            log10_mu, period, secosw, sesinw, tconj = theta[i]
            ecc = secosw * secosw + sesinw * sesinw
            if not (period > 0.0 and ecc < 1.0 and log10_mu < 300.0):
                return False
            omega = math.atan2(sesinw, secosw)
            base = 2 + 7 * i
            p[base] = 10.0 ** log10_mu * self.stellar_mass
            if not (0.0 < p[base] < math.inf):
                return False
            p[base + 1] = period
            p[base + 2] = ecc
            p[base + 3] = self.inclinations_deg[i]
            p[base + 4] = 0.0
            p[base + 5] = math.degrees(omega)
            p[base + 6] = conj_to_mean_anomaly_deg(period, ecc, omega, tconj, self.t_start)
        return True

    def integrate(self, theta: np.ndarray) -> int:
        """Run TTVFast for ``theta``; returns the number of transits written, or -1 (and sets
        ``last_failure``) when the elements are unusable or TTVFast reports an error."""
        if not self.set_elements(theta):
            self.last_failure = "bad_elements"
            return -1
        self._times.fill(_EMPTY)
        status = self._fn(self._params_ptr, self.dt, self.t_start, self.t_end, self.n_planets,
                          self._transits_ptr, self._rv_ptr, 0, self.max_events, 0)
        if status != 0:
            self.last_failure = _STATUS.get(status, "ttvfast_error")
            return -1
        return int(np.count_nonzero(self._times != _EMPTY))

    def transit_times(self, theta: np.ndarray) -> list[np.ndarray] | None:
        """Model times for exactly the observed epochs (one array per observed planet).

        Returns ``None`` when some observed epoch has no model transit (unstable or
        non-transiting configuration, or a transit beyond the integration window), and
        whenever the integrator cannot handle ``theta``; ``last_failure`` says why (one of
        :data:`FAILURES`).  Never raises for any ``theta`` of the right size.
        The returned arrays are reused by the next call; copy them to keep them.
        """
        theta = np.asarray(theta, dtype=np.float64).reshape(self.n_planets, 5)
        self.last_failure = None
        n = self.integrate(theta)
        if n < 0:
            return None
        if n >= self.max_events:
            self.last_failure = "buffer_full"
            return None  # buffer full: cannot trust the tail
        times = self._times[:n]
        planets = self._planet[:n]
        for k, obs in enumerate(self.observed):
            t = times[planets == obs.index]
            if len(t) == 0:
                self.last_failure = "missing_transit"
                return None
            period = theta[obs.index, 1]
            if not math.isfinite(t[0]):
                self.last_failure = "nonfinite_times"
                return None
            if len(t) > 1:
                gaps = self._gaps[:len(t) - 1]
                np.subtract(t[1:], t[:-1], out=gaps)
                if gaps.min() < 0.5 * period:
                    self.last_failure = "double_transit"
                    return None  # a spurious double transit: do not guess which one is real
            # the first transit after t_start is matched through the osculating orbit at
            # t_start (exact for the Keplerian extrapolation, so no drift accumulates);
            # later transits are counted in order
            ep0 = int(np.rint((t[0] - theta[obs.index, 4]) / period))
            pos = obs.epochs - ep0
            if pos[0] < 0 or pos[-1] >= len(t):
                self.last_failure = "missing_transit"
                return None  # an observed epoch lies outside the integrated transits
            out = self._out[k]
            np.take(t, pos, out=out)
            if not np.all(np.isfinite(out)):
                self.last_failure = "nonfinite_times"
                return None
        return self._out


def estimate_max_events(t_start: float, t_end: float, min_periods: list[float]) -> int:
    """Transit buffer size: every planet at its shortest allowed period, with margin."""
    span = t_end - t_start
    return int(sum(2 * (span / p + 3) for p in min_periods)) + 16
