"""Hostile and unlucky input at ingest: absurd header values are clear errors, one bad file does not stop a batch,
.fits.fz images are checked in bounded memory, non-UTF-8 tables and names are handled as documented, and a
second site's upload of known content keeps that site's metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner

from ingest_samples import HEADER, astrobin_header, ext_row, small_image
from server.cli import main
from server.ingest.fitsmeta import FitsError, read_fits_metadata
from server.ingest.service import IngestError, IngestOptions, ingest_path, observation_json, parse_client_meta
from server.ingest.sites import create_site


def write_fits(path, seed=0, **cards):
    h = astrobin_header()
    for key, value in cards.items():
        if value is None:
            del h[key]
        else:
            h[key] = value
    fits.PrimaryHDU(small_image(seed), h).writeto(path)
    return path


@pytest.mark.parametrize("cards, message", [
    ({"DATE-OBS": None, "MJD-OBS": 1e20}, r"MJD-OBS = 1e\+20 is not a date between 1850 and 2200"),
    ({"DATE-OBS": None, "MJD-OBS": -1e300}, "MJD-OBS = -1e-?\\+?300 is not a date"),
    ({"DATE-OBS": "2024-13-45T00:00:00"}, "DATE-OBS = '2024-13-45T00:00:00'"),
    ({"DATE-OBS": "05/13/99"}, "DATE-OBS = '05/13/99'"),
    ({"DATE-OBS": "2024-01-01T25:00:00"}, "impossible time of day"),
])
def test_impossible_dates_are_a_clear_fits_error(tmp_path, cards, message):
    path = write_fits(tmp_path / "a.fits", **cards)
    with pytest.raises(FitsError, match=message):
        read_fits_metadata(path)


def test_out_of_range_optional_values_are_ignored_with_a_note(tmp_path):
    path = write_fits(tmp_path / "a.fits", EXPOSURE=1e30, FOCALLEN=-5.0, **{"CCD-TEMP": -500.0, "SITEELEV": 1e12},
                      XBINNING=1e300, OBJCTRA="99 00 00")
    meta = read_fits_metadata(path)
    assert meta.exptime is None and meta.focal_length_mm is None and meta.ccd_temp_c is None
    assert meta.site_elev_m is None and meta.xbinning is None and meta.ra_deg is None
    notes = " | ".join(meta.warnings)
    for key in ("EXPOSURE", "FOCALLEN", "CCD-TEMP", "SITEELEV", "XBINNING", "OBJCTRA"):
        assert f"{key} = " in notes and "ignored" in notes


def run(tmp_path, *args):
    env = {"OPENASTRO_VAR_DIR": str(tmp_path / "var"), "OPENASTRO_PROGRESS": "false"}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_one_bad_file_does_not_stop_the_batch_and_each_failure_is_one_line(tmp_path):
    run(tmp_path, "db", "upgrade")
    data = tmp_path / "data"
    data.mkdir()
    write_fits(data / "a_good.fits", seed=1)
    write_fits(data / "b_mjd.fits", seed=2, **{"DATE-OBS": None, "MJD-OBS": 1e20})
    (data / "c_latin1.txt").write_bytes(
        (HEADER.format(delim=",", date="JD") + ext_row(notes="caf\xe9") + "\n").encode("latin-1"))
    write_fits(data / "d_good.fits", seed=3)
    result = run(tmp_path, "pipeline", "ingest", str(data))
    assert result.exit_code == 1
    assert "2 new, 0 duplicate, 2 failed" in result.output
    failed = [line for line in result.output.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 2
    assert "b_mjd.fits" in failed[0] and "MJD-OBS = 1e+20 is not a date" in failed[0]
    assert "c_latin1.txt" in failed[1] and "not UTF-8 text: byte 0xe9 at line 8" in failed[1]
    assert "Traceback" not in result.output
    assert "new        #1" in result.output and "d_good.fits" in result.output


def test_a_file_name_that_is_not_utf8_is_recorded_with_a_replacement_mark_and_a_warning(oa_app, tmp_path):
    name = os.fsdecode(b"M31_\xe9t\xe9.fits")  # Latin-1 bytes on a UTF-8 system: lone surrogates in Python
    path = write_fits(tmp_path / "plain.fits")
    result = ingest_path(oa_app, path, IngestOptions(original_name=name))
    assert result.created and any("not valid UTF-8" in w for w in result.warnings)
    assert observation_json(oa_app, result.observation_id)["original_name"] == "M31_\ufffdt\ufffd.fits"


def test_cli_shows_non_utf8_file_names_without_crashing(tmp_path):
    run(tmp_path, "db", "upgrade")
    data = tmp_path / "data"
    data.mkdir()
    raw_name = os.path.join(os.fsencode(data), b"n\xe9bula.fits")
    write_fits(os.fsdecode(raw_name))
    result = run(tmp_path, "pipeline", "ingest", str(data))
    assert result.exit_code == 0, result.output
    assert "n\ufffdbula.fits" in result.output and "1 new" in result.output


def test_a_second_site_sending_known_content_keeps_its_metadata_as_a_submission(oa_app, tmp_path):
    a = create_site(oa_app.db, "Site A").id
    b = create_site(oa_app.db, "Site B").id
    path = write_fits(tmp_path / "light.fits", OBJECT=None)
    first = ingest_path(oa_app, path, IngestOptions(site_id=a, original_name="a.fits", client_meta={"target": "SS Cyg"}))
    retry = ingest_path(oa_app, path, IngestOptions(site_id=a, original_name="a.fits", client_meta={"target": "SS Cyg"}))
    assert not retry.created and retry.warnings == ()  # a plain retry changes nothing
    meta_b = {"target": "V1500 Cyg", "observer": "B. Observer", "client_ref": "night-7/12"}
    from_b = ingest_path(oa_app, path, IngestOptions(site_id=b, original_name="b.fits", client_meta=meta_b))
    assert not from_b.created and from_b.observation_id == first.observation_id
    assert any(f"first sent by site {a}" in w and "recorded with it as submission 2" in w for w in from_b.warnings)
    again_b = ingest_path(oa_app, path, IngestOptions(site_id=b, original_name="b.fits", client_meta=meta_b))
    assert any("already recorded" in w for w in again_b.warnings)
    obs = observation_json(oa_app, first.observation_id)
    assert obs["site_id"] == a and obs["target"] == "SS Cyg"  # the first sender's record is unchanged
    assert obs["submissions"] == [{"site_id": b, "original_name": "b.fits", "client": meta_b}]


@pytest.mark.parametrize("raw, message", [
    (b"[" * 5000 + b"]" * 5000, "nests 5000 levels deep"),
    (b'{"target": {"a": {"b": 1}}}', "nests 3 levels deep"),
    (b'{"exptime": NaN}', "NaN"),
    (b'{"exptime": 1e999}', "finite number"),
    (b'{"notes": "\\ud800"}', "lone surrogate"),
    (b'{"notes": "a\\u0000b"}', "control characters"),
    (b'\xff\xfe{}', "not UTF-8"),
    (b'{"target": 5}', "wrong type"),
    (b'{"unknown": 5}', "unknown metadata key"),
    (b'{"target": "x"', "not valid JSON"),
])
def test_bad_upload_metadata_is_a_value_error_naming_the_problem(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_client_meta(raw)


MEMORY_PROBE = textwrap.dedent("""
    import json, resource, sys
    from astropy.io import fits  # imported before measuring: the growth is the check's own
    from server.ingest.fitsmeta import read_fits_metadata
    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    before = peak_mb()
    meta = read_fits_metadata(sys.argv[1], max_tile_bytes=int(sys.argv[2]))
    print(json.dumps({"growth_mb": peak_mb() - before, "naxis": list(meta.naxis)}))
