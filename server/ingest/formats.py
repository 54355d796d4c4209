"""Which format is this file? Detection by content (the extension is only a tie-breaker), and one entry
point that parses any archival table.

Formats: ``fits`` / ``fits.fz`` (images, see :mod:`server.ingest.fitsmeta`), ``aavso-extended``,
``aavso-csv`` (:mod:`server.ingest.aavso`), ``etd`` (:mod:`server.ingest.etd`), ``mpc80``
(:mod:`server.ingest.mpc`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from server.ingest.aavso import CSV_REQUIRED, CSV_NAMES, csv_header_columns, parse_aavso_csv, parse_aavso_extended
from server.ingest.etd import find_header, parse_etd
from server.ingest.fitsmeta import FITS_MAGIC
from server.ingest.mpc import HEADER_KEYS, parse_mpc80
from server.ingest.tabular import FormatError, ParsedTable, RowError, decode_text

TABLE_FORMATS = ("aavso-extended", "aavso-csv", "etd", "mpc80")
SNIFF_BYTES = 65536
_MPC_LINE = re.compile(r"^.{15}\d{4} \d{2} \d{2}\.\d*\s*\d{2} \d{2} [\d. ]{1,6}\s*[+-]\d{2} \d{2}.{20,30}[0-9A-Z]{3}\s*$")
_TYPE_LINE = re.compile(r"^#\s*TYPE\s*=\s*(\w+)", re.IGNORECASE)

PARSERS = {
    "aavso-extended": parse_aavso_extended,
    "aavso-csv": parse_aavso_csv,
    "etd": parse_etd,
    "mpc80": parse_mpc80,
}


def detect_format(head: bytes, name: str = "") -> str:
    """Format of a file from its first bytes (``SNIFF_BYTES`` are enough); FormatError when unknown."""
    if head.startswith(FITS_MAGIC):
        return "fits"
    if head.startswith(b"SIMPLE") or head[:8] == b"XTENSION":
        return "fits"  # malformed FITS: let the FITS checks say exactly what is wrong
    for magic, kind in ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"PK\x03\x04", "zip"), (b"\xfd7zXZ", "xz")):
        if head.startswith(magic):
            raise FormatError(
                f"{name or 'file'}: {kind}-compressed file: not accepted (a decompression bomb cannot be bounded "
                "before reading); decompress it, or tile-compress FITS with fpack (.fits.fz)"
            )
    if not head.strip():
        raise FormatError(f"{name or 'file'}: empty file")
    text = decode_text(head, name or "file", partial=len(head) >= SNIFF_BYTES)
    lines = text.splitlines()
    if len(head) >= SNIFF_BYTES and lines:
        lines = lines[:-1]  # the last line may be cut by the sniff window
    for line in lines[:50]:
        m = _TYPE_LINE.match(line)
        if m is not None:
            if m.group(1).upper() == "EXTENDED":
                return "aavso-extended"
            raise FormatError(f"{name or 'file'}: AAVSO #TYPE={m.group(1)} is not supported (only EXTENDED)")
    first = next((ln for ln in lines if ln.strip() and not ln.startswith("#")), "")
    if first:
        _delim, names = csv_header_columns(first)
        columns = {CSV_NAMES.get(n) for n in names}
        if all(c in columns for c in CSV_REQUIRED):
            return "aavso-csv"
    if find_header(lines) is not None:
        return "etd"
    records = [ln for ln in lines if ln.strip() and ln[:3] not in HEADER_KEYS]
    if records and sum(bool(_MPC_LINE.match(ln.ljust(80))) for ln in records[:50]) >= max(1, len(records[:50]) // 2):
        return "mpc80"
    hint = f" (extension {Path(name).suffix!r})" if name else ""
    raise FormatError(
        f"{name or 'file'}: unrecognised content{hint}: not FITS, an AAVSO Extended report, an AAVSO download "
        "CSV, an ETD transit table or MPC 80-column records"
    )


def detect_path_format(path: str | os.PathLike[str]) -> str:
    with open(path, "rb") as fh:
        return detect_format(fh.read(SNIFF_BYTES), Path(path).name)


def parse_table(fmt: str, data: bytes, name: str = "file") -> ParsedTable:
    """Parse the bytes of an archival table in format ``fmt`` (one of ``TABLE_FORMATS``)."""
    parser = PARSERS.get(fmt)
    if parser is None:
        raise ValueError(f"not a table format: {fmt!r}; expected one of {TABLE_FORMATS}")
    return parser(decode_text(data, name))


__all__ = [
    "TABLE_FORMATS", "FormatError", "ParsedTable", "RowError", "detect_format", "detect_path_format", "parse_table",
]
