"""Property-based fuzzing (hypothesis, the shared derandomized FUZZ profile) of the parsers that take FITS headers
and upload metadata from outside: whatever the bytes, the answer is a result or a clear FitsError / ValueError, and
the upload API answers 2xx or 4xx, never 500."""

from __future__ import annotations

import asyncio
import io
import json
import math

import httpx

import pytest
from astropy.io import fits
from hypothesis import given
from hypothesis import strategies as st

from ingest_samples import astrobin_header, small_image
from server.core.context import OpenAstro
from server.ingest.fitsmeta import BLOCK, FitsError, FitsMetadata, read_fits_metadata
from server.ingest.service import parse_client_meta
from tests.fuzz import FUZZ, fuzz

LIMIT = 2 * 1024 * 1024  # declared data above this is refused before reading: keeps every example small

KEYWORDS = ["BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "PCOUNT", "GCOUNT", "GROUPS", "BZERO",
            "BSCALE", "DATE-OBS", "MJD-OBS", "TIME-OBS", "UT", "TIMESYS", "EXPTIME", "EXPOSURE", "FILTER",
            "OBJECT", "INSTRUME", "RA", "DEC", "OBJCTRA", "OBJCTDEC", "OBSGEO-B", "OBSGEO-L", "OBSGEO-H",
            "OBSGEO-X", "OBSGEO-Y", "OBSGEO-Z", "SITELAT", "SITELONG", "SITEELEV", "XBINNING", "YBINNING", "GAIN",
            "EGAIN", "FOCALLEN", "XPIXSZ", "CCD-TEMP", "CONTINUE", "COMMENT", "HISTORY", "END", "XTENSION",
            "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZNAXIS1", "ZNAXIS2", "ZTILE1", "ZTILE2", "ZCMPTYPE"]
ASCII = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=70)
VALUES = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["1e20", "-1e300", "1e999", "NaN", "inf", "-0", "0", "1", "2", "3", "8", "16", "-32", "-64",
                     "T", "F", "'2024-03-05T21:10:11.5'", "'2024-02-30T00:00:00'", "'05/13/99'", "'99/99/99'",
                     "'21 42 42.80'", "'+95 00 00'", "'12h99m00s'", "'TT'", "'GPS'", "'XYZ'", "''", "'''",
                     "'RICE_1'", "(1.0, 2.0)", "1" * 5000, "'" + "x" * 68 + "'"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    ASCII.map(lambda t: "'" + t.replace("'", "''")[:66] + "'"),
    ASCII,
)


def card(key: str, value: str) -> bytes:
    return f"{key:<8}= {value:>20}".ljust(80)[:80].encode("ascii")


@st.composite
def random_headers(draw) -> bytes:
    """A primary header of random cards padded to whole 2880-byte blocks. Mostly it opens with a valid structure
    (BITPIX, NAXIS, NAXISn) and carries its data, so the random value cards reach the metadata reader; sometimes
    the structure itself is random."""
    cards = [b"SIMPLE  =                    T".ljust(80)]
    data = b""
    if draw(st.integers(0, 3)):
        bitpix = draw(st.sampled_from([8, 16, 32, -32, -64]))
        nx, ny = draw(st.integers(1, 40)), draw(st.integers(1, 40))
        cards += [card("BITPIX", str(bitpix)), card("NAXIS", "2"), card("NAXIS1", str(nx)), card("NAXIS2", str(ny))]
        data = bytes(abs(bitpix) // 8 * nx * ny)
        data += bytes(-len(data) % BLOCK)
    for _ in range(draw(st.integers(0, 30))):
        cards.append(card(draw(st.sampled_from(KEYWORDS)), draw(VALUES)))
    if draw(st.integers(0, 9)):
        cards.append(b"END".ljust(80))
    head = b"".join(cards)
    head += b" " * (-len(head) % BLOCK)
    return head + data


def _valid_file(compressed: bool) -> bytes:
    buf = io.BytesIO()
    if compressed:
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(small_image(0, (16, 24)), astrobin_header(),
                                                           compression_type="RICE_1")]).writeto(buf)
    else:
        fits.PrimaryHDU(small_image(0, (16, 24)), astrobin_header()).writeto(buf)
    return buf.getvalue()


VALID = {False: _valid_file(False), True: _valid_file(True)}


@st.composite
def mutated_files(draw) -> bytes:
    """A valid plain or RICE-compressed file with random bytes overwritten, or cut short."""
    raw = bytearray(VALID[draw(st.booleans())])
    for _ in range(draw(st.integers(1, 12))):
        at = draw(st.integers(0, len(raw) - 1))
        raw[at : at + 8] = draw(st.binary(min_size=1, max_size=8))
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return bytes(raw)