""")


def test_fits_fz_is_checked_in_bounded_memory(tmp_path):
    """A 6144 x 6144 int32 image (144 MiB decoded) in a ~1 MB .fits.fz, checked with a 16 MiB tile budget: the
    peak RSS grows by less than 24 MB (measured 8.6 MB; the old whole-image decode grew it by 143 MB)."""
    data = np.zeros((6144, 6144), dtype=np.int32)
    data[::97, ::89] = np.arange(64 * 70, dtype=np.int32).reshape(64, 70)[: data[::97, ::89].shape[0], :]
    path = tmp_path / "big.fits.fz"
    h = astrobin_header()
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, h, compression_type="RICE_1")]).writeto(path)
    del data
    assert path.stat().st_size < 4 * 1024**2
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    probe = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path), str(16 * 1024**2)], env=env,
                           capture_output=True, text=True, timeout=120, check=True)
    out = json.loads(probe.stdout)
    assert out["naxis"] == [6144, 6144]
    assert out["growth_mb"] < 24, out


def test_tiles_too_large_to_check_in_bounded_memory_are_refused(tmp_path):
    path = tmp_path / "one_tile.fits.fz"
    hdu = fits.CompImageHDU(small_image(0, (256, 256)), astrobin_header(), compression_type="RICE_1",
                            tile_shape=(256, 256))
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    assert read_fits_metadata(path).naxis == (256, 256)
    with pytest.raises(FitsError, match="decompress .* at a time, above the limit"):
        read_fits_metadata(path, max_tile_bytes=256 * 1024)
    with pytest.raises(IngestError, match="above the limit"):
        from server.ingest.service import prepare

        prepare(path, IngestOptions(max_tile_bytes=256 * 1024))


def test_utf8_character_cut_by_the_format_sniff_window_is_not_mistaken_for_bad_bytes():
    from server.ingest.formats import SNIFF_BYTES, detect_format

    prefix = HEADER.format(delim=",", date="JD").encode()
    plain = (ext_row() + "\n").encode()
    prefix += plain * ((SNIFF_BYTES - len(prefix)) // len(plain) - 1)
    before_notes = len(ext_row(notes="").encode())
    pad = SNIFF_BYTES - 1 - len(prefix) - before_notes  # puts the first byte of 'ü' last in the window
    text = prefix + (ext_row(notes="x" * pad + "über") + "\n").encode()
    assert text[SNIFF_BYTES - 1 : SNIFF_BYTES + 1] == "ü".encode()
    assert detect_format(text[:SNIFF_BYTES], "r.txt") == "aavso-extended"
