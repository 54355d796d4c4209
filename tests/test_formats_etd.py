"""ETD transit-time tables (the columns of ETD's O-C tables, exported as CSV), including malformed rows."""

from __future__ import annotations

import pytest

from ingest_samples import ETD_TEXT
from server.ingest.etd import parse_etd, split_planet_name, time_convention
from server.ingest.formats import detect_format
from server.ingest.tabular import FormatError

def test_etd_table_keeps_good_rows_and_reports_malformed_ones_with_line_numbers():
    table = parse_etd(ETD_TEXT)
    assert list(table.rows["epoch"]) == [1850, 1851, 1857]
    assert list(table.rows["line"]) == [6, 7, 14]
    errors = {e.line: e.message for e in table.errors}
    assert set(errors) == {8, 9, 10, 11, 12, 13}
    assert "Epoch" in errors[8] and "Error" in errors[9] and "DQ" in errors[10]
    assert "before 1968" in errors[11] and "columns" in errors[12] and "repeats line 6" in errors[13]
    first = table.rows.iloc[0]
    assert first.time == pytest.approx(2457049.46712) and first.sigma == pytest.approx(0.00055)
    assert first.time_system == "HJD_UTC" and first.observer == "Jane Observer" and first.dq == 2
    assert first.duration_min == pytest.approx(178.2) and first.depth_mmag == pytest.approx(15.1)
    assert table.params["planet"] == "WASP-12 b" and table.params["ra"] == "06 30 32.79"


def test_etd_bjd_column_with_semicolons_is_bjd_tdb_without_offset():
    text = "Epoch;BJD_TDB;Err;Observer\n10;2459100.12345;0.0004;A\n11;2459101.2;0.0005;B\n"
    table = parse_etd(text)
    assert table.errors == () and list(table.rows["time_system"]) == ["BJD_TDB", "BJD_TDB"]
    assert table.rows.iloc[0].time == pytest.approx(2459100.12345)


def test_etd_reduced_time_without_an_offset_in_the_column_name_is_a_row_error():
    table = parse_etd("Epoch,HJD,Error\n5,57049.5,0.001\n6,2457050.5,0.001\n")
    assert list(table.rows["epoch"]) == [6]
    assert "reduced JD" in table.errors[0].message and table.errors[0].line == 2


def test_etd_without_an_error_column_is_refused():
    with pytest.raises(FormatError, match="sigma"):
        parse_etd("Epoch,HJD-2400000,Observer\n1,57049.5,A\n")


@pytest.mark.parametrize("name, expected", [
    ("HJD-2400000", ("HJD_UTC", 2400000.0)), ("BJD_TDB", ("BJD_TDB", 0.0)),
    ("BJD - 2450000", ("BJD_TDB", 2450000.0)), ("hjd", ("HJD_UTC", 0.0)),
])
def test_time_column_names_give_the_time_system_and_offset(name, expected):
    assert time_convention(name) == expected


@pytest.mark.parametrize("name, expected", [
    ("WASP-12 b", ("WASP-12", "b")), ("KELT-1b", ("KELT-1", "b")), ("HD 189733 b", ("HD 189733", "b")),
])
def test_planet_names_split_into_star_and_letter(name, expected):
    assert split_planet_name(name) == expected


def test_planet_name_without_a_letter_is_refused():
    with pytest.raises(FormatError):
        split_planet_name("WASP-12")


def test_etd_is_detected_by_its_header():
    assert detect_format(ETD_TEXT.encode()) == "etd"
