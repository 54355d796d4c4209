"""Light curve in the database -> transit times -> stored for the TTV campaign (issue 8, part 3)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from server.core.db.models import Target, TransitTime
from server.synth.transits import store_transit_photometry, transit_photometry
from server.core.timeconv import SiteLocation
from server.ttv.handoff import transit_times_from_db, ttv_table_from_db

SITE = SiteLocation(lat_deg=28.7606, lon_deg=-17.8816, height_m=2332.0)  # La Palma
RA, DEC = 300.18, 22.71
PARAMS = {"period": 2.2185733, "t0": 2460000.35, "rp_rs": 0.155, "a_rs": 8.8, "inc": 85.7, "u": [0.45, 0.2]}


def test_transit_times_from_database_photometry_match_injected_mid_times(oa_app):
    epochs = [0, 1, 3, 4, 6, 9, 10, 13]
    truth = transit_photometry(PARAMS, epochs, np.random.default_rng(11), site=SITE, ra_deg=RA, dec_deg=DEC)
    store_transit_photometry(oa_app, truth, target="HD 189733-like", site_name="La Palma", site=SITE,
                             ra_deg=RA, dec_deg=DEC)
    result = transit_times_from_db(oa_app, "HD 189733-like", "V", PARAMS, planet="b")
    assert result.n_stored == len(epochs)
    with oa_app.db.session() as s:
        rows = s.scalars(select(TransitTime).order_by(TransitTime.epoch)).all()
        assert [r.epoch for r in rows] == epochs
        pulls = [(r.t_obs - truth.mid_times[r.epoch]) / r.sigma for r in rows]
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


def test_times_from_db_command_stores_and_reports(oa_app, tmp_path):
    import json

    from click.testing import CliRunner

    from server.cli import main

    truth = transit_photometry(PARAMS, [2, 5, 8], np.random.default_rng(3), site=SITE, ra_deg=RA, dec_deg=DEC)
    store_transit_photometry(oa_app, truth, target="T", site_name="La Palma", site=SITE, ra_deg=RA, dec_deg=DEC)
    params = tmp_path / "p.json"
    params.write_text(json.dumps(PARAMS))
    result = CliRunner().invoke(main, ["ttv", "times-from-db", "T", "--band", "V", "--params", str(params)],
                                env={"OPENASTRO_VAR_DIR": oa_app.settings.var_dir}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "3 transit times stored for T b; 0 windows flagged" in result.output
    assert len(ttv_table_from_db(oa_app, "T")) == 3
