"""MPC 80-column optical observation records (MPC1992 format), built column by column from the published
layout, including malformed records."""

from __future__ import annotations

import pytest

from ingest_samples import record
from server.ingest.formats import detect_format
from server.ingest.mpc import parse_mpc80, unpack_number, unpack_provisional


def test_builder_places_fields_at_the_published_columns():
    line = record(number="00433", mag="11.2", band="R")
    assert len(line) == 80 and line[15:32] == "2024 01 02.12345 " and line[77:80] == "H01"
    assert line[65:71] == " 11.2R"


def test_mpc_records_are_parsed_and_bad_ones_reported_by_line():
    lines = [
        "COD H01",
        "OBS J. Doe",
        "MEA J. Doe",
        "NET Gaia-DR3",
        record(number="00433", mag="11.2", band="R"),                             # 5 good, numbered
        record(prov="K07Tf8A", disc="*", date="2007 10 13.74589", ra="00 37 45.24", dec="+03 53 36.5",
               mag="17.4", band="V", code="691"),                                  # 6 good, provisional
        record(number="A0345", date="2024 02 30.5"),                              # 7 bad day
        record(number="00433", ra="25 00 00.000"),                                # 8 bad RA
        record(number="00433", dec="*12 30 45.67"),                               # 9 bad Dec sign
        record(number="00433", code="h0"),                                        # 10 bad observatory code
        record(number="00433") + "EXTRA",                                         # 11 too long
        record(number="00433", note2="R"),                                        # 12 radar unsupported
        record(number="00433").replace(" ", "\t", 1),                             # 13 TAB
        record(number="00433").rstrip(),                                          # 14 good: trailing blanks cut
    ]
    table = parse_mpc80("\n".join(lines) + "\n")
    assert list(table.rows["line"]) == [5, 6, 14]
    errors = {e.line: e.message for e in table.errors}
    assert set(errors) == {7, 8, 9, 10, 11, 12, 13}
    assert "day" in errors[7] and "RA" in errors[8] and "+ or -" in errors[9] and "observatory" in errors[10]
    assert "80" in errors[11] and "radar" in errors[12] and "TAB" in errors[13]
    eros, new = table.rows.iloc[0], table.rows.iloc[1]
    assert eros.number == 433 and eros.designation == "433" and eros.object_type == "minor planet"
    assert eros.ra_deg == pytest.approx(15 * (5 + 12 / 60 + 33.123 / 3600), abs=1e-9)
    assert eros.dec_deg == pytest.approx(-(12 + 30 / 60 + 45.67 / 3600), abs=1e-9)
    assert eros.mag == pytest.approx(11.2) and eros.band == "R" and eros.observatory == "H01"
    assert eros.obs_type == "CCD" and eros.jd_utc == pytest.approx(2460311.5 + 0.12345, abs=1e-9)
    assert new.designation == "2007 TA418" and new.discovery and new.observatory == "691"
    assert table.params["COD"] == "H01" and table.params["NET"] == "Gaia-DR3"


def test_roving_observer_second_line_attaches_to_its_first_line_and_orphans_are_reported():
    first = record(number="00433", note2="V", code="247")
    second = first[:14] + "v" + first[15:32] + "1 " + " 7.12345  +45.12345   200".ljust(43) + "247"
    orphan = record(number="01000", note2="v", code="247")
    table = parse_mpc80("\n".join([first, second, orphan]))
    assert len(table.rows) == 1 and table.rows.iloc[0].second_line.startswith(second[:20])
    assert [e.line for e in table.errors] == [3]


@pytest.mark.parametrize("packed, number", [("00433", 433), ("A0345", 100345), ("a0001", 360001),
                                            ("~0000", 620000), ("~000z", 620061), ("     ", None)])
def test_packed_numbers_unpack(packed, number):
    assert unpack_number(packed) == number


@pytest.mark.parametrize("packed, designation", [("J95X00A", "1995 XA"), ("K07Tf8A", "2007 TA418"),
                                                 ("J95X01L", "1995 XL1"), ("PLS2040", "2040 P-L"),
                                                 ("T1S3138", "3138 T-1"), ("MYOBJ1", "MYOBJ1")])
def test_packed_provisional_designations_unpack(packed, designation):
    assert unpack_provisional(packed) == designation


def test_comet_record_is_recognised():
    line = record(number="0001", prov="", note2="C").replace("0001 ", "0001P", 1)
    table = parse_mpc80(line)
    assert table.rows.iloc[0].object_type == "comet" and table.rows.iloc[0].designation == "1P"


def test_mpc_records_are_detected_by_content():
    text = "\n".join(["COD H01", record(number="00433"), record(number="00434")])
    assert detect_format(text.encode()) == "mpc80"
