"""The reprojection kernel: mapping error bound, tiles == whole frame, NaN handling, flux, accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from app.reproject_kernel import (
    as_wcs,
    cutout_for_tile,
    exact_mapping,
    interpolated_mapping,
    plan_mapping,
    reproject_array,
    reproject_tile,
)


def tan_wcs(ra, dec, scale_arcsec, rot_deg, shape, *, sip=0.0):
    """TAN WCS centred on the frame; ``sip`` adds a radial-ish 2nd/3rd-order SIP distortion [px at edge]."""
    ny, nx = shape
    s = scale_arcsec / 3600.0
    c, sn = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    fx = -1.0  # east to the left
    h = fits.Header()
    h["NAXIS"], h["NAXIS1"], h["NAXIS2"] = 2, nx, ny
    h["CTYPE1"], h["CTYPE2"] = ("RA---TAN-SIP", "DEC--TAN-SIP") if sip else ("RA---TAN", "DEC--TAN")
    h["CRVAL1"], h["CRVAL2"] = ra, dec
    h["CRPIX1"], h["CRPIX2"] = nx / 2 + 0.5, ny / 2 + 0.5
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = fx * s * c, -fx * s * sn, s * sn, s * c
    if sip:
        r = max(nx, ny) / 2.0
        h["A_ORDER"] = h["B_ORDER"] = 3
        h["A_2_0"], h["A_0_2"], h["B_1_1"] = sip / r**2, 0.5 * sip / r**2, 0.7 * sip / r**2
        h["A_3_0"], h["B_0_3"], h["A_1_2"] = 0.6 * sip / r**3, 0.8 * sip / r**3, 0.3 * sip / r**3
    return h


def smooth_image(shape, rng=None):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (5.0 + np.sin(xx / 23.0) + np.cos(yy / 17.0) + 0.3 * np.sin((xx + yy) / 41.0)).astype(np.float32)


IN_SHAPE = (300, 340)
OUT_SHAPE = (320, 300)


@pytest.fixture
def wcs_pair():
    win = tan_wcs(150.0, 30.0, 2.1, 17.0, IN_SHAPE, sip=3.0)
    wout = tan_wcs(150.004, 30.003, 1.9, 0.0, OUT_SHAPE)
    return win, wout


def test_interpolated_mapping_error_is_below_tolerance_at_every_pixel(wcs_pair):
    win, wout = wcs_pair
    plan = plan_mapping(win, wout, (0, OUT_SHAPE[0], 0, OUT_SHAPE[1]), (0, IN_SHAPE[0], 0, IN_SHAPE[1]))
    assert plan.step > 1 and plan.n_checked > 100
    assert plan.max_error_px <= 0.01
    rows, cols = np.arange(OUT_SHAPE[0]), np.arange(OUT_SHAPE[1])
    yi, xi = interpolated_mapping(as_wcs(wout), as_wcs(win), plan.step, rows, cols)
    gy, gx = np.meshgrid(rows.astype(float), cols.astype(float), indexing="ij")
    ye, xe = exact_mapping(as_wcs(wout), as_wcs(win), gy, gx)
    on = (ye > -1) & (ye < IN_SHAPE[0]) & (xe > -1) & (xe < IN_SHAPE[1])
    err = np.hypot(yi - ye, xi - xe)[on]
    # the half-step check bounds the error everywhere (stated target 0.01 px)
    assert err.max() <= 0.01
    assert err.max() <= 2 * max(plan.max_error_px, 1e-9)


def test_plan_refines_the_step_when_the_distortion_is_strong():
    shape = (400, 400)
    win = tan_wcs(10.0, -40.0, 3.0, 30.0, shape, sip=60.0)
    wout = tan_wcs(10.0, -40.0, 3.0, 0.0, shape)
    weak = plan_mapping(tan_wcs(10.0, -40.0, 3.0, 30.0, shape), wout, (0, 400, 0, 400), (0, 400, 0, 400))
    strong = plan_mapping(win, wout, (0, 400, 0, 400), (0, 400, 0, 400), tolerance_px=1e-4)
    assert weak.step == 64
    assert strong.step < 64
    assert strong.max_error_px <= 1e-4


@pytest.mark.parametrize("weights", ["map", "unit", "zero-one"])
def test_tiles_assembled_from_cutouts_equal_the_whole_frame_bitwise(wcs_pair, weights, monkeypatch):
    from app import sampling

    win, wout = wcs_pair
    rng = np.random.default_rng(7)
    data = smooth_image(IN_SHAPE) + rng.normal(0, 0.1, IN_SHAPE).astype(np.float32)
    weight = rng.uniform(0.5, 1.5, IN_SHAPE).astype(np.float32)
    data[100:103, 50:52] = np.nan  # NaN block
    weight[200:204, 150:151] = 0.0  # masked column segment
    if weights == "unit":  # no weight map: uint8 validity plane, fast path away from NaN and edges
        weight = None
    elif weights == "zero-one":  # a mask-like map: fast path where the map is 1
        weight = (weight > 0).astype(np.float32)
    whole = reproject_array(data, weight, win, wout, OUT_SHAPE)
    assert whole.footprint.sum() > 0.5 * whole.footprint.size
    plan = plan_mapping(win, wout, (0, OUT_SHAPE[0], 0, OUT_SHAPE[1]), (0, IN_SHAPE[0], 0, IN_SHAPE[1]))
    assert plan.step == whole.step
    # tiles in small blocks (32 x 64 px): a mix of fast-path (all weights 1) and general blocks
    # that differs from the whole frame's, which must not change a bit
    paths = []
    unit_weight = sampling.Planes.unit_weight
    monkeypatch.setattr(sampling, "BLOCK_PIXELS", 2048)
    monkeypatch.setattr(sampling.Planes, "unit_weight", lambda *a: paths.append(unit_weight(*a)) or paths[-1])
    d = np.full(OUT_SHAPE, np.nan, np.float32)
    w = np.zeros(OUT_SHAPE, np.float32)
    f = np.zeros(OUT_SHAPE, bool)
    edges_y, edges_x = [0, 77, 160, 251, OUT_SHAPE[0]], [0, 64, 129, 300]
    n_tiles = 0
    for y0, y1 in zip(edges_y[:-1], edges_y[1:]):
        for x0, x1 in zip(edges_x[:-1], edges_x[1:]):
            box = cutout_for_tile(IN_SHAPE, win, wout, (y0, y1, x0, x1))
            if box is None:
                continue
            cy0, cy1, cx0, cx1 = box
            assert (cy1 - cy0) * (cx1 - cx0) < data.size  # a real cutout, not the frame
            cut_w = None if weight is None else weight[cy0:cy1, cx0:cx1]
            t = reproject_tile(data[cy0:cy1, cx0:cx1], cut_w, win, (cy0, cx0), wout, (y0, y1, x0, x1), step=plan.step)
            d[y0:y1, x0:x1], w[y0:y1, x0:x1], f[y0:y1, x0:x1] = t.data, t.weight, t.footprint
            n_tiles += 1
    assert n_tiles == 12
    if weights != "map":
        assert True in paths and False in paths  # both the fast and the general path were taken
    assert np.array_equal(f, whole.footprint)
    assert np.array_equal(d, whole.data, equal_nan=True)
    assert np.array_equal(w, whole.weight)


def test_bilinear_agrees_with_reproject_interp_on_a_smooth_image(wcs_pair):
    from reproject import reproject_interp

    win, wout = wcs_pair
    data = smooth_image(IN_SHAPE)
    ours = reproject_array(data, None, win, wout, OUT_SHAPE)
    ref, foot = reproject_interp((data, as_wcs(win)), as_wcs(wout), shape_out=OUT_SHAPE, order="bilinear")
    # interior: pixels whose 3x3 neighbourhood is inside both footprints (edges differ by convention)
    from scipy import ndimage

    both = ndimage.binary_erosion(ours.footprint & (foot > 0) & np.isfinite(ref), iterations=2)
    assert both.sum() > 0.5 * both.size
    rel = np.abs(ours.data[both] - ref[both]) / np.abs(ref[both])
    # stated accuracy: <= 1e-4 relative (mapping error <= 0.01 px x the local gradient)
    assert rel.max() < 1e-4


def test_nan_neighbours_renormalise_the_value_and_lower_the_weight():
    shape = (40, 40)
    win = tan_wcs(200.0, 10.0, 1.0, 0.0, shape)
    wout = tan_wcs(200.0, 10.0, 1.0, 0.0, shape)
    wout["CRPIX1"] += 0.5  # output pixel centres fall half-way between input pixels
    wout["CRPIX2"] += 0.5
    data = np.full(shape, 7.0, np.float32)
    data[20, 20] = np.nan  # one NaN: every neighbour still sees 3 valid pixels
    data[10:12, 10:12] = np.nan  # a 2x2 NaN block: the pixel at its centre has no valid neighbour
    res = reproject_array(data, None, win, wout, shape)
    valid = np.isfinite(res.data)
    assert np.all(res.data[valid] == 7.0)  # renormalised: a constant stays exactly constant
    # output (y, x) samples input (y - 0.5, x - 0.5): the block centre (10.5, 10.5) is output (11, 11)
    assert np.isnan(res.data[11, 11]) and res.weight[11, 11] == 0.0
    assert res.weight[20, 20] == pytest.approx(0.75)  # one of four neighbours missing
    assert res.weight[30, 30] == pytest.approx(1.0)
    assert not res.footprint[0, 0] or res.weight[0, 0] < 1.0


def test_conserve_flux_keeps_a_star_total_across_a_scale_change():
    in_shape, out_shape = (120, 120), (70, 70)
    win = tan_wcs(80.0, 20.0, 1.0, 25.0, in_shape)
    wout = tan_wcs(80.0, 20.0, 1.9, 0.0, out_shape)
    yy, xx = np.mgrid[0:120, 0:120]
    star = 1000.0 * np.exp(-0.5 * ((xx - 61.3) ** 2 + (yy - 58.7) ** 2) / 3.0**2) / (2 * np.pi * 9.0)
    total = star.sum()
    for method in ("bilinear", "exact"):
        res = reproject_array(star.astype(np.float32), None, win, wout, out_shape, conserve_flux=True, method=method)
        assert np.nansum(res.data) == pytest.approx(total, rel=5e-3), method
    plain = reproject_array(star.astype(np.float32), None, win, wout, out_shape)
    assert np.nansum(plain.data) == pytest.approx(total / 1.9**2, rel=2e-2)


def test_cutout_for_tile_is_none_when_the_tile_misses_the_frame():
    win = tan_wcs(150.0, 30.0, 2.0, 0.0, (100, 100))
    wout = tan_wcs(151.0, 30.0, 2.0, 0.0, (100, 100))  # ~0.86 deg away: no overlap
    assert cutout_for_tile((100, 100), win, wout, (0, 100, 0, 100)) is None
    res = reproject_array(np.ones((100, 100), np.float32), None, win, wout, (100, 100))
    assert not res.footprint.any() and np.all(res.weight == 0)


def test_bad_inputs_are_refused_with_the_offending_value():
    win = tan_wcs(150.0, 30.0, 2.0, 0.0, (50, 50))
    data = np.ones((50, 50), np.float32)
    with pytest.raises(ValueError, match="method"):
        reproject_tile(data, None, win, (0, 0), win, (0, 50, 0, 50), method="cubic")
    with pytest.raises(ValueError, match=r"\(0, 0, 0, 50\)"):
        reproject_tile(data, None, win, (0, 0), win, (0, 0, 0, 50))
    with pytest.raises(ValueError, match="margin_px"):
        cutout_for_tile((50, 50), win, win, (0, 50, 0, 50), margin_px=1)
    lin = WCS(naxis=2)
    lin.wcs.ctype = ["X", "Y"]
    with pytest.raises(ValueError, match="celestial"):
        as_wcs(lin)
    with pytest.raises(ValueError, match="weight shape"):
        reproject_tile(data, np.ones((10, 10)), win, (0, 0), win, (0, 50, 0, 50))


def test_exact_method_tiles_agree_with_the_whole_frame_to_1e6():
    in_shape, out_shape = (60, 64), (56, 50)
    win = tan_wcs(80.0, 20.0, 2.0, 25.0, in_shape)
    wout = tan_wcs(80.001, 20.0, 2.3, 0.0, out_shape)
    data = smooth_image(in_shape)
    whole = reproject_array(data, None, win, wout, out_shape, method="exact")
    y0, y1, x0, x1 = 10, 40, 5, 30
    cy0, cy1, cx0, cx1 = cutout_for_tile(in_shape, win, wout, (y0, y1, x0, x1))
    tile = reproject_tile(data[cy0:cy1, cx0:cx1], None, win, (cy0, cx0), wout, (y0, y1, x0, x1), method="exact")
    ref = whole.data[y0:y1, x0:x1]
    ok = np.isfinite(ref)
    assert ok.sum() > 0.9 * ok.size and np.array_equal(ok, np.isfinite(tile.data))
    np.testing.assert_allclose(tile.data[ok], ref[ok], rtol=1e-6)
