"""server.image.fitsimage: the image stages' safe reader refuses bad files before reading pixels."""
import numpy as np
import pytest
from astropy.io import fits

from server.image.fitsimage import inspect_image, open_image, write_fits_atomic


def _write(path, data, **cards):
    hdr = fits.Header()
    for k, v in cards.items():
        hdr[k] = v
    fits.PrimaryHDU(data=data, header=hdr).writeto(path)
    return path


def test_reads_a_float32_image_and_its_header(tmp_path):
    data = np.arange(12, dtype=np.int16).reshape(3, 4)
    path = _write(tmp_path / "a.fits", data, OBJECT="M42")
    info = inspect_image(path)
    assert (info.hdu_index, info.shape, info.bitpix, info.compressed) == (0, (3, 4), 16, False)
    assert info.nbytes == 24
    got, header = open_image(path)
    assert got.dtype == np.float32 and np.array_equal(got, data)
    assert header["OBJECT"] == "M42"


def test_finds_the_image_in_an_extension_after_an_empty_primary(tmp_path):
    path = tmp_path / "ext.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((5, 6), np.float32))]).writeto(path)
    info = inspect_image(path)
    assert (info.hdu_index, info.shape) == (1, (5, 6))


def test_a_degenerate_third_axis_is_accepted_and_a_cube_refused(tmp_path):
    flat = _write(tmp_path / "flat.fits", np.ones((1, 4, 5), np.float32))
    assert open_image(flat)[0].shape == (4, 5)
    cube = _write(tmp_path / "cube.fits", np.ones((3, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r"3-D cube \[5, 4, 3\], expected 2-D"):
        inspect_image(cube)


def test_truncated_data_are_refused_before_reading(tmp_path):
    path = _write(tmp_path / "t.fits", np.ones((100, 100), np.float32))
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) - 5000])
    with pytest.raises(ValueError, match="t.fits: .*data truncated"):
        open_image(path)


def test_a_header_declaring_terabytes_is_refused_by_the_size_limit(tmp_path):
    path = _write(tmp_path / "big.fits", np.ones((10, 10), np.float32))
    raw = bytearray(path.read_bytes())
    for key, value in ((b"NAXIS1", 1_000_000), (b"NAXIS2", 1_000_000)):
        i = raw.index(key.ljust(8))
        raw[i:i + 80] = f"{key.decode():<8}= {value:>20}".ljust(80).encode()
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="above the limit"):
        inspect_image(path, max_bytes=1024**3)


@pytest.mark.parametrize("content, reason", [
    (b"GIF89a not an image", "not a FITS file"),
    (b"", "not a FITS file"),
])
def test_non_fits_content_is_refused(tmp_path, content, reason):
    path = tmp_path / "x.fits"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=reason):
        open_image(path)


def test_missing_files_and_directories_give_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        inspect_image(tmp_path / "absent.fits")
    with pytest.raises(ValueError, match="is a directory"):
        inspect_image(tmp_path)


def test_a_table_only_file_has_no_image(tmp_path):
    path = tmp_path / "table.fits"
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.ones(3))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    with pytest.raises(ValueError, match="no HDU holds a 2-D image"):
        inspect_image(path)


def test_atomic_writer_round_trips_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "out.fits"
    write_fits_atomic(path, np.full((2, 3), 7.5, np.float32), fits.Header({"BUNIT": "adu"}))
    got, header = open_image(path)
    assert np.all(got == 7.5) and header["BUNIT"] == "adu"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fits"]
