"""UTC -> BJD_TDB conversion: against astropy directly, against an independent ERFA computation, bad input."""

from __future__ import annotations

import datetime as dt
import warnings

import erfa
import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import EarthLocation, SkyCoord
from astropy.time import Time
from astropy.utils import iers

from server.core.timeconv import (
    SiteLocation,
    hjd_utc_to_bjd_tdb,
    jd_to_mjd,
    mjd_to_jd,
    to_bjd_tdb,
    utc_to_bjd_tdb,
    utc_to_hjd_utc,
)

# Roque de los Muchachos (La Palma) and HD 209458 (ICRS).
LA_PALMA = SiteLocation(lat_deg=28.7606, lon_deg=-17.8792, height_m=2326.0)
HD209458 = dict(ra_deg=330.79489, dec_deg=18.88432)
MS_IN_DAYS = 1e-3 / 86400.0
# Times inside the bundled IERS table (2025-2026).
MJD_UTC = np.array([60700.1234, 60850.9, 60990.5, 61100.25, 61200.0])


def test_bjd_tdb_agrees_with_astropy_light_travel_time_to_better_than_a_millisecond():
    ours = utc_to_bjd_tdb(MJD_UTC, site=LA_PALMA, **HD209458)
    loc = EarthLocation.from_geodetic(lon=-17.8792 * u.deg, lat=28.7606 * u.deg, height=2326.0 * u.m)
    with iers.conf.set_temp("auto_max_age", None):
        t = Time(MJD_UTC, format="mjd", scale="utc", location=loc)
        ltt = t.light_travel_time(SkyCoord(330.79489 * u.deg, 18.88432 * u.deg), ephemeris="builtin")
        ref = (t.tdb + ltt).jd
    assert np.max(np.abs(ours.bjd_tdb - ref)) < MS_IN_DAYS
    assert np.allclose(ours.light_travel_time_s, ltt.to_value(u.s), atol=1e-6)
    assert not ours.any_outside_iers


def _independent_bjd(mjd_utc, site: SiteLocation, ra_deg, dec_deg):
    """BJD_TDB from ERFA primitives only: leap seconds, TDB-TT, epv00 Earth, CIO-based rotation of the site."""
    out = []
    for m in mjd_utc:
        u1, u2 = 2400000.5, float(m)
        a1, a2 = erfa.utctai(u1, u2)
        t1, t2 = erfa.taitt(a1, a2)
        tdb2 = t2 + erfa.dtdb(t1, t2, 0.0, 0.0, 0.0, 0.0) / 86400.0
        _, pvb = erfa.epv00(t1, tdb2)
        earth_m = np.asarray(pvb[0]) * erfa.DAU
        itrs = erfa.gd2gc(1, np.radians(site.lon_deg), np.radians(site.lat_deg), site.height_m)
        rc2i = erfa.c2i06a(t1, t2)
        era = erfa.era00(u1, u2)  # UT1 ~ UTC: |dUT1| < 0.9 s moves the site < 0.5 km (< 2 us)
        rot = erfa.rz(-era, np.eye(3))  # ITRS (no polar motion) -> CIRS
        gcrs = np.asarray(rc2i).T @ (rot @ np.asarray(itrs))
        ra, dec = np.radians(ra_deg), np.radians(dec_deg)
        n = np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
        ltt_days = (earth_m + gcrs) @ n / erfa.CMPS / 86400.0
        out.append(t1 + tdb2 + ltt_days)
    return np.array(out)


def test_bjd_tdb_agrees_with_an_independent_erfa_roemer_delay_computation():
    ours = utc_to_bjd_tdb(MJD_UTC, site=LA_PALMA, **HD209458)
    ref = _independent_bjd(MJD_UTC, LA_PALMA, **HD209458)
    # The independent path drops polar motion and UT1-UTC and ignores the target's parallax: tens of us.
    assert np.max(np.abs(ours.bjd_tdb - ref)) < 0.05 * MS_IN_DAYS


def test_light_travel_time_is_within_the_earth_orbit_bound():
    ours = utc_to_bjd_tdb(np.linspace(60400, 60800, 50), site=LA_PALMA, ra_deg=10.0, dec_deg=0.0)
    assert np.all(np.abs(ours.light_travel_time_s) < 510.0)
    assert np.ptp(ours.light_travel_time_s) > 800.0  # near-ecliptic target: +-~495 s annual swing


def test_datetime_input_equals_mjd_input():
    when = [dt.datetime(2025, 3, 1, 22, 15, 30, 250000), dt.datetime(2025, 9, 17, 1, 2, 3)]
    from_dt = utc_to_bjd_tdb(np.array(when, dtype="datetime64[ns]"), site=LA_PALMA, time_format="datetime",
                             **HD209458)
    mjd = Time(when, scale="utc").mjd
    from_mjd = utc_to_bjd_tdb(mjd, site=LA_PALMA, **HD209458)
    assert np.max(np.abs(from_dt.bjd_tdb - from_mjd.bjd_tdb)) < 1e-3 * MS_IN_DAYS


