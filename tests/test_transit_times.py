"""Transit-time extraction (stage 7b) on synthetic batman light curves with injected TTVs."""
import math

import batman
import numpy as np
import pandas as pd
import pytest

from server.timeseries.transit_times import (check_time_convention, extract_transit_times,
                                  fit_linear_ephemeris, load_transit_time_table)

PARAMS = {"period": 3.0, "t0": 100.0, "rp_rs": 0.1, "a_rs": 12.0, "inc": 88.5, "u": [0.4, 0.25]}
TTV_AMP = 4.0 / 1440.0  # days
TTV_PERIOD = 23.0  # epochs


def _light_curve(rng, n_transits=80, cadence_min=2.0, noise=1.5e-3, gaps=True):
    """Sum of per-transit batman models with mid-times shifted by a sinusoidal TTV."""
    p = PARAMS
    t = np.arange(p["t0"] - 1.0, p["t0"] + n_transits * p["period"], cadence_min / 1440.0)
    if gaps:  # drop the data around two transits entirely and half of a third
        t = t[~((t > p["t0"] + 10 * 3.0 - 0.3) & (t < p["t0"] + 11 * 3.0 + 0.3))]
        t = t[~((t > p["t0"] + 40 * 3.0) & (t < p["t0"] + 40 * 3.0 + 0.4))]
    flux = np.ones_like(t)
    truth = {}
    for n in range(n_transits):
        tc = p["t0"] + n * p["period"] + TTV_AMP * math.sin(2 * math.pi * n / TTV_PERIOD)
        truth[n] = tc
        sel = np.abs(t - tc) < 0.5
        if not sel.any():
            continue
        bp = batman.TransitParams()
        bp.t0, bp.per, bp.rp, bp.a, bp.inc = tc, p["period"], p["rp_rs"], p["a_rs"], p["inc"]
        bp.ecc, bp.w, bp.limb_dark, bp.u = 0.0, 90.0, "quadratic", p["u"]
        flux[sel] = batman.TransitModel(bp, t[sel]).light_curve(bp)
    flux = flux + noise * rng.standard_normal(len(t))
    lc = pd.DataFrame({"time": t, "flux": flux, "flux_err": np.full(len(t), noise)})
    return lc, truth


def test_mid_times_recovered_within_sigmas_with_calibrated_pulls():
    rng = np.random.default_rng(7)
    lc, truth = _light_curve(rng)
    out = extract_transit_times(lc, PARAMS)
    ok = out[out["flag"] == "ok"]
    assert len(ok) >= 70
    pulls = np.array([(r.t_obs - truth[r.epoch]) / r.sigma for r in ok.itertuples()])
    # calibrated errors: pull std in [0.8, 1.25] over >= 70 transits; no pull beyond 4.5 sigma
    assert 0.8 <= pulls.std() <= 1.25, pulls.std()
    assert np.max(np.abs(pulls)) < 4.5
    assert abs(pulls.mean()) < 3 * 1.0 / math.sqrt(len(pulls))
    # sigma is ~ tens of seconds here: the 4-minute injected TTV is resolved
    assert ok["sigma"].median() * 1440 < 1.0
    # the partial transit (epoch 40) is flagged, the two missing ones are absent, not garbage
    assert out.loc[out["epoch"] == 40, "flag"].item() in ("partial", "fit_failed")
    assert np.isnan(out.loc[out["epoch"] == 40, "t_obs"].item())
    assert 10 not in set(out["epoch"]) and 11 not in set(out["epoch"])


def test_ephemeris_fit_returns_period_and_covariance():
    rng = np.random.default_rng(8)
    lc, _ = _light_curve(rng, n_transits=30, gaps=False)
    out = extract_transit_times(lc, PARAMS)
    eph = out.attrs["ephemeris"]
    cov = np.array(eph["cov"])
    assert abs(eph["period"] - 3.0) < 5 * math.sqrt(cov[1, 1]) + 3e-5  # TTV leaks into P
    assert cov[0, 0] > 0 and cov[1, 1] > 0 and abs(cov[0, 1]) < math.sqrt(cov[0, 0] * cov[1, 1])
    np.testing.assert_allclose(out["O_minus_C"], out["t_obs"] - out["t_pred"])


def test_linear_ephemeris_matches_numpy_polyfit():
    rng = np.random.default_rng(3)
    ep = np.arange(20)
    sig = rng.uniform(1e-4, 3e-4, 20)
    t = 5.0 + 2.5 * ep + sig * rng.standard_normal(20)
    eph = fit_linear_ephemeris(ep, t, sig)
    coef, cov = np.polyfit(ep, t, 1, w=1 / sig, cov="unscaled")
    assert eph.period == pytest.approx(coef[0], rel=1e-12)
    assert eph.t0 == pytest.approx(coef[1], rel=1e-12)
    assert eph.cov[1][1] == pytest.approx(cov[0, 0], rel=1e-9)


def test_time_convention_mismatch_gives_a_hint():
    with pytest.raises(ValueError, match="BKJD"):
        check_time_convention(np.array([2455900.0, 2455910.0]), 1067.0, 10.95)
    lc = pd.DataFrame({"time": np.linspace(2454933, 2454940, 500), "flux": 1.0, "flux_err": 1e-3})
    with pytest.raises(ValueError, match="conventions"):
        extract_transit_times(lc, PARAMS)


def test_unknown_transit_param_is_named():
    lc = pd.DataFrame({"time": [100.0], "flux": [1.0], "flux_err": [1e-3]})
    with pytest.raises(ValueError, match="perod"):
        extract_transit_times(lc, dict(PARAMS, perod=3.0))


def test_published_table_loads_offsets_and_rejects_bad_rows(tmp_path):
    path = tmp_path / "times.csv"
    path.write_text("# Kepler-like table, BKJD\nepoch,time,err\n2,1100.0,1.0\n0,1078.1,1.5\n1,1089.05,2.0\n")
    df = load_transit_time_table(path, time_offset=2454833.0, sigma_unit="min", planet="b")
    assert list(df["epoch"]) == [0, 1, 2]
    assert df["t_obs"].iloc[0] == pytest.approx(2454833.0 + 1078.1)
    assert df["sigma"].iloc[0] == pytest.approx(1.5 / 1440)
    bad = pd.DataFrame({"epoch": [0, 1, 1], "time": [1.0, 2.0, 3.0], "sigma": [1e-3, 1e-3, 1e-3]})
    with pytest.raises(ValueError, match="duplicate"):
        load_transit_time_table(bad)
    bad = pd.DataFrame({"epoch": [0, 1], "time": [1.0, 2.0], "sigma": [1e-3, float("nan")]})
    with pytest.raises(ValueError, match="sigma"):
        load_transit_time_table(bad)
    bad = pd.DataFrame({"epoch": [0, 1], "time": [1.0, 2.0], "sigma": [1e-3, 0.0]})
    with pytest.raises(ValueError, match="sigma"):
        load_transit_time_table(bad)
