"""Synthetic frames: known WCS, known fluxes, known noise; reproducible; written atomically."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from server.image.catalogs import DataFrameCatalog
from server.image.fitsimage import is_wcs_keyword
from server.synth import FrameSpec, make_wcs, render_frame, write_frame
from imgfront_helpers import offline_catalog


def _isolated_catalog(rng, spec, n=25, mag=(11.0, 13.0)):
    """Stars on a jittered grid well inside the frame (isolated), known colours."""
    wcs = make_wcs(spec)
    ny, nx = spec.shape
    k = int(np.sqrt(n))
    gx, gy = np.meshgrid(np.linspace(0.15, 0.85, k) * nx, np.linspace(0.15, 0.85, k) * ny)
    x = gx.ravel() + rng.uniform(-2, 2, gx.size)
    y = gy.ravel() + rng.uniform(-2, 2, gy.size)
    ra, dec = wcs.all_pix2world(x, y, 0)
    return pd.DataFrame({"ra": ra, "dec": dec, "mag": rng.uniform(*mag, ra.size),
                         "color": rng.uniform(0.0, 1.5, ra.size)})


def test_same_seed_gives_identical_frames_and_other_seeds_differ():
    spec = FrameSpec(83.8, -5.4, (256, 320), 6.0, rotation_deg=30)
    cat = offline_catalog()
    a = render_frame(spec, np.random.default_rng(5), cat)
    b = render_frame(spec, np.random.default_rng(5), cat)
    c = render_frame(spec, np.random.default_rng(6), cat)
    assert a.data.dtype == np.float32 and a.data.shape == (256, 320)
    np.testing.assert_array_equal(a.data, b.data)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert not np.array_equal(a.data, c.data)


def test_real_catalog_stars_are_rendered_at_their_wcs_positions():
    spec = FrameSpec(56.75, 24.12, (512, 512), 10.0, rotation_deg=-20, fill_from_mag=None, mag_limit=11)
    f = render_frame(spec, np.random.default_rng(1), offline_catalog())
    real = f.truth[f.truth["in_frame"]]
    assert (real["origin"] == "gaia-dr3+hip2").sum() > 20  # the Pleiades
    x, y = WCS(f.header).all_world2pix(real["ra"], real["dec"], 0)
    np.testing.assert_allclose(x, real["x"], atol=1e-6)
    np.testing.assert_allclose(y, real["y"], atol=1e-6)
    # the brightest unsaturated-or-not star's peak pixel sits where the truth says
    star = real.sort_values("mag").iloc[0]
    iy, ix = int(round(star["y"])), int(round(star["x"]))
    patch = f.data[iy - 3:iy + 4, ix - 3:ix + 4]
    assert patch.max() >= f.spec.sky_adu + 0.5 * min(star["peak_adu"], spec.saturation_adu - spec.sky_adu)


@pytest.mark.parametrize("rotation,flip", [(0.0, False), (37.0, False), (200.0, True)])
def test_wcs_has_the_requested_scale_rotation_and_parity(rotation, flip):
    spec = FrameSpec(210.0, 54.3, (128, 160), 2.5, rotation_deg=rotation, flip=flip, fill_from_mag=None)
    f = render_frame(spec, np.random.default_rng(0), DataFrameCatalog(
        pd.DataFrame({"ra": [210.0], "dec": [54.3], "mag": [12.0]})))
    cd = f.wcs.wcs.cd
    assert np.sqrt(abs(np.linalg.det(cd))) * 3600 == pytest.approx(2.5)
    assert (np.linalg.det(cd) > 0) == flip  # sky seen normally has east left of north: det < 0
    # north (increasing dec) direction on the pixel grid
    x0, y0 = f.wcs.all_world2pix([210.0], [54.3], 0)
    x1, y1 = f.wcs.all_world2pix([210.0], [54.31], 0)
    angle = np.degrees(np.arctan2((x1 - x0)[0], (y1 - y0)[0])) % 360  # from +y towards +x
    expected = (rotation if not flip else -rotation) % 360
    assert min(abs(angle - expected), 360 - abs(angle - expected)) < 0.01


def test_injected_fluxes_follow_the_documented_photometric_model():
    spec = FrameSpec(120.0, 10.0, (400, 400), 2.0, fwhm_px=3.0, zero_point=21.0, color_term=0.2,
                     exptime_s=30.0, sky_adu=200.0, fill_from_mag=None, saturation_adu=1e9)
    rng = np.random.default_rng(11)
    cat = _isolated_catalog(rng, spec)
    f = render_frame(spec, np.random.default_rng(12), DataFrameCatalog(cat))
    t = f.truth
    expected = spec.exptime_s * 10 ** (-0.4 * (t["mag"] - spec.zero_point - spec.color_term * t["color"]))
    np.testing.assert_allclose(t["flux_adu"], expected, rtol=1e-12)
    np.testing.assert_allclose(t["inst_mag"] + spec.zero_point + spec.color_term * t["color"], t["mag"], atol=1e-9)
    # measured: sum in a 6-FWHM box minus sky, against the truth within 5 sigma of the noise
    yy, xx = np.mgrid[0:400, 0:400]
    for _, s in t.iterrows():
        box = (np.abs(xx - s["x"]) <= 9) & (np.abs(yy - s["y"]) <= 9)
        measured = f.data[box].sum() - spec.sky_adu * box.sum()
        var_e = (s["flux_adu"] + spec.sky_adu * box.sum()) * spec.gain_e_per_adu + box.sum() * spec.read_noise_e**2
        sigma_adu = np.sqrt(var_e) / spec.gain_e_per_adu
        assert abs(measured - s["flux_adu"]) < 5 * sigma_adu


def test_background_noise_matches_poisson_sky_plus_read_noise():
    spec = FrameSpec(120.0, 10.0, (300, 300), 2.0, sky_adu=900.0, gain_e_per_adu=2.0, read_noise_e=12.0,
                     fill_from_mag=None)
    f = render_frame(spec, np.random.default_rng(3), DataFrameCatalog(
        pd.DataFrame({"ra": [0.0], "dec": [-60.0], "mag": [10.0]})))  # star far outside: empty frame
    expected = np.sqrt(900.0 * 2.0 + 12.0**2) / 2.0
    assert np.mean(f.data) == pytest.approx(900.0, abs=0.2)
    assert np.std(f.data) == pytest.approx(expected, rel=0.02)
    assert len(f.truth) == 0


def test_saturation_cosmic_rays_and_trail_are_injected():
    base = FrameSpec(56.75, 24.12, (256, 256), 12.0, fill_from_mag=None, mag_limit=9, saturation_adu=30000.0)
    clean = render_frame(base, np.random.default_rng(2), offline_catalog())
    assert clean.data.max() == pytest.approx(30000.0)
    assert clean.truth["saturated"].any()
    dirty = render_frame(base.with_(n_cosmic_rays=30, satellite_trail_adu=500.0), np.random.default_rng(2),
                         offline_catalog())
    assert (dirty.data - clean.data > 400).sum() > 100  # trail + cosmic rays


def test_faint_fill_is_documented_synthetic_and_follows_the_slope():
    spec = FrameSpec(280.0, -20.0, (1024, 1024), 7.0, mag_limit=16.0, fill_from_mag=12.0)
    f = render_frame(spec, np.random.default_rng(4), offline_catalog())
    synth = f.truth[f.truth["origin"] == "synthetic"]
    assert len(synth) > 500
    assert synth["mag"].between(12.0, 16.0).all() and synth["color_synthetic"].all()
    n1 = synth["mag"].between(14, 15).sum()
    n2 = synth["mag"].between(15, 16).sum()
    assert n2 / n1 == pytest.approx(10**0.3, rel=0.2)  # dN/dm ~ 10^(0.3 m)


def test_header_keywords_and_stripped_header(tmp_path):
    spec = FrameSpec(300.0, 35.0, (64, 96), 3.0, band="R", exptime_s=45.0, binning=2, fill_from_mag=None)
    f = render_frame(spec, np.random.default_rng(0), offline_catalog())
    for key in ("DATE-OBS", "EXPTIME", "FILTER", "INSTRUME", "TELESCOP", "GAIN", "XBINNING"):
        assert key in f.header_nowcs
    assert f.header["FILTER"] == "R" and f.header["EXPTIME"] == 45.0 and f.header["XBINNING"] == 2
    assert not [k for k in f.header_nowcs if is_wcs_keyword(k)]
    assert not WCS(f.header_nowcs).has_celestial
    path = tmp_path / "out" / "frame.fits"
    write_frame(f, path)
    write_frame(f, tmp_path / "frame_wcs.fits", strip_wcs=False)
    with fits.open(path) as h:
        np.testing.assert_array_equal(h[0].data, f.data)
        assert "CTYPE1" not in h[0].header and h[0].header["INSTRUME"] == spec.instrument
    with fits.open(tmp_path / "frame_wcs.fits") as h:
        w = WCS(h[0].header)
        np.testing.assert_allclose(w.all_pix2world([[10, 20]], 0), f.wcs.all_pix2world([[10, 20]], 0), atol=1e-10)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["frame.fits"]  # no temp file left


@pytest.mark.parametrize("field,value", [("dec_deg", 91.0), ("pixel_scale_arcsec", 0.0), ("shape", (8, 8)),
                                         ("gain_e_per_adu", -1.0), ("exptime_s", 0.0), ("fwhm_px", 0.1)])
def test_frame_spec_rejects_out_of_range_values_naming_them(field, value):
    kwargs = {"ra_deg": 10.0, "dec_deg": 20.0, field: value}
    with pytest.raises(ValueError, match=field):
        FrameSpec(**kwargs)


def test_render_requires_an_explicit_generator():
    with pytest.raises(TypeError, match="Generator"):
        render_frame(FrameSpec(10.0, 20.0, (32, 32)), 42, offline_catalog())
