"""Campaigns end to end on the local executor: app in slot-like dirs, validator and assimilator as BOINC runs them.

TTV: a synthetic Kepler-88-like system (app.ttv.synthetic.kepler88_like: perturber 0.65 M_J = 206.6 Earth
masses at 22.3 d), 3 free parameters (perturber mass, period, conjunction time), two period bins (the true
one and a wrong one), nlive 30, dlogz 0.5, two replicas per work unit. Compared with the direct local run of
the same bins (run_ttv_task per bin + combine_bins, as server.ttv.inference does): the posteriors agree
within their statistical errors and recover the perturber.

Images: two small rotated/rescaled TAN frames, tiles of one output grid, assembled frames compared with the
whole-frame reprojection (app.reproject_kernel.reproject_array).
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from server.boinc.campaigns import (campaign_status, create_campaign, create_stack_campaign, export_posterior,
                              load_posterior, run_campaign)
from server.core.db.models import Result, Stack, WorkUnit
from server.boinc.executors import LocalExecutor
from work_generator.sizing import resources_from_model

pytestmark = pytest.mark.slow

TRUE_MASS = 0.65 * 317.8284065946748  # Earth masses
TRUE_PERIOD = 22.3


def small_estimate(kind, params):
    """Test work units are tiny; the production cost model sizes real ones (app.costmodel)."""
    return resources_from_model(60.0, 3e8, 2e7)


def small_ttv_campaign_config() -> dict:
    """The Kepler-88-like system of tests/app_workunits.py (30 transits of b, sigma 1-2 min), perturber mass,
    period and conjunction time free (the rest fixed at the truth), two period bins: the true one and a wrong
    one. nlive 30, dlogz 0.5: ~20 s per nested run."""
    from app_workunits import _ttv_likelihood

    likelihood = _ttv_likelihood(7, 30)
    likelihood["prior"]["planets"][1]["period"] = {"dist": "uniform", "min": 22.25, "max": 22.45}
    return {"kind": "ttv", "likelihood": likelihood, "perturber": "c", "replicas": 2,
            "sampler": {"name": "dynesty", "nlive": 30, "sample": "rwalk", "dlogz": 0.5},
            "bins": [{"index": 0, "period_min": 22.25, "period_max": 22.35, "prior_mass": 0.5},
                     {"index": 1, "period_min": 22.35, "period_max": 22.45, "prior_mass": 0.5}]}


def direct_local_run(config: dict, seed: int):
    """What server.ttv.inference.run_ttv_inference does with these bins: run_ttv_task per bin, combine_bins."""
    from app.ttv.combine import combine_bins
    from app.ttv.task import run_ttv_task
    from work_generator.plan import bin_prior

    runs = {}
    for b in config["bins"]:
        likelihood = dict(config["likelihood"])
        likelihood["prior"] = bin_prior(likelihood["prior"], "c", (b["period_min"], b["period_max"]))
        params = {"likelihood": likelihood, "sampler": config["sampler"], "label": {}}
        runs[b["index"]] = [run_ttv_task(params, [seed, b["index"]], None)]
    return combine_bins(config["bins"], runs, np.random.default_rng(seed), n_samples=4000)


def _mean_sd(samples, names, name):
    k = names.index(name)
    return float(np.mean(samples[:, k])), float(np.std(samples[:, k]))


def test_ttv_campaign_runs_end_to_end_and_matches_the_direct_local_run(oa_app, tmp_path):
    from work_generator.generate import materialise

    config = small_ttv_campaign_config()
    cid = create_campaign(oa_app, "e2e-ttv", "ttv", config, seed=11)
    materialise(oa_app, cid, estimate=small_estimate)
    logs = []
    executor = LocalExecutor(oa_app, echo=logs.append)
    progress = run_campaign(oa_app, cid, executor=executor)
    assert progress.error == 0 and progress.done == 2, logs
    assert progress.replicas_run == 4  # bins x 2 replicas
    status = campaign_status(oa_app, cid)
    assert status.status == "done" and status.counts == {"done": 2}
    with oa_app.db.session() as session:
        results = session.query(Result).all()
        assert len(results) == 4 and all(r.validate_state == "valid" for r in results)
        assert {w.boinc_wu_id for w in session.query(WorkUnit)} == {w.id for w in session.query(WorkUnit)}
    names, samples, summary = load_posterior(oa_app, cid)
    probs = {b["index"]: b["probability"] for b in summary["bins"]}
    assert probs[0] > 0.99  # the true bin carries the evidence
    m, sm = _mean_sd(samples, names, "c.mass")
    p, sp = _mean_sd(samples, names, "c.period")
    assert abs(m - TRUE_MASS) < 3 * sm and abs(p - TRUE_PERIOD) < 3 * sp  # the perturber is recovered

    direct = direct_local_run(config, seed=99)
    dnames = list(direct.param_names)
    for name, (mean, sd) in (("c.mass", (m, sm)), ("c.period", (p, sp))):
        dm, ds = _mean_sd(direct.samples, dnames, name)
        # two independent nlive-30 runs: means agree within 4 standard errors (ESS ~ nlive) plus 0.1 sd
        tol = 4 * np.hypot(sd, ds) / np.sqrt(30) + 0.1 * np.hypot(sd, ds)
        assert abs(mean - dm) < tol, (name, mean, dm, tol)
    assert summary["log_evidence"] == pytest.approx(direct.log_z, abs=4 * np.hypot(summary["log_evidence_err"],
                                                                                     direct.log_z_err))
    out = tmp_path / "post.csv"
    export_posterior(oa_app, cid, "csv", out)
    assert out.read_text().splitlines()[0] == ",".join(names)


def _tan(crval, scale_arcsec, rot_deg, shape):
    c, s = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    d = scale_arcsec / 3600.0
    return {"NAXIS": 2, "NAXIS1": shape[1], "NAXIS2": shape[0], "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN",
            "CUNIT1": "deg", "CUNIT2": "deg", "CRVAL1": crval[0], "CRVAL2": crval[1],
            "CRPIX1": (shape[1] + 1) / 2.0, "CRPIX2": (shape[0] + 1) / 2.0,
            "CD1_1": -d * c, "CD1_2": d * s, "CD2_1": d * s, "CD2_2": d * c}


def _frame(rng, shape, header):
    from astropy.io import fits

    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    image = 50.0 + 0.02 * xx + rng.normal(0, 1.0, shape)
    for _ in range(25):
        y0, x0 = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        image += rng.uniform(100, 800) * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / 8.0)
    buffer = io.BytesIO()
    fits.PrimaryHDU(image.astype(np.float32), header=fits.Header(header)).writeto(buffer)
    return image.astype(np.float32), buffer.getvalue()


def test_image_campaign_tiles_assemble_into_the_whole_frame_reprojection_and_stack(oa_app):
    from work_generator.generate import materialise

    from app.reproject_kernel import reproject_array

    rng = np.random.default_rng(2)
    grid_shape = (200, 200)
    grid = _tan((150.0, 2.0), 2.0, 0.0, grid_shape)
    frames, keys = [], []
    for rot, scale in ((8.0, 1.8), (-5.0, 2.3)):
        header = _tan((150.002, 1.999), scale, rot, (220, 220))
        data, blob = _frame(rng, (220, 220), header)
        frames.append((data, header))
        keys.append({"key": oa_app.store.put_bytes(blob).key, "zero_point": 22.0, "exptime_s": 60.0})
    # quorum 1 here (the TTV test covers quorum 2): tiles are deterministic and each replica is a process
    cid = create_stack_campaign(oa_app, keys, grid, grid_shape, tile=100, replicas=1, seed=3)
    report, _ = materialise(oa_app, cid, estimate=lambda kind, params: resources_from_model(2.0, 3e8, 2e7))
    assert report.inserted >= 2
    logs = []
    progress = run_campaign(oa_app, cid, executor=LocalExecutor(oa_app, echo=logs.append))
    assert progress.error == 0 and progress.done == report.inserted, logs
    with oa_app.db.session() as session:
        stack = session.query(Stack).filter_by(campaign_id=cid).one()
        assert stack.status == "done" and stack.n_frames == 2, logs
        meta = stack.meta
        stacked_key = stack.stacked_key
    from astropy.io import fits

    for index, (data, header) in enumerate(frames):
        whole = reproject_array(data, np.ones_like(data), header, grid, grid_shape, conserve_flux=True)
        with fits.open(oa_app.store.path(meta["frames"][str(index)]["reprojected_key"])) as hdul:
            assembled = hdul[0].data
        # bitwise: the kernel anchors its node grid to the global output grid, and the work generator hands every
        # tile the whole frame's mapping step, so tiles equal the whole frame exactly
        np.testing.assert_array_equal(assembled, whole.data)
    with fits.open(oa_app.store.path(stacked_key)) as hdul:
        assert hdul[0].data.shape == grid_shape
