"""Reference selection, output grid, whole-frame FITS reprojection and its bad-input handling."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from app.reproject_kernel import as_wcs
from imgback_frames import DEC0, RA0, heterogeneous_specs, render, star_table
from server.image.fitsimage import strip_wcs
from server.image.reproject import (
    FrameInfo,
    NoOverlapError,
    NoWCSError,
    frame_info,
    output_grid,
    reproject_frames,
    reproject_image,
    select_reference,
    weight_path_for,
)


def _info(path, scale, fwhm=None, snr=None, rot=0.0, shape=(100, 100), ra=RA0, dec=DEC0):
    s = scale / 3600
    c, sn = np.cos(np.radians(rot)), np.sin(np.radians(rot))
    hdr = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": ra, "CRVAL2": dec, "CRPIX1": shape[1] / 2 + 0.5,
           "CRPIX2": shape[0] / 2 + 0.5, "CD1_1": -s * c, "CD1_2": s * sn, "CD2_1": s * sn, "CD2_2": s * c}
    return FrameInfo(path=path, shape=shape, header=hdr, fwhm_arcsec=fwhm, snr=snr)


def test_reference_is_finest_scale_then_best_seeing_then_snr():
    frames = [
        _info("coarse_sharp", 2.5, fwhm=2.0, snr=500),
        _info("fine_blurry", 1.50, fwhm=6.0, snr=100),
        _info("fine_sharp_low_snr", 1.60, fwhm=3.0, snr=50),  # within 10 % of the finest scale
        _info("fine_sharp_high_snr", 1.62, fwhm=3.0, snr=80),
        FrameInfo(path="unsolved", shape=(100, 100), header=None, wcs_failed_reason="solve-field failed"),
    ]
    choice = select_reference(frames)
    assert choice.frame.path == "fine_sharp_high_snr"
    assert choice.pixel_scale_arcsec == pytest.approx(1.62)
    assert choice.refused == (("unsolved", "solve-field failed"),)
    # a frame more than 10 % coarser never wins on seeing
    assert select_reference(frames[:2]).frame.path == "fine_blurry"
    with pytest.raises(NoWCSError, match="solve-field failed"):
        select_reference(frames[4:])


def test_output_grid_covers_every_frame_or_exactly_the_region():
    frames = [_info("a", 2.0, rot=0, ra=RA0 - 0.02), _info("b", 2.2, rot=40, ra=RA0 + 0.02, dec=DEC0 + 0.01)]
    hdr, shape = output_grid(frames)
    w = as_wcs(hdr)
    assert hdr["CD2_2"] * 3600 == pytest.approx(2.0)
    for f in frames:
        fw = as_wcs(f.header)
        ny, nx = f.shape
        corners = fw.all_pix2world([[-0.5, -0.5], [nx - 0.5, -0.5], [-0.5, ny - 0.5], [nx - 0.5, ny - 0.5]], 0)
        px = w.all_world2pix(corners, 0)
        assert np.all(px >= -0.5 - 1e-6) and np.all(px[:, 0] <= shape[1] - 0.5 + 1e-6) and np.all(px[:, 1] <= shape[0] - 0.5 + 1e-6)
    rhdr, rshape = output_grid(frames, region=(RA0, DEC0, 0.1, 0.05), pixel_scale_arcsec=3.0)
    assert rshape == (60, 120)
    assert rhdr["CRVAL1"] == pytest.approx(RA0) and rhdr["CRVAL2"] == pytest.approx(DEC0)
    with pytest.raises(ValueError, match="region"):
        output_grid(frames, region=(RA0, 95.0, 0.1, 0.1))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rpimg")
    rng = np.random.default_rng(11)
    stars = star_table(rng)
    fs = render(heterogeneous_specs(2, rng, shape=(200, 200)), rng, stars)
    paths = []
    for i, f in enumerate(fs.frames):
        p = tmp / f"f{i}.fits"
        fits.PrimaryHDU(f.data, header=f.header).writeto(p)
        paths.append(str(p))
    nowcs = tmp / "nowcs.fits"
    fits.PrimaryHDU(fs.frames[0].data, header=strip_wcs(fs.frames[0].header)).writeto(nowcs)
    return tmp, fs, paths, str(nowcs)


def test_reproject_image_writes_frame_and_weight_with_full_wcs_and_provenance(written):
    from reproject import reproject_interp

    tmp, fs, paths, _ = written
    infos = [frame_info(p) for p in paths]
    hdr, shape = output_grid(infos, region=(RA0, DEC0, 0.1, 0.1), pixel_scale_arcsec=2.0)
    out = reproject_image(paths[0], hdr, shape, out_path=str(tmp / "r0.fits"), conserve_flux=False)
    data = fits.getdata(out)
    h = fits.getheader(out)
    assert data.shape == shape and as_wcs(h).has_celestial
    assert h["SRCFILE"] == "f0.fits" and h["RPMETHOD"] == "bilinear" and h["RPMAXERR"] <= 0.01
    assert h["EXPTIME"] == fs.frames[0].spec.exptime_s  # observation keywords carried over
    weight = fits.getdata(weight_path_for(out))
    assert np.all(weight[np.isnan(data)] == 0) and weight.max() == pytest.approx(1.0)
    # accuracy against reproject_interp (bilinear) on a real frame: interior pixels
    ref, foot = reproject_interp((fs.frames[0].data, fs.frames[0].wcs), as_wcs(hdr), shape_out=shape, order="bilinear")
    from scipy import ndimage

    inner = ndimage.binary_erosion(np.isfinite(data) & (foot > 0) & np.isfinite(ref), iterations=2)
    rel = np.abs(data[inner] - ref[inner]) / np.maximum(np.abs(ref[inner]), 1.0)
    assert inner.sum() > 0.3 * inner.size and rel.max() < 1e-3


def test_frames_without_wcs_or_overlap_are_refused_or_skipped_with_the_reason(written):
    tmp, fs, paths, nowcs = written
    hdr, shape = output_grid([], region=(RA0, DEC0, 0.1, 0.1), pixel_scale_arcsec=2.0)
    with pytest.raises(NoWCSError, match="no celestial WCS"):
        reproject_image(nowcs, hdr, shape)
    far, fshape = output_grid([], region=(RA0 + 5, DEC0, 0.1, 0.1), pixel_scale_arcsec=2.0)
    with pytest.raises(NoOverlapError, match="does not overlap"):
        reproject_image(paths[0], far, fshape)
    batch = reproject_frames([paths[0], nowcs, paths[1]], hdr, shape, tmp / "batch")
    assert [o[0] for o in batch.outputs] == [paths[0], paths[1]]
    assert len(batch.skipped) == 1 and batch.skipped[0][0] == nowcs and "WCS" in batch.skipped[0][1]
    assert frame_info(nowcs).header is None
