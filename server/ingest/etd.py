"""Exoplanet Transit Database (ETD, var2.astro.cz/ETD) transit-time tables.

ETD publishes its O-C tables as web pages, not as a formal file specification; this parser accepts the
columns of those tables, exported as CSV (comma, semicolon or tab separated), matched by header name
(case, spaces and punctuation ignored):

========================  ===========================================================  ==========
column (any of)           meaning                                                      required
========================  ===========================================================  ==========
Epoch, E, n, Cycle        integer transit epoch                                         yes
HJD / BJD (+ offset)      mid-transit time. A name containing ``HJD`` means HJD on      yes
                          the UTC scale, ``BJD`` means BJD_TDB; ``-2400000`` or
                          ``-2450000`` in the name gives the offset that was subtracted
Error, Err, Sigma,        1-sigma uncertainty of the mid-time, days                     yes
Uncertainty
O-C                       observed minus calculated, days                               no
Duration                  transit duration, minutes                                     no
Depth                     transit depth, mmag                                           no
Observer, Author          observer name(s)                                              no
DQ, Quality               ETD data quality 1 (best) .. 5                                no
Filter                    filter                                                        no
Planet, Object, Target    planet name, e.g. ``WASP-12 b``                               no
========================  ===========================================================  ==========

Lines starting with ``#`` are comments, except ``#key=value`` parameters (our extension, because ETD rows do
not name the planet): ``#planet=WASP-12 b``, ``#ra=97.6366`` and ``#dec=29.6723`` (degrees, or sexagesimal
hours / degrees), used to convert HJD_UTC to BJD_TDB. A header line may itself start with ``#`` (ETD's first
column is the row number "#"). Each row's epoch, time and error are checked; bad rows are reported with
their line numbers and the rest kept. Rows repeating an (epoch, observer) pair already seen are reported.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from server.ingest.tabular import (
    FormatError,
    ParsedTable,
    RowError,
    RowProblem,
    check_jd,
    clip,
    frame,
    normalise_name,
    parse_float,
)

ETD_COLUMNS = (
    "line", "epoch", "time", "time_system", "sigma", "o_c", "duration_min", "depth_mmag", "observer", "dq",
    "filter", "planet",
)
ETD_EARLIEST_JD = 2_440_000.0  # 1968 May 23
_EPOCH = {"epoch", "e", "n", "cycle"}
_ERROR = {"error", "err", "sigma", "uncertainty", "errord", "errorday", "errordays", "hjderror", "bjderror"}
_OC = {"oc", "ocd", "ocday", "ocdays"}
_OBSERVER = {"observer", "author", "observers", "authors", "observerauthor"}
_DQ = {"dq", "quality", "dataquality"}
_PLANET = {"planet", "object", "target", "name"}
_PARAM = re.compile(r"^#\s*([A-Za-z]+)\s*=(.*)$")
PARAMS = ("planet", "ra", "dec")


def _classify(name: str) -> str | None:
    n = normalise_name(name)
    if n in _EPOCH:
        return "epoch"
    if n in _ERROR or n.startswith("err"):
        return "sigma"
    if ("hjd" in n or "bjd" in n) and "err" not in n:
        return "time"
    if n in _OC:
        return "o_c"
    if n.startswith("duration"):
        return "duration_min"
    if n.startswith("depth"):
        return "depth_mmag"
    if n in _OBSERVER:
        return "observer"
    if n in _DQ:
        return "dq"
    if n == "filter":
        return "filter"
    if n in _PLANET:
        return "planet"
    return None


def time_convention(column_name: str) -> tuple[str, float]:
    """'HJD-2400000' -> ('HJD_UTC', 2400000.0); 'BJD_TDB' -> ('BJD_TDB', 0.0)."""
    n = normalise_name(column_name)
    system = "BJD_TDB" if "bjd" in n else "HJD_UTC"
    offset = 2_400_000.0 if "2400000" in n else 2_450_000.0 if "2450000" in n else 0.0
    return system, offset


def _split(line: str) -> tuple[str, list[str]]:
    counts = {d: line.count(d) for d in (",", ";", "\t")}
    delim = max(counts, key=lambda d: counts[d])
    if counts[delim] == 0:
        raise FormatError(f"no delimiter (comma, semicolon or tab) in the header line {clip(line)!r}")
    return delim, next(csv.reader([line], delimiter=delim))


def find_header(lines: list[str]) -> tuple[int, str, list[str | None], list[str]] | None:
    """(index, delimiter, classified columns, raw names) of the first line naming an epoch and a time column.

    A header may start with '#' (ETD's row-number column); stripping it keeps the column count.
    """
    for index, line in enumerate(lines[:200]):
        if _PARAM.match(line) is not None or not line.strip():
            continue
        text = line[1:] if line.startswith("#") else line
        try:
            delim, names = _split(text)
        except FormatError:
            continue
        kinds = [_classify(n) for n in names]
        if "epoch" in kinds and "time" in kinds:
            return index, delim, kinds, names
    return None


def _row(values: dict[str, str], offset: float) -> dict[str, Any]:
    epoch_text = values["epoch"].strip()
    epoch = parse_float(epoch_text, "Epoch")
    if epoch != int(epoch):
        raise RowProblem(f"Epoch {epoch_text!r} is not an integer")
    raw_time = parse_float(values["time"], "mid-time")
    if offset == 0.0 and raw_time < 1_000_000:
        raise RowProblem(
            f"mid-time {values['time']!r} looks like a reduced JD; name the column e.g. 'HJD-2400000'"
        )
    time = check_jd(raw_time + offset, "mid-time")
    if time < ETD_EARLIEST_JD:
        raise RowProblem(f"mid-time {values['time']!r} (JD {time}) is before 1968: no exoplanet transit data")
    sigma = parse_float(values["sigma"], "Error")
    if not 0.0 < sigma < 1.0:
        raise RowProblem(f"Error {values['sigma']!r} must be > 0 and < 1 day")
    dq_text = values.get("dq", "").strip()
    dq = None
    if dq_text:
        dq_value = parse_float(dq_text, "DQ")
        if dq_value not in (1, 2, 3, 4, 5):
            raise RowProblem(f"DQ {dq_text!r} must be 1..5")
        dq = int(dq_value)
    return {
        "epoch": int(epoch), "time": time, "sigma": sigma,
        "o_c": parse_float(values.get("o_c", ""), "O-C", allow_na=True),
        "duration_min": parse_float(values.get("duration_min", ""), "Duration", allow_na=True),
        "depth_mmag": parse_float(values.get("depth_mmag", ""), "Depth", allow_na=True),
        "observer": values.get("observer", "").strip() or None, "dq": dq,
        "filter": values.get("filter", "").strip() or None, "planet": values.get("planet", "").strip() or None,
    }


def _check_coordinates(params: dict[str, str]) -> None:
    """FormatError for a ``#ra=`` / ``#dec=`` that is not a possible coordinate (they convert HJD to BJD_TDB)."""
    from server.ingest.targets import parse_dec, parse_ra

    for key, parse in (("ra", parse_ra), ("dec", parse_dec)):
        if params.get(key):
            try:
                parse(params[key])
            except ValueError as exc:
                raise FormatError(f"#{key}={params[key]!r}: {exc}") from None


def parse_etd(text: str) -> ParsedTable:
    """Parse an ETD transit-time table (see the module docstring for accepted columns)."""
    lines = text.splitlines()
    params: dict[str, str] = {}
    for line in lines:
        m = _PARAM.match(line)
        if m is not None and m.group(1).lower() in PARAMS:
            params[m.group(1).lower()] = m.group(2).strip()
    _check_coordinates(params)
    found = find_header(lines)
    if found is None:
        raise FormatError("no header line naming an Epoch column and an HJD/BJD mid-time column")
    header_index, delim, kinds, names = found
    missing = [k for k in ("epoch", "time", "sigma") if k not in kinds]
    if missing:
        raise FormatError(f"line {header_index + 1}: the header lacks {', '.join(missing)} (found {names})")
    time_name = names[kinds.index("time")]
    system, offset = time_convention(time_name)
    params.update(time_column=time_name, time_system=system)
    records: list[dict[str, Any]] = []
    errors: list[RowError] = []
    seen: dict[tuple[int, str | None], int] = {}
    for number, line in enumerate(lines[header_index + 1 :], start=header_index + 2):
        if not line.strip() or line.startswith("#"):
            continue
        fields = next(csv.reader(io.StringIO(line), delimiter=delim))
        if len(fields) != len(kinds):
            errors.append(RowError(number, f"expected {len(kinds)} columns, found {len(fields)}", clip(line)))
            continue
        values = {}
        for kind, value in zip(kinds, fields):
            if kind is not None and kind not in values:
                values[kind] = value
        try:
            row = _row(values, offset)
        except RowProblem as exc:
            errors.append(RowError(number, str(exc), clip(line)))
            continue
        key = (row["epoch"], row["observer"])
        if key in seen:
            errors.append(RowError(number, f"epoch {row['epoch']} by {row['observer']!r} repeats line {seen[key]}",
                                   clip(line)))
            continue
        seen[key] = number
        row.update(line=number, time_system=system)
        records.append(row)
    return ParsedTable("etd", params, frame(records, ETD_COLUMNS), tuple(errors))


def split_planet_name(name: str) -> tuple[str, str]:
    """'WASP-12 b' -> ('WASP-12', 'b'); 'KELT-1b' -> ('KELT-1', 'b'). FormatError without a planet letter."""
    m = re.match(r"^\s*(.+?)(?:\s+|(?<=\d))([b-z])\s*$", name)
    if m is None:
        raise FormatError(f"planet name {name!r} does not end in a planet letter (e.g. 'WASP-12 b')")
    return m.group(1).strip(), m.group(2)
