"""Time-system conversions for light curves: UTC (JD/MJD/datetime) -> BJD_TDB, and HJD helpers.

Conventions used throughout OpenAstro Compute
---------------------------------------------
* ``JD_UTC`` / ``MJD_UTC``: Julian date (days) of the mid-exposure instant, UTC time scale, at the observer.
  ``MJD = JD - 2400000.5``.
* ``HJD_UTC``: heliocentric Julian date on the UTC scale (the AAVSO / ETD archive convention): JD_UTC plus the
  light travel time from the observer to the Sun's centre along the target direction.
* ``BJD_TDB``: barycentric Julian date on the TDB scale (Eastman et al. 2010): the instant the light reached the
  solar-system barycentre, expressed in TDB. This is the only time system our light curves and periodograms use.

How BJD_TDB is computed and how accurate it is
----------------------------------------------
``BJD_TDB = TDB(t_obs) + Roemer/Shapiro-free light travel time`` with :meth:`astropy.time.Time.light_travel_time`
(``kind='barycentric'``) and ``ephemeris='builtin'`` (ERFA ``epv00``), so nothing is ever downloaded:

* ephemeris: ``epv00`` reproduces DE405 to a few km for the Earth's barycentric position between 1900 and
  2100, i.e. well below 0.1 ms in light time;
* Earth orientation: the observer's geocentric position needs UT1-UTC and polar motion. We read the IERS table
  that ships with ``astropy-iers-data`` (measured values plus about a year of predictions) with downloads
  disabled. For instants outside that table, astropy's degraded mode holds the nearest UT1-UTC value and uses
  mean polar motion. Since |UT1-UTC| < 0.9 s by the definition of UTC, the observer-position error is below
  0.5 km, i.e. < 2 microseconds in light time. Such points are flagged (``outside_iers``), never refused.
* leap seconds: UTC -> TT uses the bundled leap-second table. A leap second announced after the table was
  built would shift later times by 1 s; UTC before 1972 (no leap seconds) is converted with ERFA's rubber-second
  model. Both are flagged via ``outside_iers``.
* storage precision: BJD_TDB is returned as float64 Julian days, whose resolution at JD 2.46e6 is ~40 microseconds.

Everything here is vectorised over the times; one target and one site per call.
"""

from __future__ import annotations

import datetime as _dt
import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import erfa
from astropy import units as u
from astropy.coordinates import EarthLocation, SkyCoord
from astropy.time import Time
from astropy.utils import data as astropy_data
from astropy.utils import iers
from astropy.utils.exceptions import AstropyWarning

__all__ = [
    "BarycentricTimes",
    "SiteLocation",
    "TIME_CONVENTIONS",
    "utc_to_bjd_tdb",
    "utc_to_hjd_utc",
    "hjd_utc_to_bjd_tdb",
    "to_bjd_tdb",
    "jd_to_mjd",
    "mjd_to_jd",
    "datetime_to_mjd_utc",
]

MJD_OFFSET = 2400000.5
TIME_CONVENTIONS = ("JD_UTC", "MJD_UTC", "HJD_UTC", "BJD_TDB")
TimeFormat = Literal["mjd", "jd", "datetime"]

# Warnings astropy/ERFA emit in the degraded (outside-IERS / outside-leap-second-table) regime.
# They are replaced by the explicit ``outside_iers`` flag; nothing else is silenced.
_DEGRADED_WARNING_MESSAGES = (
    r"Tried to get polar motions for times (before|after) IERS data is valid.*",
    r".*dubious year.*",
)


@dataclass(frozen=True)
class SiteLocation:
    """Geodetic observer position (WGS84): latitude and longitude in degrees (east positive), height in metres."""

    lat_deg: float
    lon_deg: float
    height_m: float

    def __post_init__(self) -> None:
        for name in ("lat_deg", "lon_deg", "height_m"):
            value = getattr(self, name)
            if value is None or not math.isfinite(float(value)):
                raise ValueError(f"site location needs a finite {name}, got {value!r}")
        if not -90.0 <= float(self.lat_deg) <= 90.0:
            raise ValueError(f"site latitude must be within [-90, 90] deg, got {self.lat_deg!r}")
        if not -11000.0 <= float(self.height_m) <= 100000.0:
            raise ValueError(f"site height {self.height_m!r} m is not a plausible height above the ellipsoid")

    def to_earth_location(self) -> EarthLocation:
        return EarthLocation.from_geodetic(
            lon=float(self.lon_deg) * u.deg, lat=float(self.lat_deg) * u.deg, height=float(self.height_m) * u.m
        )


@dataclass(frozen=True)
class BarycentricTimes:
    """Result of a UTC -> BJD_TDB conversion.

    ``bjd_tdb``: Julian days, TDB scale, at the solar-system barycentre.
    ``light_travel_time_s``: the barycentric correction that was added (seconds, TDB).
    ``outside_iers``: True where Earth-orientation or leap-second data had to be extrapolated (see module doc).
    """

    bjd_tdb: np.ndarray
    light_travel_time_s: np.ndarray
    outside_iers: np.ndarray

    @property
    def any_outside_iers(self) -> bool:
        return bool(np.any(self.outside_iers))


