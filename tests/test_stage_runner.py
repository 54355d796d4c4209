"""ingest -> solve -> calibrate through the stage runner: outcomes recorded, idempotent, failures flagged."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from server.core.db.models import Calibration, Instrument, InstrumentCalibration, Observation, PhotometryPoint, StageRun, Target
from server.ingest.service import IngestOptions, ingest_path
from server.ingest.sites import create_site
from server.pipeline.runner import run_pipeline
from server.synth import FrameSpec, render_frame, write_frame
from imgfront_helpers import offline_catalog

pytestmark = pytest.mark.solver

# A wide, short-exposure frame so that Hipparcos stars (which carry B-V) are unsaturated calibrators.
SPEC = FrameSpec(83.8, -5.4, (768, 768), 7.0, rotation_deg=30, zero_point=18.5, color_term=0.10,
                 exptime_s=2.0, fill_from_mag=None, mag_limit=11.0, instrument="DemoCam")


def _ingest_frame(app, tmp_path, site_id, seed, **spec_changes):
    spec = SPEC if not spec_changes else FrameSpec(**{**SPEC.__dict__, **spec_changes})
    frame = render_frame(spec, np.random.default_rng(seed), offline_catalog())
    path = tmp_path / f"frame_{seed}.fits"
    write_frame(frame, path, strip_wcs=True)
    return frame, ingest_path(app, path, IngestOptions(site_id=site_id, target="Orion field"))


def test_frames_are_solved_calibrated_and_the_registry_accumulates(oa_app, tmp_path):
    site = create_site(oa_app.db, "Synthetic Observatory", latitude_deg=28.76, longitude_deg=-17.88, height_m=2300)
    frame, first = _ingest_frame(oa_app, tmp_path, site.id, seed=1)
    _, second = _ingest_frame(oa_app, tmp_path, site.id, seed=2, date_obs="2025-03-16T03:00:00")
    # an unsaturated catalog star of the field (V ~ 9) is the target, so a photometry point is recorded for it
    truth = frame.truth
    ra, dec = truth["ra"].to_numpy(), truth["dec"].to_numpy()

    def isolated(i):  # no star within 2 arcmin that is less than 4 mag fainter
        d = np.hypot((ra - ra[i]) * np.cos(np.radians(dec[i])), dec - dec[i]) * 3600
        return not np.any((d > 0) & (d < 120) & (truth["mag"].to_numpy() < truth["mag"].iloc[i] + 4))

    ny, nx = SPEC.shape
    inside = ((truth["x"] > 20) & (truth["x"] < nx - 20) & (truth["y"] > 20) & (truth["y"] < ny - 20)).to_numpy()
    has_colour = ~truth["color_synthetic"].to_numpy() & inside  # catalog B-V: calibration uses the true colour
    candidates = [i for i in np.argsort(np.abs(truth["mag"].to_numpy() - 9.0)) if has_colour[i] and isolated(i)]
    star = truth.iloc[int(candidates[0])]
    with oa_app.db.session() as s:
        target = s.scalars(select(Target).where(Target.name == "Orion field")).one()
        target.ra_deg, target.dec_deg = float(star["ra"]), float(star["dec"])

    outcomes = run_pipeline(oa_app, [first.observation_id, second.observation_id])
    assert [(o.stage, o.status) for o in outcomes] == [("solve", "ok"), ("calibrate", "ok")] * 2, outcomes

    with oa_app.db.session() as s:
        obs = s.get(Observation, first.observation_id)
        assert obs.status == "calibrated" and not obs.wcs_failed and obs.solved_storage_key
        cals = s.scalars(select(Calibration)).all()
        assert len(cals) == 2
        for cal in cals:  # the injected zero point, within the 0.02 mag
            assert abs(cal.zero_point - SPEC.zero_point) < 0.02, cal.zero_point
        inst = s.scalars(select(Instrument).where(Instrument.camera == "DemoCam")).one()
        assert inst.n_calibrations == 2
        assert len(s.scalars(select(InstrumentCalibration)).all()) == 2
        assert abs(inst.zero_point - SPEC.zero_point) < 0.02
        points = s.scalars(select(PhotometryPoint)).all()
        assert len(points) == 2
        assert all(abs(p.mag - float(star["mag"])) < 3 * p.mag_err for p in points), ([(p.mag, p.mag_err) for p in points], star.to_dict())
        assert len(s.scalars(select(StageRun)).all()) == 4

    # idempotent: a re-run skips what is done and adds nothing
    again = run_pipeline(oa_app, [first.observation_id])
    assert [o.status for o in again] == ["skipped", "skipped"]
    with oa_app.db.session() as s:
        assert len(s.scalars(select(Calibration)).all()) == 2
        assert s.scalars(select(Instrument)).one().n_calibrations == 2


def test_unsolvable_frame_is_flagged_with_a_reason_and_kept(oa_app, tmp_path):
    site = create_site(oa_app.db, "Noise Site")
    empty = FrameSpec(0.0, -89.0, (256, 256), 2.0, fill_from_mag=None, mag_limit=1.0, instrument="NoiseCam")
    from server.image.catalogs import DataFrameCatalog
    import pandas as pd

    frame = render_frame(empty, np.random.default_rng(0),
                         DataFrameCatalog(pd.DataFrame({"ra": [180.0], "dec": [0.0], "mag": [5.0]})))
    path = tmp_path / "noise.fits"
    write_frame(frame, path, strip_wcs=True)
    res = ingest_path(oa_app, path, IngestOptions(site_id=site.id))
    outcomes = run_pipeline(oa_app, [res.observation_id])
    assert [(o.stage, o.status) for o in outcomes] == [("solve", "failed")]
    with oa_app.db.session() as s:
        obs = s.get(Observation, res.observation_id)
        assert obs.wcs_failed and obs.status == "wcs_failed"
        assert "sources" in obs.wcs_failed_reason
        run = s.scalars(select(StageRun)).one()
        assert run.status == "failed" and run.attempts == 1


def test_calibrating_an_unsolved_observation_is_refused_with_the_reason(oa_app, tmp_path):
    site = create_site(oa_app.db, "Impatient Site")
    _, res = _ingest_frame(oa_app, tmp_path, site.id, seed=5)
    outcomes = run_pipeline(oa_app, [res.observation_id], stages=("calibrate",))
    assert outcomes[0].status == "failed" and "solve it first" in outcomes[0].message


def test_unknown_stage_name_is_refused(oa_app):
    with pytest.raises(ValueError, match="unknown stage"):
        run_pipeline(oa_app, [1], stages=("deconvolve",))


def test_an_integer_camera_frame_is_stored_rice_compressed_and_still_solves_and_calibrates(oa_app, tmp_path):
    """Most amateur cameras write uint16 frames: ingest stores them RICE-compressed (server.ingest.compress), and
    every later stage must read the compressed object as it read the original."""
    from astropy.io import fits

    from server.ingest.compress import is_compressed_original

    site = create_site(oa_app.db, "Integer Observatory", latitude_deg=28.76, longitude_deg=-17.88, height_m=2300)
    frame = render_frame(SPEC, np.random.default_rng(5), offline_catalog())
    path = tmp_path / "frame_uint16.fits"
    counts = np.clip(np.rint(frame.data), 0, 65535).astype(np.uint16)
    fits.PrimaryHDU(data=counts, header=frame.header_nowcs).writeto(path)
    result = ingest_path(oa_app, path, IngestOptions(site_id=site.id, target="Orion field"))
    with oa_app.db.session() as s:
        obs = s.get(Observation, result.observation_id)
        assert is_compressed_original(oa_app.store.path(obs.storage_key))
        assert oa_app.store.path(obs.storage_key).stat().st_size < path.stat().st_size

    outcomes = run_pipeline(oa_app, [result.observation_id])
    assert [(o.stage, o.status) for o in outcomes] == [("solve", "ok"), ("calibrate", "ok")], outcomes
    with oa_app.db.session() as s:
        cal = s.scalars(select(Calibration)).one()
        assert abs(cal.zero_point - SPEC.zero_point) < 0.03, cal.zero_point  # rounding to counts adds < 0.3 ADU noise
