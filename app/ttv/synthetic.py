"""Synthetic transit-time data with a known answer (tests, benchmarks, demo).

``kepler88_like``: a Kepler-88-like system: a 0.99 M_sun star, a transiting sub-Neptune
``b`` (P = 10.95 d) and a non-transiting ~0.65 M_J perturber ``c`` at 22.3 d, just wide
of the 2:1 resonance.  Times are days from an arbitrary zero point (``tconj`` of b = 5.0).
``extra_planet`` adds a further non-transiting planet (e.g. a second perturber ``d``) with every
parameter given: :class:`ExtraPlanet`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .likelihood import TTVLikelihood
from .priors import M_EARTH_IN_M_SUN

M_JUP_IN_M_EARTH = 317.8284065946748


@dataclass(frozen=True)
class SyntheticSystem:
    truth_spec: dict      # prior spec with every parameter fixed at the truth
    epochs: np.ndarray
    times: np.ndarray     # noisy observed times (days)
    sigma: np.ndarray     # days
    model_times: np.ndarray  # noiseless
    truth: dict           # {"b.period": ..., "c.mass": ... (Earth masses), ...}
    t_start: float        # epoch of the truth's osculating elements (days): pass it as the fit's
    #                       reference_time to compare the posterior with ``truth`` directly
    planet: tuple = ()    # planet name of each row (transiting_system; empty: every row is planet b)


@dataclass(frozen=True)
class ExtraPlanet:
    """A further planet of a synthetic system, every parameter fixed (the truth)."""
    name: str
    mass: float        # Earth masses
    period: float      # days, Jacobi osculating period at the integration start
    e: float
    omega_deg: float
    tconj: float       # days, same zero point as the times


def _fixed_planet(name, mass, period, e, omega_deg, tconj):
    return {"name": name, "mass": {"dist": "fixed", "value": mass},
            "period": {"dist": "fixed", "value": period},
            "ecc": {"dist": "fixed", "e": e, "omega_deg": omega_deg},
            "tconj": {"dist": "fixed", "value": tconj}}


def kepler88_like(rng: np.random.Generator, n_transits: int = 100, sigma_min=(1.0, 2.0),
                  perturber_mass_mj: float = 0.65, with_perturber: bool = True,
                  drop_fraction: float = 0.1,
                  extra_planet: ExtraPlanet | None = None) -> SyntheticSystem:
    """Noisy transit times of planet b (TTVFast, Gaussian noise from ``rng``); sigma uniform in
    ``sigma_min`` minutes.  ``extra_planet``: a further planet (its period must differ from b's
    and c's)."""
    planets = [_fixed_planet("b", 8.7, 10.95, 0.05, 90.0, 5.0)]
    truth = {"b.mass": 8.7, "b.period": 10.95, "b.e": 0.05, "b.omega_deg": 90.0, "b.tconj": 5.0}
    if with_perturber:
        mc = perturber_mass_mj * M_JUP_IN_M_EARTH
        planets.append(_fixed_planet("c", mc, 22.3, 0.04, 250.0, 12.0))
        truth.update({"c.mass": mc, "c.period": 22.3, "c.e": 0.04, "c.omega_deg": 250.0,
                      "c.tconj": 12.0})
    if extra_planet is not None:
        x = extra_planet
        if x.name in {p["name"] for p in planets}:
            raise ValueError(f"extra planet name {x.name!r} is already used")
        planets.append(_fixed_planet(x.name, x.mass, x.period, x.e, x.omega_deg, x.tconj))
        truth.update({f"{x.name}.mass": x.mass, f"{x.name}.period": x.period,
                      f"{x.name}.e": x.e, f"{x.name}.omega_deg": x.omega_deg,
                      f"{x.name}.tconj": x.tconj})
        planets.sort(key=lambda q: q["period"]["value"])
    spec = {"stellar_mass": 0.99, "planets": planets}
    n_total = int(round(n_transits / (1.0 - drop_fraction)))
    keep = np.sort(rng.choice(n_total, size=n_transits, replace=False))
    epochs = keep.astype(np.int64)
    placeholder = {"epoch": epochs.tolist(), "time": (5.0 + 10.95 * epochs).tolist(),
                   "sigma": [1e-3] * len(epochs)}
    p_min = min(q["period"]["value"] for q in planets)
    like = TTVLikelihood({"prior": spec, "observed": {"b": placeholder},
                          "dt": p_min / 80})
    model = like.model_times(np.empty(0))
    if model is None:
        raise ValueError("the synthetic system does not transit at every epoch")
    sigma = rng.uniform(sigma_min[0], sigma_min[1], size=n_transits) / 1440.0
    times = model + sigma * rng.standard_normal(n_transits)
    return SyntheticSystem(spec, epochs, times, sigma, model.copy(), truth, like.t_start)


def mass_ratio_to_earth(log10_mu: float, stellar_mass: float) -> float:
    return 10.0 ** log10_mu * stellar_mass / M_EARTH_IN_M_SUN


def transiting_system(rng: np.random.Generator, planets, *, stellar_mass: float = 1.0,
                      span_days: float = 1400.0, sigma_min=(1.0, 2.0),
                      drop_fraction: float = 0.1) -> SyntheticSystem:
    """Noisy transit times of several planets that all transit (``planets``: :class:`ExtraPlanet` values, the
    truth; TTVFast, Gaussian noise from ``rng``), each observed at its epochs within ``span_days`` of the first
    conjunction with ``drop_fraction`` of them left out at random; sigma uniform in ``sigma_min`` minutes.
    ``times``, ``sigma``, ``epochs`` and ``planet`` run planet by planet in period order."""
    planets = sorted(planets, key=lambda x: x.period)
    if len({x.name for x in planets}) != len(planets):
        raise ValueError(f"planet names must be unique, got {[x.name for x in planets]}")
    spec = {"stellar_mass": float(stellar_mass),
            "planets": [_fixed_planet(x.name, x.mass, x.period, x.e, x.omega_deg, x.tconj) for x in planets]}
    truth, observed, epochs_all, labels = {}, {}, [], []
    t_first = min(x.tconj for x in planets)
    for x in planets:
        truth.update({f"{x.name}.mass": x.mass, f"{x.name}.period": x.period, f"{x.name}.e": x.e,
                      f"{x.name}.omega_deg": x.omega_deg, f"{x.name}.tconj": x.tconj})
        n_total = int((t_first + span_days - x.tconj) // x.period) + 1
        n_keep = max(3, int(round(n_total * (1.0 - drop_fraction))))
        ep = np.sort(rng.choice(n_total, size=n_keep, replace=False)).astype(np.int64)
        ep = np.unique(np.concatenate([[0], ep]))[:n_keep]  # epoch 0 always observed
        observed[x.name] = {"epoch": ep.tolist(), "time": (x.tconj + x.period * ep).tolist(),
                            "sigma": [1e-3] * len(ep)}
        epochs_all.append(ep)
        labels += [x.name] * len(ep)
    like = TTVLikelihood({"prior": spec, "observed": observed, "dt": min(x.period for x in planets) / 80})
    model = like.model_times(np.empty(0))
    if model is None:
        raise ValueError("the synthetic system does not transit at every epoch")
    sigma = rng.uniform(sigma_min[0], sigma_min[1], size=len(model)) / 1440.0
    times = model + sigma * rng.standard_normal(len(model))
    return SyntheticSystem(spec, np.concatenate(epochs_all), times, sigma, model.copy(), truth, like.t_start,
                           tuple(labels))

