"""Ephemeris models for O-C (server/ttv/ephemeris.py): linear, orbital decay, apsidal precession.

Truths and tolerances are stated in each test; every sampler run has a fixed seed.
"""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from server.cli import main
from server.ttv.ephemeris import (MS_PER_YR_PER_D_PER_D, TimingData, compare_ephemerides, fit_ephemeris,
                                  load_timing_table, predict_times)

WASP12 = Path(__file__).parent / "data" / "realdata" / "wasp12b_yee2020_times.csv"
P_HJ = 1.0914203  # a WASP-12b-like hot Jupiter (d)
T0_HJ = 2457010.5123


def _synthetic(rng, model, theta, *, years=10.0, n_transits=60, n_occultations=16, sigma_tra=30.0,
               sigma_occ=60.0):
    """Times of a hot Jupiter at random epochs spread over ``years`` (sigmas in s), epoch 0 mid-span."""
    half = int(years * 365.25 / P_HJ / 2)
    tra = np.sort(rng.choice(np.arange(-half, half + 1), n_transits, replace=False)).astype(float)
    occ = np.sort(rng.choice(np.arange(-half, half), n_occultations, replace=False)) + 0.5
    epoch = np.concatenate([tra, occ])
    is_occ = np.concatenate([np.zeros(n_transits, bool), np.ones(n_occultations, bool)])
    sigma = np.where(is_occ, sigma_occ, sigma_tra) / 86400.0
    t = predict_times(model, theta, epoch, is_occ) + rng.normal(0.0, sigma)
    return TimingData(epoch=epoch, time=t, sigma=sigma, occultation=is_occ)


def test_gimenez_bastero_offset_matches_keplers_equation_for_small_e():
    # independent check of the precession model's transit/occultation offset at fixed omega:
    # the exact times from Kepler's equation (true anomaly pi/2 - w at transit, 3 pi/2 - w at occultation)
    # give t_occ - t_tra - P/2 = (2 e P / pi) cos w + O(e^2 P); tolerance 3 e^2 P
    e, p = 0.004, P_HJ

    def time_at(f):
        ea = 2.0 * np.arctan(np.sqrt((1 - e) / (1 + e)) * np.tan(f / 2.0))
        return (ea - e * np.sin(ea)) / (2 * np.pi) * p

    for w in np.linspace(0.1, 6.2, 13):
        exact = (time_at(1.5 * np.pi - w) - time_at(0.5 * np.pi - w)) % p - p / 2
        theta = (0.0, p, e, w, 0.0)
        model = predict_times("precession", theta, [0.5], [True])[0] - predict_times("precession", theta, [0.0],
                                                                                      [False])[0] - p / 2
        assert abs(model - exact) < 3 * e * e * p, (w, model, exact)


def test_models_reduce_to_linear_without_decay_or_eccentricity():
    epoch = np.array([-3.0, 0.0, 2.5, 7.0])
    occ = np.array([False, False, True, False])
    lin = predict_times("linear", (10.0, 1.5), epoch, occ)
    assert np.array_equal(lin, 10.0 + 1.5 * epoch)
    assert np.allclose(predict_times("decay", (10.0, 1.5, 0.0), epoch, occ), lin, rtol=0, atol=1e-12)
    assert np.allclose(predict_times("precession", (10.0, 1.5, 0.0, 1.0, 0.0), epoch, occ), lin, rtol=0,
                       atol=1e-12)
    with pytest.raises(ValueError, match="'cubic'"):
        predict_times("cubic", (1.0,), epoch, occ)


def test_table_with_type_column_puts_integer_occultation_epochs_half_an_orbit_later():
    df = pd.DataFrame({"epoch": [0, 1, 1, 3], "time": [10.0, 11.5, 12.25, 14.5], "err": [1, 1, 2, 1],
                       "type": ["transit", "tra", "occultation", "transit"]})
    d = load_timing_table(df, sigma_unit="min")
    assert d.epoch.tolist() == [0.0, 1.0, 1.5, 3.0]
    assert d.occultation.tolist() == [False, False, True, False]
    assert np.allclose(d.sigma * 1440.0, [1, 1, 2, 1])


def test_table_errors_name_the_offending_values():
    base = {"epoch": [0, 1, 2], "time": [1.0, 2.0, 3.0], "sigma": [1e-3, 1e-3, 1e-3]}
    with pytest.raises(ValueError, match=r"half-integers.*\[1\.3\]"):
        load_timing_table(pd.DataFrame(dict(base, epoch=[0, 1.3, 2])))
    with pytest.raises(ValueError, match=r"sigma must be finite and > 0.*\[-0\.001\]"):
        load_timing_table(pd.DataFrame(dict(base, sigma=[1e-3, -1e-3, 1e-3])))
    with pytest.raises(ValueError, match=r"transits integer.*\[1\.5\]"):
        load_timing_table(pd.DataFrame(dict(base, epoch=[0, 1.5, 2], type=["transit"] * 3)))
    with pytest.raises(ValueError, match=r"unknown event types \['flare'\]"):
        load_timing_table(pd.DataFrame(dict(base, type=["transit", "flare", "transit"])))
    with pytest.raises(ValueError, match="needs a column named one of"):
        load_timing_table(pd.DataFrame({"epoch": [0, 1, 2], "time": [1.0, 2.0, 3.0]}))
    with pytest.raises(ValueError, match="unknown prior 'dpdt'"):
        fit_ephemeris(load_timing_table(pd.DataFrame(base)), "linear", rng=np.random.default_rng(0),
                      priors={"dpdt": (-1, 1)})


