"""AAVSO photometry: the AAVSO Extended File Format (WebObs upload) and the AAVSO International Database
download (CSV).

Extended File Format (version 1.2): ``#PARAM=value`` lines, of which TYPE (=EXTENDED), OBSCODE, SOFTWARE,
DELIM, DATE (JD | HJD | EXCEL) and OBSTYPE are required before the first observation; OBSCODE and DATE may
be repeated later and apply to the rows that follow. Other ``#`` lines are comments. Each observation has 15
fields separated by DELIM: STARID, DATE, MAGNITUDE (``<`` prefix = fainter-than), MAGERR, FILTER, TRANS
(YES/NO), MTYPE (STD, DIF, or the legacy ABS; DIF requires CNAME), CNAME, CMAG, KNAME, KMAG, AMASS, GROUP,
CHART, NOTES; ``na`` marks a missing optional value. Leniencies, both unambiguous: blank lines are skipped,
and when a row has more than 15 fields the surplus is re-joined into NOTES (the last field).

Times: DATE=JD gives the UTC Julian date of mid-exposure in ``jd``; DATE=HJD gives ``hjd`` (HJD on the UTC
scale) and leaves ``jd`` empty, because undoing the heliocentric correction needs the star's coordinates
(the ingest service does it when the target's coordinates are known). DATE=EXCEL (``MM/DD/YYYY hh:mm:ss
a.m.``, UT) is converted to ``jd``.

Download CSV: a header row naming the columns (JD, Magnitude, Uncertainty, HQuncertainty, Band, Observer
Code, Comment Code(s), Comp Star 1, Comp Star 2, Charts, Comments, Transformed (spelt "Transfomed" in real
downloads), Airmass, Validation Flag, Cmag, Kmag, HJD, Star Name, Observer Affiliation, Measurement Method,
Grouping Method, ADS Reference, Digitizer, Credit), comma or tab separated, columns matched by name. JD,
Magnitude and Band are required. A ``<`` before the magnitude flags a fainter-than (upper-limit)
observation, a trailing ``:`` an uncertain one.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime
from typing import Any

from server.ingest.tabular import (
    FormatError,
    ParsedTable,
    RowError,
    RowProblem,
    check_jd,
    clip,
    datetime_to_jd,
    frame,
    normalise_name,
    parse_float,
)

EXTENDED_FIELDS = (
    "STARID", "DATE", "MAGNITUDE", "MAGERR", "FILTER", "TRANS", "MTYPE", "CNAME", "CMAG",
    "KNAME", "KMAG", "AMASS", "GROUP", "CHART", "NOTES",
)
REQUIRED_PARAMS = ("TYPE", "OBSCODE", "SOFTWARE", "DELIM", "DATE", "OBSTYPE")
DATE_FORMATS = ("JD", "HJD", "EXCEL")
MTYPES = ("STD", "DIF", "ABS")
EXTENDED_COLUMNS = (
    "line", "obscode", "obstype", "star_id", "date_format", "jd", "hjd", "mag", "mag_err", "fainter_than",
    "filter", "transformed", "mtype", "cname", "cmag", "kname", "kmag", "airmass", "group", "chart", "notes",
)
_PARAM = re.compile(r"^#\s*([A-Za-z]+)\s*=(.*)$")
_EXCEL = re.compile(
    r"^(\d{1,2})/(\d{1,2})/(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}(?:\.\d*)?))?\s*(?:([aApP])\.?\s*[mM]\.?)?$"
)
_DELIM_WORDS = {"comma": ",", "tab": "\t", "semicolon": ";", "pipe": "|", "exclamation": "!"}


def _delimiter(raw: str) -> str:
    value = raw.rstrip("\r\n")
    if value.strip().lower() in _DELIM_WORDS:
        return _DELIM_WORDS[value.strip().lower()]
    if value == "\t" or value.strip() == "" and "\t" in value:
        return "\t"
    value = value.strip()
    if len(value) != 1 or value in "# ":
        raise FormatError(f"#DELIM={raw!r}: the delimiter must be one character other than '#' and space")
    return value


def _excel_to_jd(text: str) -> float:
    m = _EXCEL.match(text.strip())
    if m is None:
        raise RowProblem(f"DATE {text!r} is not in the EXCEL format MM/DD/YYYY hh:mm:ss [a.m.|p.m.]")
    month, day, year, hour, minute = (int(m.group(i)) for i in range(1, 6))
    second = float(m.group(6) or 0.0)
    ampm = (m.group(7) or "").lower()
    if ampm:
        if not 1 <= hour <= 12:
            raise RowProblem(f"DATE {text!r}: hour {hour} with a.m./p.m.")
        hour = hour % 12 + (12 if ampm == "p" else 0)
    try:
        stamp = datetime(year, month, day, hour, minute)
    except ValueError as exc:
        raise RowProblem(f"DATE {text!r}: {exc}") from None
    if second >= 60:
        raise RowProblem(f"DATE {text!r}: seconds {second} >= 60")
    return datetime_to_jd(stamp) + second / 86400.0


def _opt(text: str) -> str | None:
    t = text.strip()
    return None if t == "" or t.lower() == "na" else t


def _extended_row(fields: list[str], date_format: str) -> dict[str, Any]:
    f = dict(zip(EXTENDED_FIELDS, (x.strip() for x in fields)))
    star = f["STARID"]
    if not star or star.lower() == "na":
        raise RowProblem("STARID is empty")
    if len(star) > 30:
        raise RowProblem(f"STARID {star!r} is longer than 30 characters")
    if date_format == "EXCEL":
        jd, hjd = check_jd(_excel_to_jd(f["DATE"])), None
    else:
        value = check_jd(parse_float(f["DATE"], "DATE"), f"DATE ({date_format})")
        jd, hjd = (value, None) if date_format == "JD" else (None, value)
    mag_text = f["MAGNITUDE"]
    fainter = mag_text.startswith("<")
    mag = parse_float(mag_text[1:] if fainter else mag_text, "MAGNITUDE")
    if not -30.0 < mag < 40.0:
        raise RowProblem(f"MAGNITUDE {mag_text!r} is not a plausible magnitude")
    mag_err = parse_float(f["MAGERR"], "MAGERR", allow_na=True)
    if mag_err is not None and mag_err < 0:
        raise RowProblem(f"MAGERR {f['MAGERR']!r} is negative")
    band = _opt(f["FILTER"])
    if band is None:
        raise RowProblem("FILTER is required")
    trans = f["TRANS"].upper()
    if trans not in ("YES", "NO"):
        raise RowProblem(f"TRANS {f['TRANS']!r} must be YES or NO")
    mtype = f["MTYPE"].upper()
    if mtype not in MTYPES:
        raise RowProblem(f"MTYPE {f['MTYPE']!r} must be one of {', '.join(MTYPES)}")
    cname = _opt(f["CNAME"])
    if mtype == "DIF" and cname is None:
        raise RowProblem("MTYPE DIF requires CNAME")
    airmass = parse_float(f["AMASS"], "AMASS", allow_na=True)
    if airmass is not None and not 0.0 < airmass < 100.0:
        raise RowProblem(f"AMASS {f['AMASS']!r} is not a plausible airmass")
    return {
        "star_id": star, "date_format": date_format, "jd": jd, "hjd": hjd, "mag": mag, "mag_err": mag_err,
        "fainter_than": fainter, "filter": band, "transformed": trans == "YES", "mtype": mtype, "cname": cname,
        "cmag": parse_float(f["CMAG"], "CMAG", allow_na=True), "kname": _opt(f["KNAME"]),
        "kmag": parse_float(f["KMAG"], "KMAG", allow_na=True), "airmass": airmass, "group": _opt(f["GROUP"]),
        "chart": _opt(f["CHART"]), "notes": _opt(f["NOTES"]),
    }


def parse_aavso_extended(text: str) -> ParsedTable:
    """Parse an AAVSO Extended File Format report (see the module docstring for the rules)."""
    params: dict[str, str] = {}
    records: list[dict[str, Any]] = []
    errors: list[RowError] = []
    delim: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r\n")
        if line.startswith("#"):
            m = _PARAM.match(line)
            if m is not None and m.group(1).upper() in REQUIRED_PARAMS:
                key, value = m.group(1).upper(), m.group(2)
                if key == "DELIM":
                    delim = _delimiter(value)
                    params[key] = delim
                    continue
                value = value.strip()
                if key == "DATE" and value.upper() not in DATE_FORMATS:
                    raise FormatError(f"line {number}: #DATE={value!r} must be one of {', '.join(DATE_FORMATS)}")
                if key == "TYPE" and value.upper() != "EXTENDED":
                    raise FormatError(f"line {number}: #TYPE={value!r}: only the EXTENDED format is accepted here")
                params[key] = value.upper() if key in ("DATE", "TYPE", "OBSTYPE") else value
            continue
        if not line.strip():
            continue
        missing = [p for p in REQUIRED_PARAMS if p not in params]
        if missing:
            raise FormatError(
                f"line {number}: observation before the required parameters {', '.join('#' + p for p in missing)}"
            )
        fields = line.split(delim)
        if len(fields) < len(EXTENDED_FIELDS):
            errors.append(RowError(number, f"expected {len(EXTENDED_FIELDS)} fields separated by {delim!r}, "
                                           f"found {len(fields)}", clip(line)))
            continue
        if len(fields) > len(EXTENDED_FIELDS):
            fields = fields[:14] + [delim.join(fields[14:])]
        try:
            row = _extended_row(fields, params["DATE"])
        except RowProblem as exc:
            errors.append(RowError(number, str(exc), clip(line)))
            continue
        row.update(line=number, obscode=params["OBSCODE"], obstype=params["OBSTYPE"])
        records.append(row)
    if not params:
        raise FormatError("no #TYPE=EXTENDED parameter block: not an AAVSO Extended File Format report")
    missing = [p for p in REQUIRED_PARAMS if p not in params]
    if missing:
        raise FormatError(f"required parameters missing: {', '.join('#' + p for p in missing)}")
    return ParsedTable("aavso-extended", dict(params), frame(records, EXTENDED_COLUMNS), tuple(errors))


# --------------------------------------------------------------------------- AAVSO download CSV

# normalised header name -> our column
CSV_NAMES = {
    "jd": "jd", "magnitude": "mag", "uncertainty": "mag_err", "hquncertainty": "hq_uncertainty", "band": "band",
    "observercode": "observer_code", "commentcodes": "comment_codes", "commentcode": "comment_codes",
    "compstar1": "comp_star_1", "compstar2": "comp_star_2", "charts": "charts", "comments": "comments",
    "transfomed": "transformed", "transformed": "transformed", "transform": "transformed", "airmass": "airmass",
    "validationflag": "validation_flag", "cmag": "cmag", "kmag": "kmag", "hjd": "hjd", "starname": "star_name",
    "observeraffiliation": "observer_affiliation", "measurementmethod": "measurement_method",
    "groupingmethod": "grouping_method", "adsreference": "ads_reference", "digitizer": "digitizer",
    "credit": "credit", "fainterthan": "fainter_than_column",
}
CSV_REQUIRED = ("jd", "mag", "band")
CSV_COLUMNS = (
    "line", "jd", "hjd", "mag", "mag_err", "hq_uncertainty", "fainter_than", "uncertain", "band", "star_name",
    "observer_code", "comment_codes", "comp_star_1", "comp_star_2", "charts", "comments", "transformed",
    "airmass", "validation_flag", "cmag", "kmag", "observer_affiliation", "measurement_method",
    "grouping_method", "ads_reference", "digitizer", "credit",
)
_TEXT_COLUMNS = (
    "band", "star_name", "observer_code", "comment_codes", "comp_star_1", "comp_star_2", "charts", "comments",
    "validation_flag", "observer_affiliation", "measurement_method", "grouping_method", "ads_reference",
    "digitizer", "credit",
)


def csv_header_columns(header_line: str) -> tuple[str, list[str]]:
    """(delimiter, normalised names) of a download-CSV header line."""
    delim = "," if header_line.count(",") >= header_line.count("\t") else "\t"
    names = next(csv.reader([header_line], delimiter=delim))
    return delim, [normalise_name(n) for n in names]


def _truthy(text: str, what: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "yes", "y", "true"):
        return True
    if t in ("0", "no", "n", "false", ""):
        return False
    raise RowProblem(f"{what} {text!r} is not yes/no")


def _csv_row(values: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    row["jd"] = check_jd(parse_float(values["jd"], "JD"))
    hjd = parse_float(values.get("hjd", ""), "HJD", allow_na=True)
    row["hjd"] = None if hjd is None else check_jd(hjd, "HJD")
    mag_text = values["mag"].strip()
    fainter = mag_text.startswith("<")
    if fainter:
        mag_text = mag_text[1:].strip()
    uncertain = mag_text.endswith(":")
    if uncertain:
        mag_text = mag_text[:-1].strip()
    mag = parse_float(mag_text, "Magnitude")
    if not -30.0 < mag < 40.0:
        raise RowProblem(f"Magnitude {values['mag']!r} is not a plausible magnitude")
    if "fainter_than_column" in values:
        fainter = fainter or _truthy(values["fainter_than_column"], "Fainter Than")
    row.update(mag=mag, fainter_than=fainter, uncertain=uncertain)
    for key, what in (("mag_err", "Uncertainty"), ("hq_uncertainty", "HQuncertainty")):
        value = parse_float(values.get(key, ""), what, allow_na=True)
        if value is not None and value < 0:
            raise RowProblem(f"{what} {values[key]!r} is negative")
        row[key] = value
    row["airmass"] = parse_float(values.get("airmass", ""), "Airmass", allow_na=True)
    row["cmag"] = parse_float(values.get("cmag", ""), "Cmag", allow_na=True)
    row["kmag"] = parse_float(values.get("kmag", ""), "Kmag", allow_na=True)
    row["transformed"] = _truthy(values.get("transformed", ""), "Transformed")
    for key in _TEXT_COLUMNS:
        text = values.get(key, "").strip()
        row[key] = text or None
    if row["band"] is None:
        raise RowProblem("Band is empty")
    return row


def parse_aavso_csv(text: str) -> ParsedTable:
    """Parse an AAVSO International Database download (comma or tab separated, header row first)."""
    lines = text.splitlines()
    header_index = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if header_index is None:
        raise FormatError("empty file: no AAVSO download header row")
    delim, names = csv_header_columns(lines[header_index])
    columns = [CSV_NAMES.get(n) for n in names]
    missing = [c for c in CSV_REQUIRED if c not in columns]
    if missing:
        raise FormatError(
            f"line {header_index + 1}: the AAVSO download header lacks {', '.join(missing)} "
            f"(found {lines[header_index][:200]!r})"
        )
    records: list[dict[str, Any]] = []
    errors: list[RowError] = []
    body = "\n".join(lines[header_index + 1 :])
    reader = csv.reader(io.StringIO(body), delimiter=delim)
    start = 0
    for fields in reader:
        number = header_index + 1 + start + 1
        start = reader.line_num
        raw = delim.join(fields)
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(names):
            errors.append(RowError(number, f"expected {len(names)} columns, found {len(fields)}", clip(raw)))
            continue
        values = {col: val for col, val in zip(columns, fields) if col is not None}
        try:
            row = _csv_row(values)
        except RowProblem as exc:
            errors.append(RowError(number, str(exc), clip(raw)))
            continue
        row["line"] = number
        records.append(row)
    params = {"delimiter": delim, "columns": ",".join(n for n in names)}
    return ParsedTable("aavso-csv", params, frame(records, CSV_COLUMNS), tuple(errors))