def _read_is_a_result_or_a_fits_error(path, content: bytes) -> None:
    path.write_bytes(content)
    try:
        meta = read_fits_metadata(path, max_data_bytes=LIMIT, max_tile_bytes=LIMIT)
    except FitsError as exc:
        assert str(exc)  # a reason, never an empty message
        return
    assert isinstance(meta, FitsMetadata)
    assert math.isfinite(meta.mjd) and 1850 <= meta.date_obs.year < 2200
    json.dumps(meta.to_json())  # what ingest stores must be plain JSON


@FUZZ
@given(content=random_headers())
def test_random_fits_headers_give_metadata_or_a_fits_error(tmp_path, content):
    _read_is_a_result_or_a_fits_error(tmp_path / "fuzz.fits", content)


@fuzz(150)
@given(content=mutated_files())
def test_mutated_fits_files_give_metadata_or_a_fits_error(tmp_path, content):
    _read_is_a_result_or_a_fits_error(tmp_path / "fuzz.fits", content)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
META_KEYS = st.sampled_from(["target", "filter", "exptime", "instrument", "telescope", "observer", "client_ref",
                             "notes", "other"])


@fuzz(120)
@given(raw=st.one_of(
    st.binary(max_size=400),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(META_KEYS, JSON_VALUES, max_size=6).map(lambda v: json.dumps(v).encode()),
    st.dictionaries(META_KEYS, st.text(max_size=300), max_size=6).map(
        lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.integers(1, 6000).map(lambda n: b"[" * n + b"]" * n),
))
def test_upload_metadata_gives_a_flat_dict_or_a_value_error(raw):
    try:
        meta = parse_client_meta(raw)
    except ValueError as exc:
        assert str(exc)
        return
    assert isinstance(meta, dict)
    for key, value in meta.items():
        assert isinstance(value, (str, int, float)) and not isinstance(value, bool)
        if isinstance(value, str):
            value.encode("utf-8")  # storable


@pytest.fixture(scope="module")
def api_app(tmp_path_factory):
    from server.core.settings import load_settings
    from server.ingest.sites import create_site, issue_api_key
    from server.web.api import create_api

    var = tmp_path_factory.mktemp("fuzzapi")
    app = OpenAstro(load_settings(env={}, overrides={"var_dir": str(var), "progress": False,
                                                      "upload_max_bytes": 256 * 1024}))
    app.db.upgrade()
    create_site(app.db, "Fuzz")
    return create_api(app), issue_api_key(app.db, "Fuzz").token


async def _post(asgi, key: str, content: bytes, metadata: bytes | None) -> httpx.Response:
    files = {"file": ("fuzz.fits", content, "application/fits")}
    if metadata is not None:
        files["metadata"] = (None, metadata, "application/json")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi, raise_app_exceptions=False),
                                 base_url="http://fuzz") as client:
        return await client.post("/api/v1/observations", headers={"Authorization": f"Bearer {key}"}, files=files)


@fuzz(60)
@given(content=st.one_of(mutated_files(), random_headers()),
       metadata=st.one_of(st.none(), st.binary(max_size=200),
                          st.dictionaries(META_KEYS, JSON_VALUES, max_size=4).map(lambda v: json.dumps(v).encode())))
def test_upload_api_answers_4xx_never_500_to_any_file_and_metadata(api_app, content, metadata):
    asgi, key = api_app
    r = asyncio.run(_post(asgi, key, content, metadata))
    assert r.status_code in (200, 201, 400, 413, 415, 422), (r.status_code, r.text)
    if r.status_code >= 400:
        assert r.json()["error"]["message"]


def test_a_duplicated_structural_keyword_is_refused_before_astropy_reads_the_header(tmp_path):
    # found by this fuzz suite in CI: astropy multiplied NAXIS1 = 'GPS' (a later duplicate) by NAXIS2 =
    # 5204686731143, a 15 TB string, while our scan had read the first NAXIS1 = 13
    cards = [b"SIMPLE  =                    T".ljust(80), card("BITPIX", "16"), card("NAXIS", "2"),
             card("NAXIS1", "13"), card("NAXIS2", "7"), card("NAXIS1", "'GPS'"), card("NAXIS2", "5204686731143"),
             b"END".ljust(80)]
    head = b"".join(cards)
    path = tmp_path / "dup.fits"
    path.write_bytes(head + b" " * (-len(head) % BLOCK) + bytes(2880))
    with pytest.raises(FitsError, match="NAXIS1 appears more than once"):
        read_fits_metadata(path, max_data_bytes=LIMIT, max_tile_bytes=LIMIT)
