"""Shared pieces of the archival text-format parsers: the parse result and its per-row error report.

Every parser keeps the good rows and reports each bad one with its 1-based line number, the reason and the
raw text. Problems that make the whole file unusable (not this format, a missing required parameter, no
header) raise :class:`FormatError` instead.
"""

from __future__ import annotations

import codecs

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Mapping

import pandas as pd

# Plausible Julian dates for archival photometry and astrometry: 1585 .. 2406.
JD_MIN = 2_300_000.0
JD_MAX = 2_600_000.0
MJD_OFFSET = 2_400_000.5
_MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)


class FormatError(ValueError):
    """The file as a whole cannot be read as the claimed format; the message says why."""


@dataclass(frozen=True)
class RowError:
    line: int  # 1-based line number in the file
    message: str
    text: str  # the raw line (at most 200 characters)

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "message": self.message, "text": self.text}


@dataclass(frozen=True)
class ParsedTable:
    """A parsed archival file: its header parameters, the good rows and a report of the bad ones."""

    format: str  # 'aavso-extended' | 'aavso-csv' | 'etd' | 'mpc80'
    params: Mapping[str, str]
    rows: pd.DataFrame = field(repr=False)
    errors: tuple[RowError, ...]

    @property
    def n_good(self) -> int:
        return len(self.rows)

    @property
    def n_bad(self) -> int:
        return len(self.errors)

    def error_report(self, limit: int = 20) -> str:
        lines = [f"line {e.line}: {e.message}" for e in self.errors[:limit]]
        if len(self.errors) > limit:
            lines.append(f"... and {len(self.errors) - limit} more")
        return "\n".join(lines)


class RowProblem(ValueError):
    """Raised inside a parser for one bad row; turned into a :class:`RowError`."""


def decode_text(data: bytes, name: str = "file", *, partial: bool = False) -> str:
    """Bytes -> text: UTF-8 (a BOM is dropped); refuses binary content and bytes that are not UTF-8.

    ``partial``: ``data`` is the head of a longer file, so a character cut at its end is dropped, not refused."""
    if b"\x00" in data[:65536]:
        raise FormatError(f"{name}: binary content that is not a FITS file (and not a text table)")
    try:
        if partial:
            return codecs.getincrementaldecoder("utf-8-sig")().decode(data, final=False)
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # Refused, not guessed: Latin-1, cp1252 and UTF-8 read differently, and a silent guess would store wrong
        # star names and observer codes. The message points at the first bad byte.
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise FormatError(
            f"{name}: not UTF-8 text: byte {data[exc.start]:#04x} at line {line}, column {column} "
            "(Latin-1 or Windows-1252?): save the file as UTF-8 and send it again"
        ) from None


def clip(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def parse_float(text: str, what: str, *, allow_na: bool = False, na_values: tuple[str, ...] = ("na", "")) -> float | None:
    t = text.strip()
    if t.lower() in na_values:
        if allow_na:
            return None
        raise RowProblem(f"{what} is required, found {text!r}")
    try:
        value = float(t)
    except ValueError:
        raise RowProblem(f"{what} {text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise RowProblem(f"{what} {text!r} is not finite")
    return value


def check_jd(value: float, what: str = "JD") -> float:
    if not JD_MIN <= value <= JD_MAX:
        raise RowProblem(f"{what} {value!r} is outside the plausible range {JD_MIN:.0f}..{JD_MAX:.0f} (a full JD is needed)")
    return value


def datetime_to_jd(stamp: datetime) -> float:
    """UTC datetime (naive = UTC) -> JD on the UTC scale."""
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    delta = stamp.astimezone(UTC) - _MJD_EPOCH
    return delta.days + (delta.seconds + delta.microseconds / 1e6) / 86400.0 + MJD_OFFSET


def jd_to_datetime(jd: float) -> datetime:
    """JD (UTC scale) -> naive UTC datetime, rounded to the microsecond."""
    from datetime import timedelta

    return (_MJD_EPOCH + timedelta(days=jd - MJD_OFFSET)).replace(tzinfo=None)


def normalise_name(name: str) -> str:
    """Header name -> lower-case letters and digits only ('Observer Code' -> 'observercode')."""
    return re.sub(r"[^a-z0-9]", "", name.strip().lower())


def frame(records: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    """A DataFrame with exactly ``columns`` (also when there are no records)."""
    return pd.DataFrame.from_records(records, columns=list(columns))
