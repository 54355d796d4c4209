"""The portal's read and admin API (issue 17): every route and format, access rules, bad parameters (4xx, never
500). In-process through FastAPI's TestClient on a seeded SQLite database (tests/portal_seed.py)."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import pytest
from sqlalchemy import select
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():  # starlette 1.x suggests httpx2 (not installed); httpx works the same here
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

from portal_seed import PASSWORDS, PERIOD_D, seed
from server.core.db.models import PhotometryPoint
from server.web.api import create_api


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    from server.core.context import OpenAstro
    from server.core.settings import load_settings

    var = tmp_path_factory.mktemp("portal")
    app = OpenAstro(load_settings(env={}, overrides={"var_dir": str(var), "progress": False}))
    app.db.upgrade()
    ids = seed(app)
    return app, ids


def client(portal, user: str | None = None) -> TestClient:
    app, _ = portal
    c = TestClient(create_api(app), raise_server_exceptions=False)
    if user:
        page = c.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        r = c.post("/login", data={"name": user, "password": PASSWORDS[user], "csrf": token, "next": "/targets"},
                   follow_redirects=False)
        assert r.status_code == 303, r.text
        c.headers["X-CSRF-Token"] = c.get("/api/v1/me").json()["csrf"]
    return c


def db_points(app, target_id, band):
    with app.db.session() as s:
        rows = s.execute(select(PhotometryPoint.bjd_tdb, PhotometryPoint.mag, PhotometryPoint.id)
                         .where(PhotometryPoint.target_id == target_id, PhotometryPoint.band == band)
                         .order_by(PhotometryPoint.jd_utc)).all()
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), [r[2] for r in rows]


def test_target_search_by_name_and_cone_returns_matching_targets_with_separation(portal):
    c = client(portal)
    assert [t["name"] for t in c.get("/api/v1/targets", params={"name": "her"}).json()["items"]] == ["V1234 Her"]
    cone = c.get("/api/v1/targets", params={"ra": 250.1, "dec": 30.5, "radius": 0.1}).json()
    assert [t["name"] for t in cone["items"]] == ["V1234 Her"]
    # 0.023456 deg in RA at dec 30.5 -> 0.0202 deg on the sky
    assert cone["items"][0]["separation_deg"] == pytest.approx(0.023456 * np.cos(np.radians(30.5)), rel=1e-3)
    page = c.get("/api/v1/targets", params={"limit": 1, "offset": 1}).json()
    assert page["total"] == 2 and len(page["items"]) == 1 and page["items"][0]["name"] == "WASP-999"


@pytest.mark.parametrize("params, says", [
    ({"ra": 250.0}, "needs ra, dec and radius together"),
    ({"ra": 400, "dec": 0, "radius": 1}, "ra=400"),
    ({"ra": 10, "dec": 95, "radius": 1}, "dec=95"),
    ({"ra": 10, "dec": 0, "radius": -1}, "radius=-1"),
    ({"limit": 0}, "limit"),
    ({"limit": "many"}, "limit"),
    ({"offset": -1}, "offset"),
])
def test_bad_target_search_parameters_are_a_clear_4xx(portal, params, says):
    r = client(portal).get("/api/v1/targets", params=params)
    assert r.status_code in (400, 422) and says in r.json()["error"]["message"], r.text


def test_light_curve_json_has_every_database_point_in_time_order_with_units(portal):
    app, ids = portal
    body = client(portal).get(f"/api/v1/targets/{ids['target']}/lightcurve", params={"band": "V"}).json()
    bjd, mag, _ = db_points(app, ids["target"], "V")
    assert body["n"] == 120 and body["time_scale"] == "BJD_TDB" and body["units"]["bjd_tdb"] == "d"
    np.testing.assert_array_equal(body["columns"]["bjd_tdb"], bjd)
    np.testing.assert_array_equal(body["columns"]["mag"], mag)
    assert body["columns"]["flux"] == [None] * 120 and body["next_after_id"] is None


def test_light_curve_json_returns_only_the_asked_columns_plus_id(portal):
    app, ids = portal
    body = client(portal).get(f"/api/v1/targets/{ids['target']}/lightcurve",
                              params={"band": "V", "columns": "mag, bjd_tdb"}).json()
    assert list(body["columns"]) == ["bjd_tdb", "mag", "id"]
    np.testing.assert_array_equal(body["columns"]["mag"], db_points(app, ids["target"], "V")[1])


def test_light_curve_pages_with_after_id_cover_every_point_once(portal):
    app, ids = portal
    c = client(portal)
    seen, after = [], None
    while True:
        params = {"band": "B", "limit": 25, **({"after_id": after} if after else {})}
        body = c.get(f"/api/v1/targets/{ids['target']}/lightcurve", params=params).json()
        seen += body["columns"]["id"]
        after = body["next_after_id"]
        if after is None:
            break
    assert seen == db_points(app, ids["target"], "B")[2]


def test_light_curve_downloads_in_csv_fits_and_votable_carry_the_database_values_and_units(portal):
    from astropy.io import fits
    from astropy.io.votable import parse_single_table

    app, ids = portal
    c = client(portal)
    url = f"/api/v1/targets/{ids['target']}/lightcurve"
    bjd, mag, _ = db_points(app, ids["target"], "V")
    csv = c.get(url, params={"band": "V", "format": "csv"})
    assert csv.headers["content-disposition"].endswith('.csv"') and "BJD_TDB" in csv.text
    rows = [line.split(",") for line in csv.text.splitlines() if not line.startswith("#")]
    assert rows[0][:3] == ["bjd_tdb", "jd_utc", "mag"]
    np.testing.assert_array_equal([float(r[0]) for r in rows[1:]], bjd)  # repr(): full precision
    np.testing.assert_array_equal([float(r[2]) for r in rows[1:]], mag)
    with fits.open(io.BytesIO(c.get(url, params={"band": "V", "format": "fits"}).content)) as hdul:
        tab = hdul[1]
        np.testing.assert_array_equal(tab.data["bjd_tdb"], bjd)
        assert tab.columns["bjd_tdb"].unit == "d" and tab.columns["mag"].unit == "mag"
        assert tab.header["TIMESYS"] == "TDB"
    vot = parse_single_table(io.BytesIO(c.get(url, params={"band": "V", "format": "votable"}).content)).to_table()
    np.testing.assert_array_equal(np.asarray(vot["mag"]), mag)
    assert str(vot["bjd_tdb"].unit) == "d"


@pytest.mark.parametrize("path, params, status, says", [
    ("/api/v1/targets/999/lightcurve", {"band": "V"}, 404, "no target with id 999"),
    ("/api/v1/targets/{t}/lightcurve", {"band": "Q"}, 404, "no points in band 'Q'"),
    ("/api/v1/targets/{t}/lightcurve", {}, 422, "band"),
    ("/api/v1/targets/{t}/lightcurve", {"band": "V", "format": "xls"}, 422, "format"),
    ("/api/v1/targets/{t}/lightcurve", {"band": "V", "after_id": 999999}, 400, "after_id=999999"),
    ("/api/v1/targets/{t}/lightcurve", {"band": "V", "limit": 10**6}, 400, "limit=1000000"),
    ("/api/v1/targets/{t}/lightcurve", {"band": "V", "columns": "mag,colour"}, 400, "['colour']"),
    ("/api/v1/targets/{t}/lightcurve", {"band": "V", "columns": "mag", "format": "csv"}, 400, "format=json only"),
    ("/api/v1/targets/0", {}, 422, "target_id"),
    ("/api/v1/targets/abc", {}, 422, "target_id"),
    ("/api/v1/targets/{t}/transit-times", {}, 404, "no transit times"),
    ("/api/v1/targets/{o}/transit-times", {"planet": "z"}, 404, "planet 'z'"),
    ("/api/v1/targets/{o}/periodogram", {}, 404, "no periodogram"),
    ("/api/v1/campaigns/999", {}, 404, "no campaign with id 999"),
    ("/api/v1/campaigns/{r}/posterior", {}, 404, "not published"),
    ("/api/v1/campaigns/{c}/posterior", {"format": "pickle"}, 422, "format"),
    ("/api/v1/stacks/999", {}, 404, "no stack"),
    ("/api/v1/stacks/{s}/weights.fits", {}, 422, "product"),
    ("/api/v1/nothing", {}, 404, "Not Found"),
])
def test_bad_parameters_and_missing_objects_are_4xx_naming_the_problem(portal, path, params, status, says):
    _, ids = portal
    url = path.format(t=ids["target"], o=ids["other"], r=ids["running"], c=ids["campaign"], s=ids["stack"])
    r = client(portal).get(url, params=params)
    assert r.status_code == status and says in r.json()["error"]["message"], r.text


def test_periodogram_gives_best_period_fap_and_spectrum(portal):
    _, ids = portal
    body = client(portal).get(f"/api/v1/targets/{ids['target']}/periodogram").json()
    assert body["best_period_d"] == PERIOD_D and body["fap"] == 1e-12 and body["fap_method"] == "baluev"
    freq, power = np.array(body["frequency_per_d"]), np.array(body["power"])
    assert len(freq) == 400 and abs(1 / freq[np.argmax(power)] - PERIOD_D) < 0.01


def test_transit_times_give_o_minus_c_against_the_fitted_linear_ephemeris_and_the_model(portal):
    _, ids = portal
    c = client(portal)
    body = c.get(f"/api/v1/targets/{ids['other']}/transit-times").json()
    eph, items = body["ephemeris"], body["items"]
    assert body["planet"] == "b" and len(items) == 8 and eph["period"] == pytest.approx(3.5, abs=1e-3)
    for r in items:
        assert r["o_minus_c_min"] == pytest.approx((r["t_obs_bjd_tdb"] - eph["t0"] - eph["period"] * r["epoch"]) * 1440)
        assert r["model_o_minus_c_min"] is not None
    csv = c.get(f"/api/v1/targets/{ids['other']}/transit-times", params={"format": "csv"}).text
    assert "BJD_TDB" in csv and len([x for x in csv.splitlines() if not x.startswith("#")]) == 9


def test_campaign_summary_lists_bins_evidence_probability_and_posterior_intervals(portal):
    _, ids = portal
    body = client(portal).get(f"/api/v1/campaigns/{ids['campaign']}").json()
    assert body["status"] == "done" and body["progress"] == 1.0 and body["has_posterior"]
    assert body["bins"] == [{"index": 0, "period_min_d": 22.2, "period_max_d": 22.4, "model": 1, "prior_mass": 1.0,
                             "work_units": 1, "done": 1, "error": 0, "open": 0, "log_evidence": -12.5,
                             "probability": 1.0}]
    assert body["posterior"]["median"] == [20.0, 22.3]


def test_posterior_downloads_in_csv_npz_fits_and_the_corner_plot_png(portal):
    from astropy.io import fits

    _, ids = portal
    c = client(portal)
    url = f"/api/v1/campaigns/{ids['campaign']}"
    csv = c.get(url + "/posterior", params={"format": "csv"}).text.splitlines()
    assert csv[0] == "pert.mass,pert.period" and len(csv) == 501
    with np.load(io.BytesIO(c.get(url + "/posterior", params={"format": "npz"}).content), allow_pickle=False) as z:
        assert z["samples"].shape == (500, 2) and list(z["param_names"]) == ["pert.mass", "pert.period"]
        samples = z["samples"]
    with fits.open(io.BytesIO(c.get(url + "/posterior", params={"format": "fits"}).content)) as hdul:
        np.testing.assert_array_equal(hdul[1].data["pert.mass"], samples[:, 0])
        assert hdul[1].header["LOGZ"] == -12.5
    png = c.get(url + "/corner.png")
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_stack_fits_products_keep_the_wcs_and_serve_byte_ranges(portal):
    from astropy.io import fits
    from astropy.wcs import WCS

    _, ids = portal
    c = client(portal)
    url = f"/api/v1/stacks/{ids['stack']}"
    meta = c.get(url).json()
    assert meta["products"] == ["stacked", "uncertainty", "coverage"] and meta["shape"] == [48, 64]
    whole = c.get(url + "/stacked.fits")
    with fits.open(io.BytesIO(whole.content)) as hdul:
        assert hdul[0].data.shape == (48, 64)
        ra, dec = WCS(hdul[0].header).pixel_to_world_values(31.5, 23.5)  # CRPIX is 1-based
        assert (float(ra), float(dec)) == pytest.approx((250.1, 30.5))
    part = c.get(url + "/coverage.fits", headers={"Range": "bytes=0-79"})
    assert part.status_code == 206 and part.content == c.get(url + "/coverage.fits").content[:80]
    assert part.headers["content-range"].startswith("bytes 0-79/")
    bad = c.get(url + "/coverage.fits", headers={"Range": "bytes=99999999-"})
    assert bad.status_code == 416
    png = c.get(url + "/preview.png")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"


def test_anonymous_readers_see_only_published_campaigns_and_no_observations(portal):
    _, ids = portal
    anon, sam = client(portal), client(portal, "sam")
    assert [x["id"] for x in anon.get("/api/v1/campaigns").json()["items"]] == [ids["campaign"]]
    assert anon.get(f"/api/v1/campaigns/{ids['running']}").status_code == 404
    assert anon.get("/api/v1/observations").status_code == 401
    assert anon.get(f"/api/v1/targets/{ids['other']}").json()["campaigns"] == [ids["campaign"]]
    assert {x["id"] for x in sam.get("/api/v1/campaigns").json()["items"]} == {ids["campaign"], ids["running"]}
    assert sam.get(f"/api/v1/campaigns/{ids['running']}").json()["status"] == "running"
    assert sam.get(f"/api/v1/targets/{ids['other']}").json()["campaigns"] == [ids["campaign"], ids["running"]]
    assert sam.get("/api/v1/observations").json()["total"] == 0


def test_a_scientist_cannot_use_admin_routes_and_an_admin_needs_the_csrf_token(portal):
    _, ids = portal
    sam, alice = client(portal, "sam"), client(portal, "alice")
    cancel = f"/api/v1/admin/campaigns/{ids['running']}/cancel"
    assert sam.get("/api/v1/admin/queue").status_code == 403
    assert sam.post(cancel).json()["error"]["code"] == "admin_only"
    assert client(portal).post(cancel).status_code == 401
    assert sam.get("/admin", follow_redirects=False).status_code == 403
    queue = alice.get("/api/v1/admin/queue").json()
    assert queue["work_units"] == {"done": 1} and queue["boinc"]["configured"] is False
    r = alice.post(cancel, headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    r = alice.post("/admin/keys/revoke", data={"prefix": "abcd1234", "csrf": "forged"})
    assert r.status_code == 403


def test_admin_launch_refuses_bad_inputs_with_the_reason(portal):
    alice = client(portal, "alice")
    files = {"times": ("t.csv", b"epoch,time,sigma\n", "text/csv"), "priors": ("p.json", b"{}", "application/json")}
    r = alice.post("/api/v1/admin/campaigns", files=files)
    assert r.status_code == 400 and "no rows" in r.json()["error"]["message"]
    assert "t.csv" in r.json()["error"]["message"] and "/tmp" not in r.json()["error"]["message"]
    files["priors"] = ("p.yaml", b"a: 1", "text/plain")
    r = alice.post("/api/v1/admin/campaigns", files=files)
    assert r.status_code == 400 and "TOML or JSON" in r.json()["error"]["message"]


def test_admin_pages_add_a_site_issue_a_key_shown_once_and_revoke_it(portal):
    from server.ingest.sites import authenticate

    app, _ = portal
    alice = client(portal, "alice")
    csrf = alice.headers["X-CSRF-Token"]
    r = alice.post("/admin/sites", data={"name": "Backyard", "lat": "45.5", "lon": "7.1", "csrf": csrf})
    assert r.status_code == 200 and "site #" in r.text and "Backyard" in r.text
    r = alice.post("/admin/keys", data={"site": "Backyard", "csrf": csrf})
    token = re.search(r'id="new-key">([^<]+)<', r.text).group(1)
    assert authenticate(app.db, token) is not None
    assert token not in alice.get("/admin").text  # shown once
    r = alice.post("/admin/keys/revoke", data={"prefix": token.split("_")[1], "csrf": csrf})
    assert "revoked 1 key" in r.text and authenticate(app.db, token) is None
    r = alice.post("/admin/sites", data={"name": "Bad", "lat": "95", "csrf": csrf})
    assert r.status_code == 400 and "latitude 95.0" in r.text


def test_wrong_password_and_logout_end_access(portal):
    c = client(portal)
    page = c.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = c.post("/login", data={"name": "alice", "password": "wrong-password", "csrf": token})
    assert r.status_code == 401 and "wrong user name or password" in r.text
    alice = client(portal, "alice")
    assert alice.get("/api/v1/admin/queue").status_code == 200
    alice.post("/logout", data={"csrf": alice.headers["X-CSRF-Token"]})
    assert alice.get("/api/v1/admin/queue").status_code == 401


def test_passwords_are_stored_as_salted_scrypt_hashes(portal):
    from server.core.db.models import User
    from server.web.auth import verify_password

    app, _ = portal
    with app.db.session() as s:
        stored = s.scalars(select(User.password_hash).where(User.name == "alice")).one()
    assert stored.startswith("scrypt$") and PASSWORDS["alice"] not in stored
    assert verify_password(PASSWORDS["alice"], stored) and not verify_password("alice-admin-pX", stored)


def test_pages_render_and_link_their_downloads(portal):
    _, ids = portal
    c = client(portal)
    target = c.get(f"/targets/{ids['target']}").text
    assert f"/api/v1/targets/{ids['target']}/lightcurve?band=V&amp;format=csv" in target
    assert "format=votable" in target and 'id="periodogram"' in target
    assert 'id="oc"' in c.get(f"/targets/{ids['other']}").text
    assert "/corner.png" in c.get(f"/campaigns/{ids['campaign']}").text
    assert "stacked.fits" in c.get(f"/stacks/{ids['stack']}").text
    docs = c.get("/api/docs").text
    assert "/api/v1/targets/{target_id}/lightcurve" in docs
    assert c.get("/targets/999").status_code == 404
    assert c.get("/targets", params={"ra": "abc"}).status_code == 400
    for asset in ("/static/plot.js", "/static/portal.js", "/static/portal.css"):
        assert c.get(asset).status_code == 200


def test_users_cli_adds_a_user_from_stdin_and_refuses_a_short_password(tmp_path):
    from click.testing import CliRunner

    from server.cli import main

    env = {"OPENASTRO_VAR_DIR": str(tmp_path / "var"), "OPENASTRO_PROGRESS": "0"}
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    res = runner.invoke(main, ["users", "add", "ann", "--role", "admin", "--password-stdin"], input="long-enough-pw\n",
                        env=env)
    assert res.exit_code == 0 and "ann (admin) added" in res.output, res.output
    res = runner.invoke(main, ["users", "add", "bob", "--role", "scientist", "--password-stdin"], input="short\n",
                        env=env)
    assert res.exit_code == 1 and "at least 8 characters (got 5)" in res.output
    assert "#1 ann (admin)" in runner.invoke(main, ["users", "list"], env=env).output


def test_admin_api_launches_a_campaign_with_the_cli_planner_and_cancels_campaigns(portal):
    """Last in this module: it adds a campaign and cancels the seeded running one."""
    from app.ttv.synthetic import kepler88_like

    app, ids = portal
    alice = client(portal, "alice")
    system = kepler88_like(np.random.default_rng(9), n_transits=12)
    times = "epoch,time,sigma\n" + "".join(f"{e},{float(t)!r},{float(s)!r}\n" for e, t, s in
                                           zip(system.epochs, system.times, system.sigma))
    priors = ('{"stellar_mass": 0.99, "perturber_period": [22.25, 22.35], "perturber_mass": [150.0, 260.0],'
              ' "perturber_ecc_fixed": [0.0, 90.0], "known_ecc_fixed": [0.0, 90.0], "nlive": 10, "dlogz": 2.0}')
    r = alice.post("/api/v1/admin/campaigns", files={"times": ("t.csv", times.encode(), "text/csv"),
                                                     "priors": ("p.json", priors.encode(), "application/json")},
                   data={"name": "api-ttv", "replicas": "1", "bins": "[[22.25, 22.35]]", "executor": "boinc"})
    assert r.status_code == 201, r.text
    cid = r.json()["campaign_id"]
    assert r.headers["location"] == f"/api/v1/campaigns/{cid}" and r.json()["bins"] == 1
    with app.db.session() as s:
        from server.core.db.models import Campaign

        c = s.get(Campaign, cid)
        assert (c.name, c.executor, c.config["replicas"]) == ("api-ttv", "boinc", 1)
        assert [(b["period_min"], b["period_max"]) for b in c.config["bins"]] == [(22.25, 22.35)]
    # without a BOINC project its background submission fails; the campaign stays, and can be cancelled
    r = alice.post(f"/api/v1/admin/campaigns/{ids['running']}/cancel")
    assert r.status_code == 200 and r.json() == {"campaign_id": ids["running"], "cancelled_work_units": 0}
    assert alice.get(f"/api/v1/campaigns/{ids['running']}").json()["status"] == "cancelled"
    assert alice.post("/api/v1/admin/campaigns/999/cancel").status_code == 404


@pytest.mark.mariadb
def test_light_curve_api_reads_every_point_in_order_on_mariadb(mariadb_url, tmp_path):
    """The light curve is read from the DBAPI cursor with bound parameters: the same answer on MariaDB."""
    from server.core.context import OpenAstro
    from server.core.settings import load_settings

    app = OpenAstro(load_settings(env={}, overrides={"var_dir": str(tmp_path / "var"), "database_url": mariadb_url,
                                                     "progress": False}))
    app.db.upgrade()
    ids = seed(app, n_v=40, n_b=10)
    c = client((app, ids))
    bjd, mag, point_ids = db_points(app, ids["target"], "V")
    body = c.get(f"/api/v1/targets/{ids['target']}/lightcurve", params={"band": "V", "limit": 25}).json()
    rest = c.get(f"/api/v1/targets/{ids['target']}/lightcurve",
                 params={"band": "V", "after_id": body["next_after_id"]}).json()
    np.testing.assert_array_equal(body["columns"]["bjd_tdb"] + rest["columns"]["bjd_tdb"], bjd)
    np.testing.assert_array_equal(body["columns"]["mag"] + rest["columns"]["mag"], mag)
    assert body["columns"]["id"] + rest["columns"]["id"] == point_ids and rest["next_after_id"] is None
    assert body["columns"]["is_upper_limit"] == [False] * 25


@pytest.mark.parametrize("name, offset, label", [
    ("pert.mass", 0.0, "pert.mass [M_Earth]"),
    ("pert.period", 0.0, "pert.period [d]"),
    ("pert.tconj", 2460000.0, "pert.tconj − 2460000 [d, BJD_TDB]"),
    ("pert.omega_deg", 0.0, "pert.omega_deg [deg]"),
    ("pert.secosw", 0.0, "pert.secosw [dimensionless]"),
])
def test_corner_plot_axes_carry_units_and_written_out_time_offsets(name, offset, label):
    from server.web.plots import _offset, axis_label

    assert axis_label(name, offset) == label
    assert _offset("pert.tconj", np.array([2460000.7, 2460001.2])) == 2460000.0
    assert _offset("pert.tconj", np.array([22.9, 23.0])) == 0.0  # already offset in the input table