def test_wasp12b_published_times_prefer_decay_at_yee2020_rate():
    # 139 transits + 19 occultations compiled by Yee et al. 2020 (ApJL 888, L5), who find
    # dP/dN = (-10.04 +- 0.69) e-10 d/epoch, dP/dt = -29 +- 2 ms/yr, and decay preferred over precession.
    # Tolerance: our dP/dt within 3 of our own posterior sigmas of -29 ms/yr, and that sigma within 1.5-2.5 ms/yr.
    data = load_timing_table(WASP12)
    assert (data.n, int(data.occultation.sum())) == (158, 19)
    result = compare_ephemerides(data, rng=np.random.default_rng(2020), nlive=100)
    assert result.preferred_by_evidence == "decay" and result.preferred_by_bic == "decay"
    assert result.ln_bayes_factor("decay", "linear") > 50
    assert result.ln_bayes_factor("decay", "precession") > 5
    decay = result.fit("decay")
    dpdt, sd = decay.median["dpdt_ms_yr"], decay.std["dpdt_ms_yr"]
    assert 1.5 < sd < 2.5, sd
    assert abs(dpdt - (-29.0)) < 3 * sd, (dpdt, sd)
    assert abs(decay.median["dpdn"] - (-10.04e-10)) < 3 * decay.std["dpdn"]


def test_decay_injection_recovered_within_2_sigma_and_preferred_over_linear():
    # truth: dP/dt = -30 ms/yr, 10 years, 60 transits (30 s) + 16 occultations (60 s); seed 7
    dpdn = -30.0 / MS_PER_YR_PER_D_PER_D * P_HJ
    data = _synthetic(np.random.default_rng(7), "decay", (T0_HJ, P_HJ, dpdn))
    result = compare_ephemerides(data, ("linear", "decay"), rng=np.random.default_rng(8), nlive=100)
    assert result.preferred_by_evidence == "decay" and result.preferred_by_bic == "decay"
    fit = result.fit("decay")
    for name, truth in (("dpdt_ms_yr", -30.0), ("period", P_HJ), ("t0", T0_HJ)):
        assert abs(fit.median[name] - truth) < 2 * fit.std[name], (name, fit.median[name], fit.std[name])


def test_no_decay_injection_prefers_linear():
    # truth: a linear ephemeris, same sampling as the decay injection; seed 11.  The decay model fits as well
    # but pays the Occam factor of its +-1000 ms/yr prior (ln B of about -4 expected)
    data = _synthetic(np.random.default_rng(11), "linear", (T0_HJ, P_HJ))
    result = compare_ephemerides(data, ("linear", "decay"), rng=np.random.default_rng(12), nlive=100)
    assert result.preferred_by_evidence == "linear" and result.preferred_by_bic == "linear"
    assert result.ln_bayes_factor("linear", "decay") > 1.0
    decay = result.fit("decay")
    assert abs(decay.median["dpdt_ms_yr"]) < 3 * decay.std["dpdt_ms_yr"]


def test_precession_injection_recovered_within_3_sigma_and_preferred():
    # truth: e = 0.004, omega0 = 2.6 rad, domega/dN = 0.001 rad/epoch (3.3 rad over the 10 years), seed 3
    truth = {"t0": T0_HJ, "period": P_HJ, "ecc": 0.004, "omega0": 2.6, "domega_dn": 0.001}
    data = _synthetic(np.random.default_rng(3), "precession", tuple(truth.values()), n_occultations=30)
    result = compare_ephemerides(data, rng=np.random.default_rng(4), nlive=100)
    assert result.preferred_by_evidence == "precession" and result.preferred_by_bic == "precession"
    assert result.ln_bayes_factor("precession", "decay") > 5
    fit = result.fit("precession")
    for name, value in truth.items():
        assert abs(fit.median[name] - value) < 3 * fit.std[name], (name, fit.median[name], fit.std[name])


def test_ephemeris_command_prints_models_progress_and_writes_summary(tmp_path):
    data = _synthetic(np.random.default_rng(5), "decay", (T0_HJ, P_HJ, -3e-9), n_transits=30,
                      n_occultations=6)
    table = tmp_path / "times.csv"
    pd.DataFrame({"epoch": data.epoch, "bjd": data.time, "sigma": data.sigma * 86400.0}).to_csv(table, index=False)
    out = tmp_path / "eph.json"
    res = CliRunner().invoke(main, ["ttv", "ephemeris", str(table), "--model", "all", "--nlive", "40",
                                    "--seed", "1", "--sigma-unit", "s", "--out", str(out)],
                             env={"OPENASTRO_VAR_DIR": str(tmp_path / "var")}, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "36 times (30 transits, 6 occultations)" in res.stdout and "seed 1" in res.stdout
    assert "decay: ln Z = " in res.stdout and "dpdt_ms_yr = " in res.stdout
    assert "preferred by evidence: decay; by BIC: decay" in res.stdout
    assert "sampling: 3/3 runs done" in res.stderr and "iteration" in res.stderr
    summary = json.loads(out.read_text())
    assert summary["seed"] == 1 and [f["model"] for f in summary["fits"]] == ["linear", "decay", "precession"]
    assert math.isfinite(summary["fits"][1]["median"]["dpdt_ms_yr"])


def test_ephemeris_command_reports_bad_table_in_one_line(tmp_path):
    table = tmp_path / "times.csv"
    table.write_text("epoch,time,sigma\n0,1.0,0.001\n1,2.0,0.001\n2.2,3.0,0.001\n")
    res = CliRunner().invoke(main, ["ttv", "ephemeris", str(table)],
                             env={"OPENASTRO_VAR_DIR": str(tmp_path / "var")})
    assert res.exit_code == 1 and "half-integers" in res.output and "Traceback" not in res.output
