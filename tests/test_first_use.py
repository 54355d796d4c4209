"""What a new user hits first (issue 13, item 7): each defect found on first use, as the behaviour it should have."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from server.cli import main


def run(args, tmp_path):
    env = {"OPENASTRO_VAR_DIR": str(tmp_path / "var"), "OPENASTRO_PROGRESS": "0"}
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


@pytest.fixture
def cli_db(tmp_path):
    assert run(["db", "upgrade"], tmp_path).exit_code == 0
    return tmp_path


PRIORS = ("stellar_mass = 0.99\nperturber_period = [21.9, 22.4]\nperturber_mass = [1.0, 30.0]\n"
          "perturber_ecc_fixed = [0.0, 90.0]\nknown_ecc_fixed = [0.0, 90.0]\n"
          "known_period_width = 0.0005\nknown_tconj_width = 0.002\n"
          "nlive = 15\ndlogz = 1.0\nseed = 4\nncores = 1\nn_posterior_samples = 200\n")


# ------------------------------------------------------------------------------------------- transit-time CSV

@pytest.mark.parametrize("text, says", [("", "is empty"), ("\n\n# comment only\n", "is empty"),
                                        ("epoch,time,sigma\n", "has a header (line 1) but no rows"),
                                        ("epoch,time,sigma\n0,2455000.1\n", "line 2: expected 3 fields")])
@pytest.mark.parametrize("command", [["ttv", "fit"], ["campaign", "launch"]])
def test_empty_or_header_only_transit_csv_is_one_clear_line(tmp_path, text, says, command):
    times, priors = tmp_path / "times.csv", tmp_path / "priors.toml"
    times.write_text(text)
    priors.write_text(PRIORS)
    res = run([*command, str(times), "--priors", str(priors), "--no-store" if command[0] == "ttv" else "--no-run"],
              tmp_path)
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: transit-time table ") and says in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output


# ------------------------------------------------------------------------------------------- target coordinates

AAVSO_JD = """#TYPE=Extended
#OBSCODE=TST01
#SOFTWARE=test
#DELIM=,
#DATE=JD
#OBSTYPE=CCD
""" + "\n".join(f"SS CYG,{2459000.5 + 0.37 * i:.5f},{11.2 + 0.1 * np.sin(i):.3f},0.01,V,NO,STD,na,na,na,na,na,na,na,na"
                for i in range(12)) + "\n"


def test_aavso_only_target_gets_a_light_curve_after_set_coords(cli_db):
    report = cli_db / "ss_cyg.txt"
    report.write_text(AAVSO_JD)
    res = run(["pipeline", "ingest", str(report)], cli_db)
    assert res.exit_code == 0, res.output
    res = run(["results", "lightcurve", "SS CYG", "--band", "V"], cli_db)
    assert res.exit_code == 1 and "coordinates" in res.output  # AAVSO reports carry no coordinates
    res = run(["target", "set-coords", "ss cyg", "21 42 42.80", "+43 35 09.9"], cli_db)
    assert res.exit_code == 0, res.output
    assert "RA 325.678333 deg, Dec +43.586083 deg" in res.output
    res = run(["results", "lightcurve", "SS CYG", "--band", "V"], cli_db)
    assert res.exit_code == 0 and "12 points" in res.output, res.output
    # different coordinates again need --replace; degrees and a negative Dec after `--` are accepted
    res = run(["target", "set-coords", "SS CYG", "325.5", "--", "-43.5"], cli_db)
    assert res.exit_code == 1 and "--replace" in res.output
    res = run(["target", "set-coords", "SS CYG", "325.5", "--replace", "--", "-43.5"], cli_db)
    assert res.exit_code == 0 and "Dec -43.500000 deg (was 325.678333, +43.586083)" in res.output


@pytest.mark.parametrize("ra, dec, says", [("24 00 00", "0", "RA '24 00 00' is outside"), ("400", "0", "RA '400'"),
                                           ("10", "91", "Dec '91' is outside"), ("abc", "0", "RA 'abc' is neither"),
                                           ("nan", "0", "RA 'nan'"), ("10", "+45 61 00", "Dec '+45 61 00'")])
def test_set_coords_refuses_impossible_coordinates_naming_the_value(cli_db, ra, dec, says):
    res = run(["target", "set-coords", "X", ra, dec], cli_db)
    assert res.exit_code == 1 and says in res.output, res.output


# ------------------------------------------------------------------------------------------- printing BJD

def test_bjd_values_print_with_full_precision():
    from app.ttv.summary import format_interval, format_value

    assert format_value("c.tconj", 2454950.1234567) == "2454950.123457"
    assert format_value("any", 2459000.5) == "2459000.500000"  # any value >= 1e5, e.g. a BJD in another column
    assert format_value("c.mass", 206.61234) == "206.612"
    text = format_interval("c.tconj", 2454950.123456, 2454950.120001, 2454950.126789)
    assert text == "2454950.123456  (68%: 2454950.120001 .. 2454950.126789)"
    assert "e+06" not in text


# ------------------------------------------------------------------------------------------- circular angles

def _wrapped_omega(rng, centre_deg, sd_deg, n=20000):
    return (rng.normal(centre_deg, sd_deg, n)) % 360.0


@pytest.mark.parametrize("centre", [0.0, 359.0, 180.0, 45.0])
def test_angle_credible_interval_is_circular_not_zero_to_360(centre):
    from app.ttv.summary import intervals

    rng = np.random.default_rng(5)  # truth: normal about `centre`, sd 10 deg, wrapped into [0, 360)
    samples = _wrapped_omega(rng, centre, 10.0)[:, None]
    ci = intervals(samples, ["c.omega_deg"])["c.omega_deg"]
    assert ci["circular"] is True and 0.0 <= ci["median"] < 360.0
    # the median is `centre` modulo 360 within 0.5 deg; the 68% interval is 20 deg wide (+-1 deg), not ~360
    assert abs((ci["median"] - centre + 180.0) % 360.0 - 180.0) < 0.5
    lo, hi = ci["68"]
    assert abs((hi - lo) - 20.0) < 1.0 and lo < ci["median"] < hi
    assert abs((ci["95"][1] - ci["95"][0]) - 39.2) < 2.0


def test_campaign_summary_and_inference_use_circular_statistics_for_angles():
    from app.ttv.summary import summary_arrays
    from assimilator.ttv import _summary_of
    from server.ttv.inference import _intervals

    rng = np.random.default_rng(6)
    samples = np.column_stack([_wrapped_omega(rng, 2.0, 5.0), rng.normal(100.0, 3.0, 20000)])
    names = ["c.omega_deg", "c.mass"]
    summary = _summary_of(samples, names)
    assert summary == summary_arrays(samples, names) and summary["circular"] == ["c.omega_deg"]
    assert summary["q84"][0] - summary["q16"][0] == pytest.approx(10.0, abs=0.6)
    assert summary["mean"][0] == pytest.approx(2.0, abs=0.2) and summary["sd"][0] == pytest.approx(5.0, abs=0.2)
    assert summary["median"][1] == pytest.approx(np.median(samples[:, 1]))  # linear parameters unchanged
    ci = _intervals(samples, names)
    assert ci["c.omega_deg"]["68"][1] - ci["c.omega_deg"]["68"][0] == pytest.approx(10.0, abs=0.6)


# ------------------------------------------------------------------------------------------- plot formats

def _periodogram():
    from server.timeseries.periodogram import lomb_scargle_result

    rng = np.random.default_rng(1)
    t = np.sort(rng.uniform(0.0, 30.0, 120))
    y = 10.0 + 0.3 * np.sin(2 * np.pi * t / 2.7) + rng.normal(0, 0.02, t.size)
    e = np.full(t.size, 0.02)
    return t, y, e, lomb_scargle_result(t, y, e, rng=np.random.default_rng(2))


@pytest.mark.parametrize("suffix, magic", [(".pdf", b"%PDF"), (".svg", b"<?xml"), (".png", b"\x89PNG"),
                                           (".JPG", b"\xff\xd8")])
def test_plot_is_written_in_the_format_its_suffix_names(tmp_path, suffix, magic):
    from server.timeseries.periodogram import plot_phase_folded
    from server.ttv.inference import write_corner_png

    t, y, e, res = _periodogram()
    path = tmp_path / f"fold{suffix}"
    plot_phase_folded(t, y, e, res, path)
    assert path.read_bytes().startswith(magic)
    rng = np.random.default_rng(3)
    result = {"models": {1: {"posterior_samples": pd.DataFrame({"c.mass": rng.normal(size=50),
                                                                "c.period": rng.normal(size=50)})}}}
    corner = tmp_path / f"corner{suffix}"
    write_corner_png(result, corner)
    assert corner.read_bytes().startswith(magic)


def test_plot_with_an_unknown_suffix_is_refused_before_anything_is_written(tmp_path):
    from server.timeseries.periodogram import plot_phase_folded

    t, y, e, res = _periodogram()
    for name in ("fold.pdff", "fold"):
        with pytest.raises(ValueError, match=r"unknown image suffix"):
            plot_phase_folded(t, y, e, res, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------- campaigns

def test_results_posterior_for_a_missing_campaign_says_there_is_no_such_campaign(cli_db):
    res = run(["results", "posterior", "99"], cli_db)
    assert res.exit_code == 1 and "no campaign with id 99" in res.output, res.output
    res = run(["campaign", "run", "99"], cli_db)
    assert res.exit_code == 1 and "no campaign with id 99" in res.output, res.output


def test_campaign_launched_with_no_run_runs_with_campaign_run(cli_db):
    from app.ttv.synthetic import kepler88_like

    # 12 transits of b, one perturber bin around the truth (22.3 d), one replica, nlive 10: a few seconds
    system = kepler88_like(np.random.default_rng(9), n_transits=12)
    times = cli_db / "times.csv"
    pd.DataFrame({"epoch": system.epochs, "time": system.times, "sigma": system.sigma}).to_csv(times, index=False)
    priors = cli_db / "priors.json"
    priors.write_text(json.dumps({"stellar_mass": 0.99, "perturber_period": [22.25, 22.35],
                                  "perturber_mass": [150.0, 260.0], "perturber_ecc_fixed": [0.0, 90.0],
                                  "known_ecc_fixed": [0.0, 90.0], "nlive": 10, "dlogz": 2.0}))
    res = run(["campaign", "launch", str(times), "--priors", str(priors), "--executor", "local", "--no-run",
               "--replicas", "1", "--bins", "[[22.25, 22.35]]", "--seed", "3"], cli_db)
    assert res.exit_code == 0, res.output
    assert "openastro campaign run 1" in res.output
    assert "created" in run(["campaign", "status", "1"], cli_db).output
    res = run(["campaign", "run", "1"], cli_db)
    assert res.exit_code == 0, res.output
    # one work unit, plus the missed-peak rerun of its bin when nlive 10 leaves the best fit flagged (chi2/N > 10)
    ran = re.search(r"local executor: (\d+) done, 0 failed", res.output)
    assert ran and ran.group(1) in ("1", "2"), res.output
    assert f"done, {ran.group(1)}/{ran.group(1)} work units finished" in res.output
    res = run(["campaign", "run", "1"], cli_db)
    assert res.exit_code == 0 and "already finished" in res.output
