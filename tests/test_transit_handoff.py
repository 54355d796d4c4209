"""Light curve in the database -> transit times -> stored for the TTV campaign (issue 8, part 3)."""

from __future__ import annotations

import math

import batman
import numpy as np
import pytest
from sqlalchemy import select

from server.db.models import PhotometryPoint, Site, Target, TransitTime
from server.timeconv import SiteLocation, utc_to_bjd_tdb
from server.transit_handoff import transit_times_from_db, ttv_table_from_db

SITE = SiteLocation(lat_deg=28.7606, lon_deg=-17.8816, height_m=2332.0)  # La Palma
RA, DEC = 300.18, 22.71
PARAMS = {"period": 2.2185733, "t0": 2460000.35, "rp_rs": 0.155, "a_rs": 8.8, "inc": 85.7, "u": [0.45, 0.2]}
TTV_AMP_D = 3.0 / 1440.0
NOISE = 2.0e-3


def _store_transit_photometry(app, rng, epochs):
    """UTC photometry around each transit; the model is computed in BJD_TDB with injected TTVs."""
    truth = {}
    with app.db.session() as s:
        site = Site(name="La Palma", latitude_deg=SITE.lat_deg, longitude_deg=SITE.lon_deg, height_m=SITE.height_m)
        target = Target(name="HD 189733-like", ra_deg=RA, dec_deg=DEC, kind="transit")
        s.add_all([site, target])
        s.flush()
        for n in epochs:
            tc = PARAMS["t0"] + n * PARAMS["period"] + TTV_AMP_D * math.sin(2 * math.pi * n / 7.0)
            truth[n] = tc
            jd = np.arange(tc - 0.15, tc + 0.15, 1.5 / 1440.0)  # ~UTC grid (offset below is irrelevant)
            bjd = utc_to_bjd_tdb(jd, ra_deg=RA, dec_deg=DEC, site=SITE, time_format="jd").bjd_tdb
            bp = batman.TransitParams()
            bp.t0, bp.per, bp.rp, bp.a, bp.inc = tc, PARAMS["period"], PARAMS["rp_rs"], PARAMS["a_rs"], PARAMS["inc"]
            bp.ecc, bp.w, bp.limb_dark, bp.u = 0.0, 90.0, "quadratic", PARAMS["u"]
            flux = batman.TransitModel(bp, bjd).light_curve(bp) * (1 + NOISE * rng.standard_normal(bjd.size))
            mag = 7.67 - 2.5 * np.log10(flux)
            s.add_all([PhotometryPoint(target_id=target.id, site_id=site.id, jd_utc=float(j), band="V",
                                       mag=float(m), mag_err=2.5 / math.log(10) * NOISE, source="test")
                       for j, m in zip(jd, mag)])
    return truth


def test_transit_times_from_database_photometry_match_injected_mid_times(oa_app):
    rng = np.random.default_rng(11)
    epochs = [0, 1, 3, 4, 6, 9, 10, 13]
    truth = _store_transit_photometry(oa_app, rng, epochs)
    result = transit_times_from_db(oa_app, "HD 189733-like", "V", PARAMS, planet="b")
    assert result.n_stored == len(epochs)
    with oa_app.db.session() as s:
        rows = s.scalars(select(TransitTime).order_by(TransitTime.epoch)).all()
        assert [r.epoch for r in rows] == epochs
        pulls = [(r.t_obs - truth[r.epoch]) / r.sigma for r in rows]
        # mid-times (BJD_TDB) within 4 sigma each; sigma of ~tens of seconds resolves the 3-minute TTV
        assert max(abs(p) for p in pulls) < 4.0, pulls
        assert all(r.sigma * 86400 < 60 for r in rows)
    # idempotent: running again replaces, never duplicates
    transit_times_from_db(oa_app, "HD 189733-like", "V", PARAMS, planet="b")
    table = ttv_table_from_db(oa_app, "HD 189733-like")
    assert list(table.columns) == ["planet", "epoch", "t_obs", "sigma"]
    assert len(table) == len(epochs) and set(table["planet"]) == {"b"}


def test_target_without_photometry_is_a_clear_error(oa_app):
    with oa_app.db.session() as s:
        s.add(Target(name="Empty", ra_deg=1.0, dec_deg=2.0))
    with pytest.raises(ValueError, match="no photometry"):
        transit_times_from_db(oa_app, "Empty", "V", PARAMS)
    with pytest.raises(ValueError, match="no stored transit times"):
        ttv_table_from_db(oa_app, "Empty")
