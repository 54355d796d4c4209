"""Safe FITS opening and observation-metadata extraction.

A FITS file that arrives from an archive or a volunteer upload is hostile until proven otherwise.
Before astropy is allowed to look at a byte of data, :func:`scan_fits_structure` walks the headers
itself (2880-byte blocks, 80-character cards) and checks, for every HDU:

* the file starts with ``SIMPLE  =                    T`` (anything else is "not a FITS file");
* BITPIX, NAXIS and NAXISn are well formed, and the data size they declare,
  ``|BITPIX|/8 * GCOUNT * (PCOUNT + NAXIS1 * ... * NAXISn)``, is below a limit; for a tile-compressed
  image (``ZIMAGE = T``, e.g. RICE ``.fits.fz``) the *uncompressed* size ``|ZBITPIX|/8 * prod(ZNAXISn)``
  is checked as well, so a small file cannot decompress into terabytes;
* the declared data are actually present in the file (truncation).

Only then is the file opened with astropy to read the header of the science HDU (the first HDU
carrying a 2-D or higher image, compressed or not) and, for compressed images, to decompress the
data once so that corrupt tiles are caught at ingest rather than in a later stage.

Metadata conventions (written where they are used):

* ``date_obs`` is a timezone-aware UTC ``datetime`` taken from DATE-OBS (ISO 8601, or the
  pre-1997 ``DD/MM/YY`` form with TIME-OBS/UT), else from MJD-OBS. TIMESYS other than UTC
  (TT, TAI, GPS, ...) is converted to UTC. It is the *start* of the exposure, as capture software
  (N.I.N.A., SGP, MaxIm DL, ACP) writes it; ``mjd_mid`` adds half the exposure time when known.
* Longitudes are east-positive degrees, latitudes degrees, elevation metres.
* ``gain`` is in e-/ADU: EGAIN when present (N.I.N.A./SGP/MaxIm write the camera's gain *setting*
  into GAIN and the conversion factor into EGAIN), else GAIN; ``gain_setting`` keeps GAIN when EGAIN
  is also present.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

BLOCK = 2880
CARD = 80
FITS_MAGIC = b"SIMPLE  =                    T"
DEFAULT_MAX_DATA_BYTES = 4 * 1024**3  # 4 GiB: a 32k x 32k float32 frame
DEFAULT_MAX_TILE_BYTES = 16 * 1024**2  # one band of decompressed .fits.fz tiles held in memory at a time
MAX_HEADER_BLOCKS = 1000  # 36,000 cards: far beyond any real header
MAX_HDUS = 256
_VALID_BITPIX = (8, 16, 32, 64, -32, -64)
_MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)
_EARLIEST = datetime(1850, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)
_MJD_RANGE = ((_EARLIEST - _MJD_EPOCH).days - 1.0, (_LATEST - _MJD_EPOCH).days + 1.0)
# Plausible ranges of the optional numeric keywords; a value outside is noted in ``warnings`` and ignored.
RANGES: dict[str, tuple[float, float]] = {
    "exptime": (0.0, 1e6),  # seconds (11.6 days: longer than any single exposure)
    "elevation": (-500.0, 1e5),  # metres (Dead Sea shore to a balloon)
    "gain": (0.0, 1e5),  # e-/ADU, or the camera's gain setting
    "focal_length": (0.0, 1e6),  # mm
    "pixel_size": (0.0, 1e3),  # micrometres
    "temperature": (-273.15, 200.0),  # Celsius
    "binning": (1.0, 1024.0),
}


class FitsError(ValueError):
    """A file that cannot be accepted as a FITS observation; the message says why."""


@dataclass(frozen=True)
class HduLayout:
    """Where one HDU lives in the file and how much data it declares (all sizes in bytes)."""

    index: int
    kind: str  # 'primary' | 'image' | 'bintable' | 'table' | 'compressed-image' | other XTENSION
    header_offset: int
    data_offset: int
    data_bytes: int  # without the padding to a 2880-byte block
    bitpix: int
    shape: tuple[int, ...]  # NAXIS1, NAXIS2, ... (FITS order)
    image_shape: tuple[int, ...]  # uncompressed image axes (ZNAXISn for compressed images)
    image_bitpix: int  # ZBITPIX for compressed images, else BITPIX
    compression: str | None = None  # ZCMPTYPE of a compressed image ('RICE_1', ...)
    tile_shape: tuple[int, ...] = ()  # ZTILEn of a compressed image (FITS order; defaults: rows)


@dataclass(frozen=True)
class FitsStructure:
    hdus: tuple[HduLayout, ...]
    file_size: int
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class FitsMetadata:
    """What ingest needs to know about one FITS observation."""

    date_obs: datetime  # UTC, tz-aware, start of exposure
    mjd: float  # UTC MJD of date_obs
    mjd_mid: float | None  # mjd + exptime/2 when EXPTIME is known
    date_source: str  # 'DATE-OBS' or 'MJD-OBS'
    exptime: float | None  # seconds
    filter: str | None
    instrument: str | None
    telescope: str | None
    object: str | None
    observer: str | None
    image_type: str | None  # IMAGETYP / FRAMETYP ('Light Frame', 'LIGHT', ...)
    ra_deg: float | None
    dec_deg: float | None
    site_lat_deg: float | None
    site_lon_deg: float | None  # east positive
    site_elev_m: float | None
    xbinning: int | None
    ybinning: int | None
    gain: float | None  # e-/ADU
    gain_setting: float | None
    focal_length_mm: float | None
    pixel_size_um: float | None
    ccd_temp_c: float | None
    naxis: tuple[int, ...]  # NAXIS1, NAXIS2[, ...] of the image (uncompressed)
    bitpix: int  # of the uncompressed image
    hdu_index: int
    compressed: bool
    compression: str | None  # ZCMPTYPE, e.g. 'RICE_1'
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (datetime as ISO 8601 with offset)."""
        out = dataclasses.asdict(self)
        out["date_obs"] = self.date_obs.isoformat()
        out["naxis"] = list(self.naxis)
        out["warnings"] = list(self.warnings)
        return out


