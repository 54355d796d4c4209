"""The transient stage end to end on synthetic frames: reference build, stage run, vetting, alerts, API, CLI.

The frames are rendered by ``server.synth`` with their true WCS and registered as plate-solved, calibrated
observations (solving and calibration have their own tests). The real-bogus classifier is not what these tests
check: they inject a constant scorer (the classifier's own tests cover it).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from server.core.db.models import Calibration, Observation, StageRun, Target, TransientAlert, TransientCandidate
from server.image.catalogs import DataFrameCatalog
from server.synth.frames import FrameSpec, make_wcs, render_frame, write_frame
from server.transients import alerts
from server.transients.crossmatch import StarCatalogProvider
from server.transients.injection import _field
from server.transients.reference import build_reference, reference_status

BASE = FrameSpec(ra_deg=150.0, dec_deg=20.0, shape=(192, 192), fwhm_px=2.2, exptime_s=120.0, sky_adu=800.0,
                 mag_limit=30.0, fill_from_mag=None, band="V")
PX = BASE.pixel_scale_arcsec / 3600.0


def _always(score):
    return lambda triplets: np.full(len(triplets), score)


@pytest.fixture(scope="module")
def field():
    rng = np.random.default_rng(21)
    stars = _field(rng, BASE.with_(mag_limit=18.0), 50)
    wcs = make_wcs(BASE)
    # the transient (mag 16.5, well away from the stars) and a catalog star that brightens by 1 mag
    sx, sy = wcs.all_world2pix(stars["ra"].to_numpy(), stars["dec"].to_numpy(), 0)
    cands = [(x, y) for x, y in [(60.0, 130.0), (130.0, 60.0), (96.0, 96.0), (40.0, 40.0), (150.0, 150.0)]
             if np.min(np.hypot(sx - x, sy - y)) > 15]
    tra, tdec = wcs.all_pix2world([cands[0][0]], [cands[0][1]], 0)
    inside = (sx > 30) & (sx < 160) & (sy > 30) & (sy < 160)
    var_i = int(np.flatnonzero(inside & (stars["mag"].to_numpy() > 16.5))[0])
    return {"stars": stars, "transient": (float(tra[0]), float(tdec[0]), 16.5), "variable": var_i}


def _register(app, tmp_path, spec, rng, catalog, name, mjd, fwhm_px):
    frame = render_frame(spec, rng, catalog=catalog)
    path = tmp_path / f"{name}.fits"
    write_frame(frame, path, strip_wcs=False)
    key = app.store.put_file(path).key
    with app.db.session() as s:
        tgt = s.scalars(select(Target).where(Target.name == "Field")).one_or_none()
        if tgt is None:
            tgt = Target(name="Field", ra_deg=BASE.ra_deg, dec_deg=BASE.dec_deg, kind="field")
            s.add(tgt)
            s.flush()
        obs = Observation(sha256=name.ljust(64, "0")[:64], storage_key=key, solved_storage_key=key, kind="image",
                          source_format="fits", exptime=spec.exptime_s, filter="V", mjd=mjd, target_id=tgt.id,
                          date_obs=dt.datetime(2025, 1, 1) + dt.timedelta(days=mjd - 60676.0), status="calibrated")
        s.add(obs)
        s.flush()
        # colour-0 zero point as rendered (the calibration stage recovers it; tests/test_stage_runner.py)
        s.add(Calibration(observation_id=obs.id, catalog="synthetic", band="V", zero_point=spec.zero_point,
                          n_matches=50, fwhm_px=fwhm_px))
        return obs.id


def _build(app, tmp_path, field):
    rng = np.random.default_rng(5)
    cat = DataFrameCatalog(field["stars"])
    for i, (fwhm, dra) in enumerate([(2.2, 0.0), (2.4, 3 * PX), (2.6, -2 * PX), (4.5, 1 * PX)]):
        spec = BASE.with_(fwhm_px=fwhm, ra_deg=BASE.ra_deg + dra, dec_deg=BASE.dec_deg + (i - 1) * PX)
        _register(app, tmp_path, spec, rng, cat, f"ref{i}", 60676.0 + i, fwhm)
    app.settings = app.settings.with_overrides(transients_reference_max_frames=3)  # the test's own app object
    return build_reference(app, "Field", "V")


def _new_epoch(app, tmp_path, field, name, mjd, seed):
    stars = field["stars"].copy()
    stars.loc[field["variable"], "mag"] -= 1.0
    ra, dec, mag = field["transient"]
    stars = pd.concat([stars, pd.DataFrame({"ra": [ra], "dec": [dec], "mag": [mag], "color": [0.0]})],
                      ignore_index=True)
    spec = BASE.with_(fwhm_px=3.2, exptime_s=60.0, sky_adu=400.0, ra_deg=BASE.ra_deg + 1.5 * PX,
                      date_obs="2025-03-01T03:00:00")
    return _register(app, tmp_path, spec, np.random.default_rng(seed), DataFrameCatalog(stars), name, mjd, 3.2)


def test_reference_is_stacked_from_the_best_seeing_frames_with_provenance(oa_app, tmp_path, field):
    b = _build(oa_app, tmp_path, field)
    assert b.n_frames == 3 and len(b.observation_ids) == 3  # the 4.5 px frame is left out
    # truth: the stack of 2.2-2.6 px frames (1.5"/px), resampled once: FWHM between 3.0" and 4.8"
    assert 3.0 < b.fwhm_arcsec < 4.8, b.fwhm_arcsec
    st = reference_status(oa_app, "Field", "V")
    assert st.reference_id == b.reference_id and not st.stale, st.reasons
    # policy: a much sharper set of frames makes it stale, and says why
    strict = oa_app.settings.with_overrides(transients_reference_seeing_gain=1.0, transients_reference_min_frames=1)
    oa_app.settings = strict
    st = reference_status(oa_app, "Field", "V")
    assert st.stale and any("seeing" in r for r in st.reasons)


def test_transient_is_alerted_and_the_brightened_star_is_vetoed(oa_app, tmp_path, field):
    from server.pipeline.runner import run_transients_stage

    b = _build(oa_app, tmp_path, field)
    providers = [StarCatalogProvider(DataFrameCatalog(field["stars"]), radius_arcsec=2.0)]
    oid = _new_epoch(oa_app, tmp_path, field, "new1", 60736.0, seed=7)
    out = run_transients_stage(oa_app, oid, scorer=_always(0.95), providers=providers)
    assert out.status == "ok", out.message
    with oa_app.db.session() as s:
        cands = s.scalars(select(TransientCandidate).where(TransientCandidate.observation_id == oid)).all()
        by_status = {}
        for c in cands:
            by_status.setdefault(c.status, []).append(c)
        assert len(by_status.get("alerted", [])) == 1, [(c.status, c.snr, c.x, c.y) for c in cands]
        assert len(by_status.get("star", [])) >= 1  # the catalog star that brightened: a variable, not new
        alerted = by_status["alerted"][0]
        ra, dec, mag = field["transient"]
        assert abs(alerted.ra_deg - ra) * 3600 * np.cos(np.radians(dec)) < 1.5 and abs(alerted.dec_deg - dec) * 3600 < 1.5
        # difference magnitude in the common system = the injected colour-0 magnitude (3 sigma + 0.05 systematic)
        assert abs(alerted.mag - mag) < 3 * alerted.mag_err + 0.05, (alerted.mag, alerted.mag_err)
        run = s.scalars(select(StageRun).where(StageRun.observation_id == oid)).one()
        assert (run.stage, run.status) == ("transients", "ok")
        alert = s.scalars(select(TransientAlert)).one()
        avro_key, xml_key = alert.avro_key, alert.voevent_key
    [rec] = alerts.read_avro(oa_app.store.path(avro_key).read_bytes())
    assert rec["candidate"]["isdiffpos"] == "t" and rec["candidate"]["rfid"] == b.reference_id
    assert rec["candidate"]["rb"] == pytest.approx(0.95)
    assert alerts.read_cutout(rec["cutoutDifference"]).shape == (63, 63)
    alerts.validate_voevent(oa_app.store.path(xml_key).read_bytes())

    # a second epoch: the same object, with the first detection as its history
    oid2 = _new_epoch(oa_app, tmp_path, field, "new2", 60737.0, seed=8)
    assert run_transients_stage(oa_app, oid2, scorer=_always(0.95), providers=providers).status == "ok"
    from server.transients.alertstore import list_alerts

    rows = list_alerts(oa_app)
    assert [r["n_previous"] for r in rows] == [0, 1] and rows[0]["object"] == rows[1]["object"]
    with oa_app.db.session() as s:
        key2 = s.get(TransientAlert, rows[1]["id"]).avro_key
    [rec2] = alerts.read_avro(oa_app.store.path(key2).read_bytes())
    assert len(rec2["prv_candidates"]) == 1 and rec2["prv_candidates"][0]["candid"] == rows[0]["candid"]

    # below the rb threshold nothing is alerted
    oid3 = _new_epoch(oa_app, tmp_path, field, "new3", 60738.0, seed=9)
    assert run_transients_stage(oa_app, oid3, scorer=_always(0.5), providers=providers).status == "ok"
    with oa_app.db.session() as s:
        statuses = {c.status for c in s.scalars(select(TransientCandidate).where(
            TransientCandidate.observation_id == oid3))}
    assert "alerted" not in statuses and "bogus" in statuses
    assert len(list_alerts(oa_app)) == 2

    # the API (a real `openastro serve`) serves them, with ?since=
    from serve_proc import serving

    with serving(tmp_path / "var", tmp_path / "serve.log") as server, server.client() as client:
        r = client.get("/api/v1/alerts")
        assert r.status_code == 200 and r.json()["count"] == 2
        since = rows[0]["created_at"]
        got = client.get("/api/v1/alerts", params={"since": since}).json()["alerts"]
        assert [a["id"] for a in got] == [rows[1]["id"]]
        bad = client.get("/api/v1/alerts", params={"since": "yesterday"})
        assert bad.status_code == 400 and "ISO 8601" in bad.json()["error"]["message"]
        avro = client.get(f"/api/v1/alerts/{rows[1]['id']}.avro")
        assert avro.status_code == 200 and alerts.read_avro(avro.content)[0]["objectId"] == rows[1]["object"]
        assert client.get("/api/v1/alerts/999.xml").status_code == 404

    # and the CLI lists them
    from server.cli import main

    res = CliRunner().invoke(main, ["transients", "alerts"], env={"OPENASTRO_VAR_DIR": str(tmp_path / "var")},
                             catch_exceptions=False)
    assert res.exit_code == 0 and res.output.count(rows[0]["object"]) == 2, res.output


def test_frame_without_a_reference_is_skipped_by_the_pipeline(oa_app, tmp_path, field):
    from server.pipeline.runner import run_pipeline

    oid = _new_epoch(oa_app, tmp_path, field, "lonely", 60736.0, seed=3)
    [out] = run_pipeline(oa_app, [oid], ("transients",))
    assert out.status == "skipped" and "no reference" in out.message


def test_facade_find_transients_returns_the_candidates_as_plain_data(oa_app, tmp_path, field):
    from server import stages
    from server.core.db.models import TransientReference

    b = _build(oa_app, tmp_path, field)
    oid = _new_epoch(oa_app, tmp_path, field, "facade", 60736.0, seed=7)
    with oa_app.db.session() as s:
        ref_path = str(oa_app.store.path(s.get(TransientReference, b.reference_id).image_key))
        new_path = str(oa_app.store.path(s.get(Observation, oid).solved_storage_key))
    out = stages.find_transients(new_path, ref_path, BASE.zero_point, scorer=_always(0.9))
    ra, dec, _ = field["transient"]
    near = [c for c in out["candidates"]
            if abs(c["ra_deg"] - ra) * 3600 * np.cos(np.radians(dec)) < 1.5 and abs(c["dec_deg"] - dec) * 3600 < 1.5]
    assert len(near) == 1 and near[0]["sign"] == 1 and near[0]["snr"] > 10
    assert out["n_candidates"] == len(out["rb"]) and set(out["rb"]) == {0.9}
    with pytest.raises(ValueError, match="EXPTIME"):
        from astropy.io import fits

        bare = tmp_path / "bare.fits"
        hdr = fits.getheader(new_path)
        del hdr["EXPTIME"]
        fits.writeto(bare, fits.getdata(new_path), hdr)
        stages.find_transients(str(bare), ref_path, BASE.zero_point)


def test_pipeline_runs_the_transient_stage_after_calibration_when_a_reference_exists(oa_app, tmp_path, field,
                                                                                   monkeypatch):
    from server.pipeline import runner

    _build(oa_app, tmp_path, field)
    oid = _new_epoch(oa_app, tmp_path, field, "chain", 60736.0, seed=7)
    # solving and calibration have their own tests (tests/test_stage_runner.py); here they stand as done
    for stage in ("solve", "calibrate"):
        monkeypatch.setitem(runner.STAGE_FUNCTIONS, stage,
                            lambda app, o, stage=stage: runner.StageOutcome(o, stage, "ok", "done (stand-in)"))
    outcomes = runner.run_pipeline(oa_app, [oid])
    assert [(o.stage, o.status) for o in outcomes] == [("solve", "ok"), ("calibrate", "ok"), ("transients", "ok")]
    # a single named stage (the queue's per-stage tasks) runs alone
    assert [o.stage for o in runner.run_pipeline(oa_app, [oid], ("calibrate",))] == ["calibrate"]
    with oa_app.db.session() as s:
        statuses = {c.status for c in s.scalars(select(TransientCandidate))}
    # without the classifier in this branch nothing is scored, so nothing is alerted
    from server.transients.stage import default_scorer

    if default_scorer()[0] is None:
        assert statuses == {"unscored"}


def test_staleness_policy_names_each_reason():
    from server.core.settings import load_settings
    from server.transients.reference import EligibleFrame, staleness

    st = load_settings(env={}, overrides={"transients_reference_max_age_days": 100.0})
    built = dt.datetime(2026, 1, 1)

    def frames(n, fwhm, inst=1):
        return [EligibleFrame(i, "f.fits", 21.0, 60.0, fwhm, inst, None) for i in range(n)]

    now = built + dt.timedelta(days=10)
    assert staleness(built, 3.0, 5, [1], frames(5, 3.0), st, now=now) == []
    assert staleness(built, 3.0, 5, [1], frames(5, 3.0), st, now=built + dt.timedelta(days=101))[0].startswith("age")
    assert staleness(built, 3.0, 5, [1], frames(5, 3.0) + frames(3, 2.0), st, now=now)[0].startswith("seeing")
    assert staleness(built, 3.0, 5, [1], frames(10, 3.0), st, now=now)[0].startswith("depth")
    assert staleness(built, 3.0, 5, [1], frames(5, 3.0) + frames(1, 3.1, inst=2), st, now=now) == [
        "new instrument(s) [2]"]


def test_reference_cli_builds_and_reports_status(oa_app, tmp_path, field):
    from server.cli import main

    rng = np.random.default_rng(5)
    for i in range(2):
        _register(oa_app, tmp_path, BASE.with_(dec_deg=BASE.dec_deg + i * PX), rng, DataFrameCatalog(field["stars"]),
                  f"r{i}", 60676.0 + i, 2.2)
    env = {"OPENASTRO_VAR_DIR": str(tmp_path / "var")}
    few = CliRunner().invoke(main, ["transients", "reference", "build", "Field", "--band", "V"], env=env)
    assert few.exit_code == 1 and "needs at least 3" in few.output
    _register(oa_app, tmp_path, BASE.with_(ra_deg=BASE.ra_deg + PX), rng, DataFrameCatalog(field["stars"]), "r2",
              60678.0, 2.3)
    ok = CliRunner().invoke(main, ["transients", "reference", "build", "Field", "--band", "V"], env=env)
    assert ok.exit_code == 0 and ok.output.startswith("reference #1: 3 frames"), ok.output
    st = CliRunner().invoke(main, ["transients", "reference", "status", "Field", "--band", "V"], env=env)
    assert st.exit_code == 0 and "reference #1" in st.output and st.output.strip().endswith("fresh"), st.output
    nope = CliRunner().invoke(main, ["transients", "reference", "status", "Nowhere", "--band", "V"], env=env)
    assert nope.exit_code == 1 and "no target named 'Nowhere'" in nope.output