def jd_to_mjd(jd):
    """Julian date -> modified Julian date (same time scale), ``MJD = JD - 2400000.5``."""
    return np.asarray(jd, dtype=float) - MJD_OFFSET


def mjd_to_jd(mjd):
    """Modified Julian date -> Julian date (same time scale)."""
    return np.asarray(mjd, dtype=float) + MJD_OFFSET


def _target(ra_deg: float, dec_deg: float) -> SkyCoord:
    for name, value in (("ra_deg", ra_deg), ("dec_deg", dec_deg)):
        if value is None or not math.isfinite(float(value)):
            raise ValueError(f"target coordinates need a finite {name}, got {value!r}")
    if not -90.0 <= float(dec_deg) <= 90.0:
        raise ValueError(f"target declination must be within [-90, 90] deg, got {dec_deg!r}")
    return SkyCoord(ra=float(ra_deg) * u.deg, dec=float(dec_deg) * u.deg, frame="icrs")


def _utc_time(times, time_format: TimeFormat) -> Time:
    """Build a UTC astropy Time from MJD/JD floats or datetimes; refuse NaN and empty input."""
    if time_format == "datetime":
        values = np.atleast_1d(np.asarray(times, dtype="datetime64[ns]"))
        if values.size == 0:
            raise ValueError("no times given")
        bad = np.isnat(values)
        if bad.any():
            raise ValueError(f"{int(bad.sum())} time(s) are NaT (missing), first at index {int(np.argmax(bad))}")
        # Split into integer days + fraction to keep full nanosecond precision through the conversion.
        ns = values.astype("int64")
        day_ns = 86_400_000_000_000
        days, rem = np.divmod(ns, day_ns)
        mjd_unix_epoch = 40587.0
        return Time(days.astype(float) + mjd_unix_epoch, rem.astype(float) / day_ns, format="mjd", scale="utc")
    if time_format not in ("mjd", "jd"):
        raise ValueError(f"time_format must be 'mjd', 'jd' or 'datetime', got {time_format!r}")
    values = np.atleast_1d(np.asarray(times, dtype=float))
    if values.size == 0:
        raise ValueError("no times given")
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(f"{int(bad.sum())} non-finite time(s), first at index {first}: {values[first]!r}")
    if time_format == "jd" and np.any(values < 1.0e6):
        raise ValueError(f"time_format='jd' but got {values.min()!r}, which looks like an MJD; pass time_format='mjd'")
    if time_format == "mjd" and np.any(values > 1.0e6):
        raise ValueError(f"time_format='mjd' but got {values.max()!r}, which looks like a JD; pass time_format='jd'")
    return Time(values, format=time_format, scale="utc")


class _OfflineIERS:
    """Context: astropy uses only its bundled IERS/leap-second data, in degraded mode outside the table."""

    def __enter__(self):
        self._stack = [
            iers.conf.set_temp("auto_download", False),
            iers.conf.set_temp("auto_max_age", None),
            iers.conf.set_temp("iers_degraded_accuracy", "ignore"),
            astropy_data.conf.set_temp("allow_internet", False),
        ]
        for cm in self._stack:
            cm.__enter__()
        self._warn = warnings.catch_warnings()
        self._warn.__enter__()
        for message in _DEGRADED_WARNING_MESSAGES:
            warnings.filterwarnings("ignore", message=message, category=AstropyWarning)
            warnings.filterwarnings("ignore", message=message, category=erfa.ErfaWarning)
        return self

    def __exit__(self, *exc):
        self._warn.__exit__(*exc)
        for cm in reversed(self._stack):
            cm.__exit__(*exc)
        return False


def _outside_iers(t_utc: Time) -> np.ndarray:
    """True where the bundled IERS table (or the leap-second-era UTC) does not cover the instant."""
    table = iers.earth_orientation_table.get()
    mjd = np.atleast_1d(t_utc.mjd)
    first, last = float(table["MJD"][0].value), float(table["MJD"][-1].value)
    return (mjd < max(first, 41317.0)) | (mjd > last)


def _location(site: SiteLocation | None, geocenter: bool) -> EarthLocation:
    if site is None:
        if geocenter:
            return EarthLocation.from_geocentric(0.0, 0.0, 0.0, unit=u.m)
        raise ValueError(
            "observer location is missing: pass a SiteLocation(lat_deg, lon_deg, height_m), "
            "or geocenter=True to accept up to 21 ms of topocentric error"
        )
    if not isinstance(site, SiteLocation):
        raise TypeError(f"site must be a SiteLocation, got {type(site).__name__}")
    return site.to_earth_location()


