"""Co-addition: science on heterogeneous synthetic frames, streaming == in-memory, bounded chunks."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from app.reproject_kernel import as_wcs, exact_mapping
from imgback_frames import GRID_SCALE, GRID_SHAPE, DEC0, RA0, common_flux, heterogeneous_specs, render, star_table
from server.image.coadd import BYTES_PER_FRAME_PIXEL, BYTES_PER_PIXEL, co_add, coAdd, combine_stack, plan_chunks
from server.image.normalise import input_weight, normalise_image
from server.image.reproject import output_grid, reproject_image, weight_path_for
from server.synth import write_frame

N_FRAMES = 8
DEFECT = 3  # index of the frame with cosmic rays and a satellite trail


def reference_combine(D, W, clip_sigma=3.0, max_iters=3, ampfrac=0.3):
    """Independent per-pixel reference: the rule of server.image.coadd written as a plain loop."""
    N, ny, nx = D.shape
    stack = np.full((ny, nx), np.nan)
    unc = np.full((ny, nx), np.nan)
    cov = np.zeros((ny, nx), int)
    for y in range(ny):
        for x in range(nx):
            d = D[:, y, x].astype(float)
            w = W[:, y, x].astype(float)
            ok = np.isfinite(d) & np.isfinite(w) & (w > 0)
            d, w = d[ok], w[ok]
            keep = np.ones(d.size, bool)
            for _ in range(max_iters):
                v = d[keep]
                if v.size <= 2:
                    break
                med = np.median(v)
                z = np.abs(d - med) * np.sqrt(w)  # residuals in units of each frame's noise
                s = max(1.4826 * np.median(z[keep]), 1.0)
                new = keep & (z <= clip_sigma * s + ampfrac * abs(med) * np.sqrt(w))
                if np.array_equal(new, keep):
                    break
                keep = new
            if keep.any():
                stack[y, x] = (w[keep] * d[keep]).sum() / w[keep].sum()
                unc[y, x] = 1.0 / np.sqrt(w[keep].sum())
            cov[y, x] = keep.sum()
    return stack, unc, cov


# ------------------------------------------------------------------ the science pipeline, once
@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("coadd")
    rng = np.random.default_rng(20261125)
    stars = star_table(rng)
    specs = heterogeneous_specs(N_FRAMES, rng)
    specs[DEFECT] = specs[DEFECT].with_(n_cosmic_rays=60, satellite_trail_adu=4000.0)
    fs = render(specs, rng, stars)
    header, shape = output_grid([], region=(RA0, DEC0, GRID_SHAPE[1] * GRID_SCALE / 3600, GRID_SHAPE[0] * GRID_SCALE / 3600),
                                pixel_scale_arcsec=GRID_SCALE)
    norm, wnorm, reproj, exact = [], [], [], []
    for i, f in enumerate(fs.frames):
        raw = tmp / f"raw{i}.fits"
        write_frame(f, raw, strip_wcs=False)
        wraw = tmp / f"raw{i}_w.fits"
        fits.PrimaryHDU(input_weight(f.data, saturation_adu=f.spec.saturation_adu)).writeto(wraw)
        rp = reproject_image(str(raw), header, shape, weight_path=str(wraw), out_path=str(tmp / f"rp{i}.fits"))
        reproj.append(rp)
        out = normalise_image(rp, zero_point=f.spec.zero_point, weight_path=weight_path_for(rp),
                              out_path=str(tmp / f"n{i}.fits"))
        norm.append(out["path"])
        wnorm.append(out["weight_path"])
        # flux-conserving resampling for photometry: bilinear resampling of undersampled stars
        # (FWHM ~2 px) onto another pixel scale aliases up to ~2 % of a star's flux (docs/image_back.md)
        rpx = reproject_image(str(raw), header, shape, weight_path=str(wraw), out_path=str(tmp / f"rpx{i}.fits"),
                              method="exact")
        outx = normalise_image(rpx, zero_point=f.spec.zero_point, weight_path=weight_path_for(rpx),
                               out_path=str(tmp / f"nx{i}.fits"))
        exact.append((outx["path"], outx["weight_path"]))
    full = co_add(norm, wnorm, out_dir=tmp / "all")
    others = co_add([p for i, p in enumerate(norm) if i != DEFECT], [p for i, p in enumerate(wnorm) if i != DEFECT],
                    out_dir=tmp / "others")
    noclip = co_add(norm, wnorm, out_dir=tmp / "noclip", max_iters=0)
    exact_stack = co_add([p for p, _ in exact], [w for _, w in exact], out_dir=tmp / "exact")
    exact_noclip = co_add([p for p, _ in exact], [w for _, w in exact], out_dir=tmp / "exact_noclip", max_iters=0)
    clean = [e for i, e in enumerate(exact) if i != DEFECT]
    exact_clean = co_add([p for p, _ in clean], [w for _, w in clean], out_dir=tmp / "exact_clean")
    return dict(frames=fs, header=header, shape=shape, norm=norm, wnorm=wnorm, full=full, others=others,
                noclip=noclip, reproj=reproj, exact=exact_stack, exact_noclip=exact_noclip, exact_clean=exact_clean)


def _read(path):
    with fits.open(path) as h:
        return h[0].data.astype(float), h[0].header.copy()


def _star_pixels(header, stars):
    w = as_wcs(header)
    x, y = w.all_world2pix(stars["ra"].to_numpy(), stars["dec"].to_numpy(), 0)
    return x, y


def test_bright_star_fluxes_in_the_stack_match_truth_within_one_percent(pipeline):
    import sep

    # the 7 frames without cosmic rays and trail: where the trail crosses a bright star core, the
    # PSF tolerance (clip_ampfrac) lets ~1 % of the star's flux through (docs/image_back.md)
    stack, hdr = _read(pipeline["exact_clean"]["stacked_path"])
    stars = pipeline["frames"].stars
    assert not any(f.truth["saturated"].any() for f in pipeline["frames"].frames)
    x, y = _star_pixels(pipeline["header"], stars)
    bright = stars["bright"].to_numpy() & (x > 20) & (x < GRID_SHAPE[1] - 20) & (y > 20) & (y < GRID_SHAPE[0] - 20)
    # only stars seen whole by the same frames: where the set of frames changes across a star, the
    # stack mixes PSFs of different frames on either side of the edge and no combination keeps flux
    cov, _ = _read(pipeline["exact_noclip"]["coverage_path"])
    yy, xx = np.mgrid[0 : GRID_SHAPE[0], 0 : GRID_SHAPE[1]]
    for i in np.flatnonzero(bright):
        ring = cov[(xx - x[i]) ** 2 + (yy - y[i]) ** 2 <= 16**2]
        bright[i] = ring.min() == ring.max() >= 3
    assert bright.sum() >= 4
    data = np.ascontiguousarray(np.nan_to_num(stack, nan=0.0))
    flux, _, flag = sep.sum_circle(data, x[bright], y[bright], 12.0)
    ratio = flux / common_flux(stars["mag"].to_numpy()[bright])
    assert np.all(np.abs(ratio - 1.0) < 0.01), ratio


def test_stack_noise_falls_as_inverse_sqrt_of_summed_snr2_weights(pipeline):
    stack, _ = _read(pipeline["full"]["stacked_path"])
    unc, _ = _read(pipeline["full"]["uncertainty_path"])
    cov, _ = _read(pipeline["noclip"]["coverage_path"])
    stars = pipeline["frames"].stars
    x, y = _star_pixels(pipeline["header"], stars)
    yy, xx = np.mgrid[0 : GRID_SHAPE[0], 0 : GRID_SHAPE[1]]
    sky = cov == N_FRAMES
    for sx, sy in zip(x, y):
        sky &= (xx - sx) ** 2 + (yy - sy) ** 2 > 14**2
    assert sky.sum() > 10000  # enough pixels: the rms is known to ~0.7 %
    v = stack[sky]
    measured = np.std(v[np.abs(v - np.median(v)) < 5 * np.std(v)])
    snr_w = [fits.getheader(p)["SNRWGT"] for p in pipeline["norm"]]
    predicted = 1.0 / np.sqrt(np.sum(snr_w))  # 1/sqrt(N) for N equal frames
    assert measured == pytest.approx(predicted, rel=0.05)
    assert np.median(unc[sky]) == pytest.approx(measured, rel=0.05)
    single = np.array([np.sqrt(1 / w) for w in snr_w])
    assert measured < 0.9 * single.min()  # below even the best single frame


def test_cosmic_rays_and_a_satellite_trail_in_one_frame_are_rejected(pipeline):
    full, _ = _read(pipeline["full"]["stacked_path"])
    others, _ = _read(pipeline["others"]["stacked_path"])
    unc, _ = _read(pipeline["full"]["uncertainty_path"])
    noclip, _ = _read(pipeline["noclip"]["stacked_path"])
    bad_frame, _ = _read(pipeline["norm"][DEFECT])
    sky_sigma = 1.0 / np.sqrt(fits.getheader(pipeline["norm"][DEFECT])["SNRWGT"])
    cov, _ = _read(pipeline["noclip"]["coverage_path"])
    # median/MAD needs >= 3 values to outvote an outlier: look where >= 3 clean frames overlap
    defect = np.isfinite(bad_frame) & np.isfinite(others) & (bad_frame - others > 10 * sky_sigma) & (cov >= 4)
    # away from stars: there frames differ by PSF (sharper/softer cores), which is not a defect
    x, y = _star_pixels(pipeline["header"], pipeline["frames"].stars)
    yy, xx = np.mgrid[0 : GRID_SHAPE[0], 0 : GRID_SHAPE[1]]
    for sx, sy in zip(x, y):
        defect &= (xx - sx) ** 2 + (yy - sy) ** 2 > 12**2
    assert defect.sum() > 100  # the trail and the cosmic rays are really there
    # without clipping they show up in the mean ...
    assert np.median((noclip - others)[defect] / unc[defect]) > 5
    # ... with median/MAD clipping they are gone: the stack agrees with the stack of the 7 clean frames
    # (not to the bit: the defect value still moves the median, so a clean value may be clipped)
    r = np.abs(full - others)[defect] / unc[defect]
    assert np.median(r) < 0.5 and np.percentile(r, 99) < 3


def test_coverage_map_counts_exactly_the_frames_covering_each_pixel(pipeline):
    cov, hdr = _read(pipeline["noclip"]["coverage_path"])
    out_wcs = as_wcs(pipeline["header"])
    gy, gx = np.mgrid[0 : GRID_SHAPE[0], 0 : GRID_SHAPE[1]].astype(float)
    expected = np.zeros(GRID_SHAPE, int)
    for f in pipeline["frames"].frames:
        yin, xin = exact_mapping(out_wcs, f.wcs, gy, gx)
        ny, nx = f.data.shape
        expected += (yin >= -0.5) & (yin <= ny - 0.5) & (xin >= -0.5) & (xin <= nx - 0.5)
    assert expected.max() == N_FRAMES and (expected < N_FRAMES).sum() > 1000  # partial overlaps exist
    # exact except within 1e-6 px of a frame edge (the interpolated mapping error is < 0.01 px)
    assert np.array_equal(cov.astype(int), expected)
    # with clipping, coverage only ever drops, and not by more than the rejected values
    cov_clip, _ = _read(pipeline["full"]["coverage_path"])
    assert np.all(cov_clip <= cov) and (cov - cov_clip).sum() == pipeline["full"]["n_rejected"]


def test_outputs_carry_the_wcs_and_provenance(pipeline):
    _, hdr = _read(pipeline["full"]["stacked_path"])
    w = WCS(hdr)
    assert w.has_celestial
    assert hdr["NINPUT"] == N_FRAMES and hdr["CLIPSIG"] == 3.0 and hdr["CLIPITER"] == 3
    assert hdr["CLIPMETH"] == "median/MAD"
    assert hdr["INP00000"] == "n0.fits" and hdr["WGT00000"] == "n0_weight.fits"
    assert hdr["CRVAL1"] == pytest.approx(pipeline["header"]["CRVAL1"])


# --------------------------------------------------------------------- streaming and rules
def _write(path, arr, header):
    fits.PrimaryHDU(arr.astype(np.float32), header=header).writeto(path)
    return str(path)


def _grid_header(shape):
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 10.0, 20.0
    h["CRPIX1"], h["CRPIX2"] = shape[1] / 2, shape[0] / 2
    h["CD1_1"], h["CD2_2"] = -1e-3, 1e-3
    h["CD1_2"] = h["CD2_1"] = 0.0
    return h


def _noisy_stack(rng, n, shape):
    D = rng.normal(100.0, 2.0, (n, *shape)).astype(np.float32)
    W = rng.uniform(0.2, 1.0, (n, *shape)).astype(np.float32)
    D[rng.random(D.shape) < 0.05] += 80.0  # outliers
    D[rng.random(D.shape) < 0.03] = np.nan
    W[rng.random(W.shape) < 0.03] = 0.0
    D[:, :3, :4] = np.nan  # a corner with no data at all
    return D, W


@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_streaming_co_add_equals_the_in_memory_reference(tmp_path, n):
    rng = np.random.default_rng(100 + n)
    shape = (23, 31)
    D, W = _noisy_stack(rng, n, shape)
    hdr = _grid_header(shape)
    paths = [_write(tmp_path / f"d{i}.fits", D[i], hdr) for i in range(n)]
    wpaths = [_write(tmp_path / f"w{i}.fits", W[i], hdr) for i in range(n)]
    ref_stack, ref_unc, ref_cov = reference_combine(D, W)
    mem = combine_stack(D, W)
    results = []
    for rows in (1, 7, None):
        res = co_add(paths, wpaths, out_dir=tmp_path / f"rows{rows}", chunk_rows=rows)
        assert res["chunk_rows"] == (rows or shape[0])
        stack, unc, cov = (fits.getdata(res[k]) for k in ("stacked_path", "uncertainty_path", "coverage_path"))
        # the chunking never changes a bit
        assert np.array_equal(stack, mem.stack, equal_nan=True) and np.array_equal(cov, mem.coverage)
        assert np.array_equal(unc, mem.uncertainty, equal_nan=True)
        results.append(res)
    # and the same survivors as the independent reference; values to float32 rounding
    assert np.array_equal(mem.coverage, ref_cov)
    assert np.array_equal(np.isnan(mem.stack), np.isnan(ref_stack))
    ok = np.isfinite(ref_stack)
    np.testing.assert_allclose(mem.stack[ok], ref_stack[ok], rtol=1e-6)
    np.testing.assert_allclose(mem.uncertainty[ok], ref_unc[ok], rtol=1e-6)
    assert np.all(np.isnan(mem.stack[:3, :4])) and np.all(mem.coverage[:3, :4] == 0)
    assert coAdd is co_add


def _stack_needing_three_rounds(rng, n, shape):
    """Heterogeneous noise and many one-sided outliers of every size (each round's rejections
    shift the median and MAD enough that rounds 2 and 3 still reject values)."""
    sigma = rng.uniform(0.5, 3.0, (n, 1, 1))
    D = (100.0 + sigma * rng.standard_normal((n, *shape))).astype(np.float32)
    W = (1.0 / sigma**2 * rng.uniform(0.8, 1.2, (n, *shape))).astype(np.float32)
    hit = rng.random(D.shape) < 0.25
    D[hit] += (sigma * rng.uniform(2.0, 40.0, D.shape))[hit]
    D[rng.random(D.shape) < 0.02] = np.nan
    W[rng.random(W.shape) < 0.02] = 0.0
    return D, W


def test_pixels_settled_early_or_batched_match_every_round_on_every_pixel(monkeypatch):
    from server.image import coadd

    rng = np.random.default_rng(7)
    D, W = _stack_needing_three_rounds(rng, 40, (24, 50))
    ref_stack, ref_unc, ref_cov = reference_combine(D, W)  # every round on every pixel, until unchanged
    assert not np.array_equal(combine_stack(D, W, max_iters=2).coverage, ref_cov)  # round 3 matters here
    outcomes = []
    settled = coadd._settled

    def spy(*args):
        out = settled(*args)
        outcomes.append(out)
        return out

    monkeypatch.setattr(coadd, "_settled", spy)
    monkeypatch.setattr(coadd, "_INNER_VALUES", 40 * 64)  # many blocks, queues flushed across blocks
    res = combine_stack(D, W)
    decided = np.concatenate(outcomes)
    assert decided.any() and not decided.all()  # both paths taken
    assert np.array_equal(res.coverage, ref_cov)
    ok = np.isfinite(ref_stack)
    assert np.array_equal(np.isfinite(res.stack), ok)
    np.testing.assert_allclose(res.stack[ok], ref_stack[ok], rtol=1e-6)
    np.testing.assert_allclose(res.uncertainty[ok], ref_unc[ok], rtol=1e-6)
    # without the shortcut (every changed pixel runs the next round) the result is bit-identical
    monkeypatch.setattr(coadd, "_settled", lambda s, loc, *rest: np.zeros(loc.size, bool))
    full = combine_stack(D, W)
    assert np.array_equal(full.stack, res.stack, equal_nan=True) and np.array_equal(full.coverage, res.coverage)
    assert np.array_equal(full.uncertainty, res.uncertainty, equal_nan=True) and full.n_rejected == res.n_rejected


def test_float64_and_big_endian_inputs_give_the_float32_result(tmp_path):
    rng = np.random.default_rng(11)
    shape = (17, 19)
    D, W = _stack_needing_three_rounds(rng, 7, shape)
    ref = combine_stack(D, W)
    be = combine_stack(D.astype(">f8"), W.astype(">f8"))
    for a, b in ((ref.stack, be.stack), (ref.uncertainty, be.uncertainty), (ref.coverage, be.coverage)):
        assert np.array_equal(a, b, equal_nan=True)
    hdr = _grid_header(shape)
    paths, wpaths = [], []
    for i in range(len(D)):  # BITPIX -64 frames take the converting read path
        paths.append(str(tmp_path / f"d{i}.fits"))
        wpaths.append(str(tmp_path / f"w{i}.fits"))
        fits.PrimaryHDU(D[i].astype(np.float64), header=hdr).writeto(paths[-1])
        fits.PrimaryHDU(W[i].astype(np.float64), header=hdr).writeto(wpaths[-1])
    res = co_add(paths, wpaths, out_dir=tmp_path / "out", chunk_rows=5)
    assert np.array_equal(fits.getdata(res["stacked_path"]), ref.stack, equal_nan=True)
    assert np.array_equal(fits.getdata(res["coverage_path"]), ref.coverage)
    assert res["n_rejected"] == ref.n_rejected


def test_single_frame_stack_is_the_frame_itself(tmp_path):
    rng = np.random.default_rng(5)
    shape = (20, 25)
    d = rng.normal(0, 1, shape).astype(np.float32)
    w = np.full(shape, 4.0, np.float32)
    w[5, 5] = 0.0
    hdr = _grid_header(shape)
    res = co_add([_write(tmp_path / "d.fits", d, hdr)], [_write(tmp_path / "w.fits", w, hdr)], out_dir=tmp_path)
    stack, unc, cov = (fits.getdata(res[k]) for k in ("stacked_path", "uncertainty_path", "coverage_path"))
    good = w > 0
    assert np.array_equal(cov, good.astype(np.int16))
    np.testing.assert_allclose(stack[good], d[good], rtol=1e-6)
    assert np.allclose(unc[good], 0.5) and np.isnan(stack[5, 5])


@pytest.mark.parametrize("n", [3, 4, 5, 7])
def test_one_outlier_is_rejected_for_small_n_where_mean_std_clipping_cannot(n):
    rng = np.random.default_rng(n)
    D = rng.normal(10.0, 1.0, (n, 1, 1)).astype(np.float32)
    D[0, 0, 0] = 1000.0
    W = np.ones_like(D)
    res = combine_stack(D, W)
    assert res.coverage[0, 0] == n - 1
    assert res.stack[0, 0] == pytest.approx(np.mean(D[1:, 0, 0]), rel=1e-6)
    # a 3-sigma mean/std clip cannot reject it: its z-score is at most (n-1)/sqrt(n) < 3
    v = D[:, 0, 0].astype(float)
    assert (v[0] - v.mean()) / v.std(ddof=1) <= (n - 1) / np.sqrt(n) + 1e-9 < 3


@pytest.mark.parametrize("n", [4, 16])
def test_noise_of_identical_frames_falls_as_one_over_sqrt_n(tmp_path, n):
    rng = np.random.default_rng(77)
    shape = (128, 128)
    D = rng.normal(0.0, 3.0, (n, *shape)).astype(np.float32)
    res = combine_stack(D, np.full_like(D, 1 / 9.0))
    single = np.std(D[0])
    assert np.std(res.stack) * np.sqrt(n) == pytest.approx(single, rel=0.05)
    assert np.median(res.uncertainty) == pytest.approx(3.0 / np.sqrt(n), rel=1e-6)


def test_chunk_plan_keeps_working_memory_bounded_whatever_n():
    limit = 256 * 1024**2
    for n in (1, 20, 100, 1000):
        plan = plan_chunks(n, (4096, 4096), memory_limit_bytes=limit)
        assert plan.working_bytes <= limit
        assert plan.chunk_rows * plan.n_chunks >= 4096
        assert plan.bytes_per_row >= BYTES_PER_FRAME_PIXEL * n * 4096
    assert plan_chunks(100, (4096, 4096), memory_limit_bytes=limit).chunk_rows == limit // (4096 * (BYTES_PER_FRAME_PIXEL * 100 + BYTES_PER_PIXEL))
    # one row is the floor: with an absurd limit we still make progress, one row at a time
    assert plan_chunks(10, (50, 50), memory_limit_bytes=1).chunk_rows == 1


def test_bad_inputs_are_refused(tmp_path):
    shape = (10, 12)
    hdr = _grid_header(shape)
    a = _write(tmp_path / "a.fits", np.ones(shape), hdr)
    other = hdr.copy()
    other["CRVAL1"] = 11.0
    b = _write(tmp_path / "b.fits", np.ones(shape), other)
    c = _write(tmp_path / "c.fits", np.ones((10, 13)), hdr)
    with pytest.raises(ValueError, match="at least one"):
        co_add([], [])
    with pytest.raises(ValueError, match="2 frames but 1 weight"):
        co_add([a, a], [a])
    with pytest.raises(ValueError, match="WCS differs"):
        co_add([a, b], [a, a], out_dir=tmp_path)
    with pytest.raises(ValueError, match="shape"):
        co_add([a, c], [a, a], out_dir=tmp_path)
    with pytest.raises(ValueError, match="clip_sigma"):
        co_add([a], [a], clip_sigma=-1.0)
    with pytest.raises(ValueError, match="chunk_rows"):
        plan_chunks(2, shape, chunk_rows=0)
