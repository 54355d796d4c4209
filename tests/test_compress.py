"""RICE compression of raw frames at ingest: lossless, fpack-compatible, the exact original reproducible."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import numpy as np
import pytest
from astropy.io import fits

from ingest_samples import astrobin_header, small_image
from server.ingest.compress import (SHA_KEY, is_compressed_original, original_bytes, restore_original,
                                    rice_compress)

SHAPE = (96, 128)


def _frame(tmp_path, dtype, seed=3, name="raw.fits", header=None, shape=SHAPE) -> tuple:
    """A sky-like integer frame (background 1000 ADU, read noise, a few stars) written as a camera would."""
    rng = np.random.default_rng(seed)
    sky = rng.normal(1000.0, 12.0, shape)
    y, x = np.mgrid[:shape[0], :shape[1]]
    for _ in range(5):
        cy, cx = rng.uniform(10, shape[0] - 10), rng.uniform(10, shape[1] - 10)
        sky += rng.uniform(2e3, 2e4) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 4.0)
    info = np.iinfo(dtype)
    data = np.clip(sky, info.min, info.max).astype(dtype)
    path = tmp_path / name
    fits.PrimaryHDU(data, header=header if header is not None else astrobin_header()).writeto(path)
    return path, data


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.int32, np.uint8])
def test_integer_frame_decompresses_to_the_byte_identical_original(tmp_path, dtype):
    src, data = _frame(tmp_path, dtype)
    result = rice_compress(src, tmp_path / "raw.fz")
    assert result.reason == "RICE_1" and result.path is not None
    assert result.original_sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert result.compressed_size < result.original_size
    assert original_bytes(result.path) == src.read_bytes()
    out = restore_original(result.path, tmp_path / "restored.fits")
    assert out.read_bytes() == src.read_bytes()
    # Readers see the same pixels and keywords in the compressed HDU.
    with fits.open(result.path) as hdul, fits.open(src) as orig:
        assert isinstance(hdul[1], fits.CompImageHDU)
        assert hdul[0].header[SHA_KEY] == result.original_sha256
        np.testing.assert_array_equal(hdul[1].data, orig[0].data)
        assert hdul[1].data.dtype.newbyteorder("=") == orig[0].data.dtype.newbyteorder("=")
        for key in astrobin_header():
            assert hdul[1].header[key] == orig[0].header[key]


def test_16bit_sky_frame_compresses_about_twofold(tmp_path):
    """Seed budget: ~32 MB raw -> ~16 MB RICE. A 512x512 sky frame with 12 ADU noise packs ~2x or better."""
    src, _ = _frame(tmp_path, np.uint16, shape=(512, 512))
    result = rice_compress(src, tmp_path / "raw.fz")
    assert result.ratio > 1.8


def test_funpack_reads_our_files_as_the_original_image(tmp_path):
    funpack = shutil.which("funpack")
    if funpack is None:
        pytest.skip("funpack (apt libcfitsio-bin, in scripts/setup.sh) is not installed")
    src, data = _frame(tmp_path, np.uint16)
    packed = rice_compress(src, tmp_path / "raw.fz").path
    subprocess.run([funpack, "-O", str(tmp_path / "unpacked.fits"), str(packed)], check=True, capture_output=True)
    with fits.open(tmp_path / "unpacked.fits") as hdul:
        image = next(h for h in hdul if h.data is not None)
        np.testing.assert_array_equal(image.data, data)
        assert image.header["OBJECT"] == "SS Cyg"


@pytest.mark.parametrize("case", ["float", "extension", "bscale", "trailing-bytes"])
def test_frames_we_cannot_reproduce_exactly_are_left_uncompressed(tmp_path, case):
    if case == "float":
        src = tmp_path / "f.fits"
        fits.PrimaryHDU(small_image()).writeto(src)
    elif case == "extension":
        src, data = _frame(tmp_path, np.int16)
        fits.HDUList([fits.PrimaryHDU(data), fits.ImageHDU(data)]).writeto(src, overwrite=True)
    elif case == "bscale":
        src = tmp_path / "scaled.fits"
        hdu = fits.PrimaryHDU(small_image().astype(np.float64), header=astrobin_header())
        hdu.scale("int16", bscale=0.5, bzero=0.0)
        hdu.writeto(src)
        assert fits.getheader(src)["BSCALE"] == 0.5
    else:
        src, _ = _frame(tmp_path, np.int16)
        with open(src, "ab") as fh:
            fh.write(b"\0" * 100)
    result = rice_compress(src, tmp_path / "x.fz")
    assert result.path is None and result.reason != "RICE_1"
    assert not (tmp_path / "x.fz").exists()


def test_ingest_stores_integer_frames_compressed_with_the_original_identity(oa_app, tmp_path):
    from server.image.fitsimage import open_image
    from server.ingest.service import ingest_path

    src, _ = _frame(tmp_path, np.uint16)
    result = ingest_path(oa_app, src)
    original = src.read_bytes()
    assert result.sha256 == hashlib.sha256(original).hexdigest() and result.size_bytes == len(original)
    stored = oa_app.store.path(result.storage_key)
    assert is_compressed_original(stored) and stored.stat().st_size < len(original)
    assert original_bytes(stored) == original
    data_c, header_c = open_image(stored)
    data_o, header_o = open_image(src)
    np.testing.assert_array_equal(data_c, data_o)
    assert header_c["DATE-OBS"] == header_o["DATE-OBS"] and header_c["BZERO"] == header_o["BZERO"]
    again = ingest_path(oa_app, src)
    assert not again.created and again.storage_key == result.storage_key
    assert list(oa_app.store.keys()) == [result.storage_key]


def test_ingest_with_rice_off_stores_the_file_as_it_came(oa_app, tmp_path):
    from server.core.context import OpenAstro
    from server.ingest.service import ingest_path

    app = OpenAstro(oa_app.settings.with_overrides(rice_compress=False))
    src, _ = _frame(tmp_path, np.uint16)
    result = ingest_path(app, src)
    assert app.store.path(result.storage_key).read_bytes() == src.read_bytes()