# --------------------------------------------------------------------------- structure


def _card_value(card: str) -> str | None:
    """Raw value field of a fixed-format card (text after '= ' up to a comment), or None."""
    if card[8:10] != "= ":
        return None
    text = card[10:]
    stripped = text.strip()
    if stripped.startswith("'"):
        # string value: '' escapes a quote
        m = re.match(r"\s*'((?:[^']|'')*)'", text)
        return None if m is None else "'" + m.group(1) + "'"
    return stripped.split("/", 1)[0].strip()


def _int_card(cards: dict[str, str], key: str, hdu: int, *, default: int | None = None) -> int:
    raw = cards.get(key)
    if raw is None:
        if default is not None:
            return default
        raise FitsError(f"HDU {hdu}: mandatory keyword {key} is missing")
    try:
        return int(raw)
    except ValueError:
        raise FitsError(f"HDU {hdu}: {key} = {raw!r} is not an integer") from None


_STRUCTURAL = re.compile(r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|PCOUNT|GCOUNT|GROUPS|EXTEND|THEAP|TFIELDS|"
                         r"ZIMAGE|ZBITPIX|ZNAXIS\d*|ZTILE\d*|ZCMPTYPE|ZPCOUNT|ZGCOUNT)$")


def _read_header_cards(fh, offset: int, file_size: int, hdu: int) -> tuple[dict[str, str], int]:
    """Read one header starting at ``offset``; return (keyword -> raw value of its first card, data offset)."""
    cards: dict[str, str] = {}
    fh.seek(offset)
    for block_no in range(MAX_HEADER_BLOCKS):
        block = fh.read(BLOCK)
        if len(block) < BLOCK:
            raise FitsError(
                f"HDU {hdu}: header is truncated at byte {offset + block_no * BLOCK + len(block)} "
                f"(file size {file_size}; no END card in a complete 2880-byte block)"
            )
        try:
            text = block.decode("ascii")
        except UnicodeDecodeError:
            raise FitsError(f"HDU {hdu}: header block {block_no} contains non-ASCII bytes") from None
        for i in range(0, BLOCK, CARD):
            card = text[i : i + CARD]
            key = card[:8].rstrip()
            if key == "END":
                return cards, offset + (block_no + 1) * BLOCK
            if key in cards and _STRUCTURAL.match(key):
                # astropy reads another card of a duplicated keyword than we do: NAXIS1 = 'GPS' then
                # NAXIS2 = 5204686731143 made its data-size product a 15 TB string (a 3 KB memory bomb)
                raise FitsError(f"HDU {hdu}: structural keyword {key} appears more than once")
            if key and key not in ("COMMENT", "HISTORY", "CONTINUE") and key not in cards:
                value = _card_value(card)
                if value is not None:
                    cards[key] = value
    raise FitsError(f"HDU {hdu}: no END card within {MAX_HEADER_BLOCKS} header blocks")


