"""AAVSO Extended File Format (v1.2) and AAVSO International Database download CSV, on files written to
the published specifications, including malformed rows."""

from __future__ import annotations

import math

import pytest

from ingest_samples import CSV_HEADER, HEADER, csv_row, ext_row
from server.ingest.aavso import parse_aavso_csv, parse_aavso_extended
from server.ingest.formats import detect_format
from server.ingest.tabular import FormatError, datetime_to_jd

def test_extended_report_keeps_good_rows_and_reports_each_malformed_row_with_its_line():
    rows = [
        ext_row(),                                          # line 8: good
        ext_row(mag="<14.1", err="na", filt="V"),           # line 9: good, fainter-than
        ext_row(date="2450702.2x"),                         # line 10: bad date
        ext_row(mag="bright"),                              # line 11: bad magnitude
        ext_row(trans="MAYBE"),                             # line 12: bad TRANS
        ext_row(mtype="DIF", cname="na"),                   # line 13: DIF needs CNAME
        "SS CYG,2450702.3,11.2,0.01,V",                     # line 14: too few fields
        ext_row(date="50702.1234"),                         # line 15: reduced JD
        ext_row(star="", mag="11.0"),                       # line 16: no star
        ext_row(filt="na"),                                 # line 17: no filter
        ext_row(amass="na", cmag="na", kmag="na", group="na", chart="na", notes="clouds"),  # line 18: good
    ]
    text = HEADER.format(delim=",", date="JD") + "\n".join(rows) + "\n"
    table = parse_aavso_extended(text)
    assert list(table.rows["line"]) == [8, 9, 18]
    assert {e.line: e.message for e in table.errors}.keys() == {10, 11, 12, 13, 14, 15, 16, 17}
    messages = {e.line: e.message for e in table.errors}
    assert "DATE" in messages[10] and "MAGNITUDE" in messages[11] and "TRANS" in messages[12]
    assert "CNAME" in messages[13] and "15 fields" in messages[14] and "plausible range" in messages[15]
    first, limit, last = (table.rows.iloc[i] for i in range(3))
    assert first.jd == pytest.approx(2450702.1234) and first.mag == pytest.approx(11.235)
    assert first.cname == "105" and first.cmag == pytest.approx(10.593) and first.airmass == pytest.approx(1.561)
    assert not first.fainter_than and limit.fainter_than and limit.mag == pytest.approx(14.1)
    assert limit.mag_err is None or math.isnan(limit.mag_err)
    assert last.notes == "clouds" and (last.airmass is None or math.isnan(last.airmass))
    assert set(table.rows["obscode"]) == {"TST01"} and set(table.rows["obstype"]) == {"CCD"}


def test_extended_obscode_and_date_can_change_mid_file_and_apply_to_following_rows():
    text = HEADER.format(delim=";", date="JD") + ext_row(delim=";") + "\n#OBSCODE=ABC\n#DATE=EXCEL\n" + \
        ext_row(date="12/31/2007 12:59:59 p.m.", delim=";") + "\n" + ext_row(date="01/01/2008 00:00:00", delim=";") + "\n"
    table = parse_aavso_extended(text)
    assert table.errors == ()
    assert list(table.rows["obscode"]) == ["TST01", "ABC", "ABC"]
    from datetime import datetime

    assert table.rows.iloc[1].jd == pytest.approx(datetime_to_jd(datetime(2007, 12, 31, 12, 59, 59)), abs=1e-8)
    assert table.rows.iloc[2].jd == pytest.approx(2454466.5, abs=1e-9)  # 2008-01-01 00:00 UT


def test_extended_hjd_dates_are_kept_apart_from_jd():
    table = parse_aavso_extended(HEADER.format(delim="!", date="HJD") + ext_row(delim="!") + "\n")
    row = table.rows.iloc[0]
    assert row.hjd == pytest.approx(2450702.1234) and (row.jd is None or math.isnan(row.jd))


def test_extended_notes_containing_the_delimiter_are_rejoined():
    table = parse_aavso_extended(HEADER.format(delim=",", date="JD") + ext_row(notes="a,b,c") + "\n")
    assert table.rows.iloc[0].notes == "a,b,c"


@pytest.mark.parametrize(
    "text, reason",
    [
        (HEADER.replace("#DATE={date}\n", "").format(delim=",") + ext_row(), "#DATE"),
        (HEADER.format(delim=",", date="MJD") + ext_row(), "must be one of JD, HJD, EXCEL"),
        (HEADER.format(delim=",", date="JD").replace("Extended", "Visual") + ext_row(), "EXTENDED"),
        (HEADER.format(delim="#", date="JD") + ext_row(), "delimiter"),
    ],
)
def test_extended_file_level_problems_raise_format_error(text, reason):
    with pytest.raises(FormatError, match=reason):
        parse_aavso_extended(text)


def test_download_csv_flags_fainter_than_and_uncertain_and_reports_bad_rows():
    lines = [
        CSV_HEADER,
        csv_row(),                                              # 2 good
        csv_row(mag="<13.9"),                                   # 3 fainter-than
        csv_row(mag="12.1:", comments='"cloudy, windy"'),       # 4 uncertain, quoted comma
        csv_row(jd="oops"),                                     # 5 bad JD
        csv_row(band=""),                                       # 6 no band
        "2459000.6,10.1,0.01",                                  # 7 too few columns
        csv_row(unc="-0.1"),                                    # 8 negative uncertainty
    ]
    table = parse_aavso_csv("\n".join(lines) + "\n")
    assert list(table.rows["line"]) == [2, 3, 4]
    assert sorted(e.line for e in table.errors) == [5, 6, 7, 8]
    good, fainter, uncertain = (table.rows.iloc[i] for i in range(3))
    assert good.jd == pytest.approx(2459000.51234) and good.hjd == pytest.approx(2459000.51688)
    assert good.star_name == "SS Cyg" and good.observer_code == "XYZ" and good.transformed
    assert fainter.fainter_than and fainter.mag == pytest.approx(13.9) and not good.fainter_than
    assert uncertain.uncertain and uncertain.comments == "cloudy, windy"


def test_download_csv_without_required_columns_is_refused():
    with pytest.raises(FormatError, match="lacks"):
        parse_aavso_csv("JD,Band\n2459000.5,V\n")


def test_detection_by_content_tells_the_two_aavso_formats_apart():
    assert detect_format((HEADER.format(delim=",", date="JD") + ext_row()).encode()) == "aavso-extended"
    assert detect_format((CSV_HEADER + "\n" + csv_row()).encode()) == "aavso-csv"
    with pytest.raises(FormatError, match="not supported"):
        detect_format(b"#TYPE=VISUAL\n#OBSCODE=X\n")
