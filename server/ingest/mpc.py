"""Minor Planet Center optical astrometry in the 80-column (MPC1992) record format.

Columns (1-based, inclusive), identical for minor planets, comets and natural satellites from column 13 on:

=========  ==========================================================================================
 1-12      designation. Minor planets: 1-5 packed number, 6-12 packed provisional or temporary
           designation. Comets: 1-4 periodic number, 5 orbit type (C P D X I A), 6-12 provisional.
           Natural satellites: 1 planet (J S U N), 2-4 satellite number, 5 ``S``, 6-12 provisional.
 13        discovery asterisk (minor planets)
 14        note 1 (publishable note / program code)
 15        note 2: how the observation was made (blank/P photographic, C CCD, B CMOS, T transit circle,
           M micrometer, V/v roving observer, R/r radar, S/s satellite, E occultation, O offset,
           H Hipparcos, N normal place, n mini-normal place, A reduced from B1950, X/x deleted, e encoder,
           c corrected CCD, K stacked, ...)
 16-32     UTC date ``YYYY MM DD.dddddd``
 33-44     RA (J2000) ``HH MM SS.ddd``
 45-56     Dec (J2000) ``sDD MM SS.dd``
 57-65     blank
 66-71     magnitude (66-70) and band (71)
 72-77     blank
 78-80     observatory code
=========  ==========================================================================================

Header lines (``COD``, ``CON``, ``OBS``, ``MEA``, ``TEL``, ``NET``, ``BND``, ``COM``, ``NUM``, ``ACK``,
``AC2``) are collected into the parameters. Second lines of two-line observations (note 2 lower-case
``v`` roving observer, ``s`` satellite) are attached to the preceding observation (``second_line``); radar
records are reported as unsupported. Lines shorter than 80 columns are padded with blanks (editors strip
trailing spaces); longer lines are errors. Packed designations are unpacked (``00433`` -> 433,
``A0345`` -> 100345, ``~0000`` -> 620000, ``J95X00A`` -> ``1995 XA``, ``K07Tf8A`` -> ``2007 TA418``,
``PLS2040`` -> ``2040 P-L``).
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from server.ingest.tabular import (
    FormatError,
    ParsedTable,
    RowError,
    RowProblem,
    clip,
    datetime_to_jd,
    frame,
)

HEADER_KEYS = ("COD", "CON", "OBS", "MEA", "TEL", "NET", "BND", "COM", "NUM", "ACK", "AC2")
NOTE2 = {
    " ": "photographic", "P": "photographic", "e": "encoder", "C": "CCD", "B": "CMOS", "T": "meridian circle",
    "M": "micrometer", "V": "roving observer", "R": "radar", "S": "satellite", "E": "occultation",
    "O": "offset", "H": "Hipparcos", "N": "normal place", "n": "mini-normal place",
    "A": "reduced from B1950", "X": "deleted discovery", "x": "deleted", "c": "corrected CCD",
    "K": "stacked", "a": "corrected (CCD, earlier published)", "Z": "Spacewatch/unconfirmed",
}
MPC_COLUMNS = (
    "line", "designation", "number", "provisional", "object_type", "packed", "discovery", "note1", "note2",
    "obs_type", "time_utc", "jd_utc", "ra_deg", "dec_deg", "mag", "band", "observatory", "second_line",
)
_DATE = re.compile(r"^(\d{4}) (\d{2}) (\d{2}(?:\.\d*)?)\s*$")
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CENTURY = {"I": 1800, "J": 1900, "K": 2000}
_SURVEY = {"PL": "P-L", "T1": "T-1", "T2": "T-2", "T3": "T-3"}


def unpack_number(packed: str) -> int | None:
    """Packed permanent number (cols 1-5) -> int; None when blank. RowProblem when malformed."""
    p = packed.strip()
    if not p:
        return None
    if len(p) != 5:
        raise RowProblem(f"packed number {packed!r} is not 5 characters")
    if p.isdigit():
        return int(p)
    if p[0] == "~":
        value = 0
        for ch in p[1:]:
            if ch not in _B62:
                raise RowProblem(f"packed number {packed!r} has a non-base-62 character")
            value = value * 62 + _B62.index(ch)
        return 620_000 + value
    if p[0].isalpha() and p[1:].isdigit():
        return _B62.index(p[0]) * 10_000 + int(p[1:])
    raise RowProblem(f"packed number {packed!r} is malformed")


def unpack_provisional(packed: str, comet: bool = False) -> str | None:
    """Packed provisional designation (cols 6-12) -> '1995 XA' style; temporary designations unchanged."""
    p = packed.strip()
    if not p:
        return None
    if len(p) == 7 and p[:3] in ("PLS", "T1S", "T2S", "T3S") and p[3:].isdigit():
        return f"{p[3:]} {_SURVEY[p[:2]]}"
    if len(p) == 7 and p[0] in _CENTURY and p[1:3].isdigit() and p[3].isupper() and p[4] in _B62 and p[5].isdigit():
        year = _CENTURY[p[0]] + int(p[1:3])
        cycle = _B62.index(p[4]) * 10 + int(p[5])
        if comet:
            fragment = "" if p[6] == "0" else f"-{p[6].upper()}"
            return f"{year} {p[3]}{cycle}{fragment}"
        if not p[6].isupper():
            return p  # not a minor-planet provisional designation: keep as temporary
        return f"{year} {p[3]}{p[6]}{cycle if cycle else ''}"
    return p


def _designation(cols: str) -> dict[str, Any]:
    prov = cols[5:12]
    if cols[4] in "CPDXIA" and (cols[0:4].isdigit() or not cols[0:4].strip()) and cols[0] != "~":
        number = int(cols[0:4]) if cols[0:4].strip() else None
        provisional = unpack_provisional(prov, comet=True)
        name = f"{number}{cols[4]}" if number is not None else f"{cols[4]}/{provisional}"
        return {"object_type": "comet", "number": number, "provisional": provisional, "designation": name}
    if cols[0] in "JSUN" and cols[1:4].isdigit() and cols[4] == "S":
        number = int(cols[1:4])
        return {"object_type": "satellite", "number": number, "provisional": unpack_provisional(prov),
                "designation": f"{cols[0]}{number}"}
    number = unpack_number(cols[0:5])
    provisional = unpack_provisional(prov)
    if number is None and provisional is None:
        raise RowProblem("columns 1-12 hold no designation")
    return {"object_type": "minor planet", "number": number, "provisional": provisional,
            "designation": str(number) if number is not None else provisional}


def _date(text: str) -> datetime:
    m = _DATE.match(text)
    if m is None:
        raise RowProblem(f"date {text!r} (cols 16-32) is not 'YYYY MM DD.dddddd'")
    year, month, day = int(m.group(1)), int(m.group(2)), float(m.group(3))
    if not 1 <= month <= 12:
        raise RowProblem(f"date {text!r}: month {month} is not 1-12")
    if not 1.0 <= day < calendar.monthrange(year, month)[1] + 1:
        raise RowProblem(f"date {text!r}: day {day} is not in {year}-{month:02d}")
    return datetime(year, month, 1, tzinfo=UTC) + timedelta(days=day - 1.0)


def _sexagesimal(text: str, what: str, limit: int, signed: bool) -> float:
    t = text.strip()
    sign = 1.0
    if signed:
        if not t or t[0] not in "+-":
            raise RowProblem(f"{what} {text!r} must start with + or -")
        sign = -1.0 if t[0] == "-" else 1.0
        t = t[1:]
    parts = t.split()
    try:
        values = [float(x) for x in parts]
    except ValueError:
        raise RowProblem(f"{what} {text!r} is not sexagesimal") from None
    if not 2 <= len(values) <= 3:
        raise RowProblem(f"{what} {text!r} needs 2 or 3 fields")
    if values[0] >= limit or values[0] < 0 or any(not 0 <= v < 60 for v in values[1:]):
        raise RowProblem(f"{what} {text!r} is out of range")
    whole = values[0] + values[1] / 60 + (values[2] / 3600 if len(values) == 3 else 0.0)
    return sign * whole


def _observation(line: str) -> dict[str, Any]:
    if line[56:65].strip() or line[71:77].strip():
        raise RowProblem("columns 57-65 and 72-77 must be blank")
    row = _designation(line[0:12])
    row["packed"] = line[0:12].rstrip()
    row["discovery"] = line[12] == "*"
    row["note1"] = line[13].strip() or None
    row["note2"] = line[14]
    row["obs_type"] = NOTE2.get(line[14], f"note2 {line[14]!r}")
    stamp = _date(line[15:32])
    row["time_utc"] = stamp.replace(tzinfo=None)
    row["jd_utc"] = datetime_to_jd(stamp)
    row["ra_deg"] = 15.0 * _sexagesimal(line[32:44], "RA (cols 33-44)", 24, signed=False)
    row["dec_deg"] = _sexagesimal(line[44:56], "Dec (cols 45-56)", 90, signed=True)
    if abs(row["dec_deg"]) > 90:
        raise RowProblem(f"Dec {line[44:56]!r} is beyond the pole")
    mag_text = line[65:70].strip()
    if mag_text:
        try:
            row["mag"] = float(mag_text)
        except ValueError:
            raise RowProblem(f"magnitude {line[65:70]!r} (cols 66-70) is not a number") from None
    else:
        row["mag"] = None
    row["band"] = line[70].strip() or None
    code = line[77:80]
    if not re.fullmatch(r"[0-9A-Z]{3}", code):
        raise RowProblem(f"observatory code {code!r} (cols 78-80) must be 3 characters A-Z/0-9")
    row["observatory"] = code
    row["second_line"] = None
    return row


def parse_mpc80(text: str) -> ParsedTable:
    """Parse MPC 80-column optical observation records (see the module docstring)."""
    params: dict[str, str] = {}
    records: list[dict[str, Any]] = []
    errors: list[RowError] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        key = line[:3]
        if key in HEADER_KEYS and (len(line) == 3 or line[3] == " "):
            params[key] = (params[key] + "\n" if key in params else "") + line[4:].strip()
            continue
        if "\t" in line:
            errors.append(RowError(number, "TAB characters are not allowed in 80-column records", clip(line)))
            continue
        if len(line) > 80:
            errors.append(RowError(number, f"record is {len(line)} characters long, not 80", clip(line)))
            continue
        line = line.ljust(80)
        note2 = line[14]
        if note2 in "Rr":
            errors.append(RowError(number, "radar observations are not supported", clip(line)))
            continue
        if note2 in "sv":
            previous = records[-1] if records else None
            if previous is None or previous["second_line"] is not None or previous["note2"] != note2.upper() \
                    or previous["packed"] != line[0:12].rstrip():
                errors.append(RowError(number, f"second line (note 2 {note2!r}) without its first line",
                                       clip(line)))
                continue
            previous["second_line"] = line.rstrip()
            continue
        try:
            row = _observation(line)
        except RowProblem as exc:
            errors.append(RowError(number, str(exc), clip(line)))
            continue
        row["line"] = number
        records.append(row)
    for row in records:
        if row["note2"] in "SV" and row["second_line"] is None:
            errors.append(RowError(row["line"], f"note 2 {row['note2']!r} needs a second line, none follows",
                                   row["packed"]))
    records = [r for r in records if not (r["note2"] in "SV" and r["second_line"] is None)]
    if not records and not errors:
        raise FormatError("no 80-column observation records found")
    return ParsedTable("mpc80", params, frame(records, MPC_COLUMNS), tuple(errors))