def utc_to_bjd_tdb(
    times,
    *,
    ra_deg: float,
    dec_deg: float,
    site: SiteLocation | None,
    time_format: TimeFormat = "mjd",
    geocenter: bool = False,
) -> BarycentricTimes:
    """Convert UTC observation times to BJD_TDB for one target seen from one site.

    ``times``: array of MJD_UTC (``time_format='mjd'``), JD_UTC (``'jd'``) or datetimes/``datetime64``
    (``'datetime'``, taken as UTC). ``site`` is required unless ``geocenter=True``.
    Raises ``ValueError`` for NaN/NaT times, missing location or nonsensical coordinates.
    """
    target = _target(ra_deg, dec_deg)
    location = _location(site, geocenter)
    with _OfflineIERS():
        t = _utc_time(times, time_format)
        t = Time(t, location=location)
        ltt = t.light_travel_time(target, kind="barycentric", ephemeris="builtin")
        tdb = t.tdb
        bjd = (tdb + ltt).jd
        outside = _outside_iers(t)
    return BarycentricTimes(
        bjd_tdb=np.asarray(bjd, dtype=float),
        light_travel_time_s=np.asarray(ltt.to_value(u.s), dtype=float),
        outside_iers=np.asarray(outside, dtype=bool),
    )


def utc_to_hjd_utc(
    times,
    *,
    ra_deg: float,
    dec_deg: float,
    site: SiteLocation | None,
    time_format: TimeFormat = "mjd",
    geocenter: bool = False,
) -> np.ndarray:
    """UTC times -> HJD_UTC (Julian days): heliocentric light travel time added on the UTC scale."""
    target = _target(ra_deg, dec_deg)
    location = _location(site, geocenter)
    with _OfflineIERS():
        t = Time(_utc_time(times, time_format), location=location)
        ltt = t.light_travel_time(target, kind="heliocentric", ephemeris="builtin")
        return np.asarray((t.utc + ltt).jd, dtype=float)


def hjd_utc_to_bjd_tdb(
    hjd_utc,
    *,
    ra_deg: float,
    dec_deg: float,
    site: SiteLocation | None = None,
    geocenter: bool = True,
) -> BarycentricTimes:
    """HJD_UTC (archive convention) -> BJD_TDB.

    The heliocentric correction is undone by fixed-point iteration (JD_UTC = HJD - ltt_helio(JD_UTC); the
    correction changes by < 1e-4 s per second, so two iterations converge to far below a microsecond), then
    the UTC instant is converted with :func:`utc_to_bjd_tdb`. Archive HJDs are usually geocentric, hence the
    default ``geocenter=True`` when no site is known (topocentric error <= 21 ms).
    """
    hjd = np.atleast_1d(np.asarray(hjd_utc, dtype=float))
    target = _target(ra_deg, dec_deg)
    location = _location(site, geocenter)
    jd = hjd.copy()
    with _OfflineIERS():
        _utc_time(hjd, "jd")  # validates finiteness and the JD range
        for _ in range(3):
            t = Time(jd, format="jd", scale="utc", location=location)
            ltt = t.light_travel_time(target, kind="heliocentric", ephemeris="builtin").to_value(u.day)
            jd = hjd - ltt
    return utc_to_bjd_tdb(jd, ra_deg=ra_deg, dec_deg=dec_deg, site=site, time_format="jd", geocenter=geocenter)


def to_bjd_tdb(
    times,
    convention: str,
    *,
    ra_deg: float,
    dec_deg: float,
    site: SiteLocation | None = None,
    geocenter: bool = False,
) -> BarycentricTimes:
    """Convert times given in one of :data:`TIME_CONVENTIONS` to BJD_TDB.

    ``BJD_TDB`` input is passed through (validated, zero correction); ``HJD_UTC`` defaults to the geocentre
    when no site is given.
    """
    key = str(convention).upper()
    if key not in TIME_CONVENTIONS:
        raise ValueError(f"unknown time convention {convention!r}; expected one of {TIME_CONVENTIONS}")
    if key == "BJD_TDB":
        values = np.atleast_1d(np.asarray(times, dtype=float))
        _utc_time(values, "jd")  # same validation: finite, JD-sized
        return BarycentricTimes(values.copy(), np.zeros(values.shape), np.zeros(values.shape, dtype=bool))
    if key == "HJD_UTC":
        return hjd_utc_to_bjd_tdb(
            times, ra_deg=ra_deg, dec_deg=dec_deg, site=site, geocenter=geocenter or site is None
        )
    fmt: TimeFormat = "jd" if key == "JD_UTC" else "mjd"
    return utc_to_bjd_tdb(times, ra_deg=ra_deg, dec_deg=dec_deg, site=site, time_format=fmt, geocenter=geocenter)


def datetime_to_mjd_utc(values) -> np.ndarray:
    """Datetimes (naive = UTC, or timezone-aware) -> MJD_UTC floats."""
    out = []
    for value in np.atleast_1d(np.asarray(values, dtype=object)):
        if isinstance(value, _dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        out.append(np.datetime64(value, "ns"))
    arr = np.asarray(out, dtype="datetime64[ns]")
    return _utc_time(arr, "datetime").mjd
