"""Flux normalisation: common unit, background subtraction, SNR^2 weight, masks."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from imgback_frames import common_flux, heterogeneous_specs, render, star_table
from server.image.normalise import COMMON_ZERO_POINT, flux_scale, input_weight, normalise_frame, normalise_image


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(42)
    stars = star_table(rng)
    specs = heterogeneous_specs(2, rng, shape=(220, 220))
    return render(specs, rng, stars)


def test_flux_scale_puts_a_zero_point_25_star_at_one_unit_per_second():
    assert COMMON_ZERO_POINT == 25.0
    assert flux_scale(25.0, 1.0) == pytest.approx(1.0)
    # ZP 20 means 1 ADU/s is a mag-20 star, i.e. 10**(0.4*5) = 100 common units
    assert flux_scale(20.0, 1.0) == pytest.approx(100.0)
    assert flux_scale(20.0, 50.0) == pytest.approx(2.0)


def test_normalised_frames_measure_star_fluxes_in_the_common_unit(frames):
    import sep

    for f in frames.frames:
        res = normalise_frame(f.data, zero_point=f.spec.zero_point, exptime_s=f.spec.exptime_s)
        t = f.truth
        ny, nx = f.data.shape
        sel = (t["mag"] < 14) & (t["x"] > 15) & (t["x"] < nx - 15) & (t["y"] > 15) & (t["y"] < ny - 15)
        assert sel.sum() >= 4
        flux, _, _ = sep.sum_circle(np.nan_to_num(res.data), t["x"][sel].to_numpy(), t["y"][sel].to_numpy(),
                                    4.0 * f.spec.fwhm_px)
        # colour 0 stars: truth in the common unit does not depend on the frame; one frame's photon
        # and sky noise in the aperture is 0.5-1 %, so 3 % is a 3-sigma bound per star
        ratio = flux / common_flux(t["mag"][sel].to_numpy())
        assert np.all(np.abs(ratio - 1) < 0.03), ratio
        assert abs(np.mean(ratio) - 1) < 0.01
        # background removed: the sky median is ~0 within a tenth of the noise
        assert abs(np.nanmedian(res.data)) < 0.1 * res.sky_noise


def test_snr2_weight_is_the_inverse_square_of_the_measured_sky_noise(frames):
    f = frames.frames[0]
    res = normalise_frame(f.data, zero_point=f.spec.zero_point, exptime_s=f.spec.exptime_s)
    # expected sky noise [ADU]: Poisson on sky electrons plus read noise, over the gain
    s = f.spec
    expected_adu = np.sqrt(s.sky_adu * s.gain_e_per_adu + s.read_noise_e**2) / s.gain_e_per_adu
    assert res.background_rms == pytest.approx(expected_adu, rel=0.03)
    assert res.background == pytest.approx(s.sky_adu, rel=0.02)
    assert res.sky_noise == pytest.approx(res.background_rms * res.scale)
    assert res.snr_weight == pytest.approx(1.0 / res.sky_noise**2)
    assert np.allclose(res.weight[np.isfinite(res.data)], res.snr_weight)


def test_saturated_nan_and_masked_pixels_get_zero_weight():
    data = np.full((30, 30), 100.0, np.float32)
    data[10, 10] = 65000.0
    data[20, 5] = np.nan
    mask = np.zeros((30, 30), bool)
    mask[0, :] = True
    w = input_weight(data, saturation_adu=60000.0, mask=mask)
    assert w[10, 10] == 0 and w[9, 10] == 0 and w[11, 11] == 0  # grown by one pixel
    assert w[20, 5] == 0 and np.all(w[0] == 0)
    assert w[15, 15] == 1.0 and (w == 0).sum() == 9 + 1 + 30


def test_normalise_image_writes_frame_and_weight_with_provenance(tmp_path, frames):
    f = frames.frames[1]
    path = tmp_path / "f.fits"
    fits.PrimaryHDU(f.data, header=f.header).writeto(path)
    out = normalise_image(str(path), zero_point=f.spec.zero_point)
    hdr = fits.getheader(out["path"])
    assert hdr["BUNIT"] == "F25" and hdr["MAGZP"] == f.spec.zero_point
    assert hdr["FLXSCALE"] == pytest.approx(flux_scale(f.spec.zero_point, f.spec.exptime_s))
    w = fits.getdata(out["weight_path"])
    assert np.allclose(w, out["snr_weight"])


def test_bad_calibration_inputs_are_refused():
    with pytest.raises(ValueError, match="zero_point"):
        flux_scale(float("nan"), 10.0)
    with pytest.raises(ValueError, match="exptime_s"):
        flux_scale(21.0, 0.0)
    with pytest.raises(ValueError, match="no valid pixel"):
        normalise_frame(np.full((20, 20), np.nan, np.float32), zero_point=21.0, exptime_s=10.0)
