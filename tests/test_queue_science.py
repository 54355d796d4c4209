"""The science chain as tasks: light curves -> period search and transit timing -> TTV re-inference, and stacks on
pipeline_slow. Embedded (in-process) unless a test names the real Redis."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from server.core.context import OpenAstro
from server.core.db.models import Campaign, LightCurve, Periodogram, PhotometryPoint, Posterior, Target, TransitTime
from server.core.settings import load_settings
from server.core.timeconv import SiteLocation
from server.pipeline.science import set_transit_params
from server.queue import ops
from server.queue.reactive import attach
from server.synth.transits import store_transit_photometry, transit_photometry

SITE = SiteLocation(lat_deg=28.7606, lon_deg=-17.8816, height_m=2332.0)
RA, DEC = 300.18, 22.71
PARAMS = {"period": 2.2185733, "t0": 2460000.35, "rp_rs": 0.155, "a_rs": 8.8, "inc": 85.7, "u": [0.45, 0.2]}
TARGET = "HD 189733-like"


def _app(tmp_path, **values):
    app = OpenAstro(load_settings(env={}, overrides={"var_dir": str(tmp_path / "var"), "progress": False,
                                                      **values}))
    app.db.upgrade()
    attach(app)
    return app


def _transits(app, epochs, seed):
    truth = transit_photometry(PARAMS, epochs, np.random.default_rng(seed), site=SITE, ra_deg=RA, dec_deg=DEC,
                               half_window_d=0.12, cadence_s=180.0)
    store_transit_photometry(app, truth, target=TARGET, site_name="La Palma", site=SITE, ra_deg=RA, dec_deg=DEC)
    return truth


def _counts(app):
    with app.db.session() as s:
        return tuple(s.scalar(select(func.count()).select_from(m)) for m in (LightCurve, Periodogram, TransitTime))


def test_embedded_chain_stores_light_curve_periodogram_and_transit_times_once_per_data(tmp_path):
    from server.queue.tasks import send

    app = _app(tmp_path)
    truth = _transits(app, [0, 1, 3, 4, 6], seed=11)
    set_transit_params(app, TARGET, PARAMS, band="V", fit_shape=False)
    out = send("lightcurve_update", TARGET).get()  # embedded: the whole chain runs in this call
    assert out["status"] == "ok" and _counts(app) == (1, 1, 5)
    with app.db.session() as s:
        lc = s.scalars(select(LightCurve)).one()
        pg = s.scalars(select(Periodogram)).one()
        assert lc.band == "V" and lc.meta["photometry_sha256"] == pg.meta["photometry_sha256"]
        assert pg.band == "V" and pg.light_curve_id == lc.id and pg.meta["bands"] == ["V"]
        times = {r.epoch: r for r in s.scalars(select(TransitTime))}
    # the stored times are the injected mid-times (BJD_TDB) within 4 sigma: the chain timed the right data
    pulls = [(times[e].t_obs - truth.mid_times[e]) / times[e].sigma for e in truth.mid_times]
    assert max(abs(p) for p in pulls) < 4.0, pulls

    # a second trigger for the same data (a re-delivered message, or another frame's trigger): nothing new
    again = send("lightcurve_update", TARGET).get()
    assert again["status"] == "skipped" and _counts(app) == (1, 1, 5)

    # new photometry (two more transits): a new light curve, periodogram and the new transit times
    _transits(app, [8, 9], seed=12)
    assert send("lightcurve_update", TARGET).get()["status"] == "ok"
    assert _counts(app) == (2, 2, 7)


def test_two_bands_get_one_multiband_periodogram_at_the_true_period(tmp_path):
    from server.queue.tasks import send

    app = _app(tmp_path)
    rng = np.random.default_rng(4)
    period, n = 0.61, 60  # days; 60 points a band over 40 nights
    with app.db.session() as s:
        target = Target(name="RR-like", ra_deg=150.0, dec_deg=10.0, kind="variable")
        s.add(target)
        s.flush()
        for band, amp, m0 in (("V", 0.40, 12.0), ("R", 0.30, 11.7)):
            jd = 2460000.5 + np.sort(rng.uniform(0, 40, n))
            mag = m0 + amp * np.sin(2 * np.pi * jd / period) + rng.normal(0, 0.02, n)
            s.add_all([PhotometryPoint(target_id=target.id, jd_utc=float(t), band=band, mag=float(m), mag_err=0.02)
                       for t, m in zip(jd, mag)])
    out = send("period_search", "RR-like").get()
    assert out["status"] == "ok", out
    with app.db.session() as s:
        pg = s.scalars(select(Periodogram)).one()
    # truth 0.61 d; the multi-band peak of 120 points at 0.02 mag is far narrower than 0.5 %
    assert pg.band is None and pg.meta["bands"] == ["R", "V"]
    assert pg.best_period == pytest.approx(period, rel=0.005) and pg.fap < 1e-6


def test_too_little_photometry_for_a_period_search_is_reported_not_failed(tmp_path):
    from server.queue.tasks import send

    app = _app(tmp_path, period_search_min_points=50)
    with app.db.session() as s:
        target = Target(name="Sparse", ra_deg=1.0, dec_deg=2.0)
        s.add(target)
        s.flush()
        s.add_all([PhotometryPoint(target_id=target.id, jd_utc=2460000.5 + i, band="V", mag=10.0, mag_err=0.01)
                   for i in range(5)])
        instant = Target(name="Instant", ra_deg=1.0, dec_deg=2.0)
        s.add(instant)
        s.flush()
        s.add_all([PhotometryPoint(target_id=instant.id, jd_utc=2460000.5, band="V", mag=10.0 + 0.01 * i,
                                   mag_err=0.01) for i in range(60)])
    out = send("period_search", "Sparse").get()
    assert out["status"] == "insufficient" and "no band has 50 points" in out["message"]
    out = send("period_search", "Instant").get()  # enough points, but no baseline: reported, not a failed task
    assert out["status"] == "insufficient" and "all 60 times are equal" in out["message"]
    assert _counts(app)[1] == 0


def test_transit_parameters_are_checked(tmp_path):
    app = _app(tmp_path)
    with app.db.session() as s:
        s.add(Target(name="T"))
    with pytest.raises(ValueError, match=r"lack \['t0'\]"):
        set_transit_params(app, "T", {"period": 2.0}, band="V")
    with pytest.raises(ValueError, match="positive number of days, got -1"):
        set_transit_params(app, "T", {"period": -1, "t0": 0.0}, band="V")
    with pytest.raises(ValueError, match="no target named 'U'"):
        set_transit_params(app, "U", PARAMS, band="V")


def test_set_transit_command_stores_the_ephemeris_and_refuses_bad_parameters(tmp_path):
    import json

    from click.testing import CliRunner

    from server.cli import main

    app = _app(tmp_path)
    with app.db.session() as s:
        s.add(Target(name="T", ra_deg=RA, dec_deg=DEC))
    good, bad = tmp_path / "p.json", tmp_path / "bad.json"
    good.write_text(json.dumps(PARAMS))
    bad.write_text(json.dumps({"t0": 1.0}))
    env = {"OPENASTRO_VAR_DIR": app.settings.var_dir}
    out = CliRunner().invoke(main, ["target", "set-transit", "T", str(good), "--band", "V", "--given-shape"], env=env)
    assert out.exit_code == 0 and "T b: period 2.2185733 d" in out.output and "given shape" in out.output, out.output
    with app.db.session() as s:
        entry = s.scalars(select(Target).where(Target.name == "T")).one().meta["transit"]
    assert entry == {"params": PARAMS, "band": "V", "planet": "b", "fit_shape": False}
    out = CliRunner().invoke(main, ["target", "set-transit", "T", str(bad), "--band", "V"], env=env)
    assert out.exit_code == 1 and "lack ['period']" in out.output, out.output


@pytest.mark.solver
def test_new_transit_times_queue_one_reinference_on_mcmc_and_repeats_coalesce(tmp_path, redis_server):
    from server.queue import tasks

    app = _app(tmp_path, broker_url=redis_server.url)
    _transits(app, [0, 1, 3, 4], seed=21)
    set_transit_params(app, TARGET, PARAMS, band="V", fit_shape=False)
    with app.db.session() as s:  # a stored posterior to warm-start from (its data: none of these times)
        target = s.scalars(select(Target).where(Target.name == TARGET)).one()
        camp = Campaign(name="earlier", kind="ttv", target_id=target.id, config={}, status="done")
        s.add(camp)
        s.flush()
        s.add(Posterior(campaign_id=camp.id, bin_index=None, storage_key="sha256/00/00/earlier",
                        data_sha256="0" * 64))

    def mcmc_pending():
        (st,) = ops.queue_status(app.settings, ["mcmc"])
        return st.pending

    # the task body, run here (what a science_inference worker runs); what it queues goes to Redis
    first = tasks.celery.tasks["openastro.transit_timing"](TARGET)
    assert first["status"] == "ok" and first["new_times"] and mcmc_pending() == 1
    assert tasks.celery.tasks["openastro.transit_timing"](TARGET)["status"] == "skipped"
    _transits(app, [6], seed=22)  # one more transit while the re-inference still waits: no second message
    again = tasks.celery.tasks["openastro.transit_timing"](TARGET)
    assert again["status"] == "ok" and again["new_times"] and mcmc_pending() == 1
    with app.db.session() as s:
        assert s.scalar(select(func.count()).select_from(TransitTime)) == 5

    # the same database with the policy off: new times queue nothing
    off = _app(tmp_path, broker_url=redis_server.url, ttv_reinference="off")
    ops.purge(off.settings, "mcmc")
    _transits(off, [7], seed=23)
    out = tasks.celery.tasks["openastro.transit_timing"](TARGET)
    assert out["status"] == "ok" and out["new_times"] and mcmc_pending() == 0

    # a trigger whose message cannot be sent (not JSON) leaves no mark behind to hold back the next one
    with pytest.raises(TypeError):
        tasks.send_coalesced("period_search", "Other", np.arange(3))
    assert ops.claim_pending(app.settings, "science_inference", "period_search", "Other")


def _stack_frames(app, tmp_path):
    from imgback_frames import DEC0, RA0, heterogeneous_specs, render, star_table
    from server.core.db.models import Calibration, Observation
    from server.synth import write_frame

    rng = np.random.default_rng(5)
    fs = render(heterogeneous_specs(2, rng, shape=(120, 120)), rng, star_table(rng))
    with app.db.session() as s:
        target = Target(name="Stack field", ra_deg=RA0, dec_deg=DEC0)
        s.add(target)
        s.flush()
        for i, frame in enumerate(fs.frames):
            path = tmp_path / f"f{i}.fits"
            write_frame(frame, path, strip_wcs=False)
            key = app.store.put_file(path).key
            obs = Observation(sha256=key.rsplit("/", 1)[1], storage_key=key, kind="image", source_format="fits",
                              exptime=frame.spec.exptime_s, filter="V", target_id=target.id,
                              solved_storage_key=key, status="calibrated")
            s.add(obs)
            s.flush()
            s.add(Calibration(observation_id=obs.id, catalog="truth", band="V", zero_point=frame.spec.zero_point,
                              zero_point_err=0.005, n_matches=20))


def test_stack_task_plans_reprojects_and_co_adds_on_the_slow_queue(tmp_path):
    from server.core.db.models import Stack
    from server.queue.tasks import celery, send

    app = _app(tmp_path)
    _stack_frames(app, tmp_path)
    assert celery.tasks["openastro.stack"].queue_name == "pipeline_slow"
    assert celery.tasks["openastro.stack_run"].queue_name == "pipeline_slow"
    result = send("stack", "Stack field", "V", "local", 512)
    out = result.get()
    with app.db.session() as s:
        stack = s.scalars(select(Stack)).one()
        assert stack.status == "done" and stack.n_frames == 2 and stack.campaign_id == out["campaign_id"]
        campaign = s.get(Campaign, out["campaign_id"])
        assert campaign.name.endswith(result.id[:12])
    # the same message delivered again finds its campaign: no second stack is planned
    again = celery.tasks["openastro.stack"].apply(args=("Stack field", "V", "local", 512), task_id=result.id).get()
    assert again["campaign_id"] == out["campaign_id"]
    with app.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Stack)) == 1


@pytest.mark.solver
def test_stack_command_with_a_broker_queues_the_stack_on_pipeline_slow(tmp_path, redis_server):
    from click.testing import CliRunner

    from server.cli import main

    app = _app(tmp_path, broker_url=redis_server.url)
    env = {"OPENASTRO_VAR_DIR": app.settings.var_dir, "OPENASTRO_BROKER_URL": redis_server.url}
    out = CliRunner().invoke(main, ["pipeline", "stack", "--target", "Stack field", "--filter", "V", "--executor",
                                    "local", "--tile", "256"], env=env)
    assert out.exit_code == 0 and "queued on pipeline_slow as task" in out.output, out.output
    (slow,) = ops.queue_status(app.settings, ["pipeline_slow"])
    assert slow.pending == 1  # nothing planned in this process: a pipeline_slow worker does it
