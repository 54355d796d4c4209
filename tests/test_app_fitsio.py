"""app.fitsio, the volunteer app's numpy-only FITS reader/writer, against astropy on the same files."""
import numpy as np
import pytest
from astropy.io import fits

from app.fitsio import cards_from_text, read_images, write_image


def test_reads_what_astropy_reads_for_every_bitpix_and_scaling(tmp_path):
    rng = np.random.default_rng(3)
    cases = {
        "f32": np.asarray(rng.normal(size=(7, 9)), np.float32),
        "f64": rng.normal(size=(5, 4)),
        "i16": rng.integers(-3000, 3000, (6, 8)).astype(np.int16),
        "u8": rng.integers(0, 255, (3, 5)).astype(np.uint8),
        "i32": rng.integers(-10**6, 10**6, (4, 4)).astype(np.int32),
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.fits"
        fits.PrimaryHDU(data).writeto(path)
        (hdu,) = read_images(path)
        with fits.open(path) as ref:
            np.testing.assert_array_equal(hdu.data, ref[0].data, err_msg=name)
    # uint16 is stored as int16 with BZERO = 32768; BSCALE scales
    path = tmp_path / "u16.fits"
    u16 = rng.integers(0, 65535, (6, 7)).astype(np.uint16)
    fits.PrimaryHDU(u16).writeto(path)
    np.testing.assert_array_equal(read_images(path)[0].data, u16)
    scaled = fits.PrimaryHDU(np.arange(12, dtype=np.int16).reshape(3, 4))
    scaled.header["BSCALE"], scaled.header["BZERO"] = 0.5, 10.0
    scaled.writeto(tmp_path / "scaled.fits")
    with fits.open(tmp_path / "scaled.fits") as ref:
        np.testing.assert_allclose(read_images(tmp_path / "scaled.fits")[0].data, ref[0].data)


def test_blank_integers_become_nan(tmp_path):
    data = np.array([[1, -32768], [3, 4]], np.int16)
    hdu = fits.PrimaryHDU(data)
    hdu.header["BLANK"] = -32768
    hdu.writeto(tmp_path / "b.fits")
    got = read_images(tmp_path / "b.fits")[0].data
    assert np.isnan(got[0, 1]) and got[1, 1] == 4


def test_extensions_named_and_cards_parsed(tmp_path):
    primary = fits.PrimaryHDU(np.ones((2, 3), np.float32))
    primary.header["OBJECT"] = "O'Brien field"
    primary.header["CRVAL1"] = (150.25, "deg")
    primary.header["FLAG"] = True
    primary.header["COMMENT"] = "ignored"
    weight = fits.ImageHDU(np.full((2, 3), 2.0, np.float32), name="WEIGHT")
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.ones(2))])
    fits.HDUList([primary, table, weight]).writeto(tmp_path / "m.fits")
    hdus = read_images(tmp_path / "m.fits")
    assert [h.name for h in hdus] == ["PRIMARY", "", "WEIGHT"]
    assert hdus[1].data is None and np.all(hdus[2].data == 2.0)
    cards = hdus[0].cards
    assert cards["OBJECT"] == "O'Brien field" and cards["CRVAL1"] == 150.25 and cards["FLAG"] is True
    assert "COMMENT" not in cards
    memmapped = read_images(tmp_path / "m.fits", memmap=True)
    np.testing.assert_array_equal(memmapped[2].data, hdus[2].data)


def test_written_images_round_trip_through_astropy_and_leave_no_temporaries(tmp_path):
    data = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    cards = {"CTYPE1": "RA---TAN", "CRVAL1": 150.123456789012, "CDELT1": -5.5e-4, "NAXIS1": 99,
             "EQUINOX": 2000, "SIMPLE": False, "HISTORY": "skipped", "DONE": False, "NOTE": "it's"}
    write_image(tmp_path / "o.fits", data, cards)
    with fits.open(tmp_path / "o.fits") as ref:
        np.testing.assert_array_equal(ref[0].data, data)
        h = ref[0].header
        assert (h["NAXIS1"], h["NAXIS2"]) == (6, 5)  # structural cards come from the data
        assert h["CRVAL1"] == 150.123456789012 and h["CDELT1"] == -5.5e-4
        assert h["EQUINOX"] == 2000 and h["DONE"] is False and h["NOTE"] == "it's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.fits"]
    back = read_images(tmp_path / "o.fits")[0]
    np.testing.assert_array_equal(back.data, data)
    with pytest.raises(ValueError, match="cannot be written"):
        write_image(tmp_path / "bad.fits", data, {"X": float("nan")})
    assert not (tmp_path / "bad.fits").exists()


def _corrupt(path, key, value):
    raw = bytearray(path.read_bytes())
    i = raw.index(key.ljust(8).encode())
    raw[i:i + 80] = f"{key:<8}= {value:>20}".ljust(80).encode()
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("key, value, reason", [
    ("BITPIX", "12", "BITPIX=12"),
    ("NAXIS1", "-4", "invalid NAXISn"),
    ("NAXIS2", "'ten'", "invalid NAXISn"),
    ("NAXIS", "1000", "NAXIS=1000"),
])
def test_malformed_headers_are_refused_with_the_reason(tmp_path, key, value, reason):
    path = tmp_path / "x.fits"
    fits.PrimaryHDU(np.ones((4, 4), np.float32)).writeto(path)
    _corrupt(path, key, value)
    with pytest.raises(ValueError, match=reason):
        read_images(path)


def test_bad_scaling_truncation_and_non_fits_are_refused(tmp_path):
    path = tmp_path / "s.fits"
    hdu = fits.PrimaryHDU(np.ones((4, 4), np.int16))
    hdu.header["BSCALE"] = 2.0
    hdu.writeto(path)
    _corrupt(path, "BSCALE", "'two'")
    with pytest.raises(ValueError, match="BSCALE"):
        read_images(path)
    big = tmp_path / "t.fits"
    fits.PrimaryHDU(np.ones((100, 100), np.float32)).writeto(big)
    big.write_bytes(big.read_bytes()[:5000])
    with pytest.raises(ValueError, match="truncated"):
        read_images(big)
    head_only = tmp_path / "h.fits"
    head_only.write_bytes(big.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated header"):
        read_images(head_only)
    other = tmp_path / "n.fits"
    other.write_bytes(b"PK\x03\x04 a zip")
    with pytest.raises(ValueError, match="not a FITS file"):
        read_images(other)


def test_header_text_with_one_card_per_line():
    cards = cards_from_text("CTYPE1  = 'RA---TAN'\nCRVAL1  =  1.5D2 / degrees\nNAXIS1  = 4096\nEND\n")
    assert cards == {"CTYPE1": "RA---TAN", "CRVAL1": 150.0, "NAXIS1": 4096}
