"""A small portal database: one target with a two-band light curve, a periodogram, transit times, a finished
TTV campaign with a posterior, a running (unpublished) campaign, a finished stack with WCS FITS files, and users.

Everything goes in through the ORM and the object store the way the pipeline leaves it (same npz layouts as
``openastro results period --save`` and the assimilator), with a fixed RNG so tests can compare values."""

from __future__ import annotations

import io
import json

import numpy as np

from server.core.db.models import (
    Campaign, LightCurve, Periodogram, PhotometryPoint, Posterior, Stack, Target, TransitTime, WorkUnit,
)
from server.web.auth import create_user

PASSWORDS = {"alice": "alice-admin-pw", "sam": "sam-scientist-pw"}
PERIOD_D = 0.5371  # the synthetic variable's true period
BJD0 = 2460000.0


def seed(app, *, n_v: int = 120, n_b: int = 60, seed: int = 17) -> dict:
    rng = np.random.default_rng(seed)
    ids: dict = {}
    with app.db.session() as s:
        t = Target(name="V1234 Her", ra_deg=250.123456, dec_deg=30.5, kind="variable")
        other = Target(name="WASP-999", ra_deg=10.0, dec_deg=-20.0, kind="transit")
        s.add_all([t, other])
        s.flush()
        ids["target"], ids["other"] = t.id, other.id
        for band, n, base in (("V", n_v, 12.0), ("B", n_b, 12.6)):
            bjd = np.sort(BJD0 + rng.uniform(0, 30, n))
            mag = base + 0.3 * np.sin(2 * np.pi * bjd / PERIOD_D) + rng.normal(0, 0.01, n)
            for b, m in zip(bjd, mag):
                s.add(PhotometryPoint(target_id=t.id, band=band, jd_utc=float(b) - 0.004, bjd_tdb=float(b),
                                      mag=float(m), mag_err=0.01, source="pipeline", observer_code="XYZ"))
        lc = LightCurve(target_id=t.id, band="V", n_points=n_v, meta={})
        s.add(lc)
        s.flush()
        freq = np.linspace(0.1, 5.0, 400)
        power = np.exp(-0.5 * ((freq - 1 / PERIOD_D) / 0.01) ** 2)
        buf = io.BytesIO()
        np.savez(buf, frequency=freq, power=power, window_power=power * 0,
                 meta=np.array(json.dumps({"format": "openastro.periodogram", "version": 1})))
        key = app.store.put_bytes(buf.getvalue()).key
        s.add(Periodogram(light_curve_id=lc.id, target_id=t.id, band="V", best_period=PERIOD_D,
                          best_period_err=1e-5, fap=1e-12, fap_method="baluev", storage_key=key, meta={}))
        for e in range(8):
            ttv = 0.002 * np.sin(e / 2.0)
            s.add(TransitTime(target_id=other.id, planet="b", epoch=e, t_obs=BJD0 + 3.5 * e + ttv, sigma=0.0007,
                              t_pred=BJD0 + 3.5 * e + ttv * 0.9, source="pipeline"))
        # a finished campaign with a combined posterior (the assimilator's npz layout)
        names = ["pert.mass", "pert.period"]
        samples = np.column_stack([rng.normal(20.0, 2.0, 500), rng.normal(22.3, 0.01, 500)])
        buf = io.BytesIO()
        np.savez(buf, samples=samples, meta=np.array(json.dumps({"param_names": names})))
        pkey = app.store.put_bytes(buf.getvalue()).key
        done = Campaign(name="ttv-done", kind="ttv", executor="local", status="done", target_id=other.id,
                        config={"bins": [{"index": 0, "period_min": 22.2, "period_max": 22.4, "model": 1,
                                          "prior_mass": 1.0}]},
                        summary={"posterior": {"param_names": names, "median": [20.0, 22.3],
                                               "q16": [18.0, 22.29], "q84": [22.0, 22.31]}})
        running = Campaign(name="ttv-running", kind="ttv", executor="local", status="running", target_id=other.id,
                           config={"bins": []},
                           summary={})
        s.add_all([done, running])
        s.flush()
        ids["campaign"], ids["running"] = done.id, running.id
        s.add(WorkUnit(campaign_id=done.id, name="wu-done-0", kind="ttv-nested", bin_index=0, spec={}, state="done"))
        s.add(Posterior(campaign_id=done.id, bin_index=None, model="one-perturber", n_runs=2, log_evidence=-12.5,
                        log_evidence_err=0.2, storage_key=pkey,
                        summary={"bins": [{"index": 0, "probability": 1.0}]}))
        s.add(Posterior(campaign_id=done.id, bin_index=0, model="one-perturber", n_runs=2, log_evidence=-12.5,
                        log_evidence_err=0.2, summary={}))
        ids["stack"] = _stack(app, s, t.id, rng)
    ids["admin"] = create_user(app.db, "alice", "admin", PASSWORDS["alice"])
    ids["scientist"] = create_user(app.db, "sam", "scientist", PASSWORDS["sam"])
    return ids


def stack_header() -> dict:
    return {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRPIX1": 32.5, "CRPIX2": 24.5, "CRVAL1": 250.1,
            "CRVAL2": 30.5, "CD1_1": -1e-3, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 1e-3}


def _stack(app, s, target_id: int, rng) -> int:
    from astropy.io import fits

    header = fits.Header(stack_header())
    keys = {}
    for kind, data in (("stacked", rng.normal(100, 5, (48, 64)).astype(np.float32)),
                       ("uncertainty", np.full((48, 64), 5, np.float32)),
                       ("coverage", np.full((48, 64), 3, np.float32))):
        buf = io.BytesIO()
        fits.PrimaryHDU(data, header=header).writeto(buf)
        keys[kind] = app.store.put_bytes(buf.getvalue()).key
    stack = Stack(target_id=target_id, band="V", status="done", n_frames=3,
                  grid={"header": stack_header(), "shape": [48, 64]}, stacked_key=keys["stacked"],
                  uncertainty_key=keys["uncertainty"], coverage_key=keys["coverage"], meta={})
    s.add(stack)
    s.flush()
    return stack.id