def _declared_size(cards: dict[str, str], hdu: int, primary: bool) -> tuple[int, int, tuple[int, ...]]:
    bitpix = _int_card(cards, "BITPIX", hdu)
    if bitpix not in _VALID_BITPIX:
        raise FitsError(f"HDU {hdu}: BITPIX = {bitpix} is not one of {_VALID_BITPIX}")
    naxis = _int_card(cards, "NAXIS", hdu)
    if not 0 <= naxis <= 999:
        raise FitsError(f"HDU {hdu}: NAXIS = {naxis} is outside 0..999")
    shape = tuple(_int_card(cards, f"NAXIS{i}", hdu) for i in range(1, naxis + 1))
    for i, n in enumerate(shape, start=1):
        if n < 0:
            raise FitsError(f"HDU {hdu}: NAXIS{i} = {n} is negative")
    pcount = _int_card(cards, "PCOUNT", hdu, default=0)
    gcount = _int_card(cards, "GCOUNT", hdu, default=1)
    if pcount < 0 or gcount < 0:
        raise FitsError(f"HDU {hdu}: PCOUNT = {pcount}, GCOUNT = {gcount} must not be negative")
    if naxis == 0:
        return 0, bitpix, shape
    axes = shape
    if primary and shape[0] == 0 and cards.get("GROUPS") == "T":  # random groups
        axes = shape[1:]
    elif primary:
        pcount, gcount = 0, 1
    return abs(bitpix) // 8 * gcount * (pcount + math.prod(axes)), bitpix, shape


def _size_text(nbytes: int) -> str:
    return f"{nbytes} bytes ({nbytes / 1024**3:.3g} GiB)"


