"""Cross-matching candidates before alerting: small provider strategy objects with one method, ``match``.

* ``StarCatalogProvider``: the project's offline star catalog (``server.image.catalogs``). A match means a known
  star: a variable, not a new transient.
* ``SkybotProvider``: known solar-system objects at the epoch (IMCCE SkyBoT through ``astroquery.imcce``; SkyBoT
  covers the MPC's numbered and multi-opposition objects).
* ``NedProvider`` and ``SdssProvider``: galaxies (NED object type G, SDSS photometric type 3), through
  ``astroquery.ned`` / ``astroquery.sdss``. A galaxy match does not block an alert (a supernova sits on its host);
  it is recorded as the host.

The online providers share ``CachedOnlineProvider``: answers are cached on disk as JSON (one file per rounded
query), and with ``offline=True`` (the default where no network exists) they answer status ``skipped`` with a
message saying so, never a false "no match". A network or service error is status ``error``: also not a match,
and reported in the alert's cross-match record. Tests inject a ``fetch`` function instead of astroquery.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

#: kinds of catalog object that mean "not a new transient" (galaxies are hosts, not vetoes)
VETO_KINDS = ("star", "solar_system")


@dataclass(frozen=True)
class Match:
    kind: str  # star, solar_system, galaxy
    name: str
    ra_deg: float
    dec_deg: float
    separation_arcsec: float
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderResult:
    provider: str
    status: str  # matched, no_match, skipped, error
    matches: tuple[Match, ...] = ()
    message: str = ""

    def as_dict(self) -> dict:
        return {"provider": self.provider, "status": self.status, "message": self.message,
                "matches": [{**m.__dict__} for m in self.matches]}


@dataclass(frozen=True)
class CrossMatchReport:
    results: tuple[ProviderResult, ...]

    @property
    def vetoed(self) -> bool:
        """True when a star or a known solar-system object explains the candidate."""
        return any(m.kind in VETO_KINDS for r in self.results for m in r.matches)

    @property
    def host(self) -> Match | None:
        gal = [m for r in self.results for m in r.matches if m.kind == "galaxy"]
        return min(gal, key=lambda m: m.separation_arcsec) if gal else None

    @property
    def skipped(self) -> list[str]:
        return [r.provider for r in self.results if r.status in ("skipped", "error")]

    def as_dict(self) -> dict:
        return {"vetoed": self.vetoed, "skipped": self.skipped, "results": [r.as_dict() for r in self.results]}


class CrossMatchProvider(Protocol):
    name: str

    def match(self, ra_deg: float, dec_deg: float, jd: float) -> ProviderResult:
        """Known objects near (ra_deg, dec_deg) at Julian date ``jd`` (UTC)."""


def _sep_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    r1, d1, r2, d2 = map(np.radians, (ra1, dec1, np.asarray(ra2, float), np.asarray(dec2, float)))
    s = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(s, 0, 1)))) * 3600.0


def _check_position(ra_deg: float, dec_deg: float) -> None:
    if not (np.isfinite(ra_deg) and np.isfinite(dec_deg) and -90 <= dec_deg <= 90):
        raise ValueError(f"position must be finite with -90 <= dec <= 90, got ({ra_deg!r}, {dec_deg!r})")


class StarCatalogProvider:
    """Stars of an offline ``CatalogProvider`` within ``radius_arcsec``."""

    def __init__(self, catalog, radius_arcsec: float = 2.0, mag_limit: float | None = None,
                 name: str = "offline-stars"):
        if not radius_arcsec > 0:
            raise ValueError(f"radius_arcsec must be > 0, got {radius_arcsec!r}")
        self.catalog, self.radius, self.mag_limit, self.name = catalog, float(radius_arcsec), mag_limit, name

    def match(self, ra_deg: float, dec_deg: float, jd: float) -> ProviderResult:
        _check_position(ra_deg, dec_deg)
        table = self.catalog.cone(ra_deg % 360.0, dec_deg, self.radius / 3600.0, self.mag_limit)
        if len(table) == 0:
            return ProviderResult(self.name, "no_match")
        sep = _sep_arcsec(ra_deg, dec_deg, table["ra"].to_numpy(float), table["dec"].to_numpy(float))
        matches = tuple(
            Match("star", str(row["source_id"]), float(row["ra"]), float(row["dec"]), float(s),
                  {"mag": float(row["mag"])})
            for (_, row), s in sorted(zip(table.iterrows(), sep), key=lambda t: t[1]) if s <= self.radius)
        return ProviderResult(self.name, "matched" if matches else "no_match", matches)


FetchFunction = Callable[[float, float, float, float], list[dict]]


class CachedOnlineProvider:
    """Shared logic of the online providers: rounding, disk cache, offline mode, error capture.

    ``fetch(ra_deg, dec_deg, jd, radius_arcsec)`` returns rows ``{"kind", "name", "ra", "dec", ...}``; the
    default fetch of each subclass uses astroquery.
    """

    name = "online"
    kind = "unknown"
    #: how finely queries are rounded for the cache key (position in arcsec, time in days)
    round_arcsec, round_days = 1.0, 1.0

    def __init__(self, *, radius_arcsec: float, cache_dir: str | os.PathLike | None = None, offline: bool = True,
                 fetch: FetchFunction | None = None, timeout_s: float = 30.0):
        if not radius_arcsec > 0:
            raise ValueError(f"radius_arcsec must be > 0, got {radius_arcsec!r}")
        self.radius = float(radius_arcsec)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.offline = bool(offline)
        self.timeout_s = timeout_s
        self._fetch = fetch if fetch is not None else self.default_fetch

    def default_fetch(self, ra_deg: float, dec_deg: float, jd: float, radius_arcsec: float) -> list[dict]:
        raise NotImplementedError

    def _key(self, ra_deg: float, dec_deg: float, jd: float) -> str:
        q = (self.name, round(ra_deg * 3600 / self.round_arcsec), round(dec_deg * 3600 / self.round_arcsec),
             round(jd / self.round_days) if self.round_days else 0, self.radius)
        return hashlib.sha256(json.dumps(q).encode()).hexdigest()[:32]

    def match(self, ra_deg: float, dec_deg: float, jd: float) -> ProviderResult:
        from app.atomic import atomic_open

        _check_position(ra_deg, dec_deg)
        path = self.cache_dir / f"{self.name}-{self._key(ra_deg, dec_deg, jd)}.json" if self.cache_dir else None
        rows = None
        if path is not None and path.exists():
            rows = json.loads(path.read_text())
        elif self.offline:
            return ProviderResult(self.name, "skipped", message=f"offline mode: {self.name} not queried")
        else:
            try:
                rows = self._fetch(ra_deg, dec_deg, jd, self.radius)
            except Exception as exc:  # noqa: BLE001 - any service failure is reported, never taken as "no match"
                return ProviderResult(self.name, "error", message=f"{type(exc).__name__}: {exc}"[:500])
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_open(path, "w") as fh:
                    json.dump(rows, fh)
        matches = []
        for r in rows:
            s = float(_sep_arcsec(ra_deg, dec_deg, r["ra"], r["dec"]))
            if s <= self.radius:
                extra = {k: v for k, v in r.items() if k not in ("kind", "name", "ra", "dec")}
                matches.append(Match(r.get("kind", self.kind), str(r["name"]), float(r["ra"]), float(r["dec"]),
                                     s, extra))
        matches.sort(key=lambda m: m.separation_arcsec)
        return ProviderResult(self.name, "matched" if matches else "no_match", tuple(matches))


class SkybotProvider(CachedOnlineProvider):
    """Known solar-system objects (IMCCE SkyBoT cone search at the epoch, geocentric)."""

    name, kind = "skybot", "solar_system"
    round_days = 1.0 / 1440.0  # objects move: cache per minute of time

    def default_fetch(self, ra_deg, dec_deg, jd, radius_arcsec):
        import astropy.units as u
        from astropy.coordinates import SkyCoord
        from astropy.time import Time
        from astroquery.imcce import Skybot

        try:
            t = Skybot.cone_search(SkyCoord(ra_deg, dec_deg, unit="deg"), radius_arcsec * u.arcsec,
                                   Time(jd, format="jd", scale="utc"), location="500")
        except RuntimeError as exc:  # astroquery raises RuntimeError for "no solar system object"
            if "No solar system object" in str(exc):
                return []
            raise
        return [{"kind": "solar_system", "name": str(r["Name"]), "ra": float(r["RA"]), "dec": float(r["DEC"]),
                 "v_mag": float(r["V"])} for r in t]


class NedProvider(CachedOnlineProvider):
    """Galaxies in NED (object type G) near the position."""

    name, kind = "ned", "galaxy"
    round_days = 0.0

    def default_fetch(self, ra_deg, dec_deg, jd, radius_arcsec):
        import astropy.units as u
        from astropy.coordinates import SkyCoord
        from astroquery.ned import Ned

        t = Ned.query_region(SkyCoord(ra_deg, dec_deg, unit="deg"), radius=radius_arcsec * u.arcsec)
        return [{"kind": "galaxy", "name": str(r["Object Name"]), "ra": float(r["RA"]), "dec": float(r["DEC"]),
                 "redshift": None if np.ma.is_masked(r["Redshift"]) else float(r["Redshift"])}
                for r in t if str(r["Type"]).strip() == "G"]


class SdssProvider(CachedOnlineProvider):
    """Galaxies in SDSS photometry (type 3) near the position."""

    name, kind = "sdss", "galaxy"
    round_days = 0.0

    def default_fetch(self, ra_deg, dec_deg, jd, radius_arcsec):
        import astropy.units as u
        from astropy.coordinates import SkyCoord
        from astroquery.sdss import SDSS

        t = SDSS.query_region(SkyCoord(ra_deg, dec_deg, unit="deg"), radius=radius_arcsec * u.arcsec,
                              photoobj_fields=["objid", "ra", "dec", "type", "r"])
        if t is None:
            return []
        return [{"kind": "galaxy", "name": f"SDSS {int(r['objid'])}", "ra": float(r["ra"]), "dec": float(r["dec"]),
                 "r_mag": float(r["r"])} for r in t if int(r["type"]) == 3]


def cross_match(providers: Sequence[CrossMatchProvider], ra_deg: float, dec_deg: float, jd: float) -> CrossMatchReport:
    """Ask every provider; the report says whether a star or solar-system object explains the candidate."""
    return CrossMatchReport(tuple(p.match(ra_deg, dec_deg, jd) for p in providers))


def default_providers(catalog, *, cache_dir, offline: bool, star_radius_arcsec: float = 2.0,
                      sso_radius_arcsec: float = 10.0, galaxy_radius_arcsec: float = 5.0) -> list:
    """The standard set: offline stars, SkyBoT, NED, SDSS."""
    return [StarCatalogProvider(catalog, star_radius_arcsec),
            SkybotProvider(radius_arcsec=sso_radius_arcsec, cache_dir=cache_dir, offline=offline),
            NedProvider(radius_arcsec=galaxy_radius_arcsec, cache_dir=cache_dir, offline=offline),
            SdssProvider(radius_arcsec=galaxy_radius_arcsec, cache_dir=cache_dir, offline=offline)]
