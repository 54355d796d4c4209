"""Priors for the TTV model, from a plain-data (JSON/TOML) spec, with validation.

A prior spec lists the planets in order of increasing period, each with five entries
(physical units; see docs/ttv.md)::

    {"stellar_mass": 0.99,                      # M_sun (fixed)
     "planets": [
        {"name": "b",
         "mass":   {"dist": "fixed", "value": 8.7},              # Earth masses
         "period": {"dist": "uniform", "min": 10.949, "max": 10.951},  # days
         "ecc":    {"dist": "fixed", "e": 0.05, "omega_deg": 90.0},
         "tconj":  {"dist": "uniform", "min": 4.99, "max": 5.01}},   # days, same zero point as the times
        {"name": "c",
         "mass":   {"dist": "loguniform", "min": 10, "max": 1000},
         "period": {"dist": "loguniform", "min": 21.9, "max": 23.7},
         "ecc":    {"dist": "disk", "emax": 0.3},   # e ~ U(0, emax), omega ~ U(0, 360) deg
         "tconj":  {"dist": "phase", "t_ref": 0.0}}],   # tconj = t_ref + U(0,1) * period
     "jitter": {"dist": "loguniform", "min": 1e-5, "max": 1e-2}}   # days, optional

The sampled (free) coordinates, in order, are ``<planet>.mass`` (Earth masses),
``<planet>.period`` (days), ``<planet>.secosw`` and ``<planet>.sesinw`` (together, for
``disk``), ``<planet>.tconj`` (days) and ``jitter`` (days).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

M_EARTH_IN_M_SUN = 3.0034896149157645e-06  # IAU 2015 nominal GM_earth / GM_sun
PLANET_KEYS = ("name", "mass", "period", "ecc", "tconj")
_SCALAR_DISTS = {"fixed": ("value",), "uniform": ("min", "max"), "loguniform": ("min", "max")}
_ECC_DISTS = {"fixed": ("e", "omega_deg"), "disk": ("emax",)}
_TCONJ_DISTS = {"fixed": ("value",), "uniform": ("min", "max"), "phase": ("t_ref",)}
_TOP_KEYS = ("stellar_mass", "planets", "jitter")


def _check_keys(where: str, got: dict, allowed) -> None:
    unknown = sorted(set(got) - set(allowed))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(allowed)}")


def _number(where: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{where} must be finite, got {value!r}")
    return value


def _parse_dist(where: str, d, table: dict) -> dict:
    if not isinstance(d, dict) or "dist" not in d:
        raise ValueError(f"{where} must be a table with a 'dist' key, got {d!r}")
    kind = d["dist"]
    if kind not in table:
        raise ValueError(f"{where}: unknown dist {kind!r}; choose one of {sorted(table)}")
    _check_keys(where, d, ("dist",) + table[kind])
    missing = [k for k in table[kind] if k not in d]
    if missing:
        raise ValueError(f"{where}: dist {kind!r} needs {missing}")
    out = {"dist": kind}
    for k in table[kind]:
        out[k] = _number(f"{where}.{k}", d[k])
    if "min" in out:
        if not out["max"] > out["min"]:
            raise ValueError(f"{where}: empty range [{out['min']}, {out['max']}]")
        if kind == "loguniform" and out["min"] <= 0:
            raise ValueError(f"{where}: loguniform needs min > 0, got {out['min']}")
    return out


@dataclass(frozen=True)
class PlanetPrior:
    name: str
    mass: dict
    period: dict
    ecc: dict
    tconj: dict


@dataclass(frozen=True)
class PriorSpec:
    stellar_mass: float
    planets: tuple[PlanetPrior, ...]
    jitter: dict | None

    def to_dict(self) -> dict:
        out = {"stellar_mass": self.stellar_mass,
               "planets": [{"name": p.name, "mass": p.mass, "period": p.period,
                            "ecc": p.ecc, "tconj": p.tconj} for p in self.planets]}
        if self.jitter is not None:
            out["jitter"] = self.jitter
        return out


def parse_prior_spec(spec: dict) -> PriorSpec:
    """Validate a prior spec (see module docstring); ValueError names the bad key/value."""
    if not isinstance(spec, dict):
        raise ValueError(f"prior spec must be a table, got {type(spec).__name__}")
    _check_keys("prior spec", spec, _TOP_KEYS)
    if "stellar_mass" not in spec or "planets" not in spec:
        raise ValueError("prior spec needs 'stellar_mass' (M_sun) and 'planets'")
    mstar = _number("stellar_mass", spec["stellar_mass"])
    if mstar <= 0:
        raise ValueError(f"stellar_mass must be > 0 M_sun, got {mstar}")
    planets = spec["planets"]
    if not isinstance(planets, list) or not planets:
        raise ValueError(f"'planets' must be a non-empty list, got {planets!r}")
    parsed = []
    for i, p in enumerate(planets):
        where = f"planets[{i}]"
        if not isinstance(p, dict):
            raise ValueError(f"{where} must be a table, got {p!r}")
        _check_keys(where, p, PLANET_KEYS)
        missing = [k for k in PLANET_KEYS if k not in p]
        if missing:
            raise ValueError(f"{where} is missing {missing}")
        name = str(p["name"])
        mass = _parse_dist(f"{name}.mass", p["mass"], _SCALAR_DISTS)
        period = _parse_dist(f"{name}.period", p["period"], _SCALAR_DISTS)
        ecc = _parse_dist(f"{name}.ecc", p["ecc"], _ECC_DISTS)
        tconj = _parse_dist(f"{name}.tconj", p["tconj"], _TCONJ_DISTS)
        for label, d in (("mass", mass), ("period", period)):
            low = d.get("value", d.get("min"))
            if low <= 0:
                raise ValueError(f"{name}.{label} must be > 0, got {low}")
        if ecc["dist"] == "disk" and not 0 < ecc["emax"] < 1:
            raise ValueError(f"{name}.ecc.emax must be in (0, 1), got {ecc['emax']}")
        if ecc["dist"] == "fixed" and not 0 <= ecc["e"] < 1:
            raise ValueError(f"{name}.ecc.e must be in [0, 1), got {ecc['e']}")
        parsed.append(PlanetPrior(name, mass, period, ecc, tconj))
    names = [p.name for p in parsed]
    if len(set(names)) != len(names):
        raise ValueError(f"planet names must be unique, got {names}")
    for a, b in zip(parsed, parsed[1:]):
        if _upper(a.period) >= _lower(b.period):
            raise ValueError(f"planets must be listed by increasing period with disjoint period "
                             f"priors: {a.name} reaches {_upper(a.period)} d but {b.name} starts "
                             f"at {_lower(b.period)} d")
    jitter = None
    if spec.get("jitter") is not None:
        jitter = _parse_dist("jitter", spec["jitter"], _SCALAR_DISTS)
        if jitter.get("value", jitter.get("min")) < 0:
            raise ValueError(f"jitter must be >= 0 days, got {jitter}")
    return PriorSpec(mstar, tuple(parsed), jitter)


def _lower(d: dict) -> float:
    return d["value"] if d["dist"] == "fixed" else d["min"]


def _upper(d: dict) -> float:
    return d["value"] if d["dist"] == "fixed" else d["max"]


def _free(d: dict) -> bool:
    return d["dist"] != "fixed"


def _scalar(d: dict, u: float) -> float:
    if d["dist"] == "uniform":
        return d["min"] + u * (d["max"] - d["min"])
    lo, hi = math.log(d["min"]), math.log(d["max"])
    return math.exp(lo + u * (hi - lo))


def _scalar_inverse(d: dict, x: float) -> float:
    if d["dist"] == "uniform":
        return (x - d["min"]) / (d["max"] - d["min"])
    return (math.log(x) - math.log(d["min"])) / (math.log(d["max"]) - math.log(d["min"]))


class PriorTransform:
    """Unit cube -> free physical parameters, and free parameters -> model theta.

    Picklable (holds only the plain spec).  ``names`` lists the free coordinates.
    """

    def __init__(self, spec: dict | PriorSpec):
        self.spec = spec if isinstance(spec, PriorSpec) else parse_prior_spec(spec)
        names = []
        for p in self.spec.planets:
            if p.mass["dist"] != "fixed":
                names.append(f"{p.name}.mass")
            if _free(p.period):
                names.append(f"{p.name}.period")
            if p.ecc["dist"] == "disk":
                names += [f"{p.name}.secosw", f"{p.name}.sesinw"]
            if _free(p.tconj):
                names.append(f"{p.name}.tconj")
        if self.spec.jitter is not None and self.spec.jitter["dist"] != "fixed":
            names.append("jitter")
        self.names = tuple(names)
        self.ndim = len(names)
        # unit-cube coordinates that wrap around (the omega angle of each 'disk' pair)
        self.periodic = tuple(i for i, n in enumerate(names) if n.endswith(".sesinw"))
        # free coordinates that must be > 0 (masses, periods) and >= 0 (jitter)
        self._positive = np.array([i for i, n in enumerate(names)
                                   if n.endswith((".mass", ".period"))], dtype=np.intp)
        self._jitter = np.array([i for i, n in enumerate(names) if n == "jitter"], dtype=np.intp)

    def physical(self, x: np.ndarray) -> bool:
        """True when every free mass and period is > 0 and the jitter >= 0 (any prior draw is;
        a vector from elsewhere, e.g. a warm start or an optimiser, may not be)."""
        return bool(np.all(x[self._positive] > 0.0) and np.all(x[self._jitter] >= 0.0))

    def __call__(self, u: np.ndarray) -> np.ndarray:
        x = np.empty(self.ndim)
        k = 0
        for p in self.spec.planets:
            if p.mass["dist"] != "fixed":
                x[k] = _scalar(p.mass, u[k]); k += 1
            period = p.period.get("value")
            if _free(p.period):
                period = x[k] = _scalar(p.period, u[k]); k += 1
            if p.ecc["dist"] == "disk":
                # uniform over the disk sqrt(e) <= sqrt(emax): e ~ U(0, emax), omega ~ U(0, 2 pi)
                r = math.sqrt(p.ecc["emax"] * u[k])
                w = 2.0 * math.pi * u[k + 1]
                x[k], x[k + 1] = r * math.cos(w), r * math.sin(w)
                k += 2
            if p.tconj["dist"] == "uniform":
                x[k] = _scalar(p.tconj, u[k]); k += 1
            elif p.tconj["dist"] == "phase":
                x[k] = p.tconj["t_ref"] + u[k] * period; k += 1
        if self.spec.jitter is not None and self.spec.jitter["dist"] != "fixed":
            x[k] = _scalar(self.spec.jitter, u[k])
        return x

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """Free physical parameters -> unit cube (for warm starts); clipped to [0, 1]."""
        u = np.empty(self.ndim)
        k = 0
        for p in self.spec.planets:
            if p.mass["dist"] != "fixed":
                u[k] = _scalar_inverse(p.mass, x[k]); k += 1
            period = p.period.get("value")
            if _free(p.period):
                period = x[k]
                u[k] = _scalar_inverse(p.period, x[k]); k += 1
            if p.ecc["dist"] == "disk":
                r2 = x[k] ** 2 + x[k + 1] ** 2
                u[k] = r2 / p.ecc["emax"]
                u[k + 1] = (math.atan2(x[k + 1], x[k]) / (2.0 * math.pi)) % 1.0
                k += 2
            if p.tconj["dist"] == "uniform":
                u[k] = _scalar_inverse(p.tconj, x[k]); k += 1
            elif p.tconj["dist"] == "phase":
                u[k] = (x[k] - p.tconj["t_ref"]) / period; k += 1
        if self.spec.jitter is not None and self.spec.jitter["dist"] != "fixed":
            u[k] = _scalar_inverse(self.spec.jitter, x[k])
        return np.clip(u, 0.0, 1.0)

    def to_model(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """Free parameters -> (theta (n_planets x 5, see model.PLANET_PARAMS), jitter days)."""
        theta = np.empty((len(self.spec.planets), 5))
        mstar = self.spec.stellar_mass
        k = 0
        for i, p in enumerate(self.spec.planets):
            if p.mass["dist"] == "fixed":
                mass = p.mass["value"]
            else:
                mass = x[k]; k += 1
            if not _free(p.period):
                period = p.period["value"]
            else:
                period = x[k]; k += 1
            if p.ecc["dist"] == "fixed":
                r = math.sqrt(p.ecc["e"])
                w = math.radians(p.ecc["omega_deg"])
                secosw, sesinw = r * math.cos(w), r * math.sin(w)
            else:
                secosw, sesinw = x[k], x[k + 1]; k += 2
            if not _free(p.tconj):
                tconj = p.tconj["value"]
            else:
                tconj = x[k]; k += 1
            theta[i] = (math.log10(mass * M_EARTH_IN_M_SUN / mstar), period, secosw, sesinw, tconj)
        jitter = 0.0
        if self.spec.jitter is not None:
            jitter = self.spec.jitter["value"] if self.spec.jitter["dist"] == "fixed" else x[k]
        return theta, jitter

    def period_bounds(self) -> list[tuple[float, float]]:
        return [(_lower(p.period), _upper(p.period)) for p in self.spec.planets]