def test_jd_and_mjd_inputs_agree_and_helpers_invert():
    jd = mjd_to_jd(MJD_UTC)
    assert np.allclose(jd_to_mjd(jd), MJD_UTC, rtol=0, atol=1e-9)
    a = utc_to_bjd_tdb(MJD_UTC, site=LA_PALMA, **HD209458)
    b = utc_to_bjd_tdb(jd, site=LA_PALMA, time_format="jd", **HD209458)
    assert np.max(np.abs(a.bjd_tdb - b.bjd_tdb)) < 0.1 * MS_IN_DAYS


def test_hjd_round_trip_reaches_the_same_bjd_tdb():
    hjd = utc_to_hjd_utc(MJD_UTC, site=None, geocenter=True, **HD209458)
    direct = utc_to_bjd_tdb(MJD_UTC, site=None, geocenter=True, **HD209458)
    via_hjd = hjd_utc_to_bjd_tdb(hjd, **HD209458)
    assert np.max(np.abs(via_hjd.bjd_tdb - direct.bjd_tdb)) < 0.01 * MS_IN_DAYS
    assert np.all(np.abs(hjd - mjd_to_jd(MJD_UTC)) * 86400 < 510)


def test_convention_dispatch_passes_bjd_through_and_converts_jd_utc():
    bjd = np.array([2460800.5, 2460801.25])
    same = to_bjd_tdb(bjd, "bjd_tdb", **HD209458)
    assert np.array_equal(same.bjd_tdb, bjd)
    jd = to_bjd_tdb(mjd_to_jd(MJD_UTC), "JD_UTC", site=LA_PALMA, **HD209458)
    assert np.allclose(jd.bjd_tdb, utc_to_bjd_tdb(MJD_UTC, site=LA_PALMA, **HD209458).bjd_tdb, atol=MS_IN_DAYS)
    with pytest.raises(ValueError, match="unknown time convention 'GPS'"):
        to_bjd_tdb(bjd, "GPS", **HD209458)


def test_dates_beyond_the_bundled_iers_table_are_flagged_and_accurate_to_microseconds():
    future = np.array([63500.0, 64000.0])  # 2032-2033, past any bundled prediction
    res = utc_to_bjd_tdb(future, site=LA_PALMA, **HD209458)
    assert res.outside_iers.all() and np.all(np.isfinite(res.bjd_tdb))
    # Documented bound: |UT1-UTC| < 0.9 s changes the light travel time by < 2 microseconds.
    loc = LA_PALMA.to_earth_location()
    target = SkyCoord(HD209458["ra_deg"] * u.deg, HD209458["dec_deg"] * u.deg)
    for dut1 in (-0.9, 0.9):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy's own degraded-accuracy notices; values are what we test
            t = Time(future, format="mjd", scale="utc", location=loc)
            t.delta_ut1_utc = dut1
            ltt = t.light_travel_time(target, ephemeris="builtin").to_value(u.s)
        assert np.max(np.abs(ltt - res.light_travel_time_s)) < 2e-6


def test_nan_time_is_refused_with_its_index():
    with pytest.raises(ValueError, match="non-finite time.*index 1"):
        utc_to_bjd_tdb([60700.0, np.nan], site=LA_PALMA, **HD209458)


def test_missing_location_is_refused_unless_geocentre_is_explicit():
    with pytest.raises(ValueError, match="observer location is missing"):
        utc_to_bjd_tdb(MJD_UTC, site=None, **HD209458)
    geo = utc_to_bjd_tdb(MJD_UTC, site=None, geocenter=True, **HD209458)
    topo = utc_to_bjd_tdb(MJD_UTC, site=LA_PALMA, **HD209458)
    assert np.max(np.abs(geo.bjd_tdb - topo.bjd_tdb)) * 86400 < 0.0215


def test_site_with_nan_latitude_is_refused():
    with pytest.raises(ValueError, match="finite lat_deg"):
        SiteLocation(lat_deg=float("nan"), lon_deg=0.0, height_m=0.0)


def test_jd_passed_as_mjd_is_refused():
    with pytest.raises(ValueError, match="looks like a JD"):
        utc_to_bjd_tdb([2460700.5], site=LA_PALMA, **HD209458)


def test_declination_out_of_range_is_refused():
    with pytest.raises(ValueError, match="declination"):
        utc_to_bjd_tdb(MJD_UTC, site=LA_PALMA, ra_deg=10.0, dec_deg=95.0)
