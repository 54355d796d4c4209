"""Property-based fuzzing of every parser that reads an outside table or config file (issue 13, item 5).

The contract under test: whatever the bytes, a parser either returns a valid parse or raises its clear error (a
``ValueError`` subclass whose message says what is wrong); never another exception, never a traceback. Inputs are
random text and mutations of valid files (lines dropped, duplicated, garbled; fields replaced by empty, NaN, inf,
huge numbers, delimiters and odd characters; other delimiters; other encodings). Derandomized (tests/fuzz.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.core.configfile import read_config_file
from server.ingest.aavso import parse_aavso_csv, parse_aavso_extended
from server.ingest.etd import parse_etd
from server.ingest.formats import TABLE_FORMATS, FormatError, ParsedTable, detect_format, parse_table
from server.ingest.mpc import parse_mpc80
from server.timeseries.transit_times import load_transit_time_table
from tests.fuzz import FUZZ, fuzz
from tests.ingest_samples import CSV_HEADER, ETD_TEXT, HEADER, csv_row, ext_row, record

# ----------------------------------------------------------------------------------------------- valid seeds

EXTENDED = HEADER.format(delim=",", date="JD") + "\n".join(
    [ext_row(), ext_row(date="2450702.2234", mag="<12.1"), ext_row(mtype="DIF", err="na", amass="na")]) + "\n"
AAVSO_CSV = "\n".join([CSV_HEADER, csv_row(), csv_row(jd="2459001.5", mag="<12.2:"), csv_row(hjd="")]) + "\n"
MPC = "\n".join([
    "COD H01", "OBS A. Observer",
    record(number="00433", mag="15.2", band="V"),
    record(prov="K07Tf8A", note2="C", date="2024 01 03.5", ra="23 59 59.999", dec="+89 59 59.99"),
    record(number="A0345", note2="V"), record(number="A0345", note2="v"),
]) + "\n"
TRANSITS = "epoch,time,sigma\n0,2455000.10000,0.0005\n1,2455003.60010,0.0006\n2,2455007.09990,0.0005\n"

SEEDS = {"aavso-extended": EXTENDED, "aavso-csv": AAVSO_CSV, "etd": ETD_TEXT, "mpc80": MPC}
PARSERS = {"aavso-extended": parse_aavso_extended, "aavso-csv": parse_aavso_csv, "etd": parse_etd,
           "mpc80": parse_mpc80}

# Field values that have broken parsers elsewhere: empty, not-a-number, overflow, huge, signs, quotes, delimiters.
NASTY = ["", " ", "na", "NaN", "nan", "inf", "-inf", "Infinity", "1e308", "1e309", "-1e309", "9" * 400, "0", "-0",
         "1e-320", "0x10", "1_000", "2459000.5e3", "<", "<<1", ":", "<:", '"', '""', "'", ",", ";", "\t", "|", "#",
         "#DELIM=", "é", "\ufeff", "\u2028", "\x0b", "\x1c", "\x85", "\r", "YES", "DIF", "-", "+", "+-1", "1.2.3",
         "2459000.5", "-2459000.5", "12:00", "02/30/2024 25:61:61 p.m.", "13/01/2024 10:00:00", "J95X00A", "~zzzz"]
LINE_NOISE = ["", "#", "#TYPE=EXTENDED", "#DATE=JD", "#DATE=FOO", "#DELIM=", "#DELIM=tab", "#DELIM=##",
              "#OBSCODE=", "#planet=", "#ra=99 99 99", "#ra=nan", "#dec=1e300", "#dec=-91", "#ra=24 00 00", "COD", "COM x" * 50, "\x00", ",,,,,", "\t\t\t", "x" * 300]

lines_strategy = st.lists(st.sampled_from(NASTY + LINE_NOISE) | st.text(max_size=40), max_size=6)


@st.composite
def mutated(draw, seed: str) -> str:
    """``seed`` with a few random line and field mutations applied."""
    lines = seed.splitlines()
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["drop", "dup", "replace", "field", "delim", "truncate", "insert", "swap"]))
        if not lines:
            lines = [""]
        i = draw(st.integers(0, len(lines) - 1))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "replace":
            lines[i] = draw(st.sampled_from(NASTY + LINE_NOISE) | st.text(max_size=60))
        elif op == "insert":
            lines.insert(i, draw(st.sampled_from(LINE_NOISE) | st.text(max_size=60)))
        elif op == "field":
            delim = next((d for d in (",", ";", "\t") if d in lines[i]), " ")
            fields = lines[i].split(delim)
            j = draw(st.integers(0, len(fields) - 1))
            fields[j] = draw(st.sampled_from(NASTY) | st.text(max_size=12))
            lines[i] = delim.join(fields)
        elif op == "delim":
            old, new = draw(st.sampled_from([",", ";", "\t", " "])), draw(st.sampled_from([",", ";", "\t", "|", ""]))
            lines[i] = lines[i].replace(old, new)
        elif op == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, max(len(lines[i]) - 1, 0)))]
        else:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return newline.join(lines) + draw(st.sampled_from(["", newline]))


def _any_table_text():
    return st.one_of(
        st.text(max_size=300),
        lines_strategy.map("\n".join),
        *(mutated(seed) for seed in SEEDS.values()),
        st.sampled_from(list(SEEDS.values())).map(lambda s: s.splitlines()[0] + "\n"),  # header only
    )


def _check_table(table: ParsedTable, text: str) -> None:
    """A valid parse: the good rows and the reported bad rows point at lines of the file."""
    assert isinstance(table, ParsedTable)
    n_lines = max(len(text.splitlines()), 1)
    for err in table.errors:
        assert 1 <= err.line <= n_lines, err
        assert err.message
    if table.format == "etd":  # the coordinates that convert HJD to BJD_TDB are possible ones when given
        from server.ingest.targets import parse_dec, parse_ra

        assert 0.0 <= parse_ra(table.params["ra"]) < 360.0 if table.params.get("ra") else True
        assert abs(parse_dec(table.params["dec"])) <= 90.0 if table.params.get("dec") else True
    if len(table.rows):
        assert table.rows["line"].between(1, n_lines).all()
        for col in ("jd", "hjd", "mag", "time", "sigma", "ra_deg", "dec_deg", "jd_utc"):
            if col in table.rows:
                values = pd.to_numeric(table.rows[col], errors="coerce").dropna().to_numpy(float)
                assert np.isfinite(values).all(), (col, values)


def _parse_or_clear_error(parser, text: str) -> None:
    try:
        table = parser(text)
    except FormatError as exc:
        assert str(exc).strip() and "\n" not in str(exc).strip(), repr(exc)
        return
    _check_table(table, text)


# ----------------------------------------------------------------------------------------------- the parsers

@pytest.mark.parametrize("fmt", TABLE_FORMATS)
def test_fuzz_seed_files_are_valid_so_the_mutations_start_from_real_input(fmt):
    table = PARSERS[fmt](SEEDS[fmt])
    assert table.n_good >= 2
    assert detect_format(SEEDS[fmt].encode(), "seed") == fmt


@pytest.mark.parametrize("fmt", TABLE_FORMATS)
@FUZZ
@given(data=st.data())
def test_table_parser_gives_a_parse_or_its_format_error_on_any_text(fmt, data):
    text = data.draw(st.one_of(mutated(SEEDS[fmt]), mutated(SEEDS[fmt]), _any_table_text()))
    _parse_or_clear_error(PARSERS[fmt], text)


@fuzz(300)
@given(text=_any_table_text(),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16", "utf-32"]),
       name=st.sampled_from(["", "x.csv", "x.txt", "x.fits", "ünï.dat"]))
def test_format_detection_then_parse_gives_a_parse_or_a_format_error_on_any_bytes(text, encoding, name):
    data = text.encode(encoding, errors="replace")
    try:
        fmt = detect_format(data, name)
    except FormatError as exc:
        assert str(exc).strip()
        return
    if fmt not in TABLE_FORMATS:
        assert fmt == "fits"
        return
    try:
        table = parse_table(fmt, data, name or "file")
    except FormatError as exc:
        assert str(exc).strip()
        return
    _check_table(table, data.decode("utf-8-sig", errors="replace"))


@FUZZ
@given(data=st.binary(max_size=400))
def test_format_detection_on_random_bytes_gives_a_format_or_a_format_error(data):
    try:
        fmt = detect_format(data, "blob")
    except FormatError:
        return
    assert fmt in TABLE_FORMATS + ("fits",)


# ----------------------------------------------------------------------------------------------- transit times

def _transit_text():
    return st.one_of(
        mutated(TRANSITS), mutated(TRANSITS), mutated(TRANSITS),
        st.text(max_size=200), lines_strategy.map("\n".join),
        st.sampled_from(["", "\n", "epoch,time,sigma", "epoch,time,sigma\n", "# only a comment\n",
                         "epoch time sigma\n0 2455000.1 0.001\n", "epoch;time;sigma\n0;2455000.1;0.001\n"]),
    )


@FUZZ
@given(text=_transit_text(), encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]))
def test_transit_time_table_gives_a_clean_table_or_a_value_error_naming_the_file(tmp_path, text, encoding):
    path = tmp_path / "times.csv"
    path.write_bytes(text.encode(encoding, errors="replace"))
    try:
        table = load_transit_time_table(path)
    except ValueError as exc:
        message = str(exc)
        assert type(exc) is ValueError, repr(exc)  # not a pandas/csv internal error class
        assert "times.csv" in message or "transit" in message or "epoch" in message, message
        return
    assert len(table) >= 1
    assert list(table.columns) == ["planet", "epoch", "t_obs", "sigma"]
    assert np.isfinite(table["t_obs"].to_numpy(float)).all()
    sigma = table["sigma"].to_numpy(float)
    assert (np.isfinite(sigma) & (sigma > 0)).all()
    assert not table.duplicated(["planet", "epoch"]).any()


# ----------------------------------------------------------------------------------------------- config files

_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10))
_json = st.recursive(_json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                                     max_size=3), max_leaves=10)
_CONFIG_NOISE = ["", "{", "}", "[", "a = ", "a = 1\na = 2", "[t]\n[t]", "a = [" * 3000, "{" * 3000 + "}" * 3000,
                 '{"a": ' * 3000 + "1" + "}" * 3000, "[" * 100000, "a = " + "[" * 100000, "NaN", "1e999",
                 '{"nlive": NaN}', "\ufeff{}", "\x00", "a = 1979-05-27T07:32:00Z"]


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.sampled_from(_CONFIG_NOISE), _json.map(lambda v: __import__("json")
                                                                                        .dumps(v))),
       suffix=st.sampled_from([".toml", ".json"]), encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]))
def test_config_file_gives_a_dict_or_a_value_error_naming_the_file(tmp_path, text, suffix, encoding):
    path = tmp_path / f"priors{suffix}"
    path.write_bytes(text.encode(encoding, errors="replace"))
    try:
        data = read_config_file(str(path))
    except ValueError as exc:
        assert str(path) in str(exc), str(exc)
        assert len(str(exc)) < 2000
        return
    assert isinstance(data, dict)


def test_config_file_deeply_nested_is_refused_with_a_value_error(tmp_path):
    for suffix, text in ((".json", "[" * 200000), (".toml", "a = " + "[" * 200000)):
        path = tmp_path / f"deep{suffix}"
        path.write_text(text)
        with pytest.raises(ValueError, match="deep"):
            read_config_file(str(path))


def test_config_file_larger_than_the_limit_is_refused_before_it_is_read(tmp_path):
    from server.core.configfile import MAX_CONFIG_BYTES

    path = tmp_path / "big.json"
    with open(path, "wb") as fh:
        fh.truncate(MAX_CONFIG_BYTES + 1)
    with pytest.raises(ValueError, match=r"big\.json.*bytes"):
        read_config_file(str(path))


def test_json_config_with_a_nan_literal_is_refused(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"nlive": NaN}')
    with pytest.raises(ValueError, match="NaN"):
        read_config_file(str(path))


@pytest.mark.parametrize("line", ["#ra=nan", "#ra=24 00 00", "#ra=99 99 99", "#dec=+95 00 00", "#dec=1e300"])
def test_etd_coordinate_parameter_that_is_impossible_is_a_format_error(line):
    text = ETD_TEXT.replace("#ra=06 30 32.79", line if line.startswith("#ra") else "#ra=06 30 32.79")
    text = text.replace("#dec=+29 40 20.3", line if line.startswith("#dec") else "#dec=+29 40 20.3")
    with pytest.raises(FormatError, match=line.split("=")[0]):
        parse_etd(text)
