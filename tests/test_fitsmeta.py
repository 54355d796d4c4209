"""Safe FITS opening and metadata extraction: AstroBin/N.I.N.A.-style headers, RICE .fits.fz, and every kind of
bad file (not FITS, truncated, absurd NAXIS, corrupt tiles, no observation time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ingest_samples import astrobin_header, small_image
from server.ingest.fitsmeta import (
    FitsError,
    datetime_to_mjd,
    parse_sexagesimal,
    read_fits_metadata,
    scan_fits_structure,
)


def write(path, hdus) -> str:
    fits.HDUList(hdus).writeto(path)
    return str(path)


def test_astrobin_style_header_gives_every_metadata_field(tmp_path):
    path = write(tmp_path / "light.fits", [fits.PrimaryHDU(small_image(), astrobin_header())])
    meta = read_fits_metadata(path)
    assert meta.date_obs == datetime(2024, 3, 5, 21, 10, 11, 500000, tzinfo=UTC)
    assert meta.mjd == pytest.approx(60374.0 + (21 * 3600 + 10 * 60 + 11.5) / 86400, abs=1e-9)
    assert meta.mjd_mid == pytest.approx(meta.mjd + 60.0 / 86400, abs=1e-12)
    assert meta.exptime == 120.0 and meta.filter == "V" and meta.image_type == "LIGHT"
    assert meta.instrument == "ZWO ASI2600MM Pro" and meta.telescope == "RedCat 51"
    assert meta.xbinning == 2 and meta.ybinning == 2
    assert meta.gain == 0.25 and meta.gain_setting == 100  # EGAIN is e-/ADU; GAIN is the camera setting
    assert meta.ra_deg == pytest.approx(15 * (21 + 42 / 60 + 42.80 / 3600), abs=1e-9)
    assert meta.dec_deg == pytest.approx(43 + 35 / 60 + 9.9 / 3600, abs=1e-9)
    assert meta.site_lat_deg == pytest.approx(45.5) and meta.site_lon_deg == pytest.approx(-71.25)
    assert meta.site_elev_m == 350.0 and meta.focal_length_mm == 250.0 and meta.pixel_size_um == 3.76
    assert meta.object == "SS Cyg" and meta.observer == "A. Amateur" and meta.ccd_temp_c == -10.0
    assert meta.naxis == (64, 48) and meta.bitpix == -32 and not meta.compressed and meta.hdu_index == 0
    assert meta.warnings == ()
    assert meta.to_json()["date_obs"] == "2024-03-05T21:10:11.500000+00:00"


def test_rice_compressed_fz_is_checked_decompressed_and_read(tmp_path):
    h = astrobin_header()
    path = write(tmp_path / "light.fits.fz",
                 [fits.PrimaryHDU(), fits.CompImageHDU(small_image(), h, compression_type="RICE_1")])
    meta = read_fits_metadata(path)
    assert meta.compressed and meta.compression == "RICE_1" and meta.hdu_index == 1
    assert meta.naxis == (64, 48) and meta.bitpix == -32 and meta.filter == "V" and meta.exptime == 120.0


def test_rice_compressed_unsigned_16_bit_frame_with_bzero_is_read(tmp_path):
    data = np.random.default_rng(2).poisson(1200.0, (40, 50)).astype(np.uint16)
    path = write(tmp_path / "u16.fits.fz",
                 [fits.PrimaryHDU(), fits.CompImageHDU(data, astrobin_header(), compression_type="RICE_1")])
    meta = read_fits_metadata(path)
    assert meta.compressed and meta.naxis == (50, 40) and meta.bitpix == 16


def test_corrupt_compressed_tiles_are_refused(tmp_path):
    path = write(tmp_path / "light.fits.fz",
                 [fits.PrimaryHDU(), fits.CompImageHDU(small_image(), astrobin_header(), compression_type="RICE_1")])
    raw = bytearray(Path(path).read_bytes())
    heap_end = len(raw) - 2880  # the last block is the (padded) heap of the compressed HDU
    for i in range(heap_end - 1500, heap_end - 200):
        raw[i] ^= 0xFF
    Path(path).write_bytes(bytes(raw))
    with pytest.raises(FitsError, match="HDU 1"):
        read_fits_metadata(path)


def test_mjd_obs_in_tt_is_converted_to_utc(tmp_path):
    h = fits.Header()
    h["MJD-OBS"] = 60000.5
    h["TIMESYS"] = "TT"
    meta = read_fits_metadata(write(tmp_path / "a.fits", [fits.PrimaryHDU(small_image(), h)]))
    # TT - UTC = 32.184 s + 37 leap seconds in 2023
    expected = datetime(2023, 2, 25, 12, tzinfo=UTC) - timedelta(seconds=69.184)
    assert abs((meta.date_obs - expected).total_seconds()) < 1e-3 and meta.date_source == "MJD-OBS"


def test_pre_1997_date_form_with_time_obs(tmp_path):
    h = fits.Header()
    h["DATE-OBS"] = "14/07/95"
    h["TIME-OBS"] = "03:04:05.5"
    meta = read_fits_metadata(write(tmp_path / "a.fits", [fits.PrimaryHDU(small_image(), h)]))
    assert meta.date_obs == datetime(1995, 7, 14, 3, 4, 5, 500000, tzinfo=UTC)


def test_obsgeo_xyz_gives_the_geodetic_site(tmp_path):
    from astropy import units as u
    from astropy.coordinates import EarthLocation

    loc = EarthLocation.from_geodetic(lon=-17.88 * u.deg, lat=28.76 * u.deg, height=2330 * u.m)
    h = fits.Header()
    h["DATE-OBS"] = "2024-01-01T00:00:00"
    h["OBSGEO-X"], h["OBSGEO-Y"], h["OBSGEO-Z"] = (float(v.to_value(u.m)) for v in (loc.x, loc.y, loc.z))
    meta = read_fits_metadata(write(tmp_path / "a.fits", [fits.PrimaryHDU(small_image(), h)]))
    assert meta.site_lat_deg == pytest.approx(28.76, abs=1e-7)
    assert meta.site_lon_deg == pytest.approx(-17.88, abs=1e-7) and meta.site_elev_m == pytest.approx(2330, abs=1e-3)


def test_missing_date_obs_and_mjd_obs_is_a_clear_error(tmp_path):
    path = write(tmp_path / "a.fits", [fits.PrimaryHDU(small_image())])
    with pytest.raises(FitsError, match="neither DATE-OBS nor MJD-OBS"):
        read_fits_metadata(path)


def test_unparseable_date_obs_names_the_value(tmp_path):
    h = fits.Header()
    h["DATE-OBS"] = "yesterday evening"
    with pytest.raises(FitsError, match="yesterday evening"):
        read_fits_metadata(write(tmp_path / "a.fits", [fits.PrimaryHDU(small_image(), h)]))


def test_not_a_fits_file_is_refused(tmp_path):
    path = tmp_path / "photo.fits"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(5000))
    with pytest.raises(FitsError, match="not a FITS file"):
        read_fits_metadata(path)


def test_truncated_data_is_refused_before_reading(tmp_path):
    h = fits.Header()
    h["DATE-OBS"] = "2024-01-01T00:00:00"
    path = write(tmp_path / "a.fits", [fits.PrimaryHDU(small_image(shape=(200, 200)), h)])
    raw = Path(path).read_bytes()
    Path(path).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FitsError, match="data truncated"):
        read_fits_metadata(path)


def test_truncated_header_is_refused(tmp_path):
    path = write(tmp_path / "a.fits", [fits.PrimaryHDU(small_image(), astrobin_header())])
    Path(path).write_bytes(Path(path).read_bytes()[:1000])
    with pytest.raises(FitsError, match="header is truncated"):
        read_fits_metadata(path)


def absurd_header(**cards) -> bytes:
    h = fits.Header()
    h["SIMPLE"] = True
    for key, value in cards.items():
        h[key] = value
    h["DATE-OBS"] = "2024-01-01T00:00:00"
    return h.tostring().encode("ascii")


def test_header_declaring_terabytes_is_refused_without_touching_data(tmp_path):
    path = tmp_path / "huge.fits"
    path.write_bytes(absurd_header(BITPIX=-64, NAXIS=2, NAXIS1=1_000_000, NAXIS2=1_000_000))
    with pytest.raises(FitsError, match=r"NAXIS1=1000000 x NAXIS2=1000000.*above the limit"):
        read_fits_metadata(path)


def test_compressed_image_that_would_decompress_to_terabytes_is_refused(tmp_path):
    path = write(tmp_path / "a.fits.fz",
                 [fits.PrimaryHDU(), fits.CompImageHDU(small_image(), astrobin_header(), compression_type="RICE_1")])
    raw = bytearray(Path(path).read_bytes())
    start = 2880
    header = fits.Header.fromstring(raw[start : start + 2880 * 2].decode("ascii", errors="replace").split("END" + " " * 77)[0])
    assert header["ZNAXIS1"] == 64
    text = raw.decode("latin-1")
    i = text.index("ZNAXIS1 =", start)
    raw[i : i + 80] = f"{'ZNAXIS1':8}= {10**9:>20}".ljust(80).encode()
    i = text.index("ZNAXIS2 =", start)
    raw[i : i + 80] = f"{'ZNAXIS2':8}= {10**9:>20}".ljust(80).encode()
    path_bomb = tmp_path / "bomb.fits.fz"
    path_bomb.write_bytes(bytes(raw))
    with pytest.raises(FitsError, match="once decompressed, above the limit"):
        read_fits_metadata(path_bomb)


def test_bad_structural_keywords_name_the_value(tmp_path):
    path = tmp_path / "a.fits"
    path.write_bytes(absurd_header(BITPIX=12, NAXIS=2, NAXIS1=10, NAXIS2=10))
    with pytest.raises(FitsError, match="BITPIX = 12"):
        scan_fits_structure(path)


def test_file_without_image_hdu_is_refused(tmp_path):
    h = fits.Header()
    h["DATE-OBS"] = "2024-01-01T00:00:00"
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.arange(3.0))])
    path = write(tmp_path / "t.fits", [fits.PrimaryHDU(header=h), table])
    with pytest.raises(FitsError, match="no HDU holds a 2-D image"):
        read_fits_metadata(path)


def test_limit_is_a_parameter(tmp_path):
    h = fits.Header()
    h["DATE-OBS"] = "2024-01-01T00:00:00"
    path = write(tmp_path / "a.fits", [fits.PrimaryHDU(small_image(), h)])
    assert read_fits_metadata(path, max_data_bytes=64 * 48 * 4).naxis == (64, 48)
    with pytest.raises(FitsError, match="above the limit"):
        read_fits_metadata(path, max_data_bytes=64 * 48 * 4 - 1)


@pytest.mark.parametrize("text, value", [("+45 30 00", 45.5), ("-05:40:00", -5 - 40 / 60), ("12h30m00s", 12.5),
                                         ("10", 10.0)])
def test_sexagesimal_values_parse(text, value):
    assert parse_sexagesimal(text) == pytest.approx(value)


def test_mjd_of_a_datetime_is_exact_to_the_microsecond():
    assert datetime_to_mjd(datetime(1858, 11, 17, tzinfo=UTC)) == 0.0
    assert datetime_to_mjd(datetime(2000, 1, 1, 12, tzinfo=UTC)) == 51544.5
