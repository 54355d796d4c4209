"""Minimal FITS image reading and writing in numpy (uncompressed image HDUs only).

The reprojection path needs the image, its header cards and nothing else; astropy.io.fits
brings astropy.units along (~0.25 s of start-up per volunteer work unit). What is handled:
primary and IMAGE extension HDUs, BITPIX 8/16/32/64/-32/-64, BSCALE/BZERO, BLANK (integer data ->
NaN), header values (strings with '' escapes, logicals, integers, reals with E or D exponents;
COMMENT/HISTORY/HIERARCH/CONTINUE cards are skipped). Anything else (tile-compressed images,
random groups, truncated or malformed files) raises ``ValueError`` with the reason; callers
that must accept every FITS file use astropy.

Units: data are returned as in the file after BSCALE/BZERO (no other conversion). Writing
produces one primary HDU of big-endian float32 (BITPIX -32) with the given cards.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["ImageHDU", "cards_from_text", "read_images", "write_image"]

BLOCK = 2880
_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
_STRUCTURAL = {"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT", "END", "BSCALE", "BZERO",
               "BLANK", "CHECKSUM", "DATASUM"}
_SKIP = {"COMMENT", "HISTORY", "", "HIERARCH", "CONTINUE"}
_INT = re.compile(r"^[+-]?\d+$")
_WRITE_CHUNK = 1 << 20  # values byte-swapped per write


@dataclass(frozen=True)
class ImageHDU:
    name: str  # EXTNAME ("PRIMARY" for the primary HDU)
    cards: dict  # keyword -> value (first occurrence)
    data: np.ndarray | None  # 2-D or N-D array after scaling; None when NAXIS = 0


def _value(text: str, key: str):
    text = text.strip()
    if text.startswith("'"):
        out, i = [], 1
        while True:
            j = text.find("'", i)
            if j < 0:
                raise ValueError(f"unterminated string in card {key}")
            out.append(text[i:j])
            if text[j + 1 : j + 2] == "'":
                out.append("'")
                i = j + 2
                continue
            return "".join(out).rstrip()
    token = text.split("/", 1)[0].strip()
    if token == "":
        return None
    if token in ("T", "F"):
        return token == "T"
    if _INT.match(token):
        return int(token)
    try:
        return float(token.replace("D", "E").replace("d", "e"))
    except ValueError:
        return token  # complex or non-standard: kept as text


def _parse_cards(lines) -> dict:
    cards = {}
    for card in lines:
        key = card[:8].strip().upper()
        if key == "END":
            break
        if key in _SKIP or card[8:10] != "= " or key in cards:
            continue
        cards[key] = _value(card[10:], key)
    return cards


def cards_from_text(text: str) -> dict:
    """Header cards from text with one card per line (SWarp/astropy ``.head`` style)."""
    return _parse_cards(line.ljust(80) for line in text.splitlines())


def _read_header(fh, path) -> tuple[list[str], bool]:
    lines = []
    while True:
        block = fh.read(BLOCK)
        if len(block) == 0 and not lines:
            return [], False
        if len(block) < BLOCK:
            raise ValueError(f"{path}: truncated header")
        text = block.decode("ascii", errors="replace")
        for i in range(0, BLOCK, 80):
            lines.append(text[i : i + 80])
            if lines[-1][:8].rstrip() == "END":
                return lines, True


def read_images(path: str | os.PathLike, *, memmap: bool = False, max_hdus: int = 16) -> list[ImageHDU]:
    """Every image HDU of an uncompressed FITS file, in order.

    ``memmap=True`` maps unscaled data read-only instead of reading it (no copy: pages come
    straight from the page cache when touched).
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    hdus = []
    with open(path, "rb") as fh:
        head = fh.read(9)
        if head != b"SIMPLE  =":
            raise ValueError(f"{path}: not a FITS file (starts with {head!r})")
        fh.seek(0)
        while len(hdus) < max_hdus:
            lines, found = _read_header(fh, path)
            if not found:
                break
            cards = _parse_cards(lines)
            bitpix, naxis = cards.get("BITPIX"), cards.get("NAXIS")
            if bitpix not in _DTYPES or not isinstance(naxis, int) or not 0 <= naxis <= 999:
                raise ValueError(f"{path}: HDU {len(hdus)} has BITPIX={bitpix!r}, NAXIS={naxis!r}")
            dims = [cards.get(f"NAXIS{i}") for i in range(1, naxis + 1)]
            if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
                raise ValueError(f"{path}: HDU {len(hdus)} has invalid NAXISn {dims!r}")
            pcount, gcount = cards.get("PCOUNT", 0), cards.get("GCOUNT", 1)
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (pcount, gcount)):
                raise ValueError(f"{path}: HDU {len(hdus)} has invalid PCOUNT/GCOUNT {pcount!r}/{gcount!r}")
            npix = math.prod(dims) if dims else 0
            nbytes = abs(bitpix) // 8 * gcount * (pcount + npix) if dims else 0
            start = fh.tell()
            if start + nbytes > size:
                raise ValueError(f"{path}: truncated, HDU {len(hdus)} needs {start + nbytes} bytes, file has {size}")
            xtension = str(cards.get("XTENSION", "")).strip().upper()
            if not hdus or xtension == "IMAGE":
                data = None
                if npix:
                    if memmap:
                        data = np.memmap(path, dtype=_DTYPES[bitpix], mode="r", offset=start, shape=tuple(dims[::-1]))
                    else:
                        data = np.fromfile(fh, dtype=_DTYPES[bitpix], count=npix).reshape(dims[::-1])
                    data = _scaled(data, cards)
                name = str(cards.get("EXTNAME", "PRIMARY" if not hdus else "")).strip().upper()
                hdus.append(ImageHDU(name=name, cards=cards, data=data))
            elif xtension:
                hdus.append(ImageHDU(name=str(cards.get("EXTNAME", "")).strip().upper(), cards=cards, data=None))
            fh.seek(start + -(-nbytes // BLOCK) * BLOCK)
    return hdus


def _scaled(data: np.ndarray, cards: Mapping) -> np.ndarray:
    bscale, bzero, blank = cards.get("BSCALE", 1), cards.get("BZERO", 0), cards.get("BLANK")
    for key, value in (("BSCALE", bscale), ("BZERO", bzero)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{key} = {value!r} is not a finite number")
    if blank is not None and (isinstance(blank, bool) or not isinstance(blank, int)):
        raise ValueError(f"BLANK = {blank!r} is not an integer")
    if bscale == 1 and bzero == 0 and (blank is None or data.dtype.kind == "f"):
        return data
    out = data.astype(np.float32 if data.dtype.itemsize <= 2 or data.dtype == ">f4" else np.float64)
    out *= bscale
    out += bzero
    if blank is not None and data.dtype.kind != "f":
        out[data == blank] = np.nan
    return out


def _format(key: str, value) -> str:
    if isinstance(value, bool):
        field = f"{'T' if value else 'F':>20}"
    elif isinstance(value, (int, np.integer)):
        field = f"{int(value):>20d}"
    elif isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise ValueError(f"card {key}: {value!r} cannot be written to FITS")
        text = repr(float(value)).upper()
        if "." not in text and "E" not in text:
            text += ".0"
        field = f"{text:>20}"
    elif isinstance(value, str):
        text = value.replace("'", "''")
        field = f"'{text:<8}'"
        if len(field) > 70:
            raise ValueError(f"card {key}: string too long for one card")
    else:
        raise TypeError(f"card {key}: cannot write a {type(value).__name__}")
    card = f"{key:<8}= {field}"
    if len(card) > 80:
        raise ValueError(f"card {key}: value does not fit in one card")
    return card.ljust(80)


def write_image(path: str | os.PathLike, data: np.ndarray, cards: Mapping) -> None:
    """Write a 2-D array as a primary HDU of big-endian float32 with the given header cards.

    Atomic (temporary file in the same directory, fsync, rename): a reader never sees a
    partial file, and a failed write (full disk) leaves any previous file in place."""
    from app.atomic import atomic_open

    data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {data.shape}")
    ny, nx = data.shape
    lines = [_format("SIMPLE", True), _format("BITPIX", -32), _format("NAXIS", 2), _format("NAXIS1", nx),
             _format("NAXIS2", ny)]
    lines += [_format(str(k).upper(), v) for k, v in cards.items()
              if str(k).upper() not in _STRUCTURAL and not re.match(r"^NAXIS\d*$", str(k).upper())
              and str(k).upper() not in _SKIP]
    lines.append("END".ljust(80))
    header = "".join(lines)
    header += " " * (-len(header) % BLOCK)
    flat = data.reshape(-1)
    with atomic_open(path) as fh:
        fh.write(header.encode("ascii"))
        for i in range(0, flat.size, _WRITE_CHUNK):
            fh.write(flat[i : i + _WRITE_CHUNK].astype(">f4"))
        fh.write(b"\0" * (-(flat.size * 4) % BLOCK))
