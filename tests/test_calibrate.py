"""Photometric calibration: inject a zero point and colour term into synthetic frames, recover them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from server.image.calibrate import CalibrationError, calibrate_frame, fit_zero_point, update_instrument_registry
from server.image.catalogs import DataFrameCatalog
from server.synth import FrameSpec, render_frame, write_frame
from imgfront_helpers import offline_catalog

ZP_TOLERANCE = 0.02  # mag, the requirement
K_SIGMA = 3.0  # colour term must be within K_SIGMA fitted standard errors of the truth

# (spec, which catalog calibrates it): "truth" = the frame's own star list (real positions + faint
# synthetic stars with drawn colours); "real" = the offline Gaia/Hipparcos catalog, B-V from Hipparcos.
CASES = {
    "truth-orion-3as": (FrameSpec(83.8, -5.4, (1024, 1024), 3.0, rotation_deg=20, zero_point=21.3, color_term=0.12),
                        "truth"),
    "truth-sgr-1.5as-negative-ct": (FrameSpec(280.0, -20.0, (768, 768), 1.5, zero_point=20.5, color_term=-0.07,
                                              exptime_s=30.0, fwhm_px=2.6), "truth"),
    "truth-high-latitude-flipped": (FrameSpec(150.0, 30.0, (768, 768), 2.5, rotation_deg=140, flip=True,
                                              zero_point=22.0, color_term=0.03, sky_adu=1500.0), "truth"),
    "real-bundled-orion-2deg": (FrameSpec(83.8, -5.4, (1024, 1024), 7.0, zero_point=18.5, color_term=0.10,
                                          exptime_s=2.0, fill_from_mag=None, mag_limit=11.0), "real"),
}


def _frame_file(tmp_path, spec, seed):
    frame = render_frame(spec, np.random.default_rng(seed), offline_catalog())
    path = tmp_path / "frame.fits"
    write_frame(frame, path, strip_wcs=False)
    return frame, path


@pytest.mark.parametrize("name", list(CASES))
def test_calibration_recovers_injected_zero_point_and_colour_term(name, tmp_path):
    spec, which = CASES[name]
    frame, path = _frame_file(tmp_path, spec, seed=sum(map(ord, name)))
    catalog = DataFrameCatalog(frame.truth) if which == "truth" else offline_catalog()
    r = calibrate_frame(path, catalog)
    assert abs(r.zero_point - spec.zero_point) < ZP_TOLERANCE, (r.zero_point, r.zero_point_err)
    assert abs(r.color_term - spec.color_term) < K_SIGMA * r.color_term_err, (r.color_term, r.color_term_err)
    assert r.color_term_err < 0.1 and r.catalog_matches >= 5
    assert r.band == "V" and r.color_name == "B-V"
    assert r.fwhm_px == pytest.approx(spec.fwhm_px, rel=0.15)
    src = r.calibrated_sources
    cal = src[src["used_in_fit"]]
    assert len(cal) == r.catalog_matches and not cal["saturated"].any()
    # calibrated magnitudes of the fit stars reproduce the catalog within the frame's scatter
    assert np.sqrt(np.mean((cal["mag"] - cal["catalog_mag"]) ** 2)) == pytest.approx(r.scatter_mag, rel=1e-6)
    d = r.as_dict()
    assert {"zero_point", "color_term", "scatter_mag", "catalog_matches", "calibrated_sources"} <= set(d)
    assert isinstance(d["calibrated_sources"], list)


def test_fitted_errors_are_calibrated_over_many_noise_realisations():
    # one harness, 200 synthetic calibration sets: pulls of ZP and CT must be unit normal
    rng = np.random.default_rng(2024)
    pulls_zp, pulls_ct = [], []
    for _ in range(200):
        n = 40
        color = rng.uniform(-0.1, 1.6, n)
        err = rng.uniform(0.01, 0.05, n)
        dmag = 21.0 + 0.08 * color + rng.normal(0, err)
        fit = fit_zero_point(dmag, err, color)
        pulls_zp.append((fit.zero_point - 21.0) / fit.zero_point_err)
        pulls_ct.append((fit.color_term - 0.08) / fit.color_term_err)
    for pulls in (np.array(pulls_zp), np.array(pulls_ct)):
        assert abs(pulls.mean()) < 0.25
        assert 0.8 < pulls.std() < 1.2


def test_sigma_clip_rejects_outliers_and_keeps_the_fit():
    rng = np.random.default_rng(5)
    color = rng.uniform(0, 1.5, 60)
    dmag = 20.0 + 0.1 * color + rng.normal(0, 0.02, 60)
    dmag[:5] += np.array([0.5, -0.8, 1.2, 0.3, -0.4])  # variables, blends, cosmic rays
    fit = fit_zero_point(dmag, np.full(60, 0.02), color)
    assert not fit.used[:5].any() and fit.used[5:].sum() >= 52
    assert fit.zero_point == pytest.approx(20.0, abs=0.02)
    assert fit.color_term == pytest.approx(0.1, abs=3 * fit.color_term_err)


def test_fixed_colour_term_fits_only_the_zero_point():
    color = np.linspace(0, 1.5, 20)
    dmag = 19.0 + 0.2 * color
    fit = fit_zero_point(dmag, np.full(20, 0.01), color, color_term=0.2)
    assert fit.zero_point == pytest.approx(19.0) and fit.color_term == 0.2 and fit.color_term_err == 0.0


def test_too_few_catalog_stars_is_a_clear_error(tmp_path):
    spec = FrameSpec(150.0, 30.0, (512, 512), 2.0, fill_from_mag=None)
    frame, path = _frame_file(tmp_path, spec, seed=1)
    two = frame.truth[frame.truth["in_frame"]].head(2)
    with pytest.raises(CalibrationError, match=r"too few catalog stars to calibrate: \d+ usable \(need >= 5\)"):
        calibrate_frame(path, DataFrameCatalog(two))


def test_frame_without_wcs_or_exptime_is_refused(tmp_path):
    spec = FrameSpec(83.8, -5.4, (256, 256), 3.0, fill_from_mag=None)
    frame = render_frame(spec, np.random.default_rng(0), offline_catalog())
    write_frame(frame, tmp_path / "nowcs.fits")
    with pytest.raises(CalibrationError, match="no celestial WCS"):
        calibrate_frame(tmp_path / "nowcs.fits", offline_catalog())
    header = frame.header.copy()
    del header["EXPTIME"]
    fits.PrimaryHDU(frame.data, header).writeto(tmp_path / "noexp.fits")
    with pytest.raises(CalibrationError, match="EXPTIME"):
        calibrate_frame(tmp_path / "noexp.fits", offline_catalog())


def test_not_a_fits_file_raises_value_error(tmp_path):
    (tmp_path / "x.fits").write_bytes(b"\x89PNG\r\n" + bytes(100))
    with pytest.raises(ValueError, match="not a FITS file"):
        calibrate_frame(tmp_path / "x.fits", offline_catalog())


def test_instrument_registry_accumulates_history_across_frames(tmp_path):
    from server.core.db import Database
    from server.core.db.models import Instrument, InstrumentCalibration, Site

    db = Database(f"sqlite:///{tmp_path / 'reg.db'}")
    db.create_all()
    with db.session() as s:
        site = Site(name="Test Obs")
        s.add(site)
        s.flush()
        site_id = site.id
    results = []
    for i, (zp, seed) in enumerate([(21.0, 1), (21.05, 2)]):
        spec = FrameSpec(83.8, -5.4, (768, 768), 3.0, zero_point=zp, color_term=0.1)
        frame, path = _frame_file(tmp_path, spec, seed=seed)
        r = calibrate_frame(path, DataFrameCatalog(frame.truth))
        results.append(r)
        with db.session() as s:
            update_instrument_registry(s, site_id, "SynthCam 1", r, telescope="Synthetic 200mm",
                                       pixel_scale_arcsec=3.0)
    with db.session() as s:
        inst = s.query(Instrument).one()
        hist = s.query(InstrumentCalibration).order_by(InstrumentCalibration.id).all()
        assert inst.n_calibrations == 2 and len(hist) == 2
        assert [h.zero_point for h in hist] == [r.zero_point for r in results]
        w = np.array([1 / r.zero_point_err**2 for r in results])
        expected = np.sum(w * [r.zero_point for r in results]) / w.sum()
        assert inst.zero_point == pytest.approx(expected)
        assert inst.zero_point_err == pytest.approx(1 / np.sqrt(w.sum()))
        assert inst.pixel_scale_arcsec == 3.0 and inst.telescope == "Synthetic 200mm"
    with db.session() as s, pytest.raises(ValueError, match="camera"):
        update_instrument_registry(s, site_id, "  ", results[0])


@pytest.mark.solver
def test_solved_frame_calibrates_like_the_true_wcs_frame(tmp_path):
    import shutil

    from server.image.solve import plate_solve

    if shutil.which("solve-field") is None:
        pytest.skip("astrometry.net solve-field is required")
    spec = FrameSpec(83.8, -5.4, (768, 768), 3.0, rotation_deg=-25, zero_point=20.8, color_term=0.06)
    frame = render_frame(spec, np.random.default_rng(77), offline_catalog())
    write_frame(frame, tmp_path / "raw.fits")  # WCS stripped, as an upload would arrive
    solved = plate_solve(str(tmp_path / "raw.fits"), scale_hint=3.0, timeout_s=60, catalog=offline_catalog(),
                         use_header_pointing=True, workdir=tmp_path)
    assert solved.success, solved.reason
    r = calibrate_frame(solved.solved_path, DataFrameCatalog(frame.truth))
    assert abs(r.zero_point - spec.zero_point) < ZP_TOLERANCE
    assert abs(r.color_term - spec.color_term) < K_SIGMA * r.color_term_err