def scan_fits_structure(path: str | os.PathLike[str], max_data_bytes: int = DEFAULT_MAX_DATA_BYTES) -> FitsStructure:
    """Walk every HDU header of ``path`` without reading data; raise :class:`FitsError` on anything unsafe.

    ``max_data_bytes`` bounds both the stored size of each HDU and the uncompressed size of each
    tile-compressed image.
    """
    path = Path(path)
    file_size = path.stat().st_size
    notes: list[str] = []
    hdus: list[HduLayout] = []
    with open(path, "rb") as fh:
        head = fh.read(len(FITS_MAGIC))
        if head != FITS_MAGIC:
            raise FitsError(
                f"{path.name}: not a FITS file (the first card must be 'SIMPLE  =                    T', "
                f"found {head[:30]!r})"
            )
        offset = 0
        while offset < file_size:
            index = len(hdus)
            if index >= MAX_HDUS:
                raise FitsError(f"{path.name}: more than {MAX_HDUS} HDUs")
            if index > 0:
                fh.seek(offset)
                if fh.read(8) != b"XTENSION":
                    notes.append(f"{file_size - offset} bytes after the last HDU ignored (no XTENSION card)")
                    break
            cards, data_offset = _read_header_cards(fh, offset, file_size, index)
            if index == 0:
                kind = "primary"
            else:
                kind = cards.get("XTENSION", "'?'").strip("'").strip().lower()
            nbytes, bitpix, shape = _declared_size(cards, index, primary=index == 0)
            if nbytes > max_data_bytes:
                dims = " x ".join(f"NAXIS{i}={n}" for i, n in enumerate(shape, 1))
                raise FitsError(
                    f"HDU {index}: header declares {dims}, BITPIX={bitpix}: {_size_text(nbytes)} of data, "
                    f"above the limit of {_size_text(max_data_bytes)}"
                )
            image_shape, image_bitpix, compression, tile_shape = shape, bitpix, None, ()
            if kind == "bintable" and cards.get("ZIMAGE") == "T":
                kind = "compressed-image"
                compression = cards.get("ZCMPTYPE", "''").strip("'").strip() or None
                image_bitpix = _int_card(cards, "ZBITPIX", index)
                if image_bitpix not in _VALID_BITPIX:
                    raise FitsError(f"HDU {index}: ZBITPIX = {image_bitpix} is not one of {_VALID_BITPIX}")
                znaxis = _int_card(cards, "ZNAXIS", index)
                if not 0 <= znaxis <= 999:
                    raise FitsError(f"HDU {index}: ZNAXIS = {znaxis} is outside 0..999")
                image_shape = tuple(_int_card(cards, f"ZNAXIS{i}", index) for i in range(1, znaxis + 1))
                if any(n < 0 for n in image_shape):
                    raise FitsError(f"HDU {index}: negative ZNAXISn in {image_shape}")
                tile_shape = tuple(
                    _int_card(cards, f"ZTILE{i}", index, default=n if i == 1 else 1)
                    for i, n in enumerate(image_shape, start=1)
                )
                if any(t < 1 for t in tile_shape):
                    raise FitsError(f"HDU {index}: ZTILEn {tile_shape} must be positive")
                unpacked = abs(image_bitpix) // 8 * math.prod(image_shape) if image_shape else 0
                if unpacked > max_data_bytes:
                    dims = " x ".join(f"ZNAXIS{i}={n}" for i, n in enumerate(image_shape, 1))
                    raise FitsError(
                        f"HDU {index}: compressed image declares {dims}, ZBITPIX={image_bitpix}: "
                        f"{_size_text(unpacked)} once decompressed, above the limit of {_size_text(max_data_bytes)}"
                    )
            end = data_offset + nbytes
            if end > file_size:
                raise FitsError(
                    f"HDU {index}: data truncated: the header declares {nbytes} bytes from offset {data_offset} "
                    f"but the file ends at {file_size} (missing {end - file_size} bytes)"
                )
            padded = data_offset + -(-nbytes // BLOCK) * BLOCK
            if padded > file_size:
                notes.append(f"HDU {index}: final {padded - file_size} padding bytes missing")
            hdus.append(
                HduLayout(
                    index, kind, offset, data_offset, nbytes, bitpix, shape, image_shape, image_bitpix, compression,
                    tile_shape,
                )
            )
            offset = padded
    return FitsStructure(tuple(hdus), file_size, tuple(notes))


def science_hdu(structure: FitsStructure) -> HduLayout:
    """The first HDU holding an image of two or more non-empty axes."""
    for hdu in structure.hdus:
        if hdu.kind in ("primary", "image", "compressed-image") and len(hdu.image_shape) >= 2:
            if all(n > 0 for n in hdu.image_shape):
                return hdu
    kinds = ", ".join(f"{h.index}:{h.kind}{list(h.image_shape)}" for h in structure.hdus)
    raise FitsError(f"no HDU holds a 2-D image (HDUs: {kinds})")


# --------------------------------------------------------------------------- header values


def _text(header, *keys: str) -> str | None:
    for key in keys:
        if key in header:
            value = header[key]
            if isinstance(value, str):
                value = value.strip()
                if value:
                    return value
            elif value is not None and not isinstance(value, bool):
                return str(value)
    return None


def _number(header, keys: tuple[str, ...], notes: list[str], lo: float = -1e300, hi: float = 1e300) -> float | None:
    """The first usable number among ``keys``; values that are not finite numbers in [lo, hi] are noted and
    skipped."""
    for key in keys:
        if key not in header:
            continue
        value = header[key]
        if isinstance(value, bool) or value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            notes.append(f"{key} = {_clip(value)} is not a number; ignored")
            continue
        if not math.isfinite(number):
            notes.append(f"{key} = {_clip(value)} is not finite; ignored")
            continue
        if not lo <= number <= hi:
            notes.append(f"{key} = {_clip(value)} is outside [{lo:g}, {hi:g}]; ignored")
            continue
        return number
    return None


def _clip(value: Any, n: int = 60) -> str:
    """repr of a header value, shortened for messages (a fuzzed card can hold a 4000-digit number)."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else f"{str(value)[:20]}...(int)"
    return text if len(text) <= n else text[: n - 3] + "..."


_SEXAGESIMAL = re.compile(r"^\s*([+-]?)\s*(\d+(?:\.\d*)?)(?:[\s:hdHD°]+(\d+(?:\.\d*)?))?(?:[\s:m'M]+(\d+(?:\.\d*)?))?\s*[s\"S]?\s*$")


def parse_sexagesimal(text: str) -> float:
    """'+45 30 00', '-05:40:00.5', '12h30m00s' -> signed decimal units (degrees or hours)."""
    m = _SEXAGESIMAL.match(text)
    if m is None:
        raise ValueError(f"not a sexagesimal value: {text!r}")
    sign, a, b, c = m.groups()
    value = float(a) + (float(b) / 60 if b else 0.0) + (float(c) / 3600 if c else 0.0)
    if (b and float(b) >= 60) or (c and float(c) >= 60):
        raise ValueError(f"minutes or seconds >= 60 in {text!r}")
    return -value if sign == "-" else value


def _angle(header, keys: tuple[str, ...], notes: list[str], *, hours_if_text: bool, lo: float, hi: float) -> float | None:
    """Numeric values are degrees; sexagesimal strings are hours when ``hours_if_text`` (RA), else degrees."""
    for key in keys:
        if key not in header:
            continue
        value = header[key]
        if isinstance(value, bool) or value is None:
            continue
        try:
            if isinstance(value, str):
                text = value.strip()
                if not text:
                    continue
                try:
                    deg = float(text)
                except ValueError:
                    deg = parse_sexagesimal(text) * (15.0 if hours_if_text else 1.0)
            else:
                deg = float(value)
        except (TypeError, ValueError, OverflowError):
            notes.append(f"{key} = {_clip(value)} is not an angle; ignored")
            continue
        if not (lo <= deg <= hi):
            notes.append(f"{key} = {_clip(value)} is outside [{lo}, {hi}] degrees; ignored")
            continue
        return deg
    return None


def _int_value(header, keys: tuple[str, ...], notes: list[str]) -> int | None:
    number = _number(header, keys, notes, *RANGES["binning"])
    if number is None:
        return None
    if number != int(number) or number < 1:
        notes.append(f"{'/'.join(keys)} = {number!r} is not a positive whole binning factor; ignored")
        return None
    return int(number)


_OLD_DATE = re.compile(r"^(\d{2})/(\d{2})/(\d{2})$")
_ISO_DATE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}(?:\.\d*)?))?)?(Z|[+-]00:?00)?$"
)


def _iso_to_datetime(text: str, header, notes: list[str]) -> datetime:
    m = _OLD_DATE.match(text)
    if m is not None:  # FITS standard: 'DD/MM/YY' means 19YY; time in TIME-OBS or UT
        day, month, yy = (int(g) for g in m.groups())
        try:
            date_part = datetime(1900 + yy, month, day, tzinfo=UTC)
        except ValueError as exc:
            raise FitsError(f"DATE-OBS = {text!r}: {exc}") from None
        time_text = _text(header, "TIME-OBS", "UT", "UTSTART", "UT-START")
        if time_text is None:
            notes.append("DATE-OBS has no time and no TIME-OBS/UT keyword: midnight assumed")
            return date_part
        return date_part + _time_of_day(time_text)
    m = _ISO_DATE.match(text)
    if m is None:
        raise FitsError(f"DATE-OBS = {text!r} is not an ISO 8601 date (YYYY-MM-DDThh:mm:ss[.sss])")
    year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
    try:
        stamp = datetime(year, month, day, tzinfo=UTC)
    except ValueError as exc:
        raise FitsError(f"DATE-OBS = {text!r}: {exc}") from None
    if m.group(4) is None:
        time_text = _text(header, "TIME-OBS", "UT", "UTSTART", "UT-START")
        if time_text is None:
            notes.append("DATE-OBS has no time and no TIME-OBS/UT keyword: midnight assumed")
            return stamp
        return stamp + _time_of_day(time_text)
    hh, mm = int(m.group(4)), int(m.group(5))
    ss = float(m.group(6)) if m.group(6) else 0.0
    if hh > 23 or mm > 59 or ss >= 61:
        raise FitsError(f"DATE-OBS = {text!r} has an impossible time of day")
    return stamp + timedelta(hours=hh, minutes=mm, seconds=ss)


def _time_of_day(text: str) -> timedelta:
    m = re.match(r"^(\d{1,2}):(\d{2}):(\d{2}(?:\.\d*)?)$", text.strip())
    if m is None:
        raise FitsError(f"TIME-OBS/UT = {text!r} is not hh:mm:ss[.sss]")
    hh, mm, ss = int(m.group(1)), int(m.group(2)), float(m.group(3))
    if hh > 23 or mm > 59 or ss >= 61:
        raise FitsError(f"TIME-OBS/UT = {text!r} has an impossible time of day")
    return timedelta(hours=hh, minutes=mm, seconds=ss)


def _to_utc(stamp: datetime, timesys: str) -> datetime:
    if timesys in ("UTC", "UT", ""):
        return stamp
    from astropy.time import Time

    scale = {"TT": "tt", "TDT": "tt", "ET": "tt", "TAI": "tai", "IAT": "tai", "TDB": "tdb", "GPS": "tai"}.get(timesys)
    if scale is None:
        raise FitsError(f"TIMESYS = {timesys!r} is not supported (UTC, TT, TAI, TDB, GPS)")
    naive = stamp.replace(tzinfo=None)
    if timesys == "GPS":  # GPS = TAI - 19 s
        naive = naive + timedelta(seconds=19)
    utc = Time(naive, scale=scale).utc.to_datetime()
    return utc.replace(tzinfo=UTC)


def observation_time(header) -> tuple[datetime, str, list[str]]:
    """UTC start time from DATE-OBS (preferred) or MJD-OBS; FitsError when neither is usable."""
    notes: list[str] = []
    timesys = (_text(header, "TIMESYS") or "UTC").upper()
    date_text = _text(header, "DATE-OBS")
    if date_text is not None:
        stamp, source = _iso_to_datetime(date_text, header, notes), "DATE-OBS"
    elif "MJD-OBS" in header:
        scratch: list[str] = []
        mjd = _number(header, ("MJD-OBS",), scratch)
        if mjd is None or not _MJD_RANGE[0] <= mjd <= _MJD_RANGE[1]:
            raise FitsError(f"MJD-OBS = {_clip(header['MJD-OBS'])} is not a date between {_EARLIEST.year} and "
                            f"{_LATEST.year} (MJD {_MJD_RANGE[0]:.0f} to {_MJD_RANGE[1]:.0f})")
        stamp, source = _MJD_EPOCH + timedelta(days=mjd), "MJD-OBS"
    else:
        raise FitsError("the header has neither DATE-OBS nor MJD-OBS: the observation time is unknown")
    stamp = _to_utc(stamp, timesys)
    if not (_EARLIEST <= stamp < _LATEST):
        raise FitsError(f"{source} gives {stamp.isoformat()}, outside {_EARLIEST.year}-{_LATEST.year}")
    return stamp, source, notes


def datetime_to_mjd(stamp: datetime) -> float:
    """UTC datetime -> MJD (UTC), to microsecond precision."""
    delta = stamp.astimezone(UTC) - _MJD_EPOCH
    return delta.days + (delta.seconds + delta.microseconds / 1e6) / 86400.0


def _site(header, notes: list[str]) -> tuple[float | None, float | None, float | None]:
    lat = _angle(header, ("OBSGEO-B",), notes, hours_if_text=False, lo=-90, hi=90)
    lon = _angle(header, ("OBSGEO-L",), notes, hours_if_text=False, lo=-360, hi=360)
    elev = _number(header, ("OBSGEO-H",), notes, *RANGES["elevation"])
    if lat is None and all(k in header for k in ("OBSGEO-X", "OBSGEO-Y", "OBSGEO-Z")):
        xyz = [_number(header, (k,), notes, -1e8, 1e8) for k in ("OBSGEO-X", "OBSGEO-Y", "OBSGEO-Z")]
        if None not in xyz and 6.0e6 < math.sqrt(sum(v * v for v in xyz)) < 6.5e6:  # metres from the geocentre
            from astropy import units as u
            from astropy.coordinates import EarthLocation

            geo = EarthLocation.from_geocentric(*xyz, unit=u.m).to_geodetic()
            lat, lon, elev = float(geo.lat.deg), float(geo.lon.deg), float(geo.height.to_value(u.m))
        elif None not in xyz:
            notes.append("OBSGEO-X/Y/Z is not on the Earth's surface; ignored")
    if lat is None:
        lat = _angle(header, ("SITELAT", "LAT-OBS", "LATITUDE"), notes, hours_if_text=False, lo=-90, hi=90)
    if lon is None:
        lon = _angle(header, ("SITELONG", "LONG-OBS", "LONGITUD"), notes, hours_if_text=False, lo=-360, hi=360)
    if elev is None:
        elev = _number(header, ("SITEELEV", "ALT-OBS", "ALTITUDE"), notes, *RANGES["elevation"])
    if lon is not None and lon > 180:
        lon -= 360.0
    return lat, lon, elev


def metadata_from_header(header, layout: HduLayout, compression: str | None = None) -> FitsMetadata:
    """Pure: one (merged) astropy header -> FitsMetadata. Raises FitsError without a usable time."""
    stamp, source, notes = observation_time(header)
    exptime = _number(header, ("EXPTIME", "EXPOSURE", "EXP_TIME"), notes, *RANGES["exptime"])
    mjd = datetime_to_mjd(stamp)
    egain = _number(header, ("EGAIN",), notes, *RANGES["gain"])
    gain = _number(header, ("GAIN",), notes, *RANGES["gain"])
    lat, lon, elev = _site(header, notes)
    return FitsMetadata(
        date_obs=stamp,
        mjd=mjd,
        mjd_mid=None if exptime is None else mjd + exptime / 2 / 86400.0,
        date_source=source,
        exptime=exptime,
        filter=_text(header, "FILTER", "FILTER1", "FILTNAME"),
        instrument=_text(header, "INSTRUME", "CAMERA"),
        telescope=_text(header, "TELESCOP"),
        object=_text(header, "OBJECT"),
        observer=_text(header, "OBSERVER"),
        image_type=_text(header, "IMAGETYP", "FRAMETYP", "FRAME"),
        ra_deg=_angle(header, ("RA", "OBJCTRA", "RA_OBJ", "OBJRA"), notes, hours_if_text=True, lo=0, hi=360),
        dec_deg=_angle(header, ("DEC", "OBJCTDEC", "DEC_OBJ", "OBJDEC"), notes, hours_if_text=False, lo=-90, hi=90),
        site_lat_deg=lat,
        site_lon_deg=lon,
        site_elev_m=elev,
        xbinning=_int_value(header, ("XBINNING", "CCDXBIN", "BINX"), notes),
        ybinning=_int_value(header, ("YBINNING", "CCDYBIN", "BINY"), notes),
        gain=egain if egain is not None else gain,
        gain_setting=gain if egain is not None else None,
        focal_length_mm=_number(header, ("FOCALLEN",), notes, *RANGES["focal_length"]),
        pixel_size_um=_number(header, ("XPIXSZ", "PIXSIZE1", "PIXSIZE"), notes, *RANGES["pixel_size"]),
        ccd_temp_c=_number(header, ("CCD-TEMP", "CCD_TEMP", "SET-TEMP"), notes, *RANGES["temperature"]),
        naxis=layout.image_shape,
        bitpix=layout.image_bitpix,
        hdu_index=layout.index,
        compressed=layout.kind == "compressed-image",
        compression=compression,
        warnings=tuple(notes),
    )


# --------------------------------------------------------------------------- entry point


def _decompression_errors() -> tuple[type[BaseException], ...]:
    """astropy raises its cfitsio codec's own exception (not an OSError) for corrupt tiles."""
    try:
        from astropy.io.fits.hdu.compressed._compression import CfitsioException
    except ImportError:  # pragma: no cover - private location moved
        return ()
    return (CfitsioException,)


def tile_bands(layout: HduLayout, max_tile_bytes: int) -> list[tuple[int, int]]:
    """Slices ``(start, stop)`` of the slowest image axis (numpy axis 0) that cover whole bands of tiles, each
    holding at most ``max_tile_bytes`` once decompressed (8 bytes a pixel: scaled data decode to float64).

    FitsError when a single band of tiles is larger than that: its layout cannot be checked in bounded memory."""
    shape = tuple(reversed(layout.image_shape))  # numpy order
    tile = tuple(reversed(layout.tile_shape)) if layout.tile_shape else (1,) + shape[1:]
    step = min(tile[0], shape[0])
    band = 8 * step * math.prod(shape[1:])
    if band > max_tile_bytes:
        raise FitsError(
            f"HDU {layout.index}: compressed tiles ZTILEn={layout.tile_shape or '(rows)'} of a "
            f"{' x '.join(map(str, layout.image_shape))} image decompress {_size_text(band)} at a time, above the "
            f"limit of {_size_text(max_tile_bytes)}: tile-compress with smaller tiles (fpack's default is rows)"
        )
    per = max(1, max_tile_bytes // band) * step  # several bands of tiles per read, each read <= the limit
    return [(y, min(y + per, shape[0])) for y in range(0, shape[0], per)]


def _check_tiles(hdu, layout: HduLayout, max_tile_bytes: int) -> None:
    """Decompress a tile-compressed image one band of tiles at a time (``CompImageHDU.section``), so corrupt
    tiles fail at ingest while memory stays below ``max_tile_bytes`` (the whole image is never decoded)."""
    expected = tuple(reversed(layout.image_shape))
    for start, stop in tile_bands(layout, max_tile_bytes):
        band = np.asarray(hdu.section[start:stop])
        if band.shape != (stop - start,) + expected[1:]:
            raise FitsError(
                f"HDU {layout.index}: decompressed rows {start}:{stop} have shape {band.shape}, "
                f"not what ZNAXISn {layout.image_shape} declares"
            )
        if not np.issubdtype(band.dtype, np.number):
            raise FitsError(f"HDU {layout.index}: decompressed data are not numeric ({band.dtype})")
        del band


def read_fits_metadata(path: str | os.PathLike[str], max_data_bytes: int = DEFAULT_MAX_DATA_BYTES,
                       max_tile_bytes: int = DEFAULT_MAX_TILE_BYTES) -> FitsMetadata:
    """Check ``path`` structurally, then read the science HDU's metadata.

    Raises :class:`FitsError` (a ValueError) with the reason for: not FITS, truncated header or data,
    a declared data size above ``max_data_bytes`` (checked before any data is read), no image HDU,
    undecodable compressed tiles, or no usable DATE-OBS/MJD-OBS.

    Memory: headers only, plus, for a tile-compressed image, one band of tiles at a time (at most
    ``max_tile_bytes``); the file itself is memory-mapped, never read whole.
    """
    from astropy.io import fits
    from astropy.io.fits.verify import VerifyError

    structure = scan_fits_structure(path, max_data_bytes)
    layout = science_hdu(structure)
    astro_notes: list[str] = list(structure.warnings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # raw (unscaled) values: astropy memory-maps only unscaled data, and scaling adds nothing to the check
            # our own file handle: astropy leaks its handle when fits.open itself raises on a broken header
            with open(path, "rb") as fh, fits.open(fh, memmap=True, lazy_load_hdus=True, ignore_missing_end=False,
                                                   do_not_scale_image_data=True) as hdul:
                hdu = hdul[layout.index]
                header = hdu.header
                if layout.index != 0:  # the science HDU's keywords win over the primary's
                    header = hdul[0].header.copy()
                    header.update(hdu.header)
                if layout.kind == "compressed-image":
                    _check_tiles(hdu, layout, max_tile_bytes)  # corrupt tiles fail here, not downstream
                meta = metadata_from_header(header, layout, layout.compression)
        except FitsError:
            raise
        except (OSError, ValueError, TypeError, KeyError, IndexError, ZeroDivisionError, OverflowError,
                AttributeError, MemoryError, VerifyError, *_decompression_errors()) as exc:
            raise FitsError(f"{Path(path).name}: astropy cannot read HDU {layout.index}: "
                            f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    astro_notes.extend(f"astropy: {w.message}" for w in caught)
    if astro_notes:
        meta = dataclasses.replace(meta, warnings=tuple(astro_notes) + meta.warnings)
    return meta
