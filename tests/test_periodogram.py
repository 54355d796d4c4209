"""Lomb-Scargle: exactness against astropy, injected-period recovery, calibrated FAPs, warnings, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.timeseries import LombScargle

from server.timeseries.periodogram import (
    exact_power,
    frequency_grid,
    grid_power,
    lomb_scargle,
    lomb_scargle_batch,
    lomb_scargle_result,
    plot_phase_folded,
)

BJD0 = 2460500.0


def nightly_sampling(rng, n_nights=40, per_night=(6, 14), night_length=0.28, skip=0.25):
    """Irregular ground-based sampling: a few hours per night, daily gaps, some nights lost to weather."""
    times = []
    for night in range(n_nights):
        if rng.uniform() < skip:
            continue
        start = night + rng.uniform(0.05, 0.15)
        times.append(start + np.sort(rng.uniform(0.0, night_length, rng.integers(*per_night))))
    return BJD0 + np.concatenate(times)


def sawtooth(phase):
    """RR Lyrae-like: fast rise over 15% of the cycle, slow linear decline (flux units)."""
    rise = 0.15
    return np.where(phase < rise, phase / rise, 1.0 - (phase - rise) / (1.0 - rise)) - 0.5


# --------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("nterms", [1, 2, 3])
def test_power_matches_astropy_exact_method_to_1e_8_on_the_same_grid(nterms):
    rng = np.random.default_rng(11)
    t = nightly_sampling(rng)
    y = 0.2 * np.sin(2 * np.pi * t / 0.4171) + rng.normal(0, 0.05, t.size)
    dy = rng.uniform(0.03, 0.08, t.size)
    grid = frequency_grid(t, min_period=0.1)
    ours = grid_power(t, y, dy, grid, nterms=nterms)
    method = "slow" if nterms == 1 else "chi2"
    # The reference gets times relative to BJD0: at t ~ 2.46e6 d, astropy's exact methods lose ~1e-7 in power
    # to float64 phase rounding; the periodogram itself is shift invariant.
    ref = LombScargle(t - BJD0, y, dy, nterms=nterms).power(grid.frequencies(), method=method)
    assert np.max(np.abs(ours - ref)) < 1e-8


def test_power_matches_astropy_for_ten_thousand_points():
    rng = np.random.default_rng(12)
    t = np.sort(rng.uniform(0, 300, 10_000)) + BJD0
    y = np.sin(2 * np.pi * t / 3.3) + rng.normal(0, 2, t.size)
    dy = rng.uniform(1, 3, t.size)
    grid = frequency_grid(t, min_period=0.5, oversampling=2)
    idx = rng.choice(grid.n, 300, replace=False)  # the exact method is O(N M): check a random subset
    ours = grid_power(t, y, dy, grid)[idx]
    ref = LombScargle(t - BJD0, y, dy).power(grid.frequencies()[idx], method="slow")
    assert np.max(np.abs(ours - ref)) < 1e-8


def test_own_exact_power_matches_astropy_chi2_method():
    rng = np.random.default_rng(13)
    t = nightly_sampling(rng, n_nights=10)
    y = rng.normal(0, 1, t.size)
    dy = rng.uniform(0.5, 1.5, t.size)
    freq = np.linspace(0.1, 5, 37)
    for nterms in (1, 2):
        ref = LombScargle(t - BJD0, y, dy, nterms=nterms).power(freq, method="chi2")
        assert np.max(np.abs(exact_power(t, y, dy, freq, nterms=nterms) - ref)) < 1e-10


def test_astropy_fallback_engine_gives_the_same_answer():
    rng = np.random.default_rng(14)
    t = nightly_sampling(rng, n_nights=15)
    y = 0.3 * np.sin(2 * np.pi * t / 0.6123) + rng.normal(0, 0.05, t.size)
    dy = np.full(t.size, 0.05)
    a = lomb_scargle_result(t, y, dy, min_period=0.2, engine="nifty")
    b = lomb_scargle_result(t, y, dy, min_period=0.2, engine="astropy")
    assert np.max(np.abs(a.power - b.power)) < 1e-8
    assert a.best_period == pytest.approx(b.best_period, rel=1e-9)


# --------------------------------------------------------------------------------------- recovery

# One harness for every variant: the truth must lie within the stated uncertainty at the Gaussian rate.
VARIANTS = {
    "sinusoid-nterms1": (lambda ph: np.sin(2 * np.pi * ph), 1),
    "sawtooth-nterms1": (sawtooth, 1),
    "sawtooth-nterms3": (sawtooth, 3),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_injected_period_is_recovered_within_its_stated_uncertainty(variant):
    shape, nterms = VARIANTS[variant]
    period, amplitude, sigma = 0.5837, 0.15, 0.04
    z = []
    for seed in range(40):
        rng = np.random.default_rng([21, seed])
        t = nightly_sampling(rng, n_nights=30)
        phase = np.mod((t - BJD0) / period + rng.uniform(), 1.0)
        dy = rng.uniform(0.8, 1.2, t.size) * sigma
        y = 1.0 + amplitude * shape(phase) + rng.normal(0.0, 1.0, t.size) * dy
        res = lomb_scargle_result(t, y, dy, min_period=0.1, nterms=nterms, fap_method="none")
        z.append((res.best_period - period) / res.best_period_err)
    z = np.asarray(z)
    # Truth: period 0.5837 d. Tolerance: every run within 4.5 sigma (no alias picked), >= 85% within 2 sigma
    # (Gaussian: 95.4%; P(< 85% of 40) ~ 1e-3), and a spread compatible with 1 (not over- or under-stated).
    assert np.all(np.abs(z) < 4.5), z
    assert np.mean(np.abs(z) < 2.0) >= 0.85, z
    assert 0.6 < np.std(z) < 1.4, np.std(z)


def test_result_dict_carries_the_documented_keys_and_units():
    rng = np.random.default_rng(22)
    t = nightly_sampling(rng, n_nights=20)
    y = 0.1 * np.sin(2 * np.pi * t / 0.3719) + rng.normal(0, 0.02, t.size)
    out = lomb_scargle(t, y, np.full(t.size, 0.02), min_period=0.1)
    assert {"best_period", "best_period_err", "fap", "power_spectrum", "warnings", "result"} <= set(out)
    assert out["best_period"] == pytest.approx(0.3719, abs=5 * out["best_period_err"])
    assert out["fap"] < 1e-10
    spec = out["power_spectrum"]
    assert spec["frequency"].shape == spec["power"].shape and spec["frequency"][0] == pytest.approx(1 / np.ptp(t))


# --------------------------------------------------------------------------------------- FAP calibration


def _noise_batch(n_real, seed):
    rng = np.random.default_rng(seed)
    t = nightly_sampling(rng, n_nights=20, per_night=(3, 7))
    dy = rng.uniform(0.8, 1.2, t.size)
    return t, [(t, rng.normal(0, 1, t.size) * dy, dy) for _ in range(n_real)]


def test_baluev_fap_of_pure_noise_is_calibrated_at_small_levels_and_never_optimistic():
    n_real = 2000
    _, curves = _noise_batch(n_real, 31)
    fap = np.array([r.fap for r in lomb_scargle_batch(curves, min_period=0.2)])
    for level in (0.01, 0.02, 0.05, 0.1):
        rate = np.mean(fap <= level)
        sigma = np.sqrt(level * (1 - level) / n_real)
        assert rate <= level + 3 * sigma, (level, rate)  # an upper bound: never more false alarms than stated
        if level <= 0.02:  # where Baluev's approximation is tight, it is calibrated
            assert abs(rate - level) <= 3 * sigma, (level, rate)


def test_bootstrap_fap_of_pure_noise_is_calibrated():
    n_real = 300
    _, curves = _noise_batch(n_real, 32)
    res = lomb_scargle_batch(curves, min_period=0.2, fap_method="bootstrap", n_bootstrap=99,
                             rng=np.random.default_rng(33))
    fap = np.array([r.fap for r in res])
    for level in (0.05, 0.1, 0.2, 0.5):
        rate = np.mean(fap <= level)
        assert abs(rate - level) <= 3 * np.sqrt(level * (1 - level) / n_real), (level, rate)


def test_bootstrap_is_reproducible_from_the_generator_and_flags_its_floor():
    rng = np.random.default_rng(34)
    t = nightly_sampling(rng, n_nights=15)
    y = 0.2 * np.sin(2 * np.pi * t / 0.7351) + rng.normal(0, 0.05, t.size)
    dy = np.full(t.size, 0.05)
    a = lomb_scargle_result(t, y, dy, fap_method="bootstrap", n_bootstrap=50, rng=np.random.default_rng(5))
    b = lomb_scargle_result(t, y, dy, fap_method="bootstrap", n_bootstrap=50, rng=np.random.default_rng(5))
    assert a.fap == b.fap == pytest.approx(1 / 51)
    assert "bootstrap_resolution" in {w.kind for w in a.warnings}


def test_batch_gives_the_same_results_as_one_at_a_time():
    rng = np.random.default_rng(35)
    t = nightly_sampling(rng, n_nights=10)
    t_other = nightly_sampling(rng, n_nights=12)
    curves = [(t, rng.normal(0, 1, t.size), np.ones(t.size)) for _ in range(3)]
    curves.append((t_other, np.sin(2 * np.pi * t_other / 0.44) + rng.normal(0, 0.3, t_other.size),
                   np.full(t_other.size, 0.3)))
    batch = lomb_scargle_batch(curves, min_period=0.2)
    for (tt, yy, ee), res in zip(curves, batch):
        single = lomb_scargle_result(tt, yy, ee, min_period=0.2)
        assert np.max(np.abs(single.power - res.power)) < 1e-12
        assert single.best_period == res.best_period and single.fap == res.fap


# --------------------------------------------------------------------------------------- warnings


def test_one_point_per_night_flags_daily_aliases():
    rng = np.random.default_rng(41)
    t = BJD0 + np.arange(60) + rng.normal(0, 0.02, 60)  # same hour every night
    y = np.sin(2 * np.pi * t / 0.4173) + rng.normal(0, 0.1, t.size)
    res = lomb_scargle_result(t, y, np.full(t.size, 0.1), min_period=0.1)
    kinds = [w.kind for w in res.warnings]
    assert "alias" in kinds or "window" in kinds


def test_two_term_model_of_a_sinusoid_flags_the_subharmonic_ambiguity():
    outcomes = []
    for seed in range(44, 56):
        rng = np.random.default_rng(seed)
        t = nightly_sampling(rng, n_nights=25)
        y = 0.2 * np.sin(2 * np.pi * (t - BJD0) / 0.6123) + rng.normal(0, 0.01, t.size)
        res = lomb_scargle_result(t, y, np.full(t.size, 0.01), nterms=2, min_period=0.1, fap_method="none")
        kinds = {w.kind for w in res.warnings}
        # The 2-harmonic model peaks equally at P and 2P; when 2P wins, the ambiguity must be stated.
        if abs(res.best_period - 2 * 0.6123) < 0.01:
            assert "subharmonic" in kinds, seed
            outcomes.append("2P")
        else:
            assert abs(res.best_period - 0.6123) < 0.01 and "subharmonic" not in kinds, seed
            outcomes.append("P")
    assert set(outcomes) == {"P", "2P"}  # both branches exercised with these seeds


def test_sawtooth_with_three_terms_has_no_subharmonic_warning():
    rng = np.random.default_rng(45)
    t = nightly_sampling(rng, n_nights=25)
    y = 0.2 * sawtooth(np.mod((t - BJD0) / 0.5837, 1)) + rng.normal(0, 0.01, t.size)
    res = lomb_scargle_result(t, y, np.full(t.size, 0.01), nterms=3, min_period=0.1, fap_method="none")
    assert abs(res.best_period - 0.5837) < 5 * res.best_period_err
    assert "subharmonic" not in {w.kind for w in res.warnings}


def test_period_longer_than_the_baseline_is_flagged():
    rng = np.random.default_rng(42)
    t = BJD0 + np.sort(rng.uniform(0, 3, 80))
    y = np.sin(2 * np.pi * t / 5.0) + rng.normal(0, 0.05, t.size)
    res = lomb_scargle_result(t, y, np.full(t.size, 0.05), min_period=0.3, max_period=10.0)
    messages = [w.message for w in res.warnings if w.kind == "baseline"]
    assert any("exceeds" in m for m in messages) and any("fewer than two cycles" in m for m in messages)


def test_missing_errors_use_unit_weights_and_say_so():
    rng = np.random.default_rng(43)
    t = nightly_sampling(rng, n_nights=12)
    y = np.sin(2 * np.pi * t / 0.8111) + rng.normal(0, 0.2, t.size)
    res = lomb_scargle_result(t, y, None, min_period=0.2)
    assert "unit_weights" in {w.kind for w in res.warnings}
    assert abs(res.best_period - 0.8111) < 5 * res.best_period_err


# --------------------------------------------------------------------------------------- bad input


@pytest.fixture
def small():
    rng = np.random.default_rng(51)
    t = nightly_sampling(rng, n_nights=8)
    return t, rng.normal(0, 1, t.size), np.ones(t.size)


def test_too_few_points_is_an_error():
    with pytest.raises(ValueError, match="too few points for an nterms=2 periodogram: 6 < 7"):
        lomb_scargle(np.arange(6.0), np.arange(6.0) % 2, np.ones(6), nterms=2, fap_method="none")


def test_all_equal_times_is_an_error():
    with pytest.raises(ValueError, match="all 10 times are equal"):
        lomb_scargle(np.full(10, BJD0), np.arange(10.0), np.ones(10))


def test_nan_flux_is_an_error_naming_the_index(small):
    t, y, dy = small
    y = y.copy()
    y[3] = np.nan
    with pytest.raises(ValueError, match="non-finite fluxes, first at index 3"):
        lomb_scargle(t, y, dy)


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan])
def test_zero_negative_or_nan_uncertainty_is_an_error(small, bad):
    t, y, dy = small
    dy = dy.copy()
    dy[2] = bad
    with pytest.raises(ValueError, match="errors"):
        lomb_scargle(t, y, dy)


def test_inverted_period_range_is_an_error(small):
    t, y, dy = small
    with pytest.raises(ValueError, match="min_period 2.0 must be smaller than max_period 1.0"):
        lomb_scargle(t, y, dy, min_period=2.0, max_period=1.0)


def test_baluev_with_several_harmonics_is_refused(small):
    t, y, dy = small
    with pytest.raises(ValueError, match="use fap_method='bootstrap'"):
        lomb_scargle(t, y, dy, nterms=2)


def test_bootstrap_without_an_explicit_generator_is_refused(small):
    t, y, dy = small
    with pytest.raises(TypeError, match="numpy Generator"):
        lomb_scargle(t, y, dy, fap_method="bootstrap", n_bootstrap=10)


def test_constant_fluxes_are_an_error(small):
    t, _, dy = small
    with pytest.raises(ValueError, match="fluxes are constant"):
        lomb_scargle(t, np.full(t.size, 3.0), dy)


# --------------------------------------------------------------------------------------- plot


def test_phase_folded_plot_is_a_png_written_atomically(tmp_path):
    rng = np.random.default_rng(61)
    t = nightly_sampling(rng, n_nights=15)
    y = 1 + 0.2 * sawtooth(np.mod((t - BJD0) / 0.5837, 1)) + rng.normal(0, 0.02, t.size)
    dy = np.full(t.size, 0.02)
    res = lomb_scargle_result(t, y, dy, nterms=3, fap_method="none", min_period=0.1)
    out = plot_phase_folded(t, y, dy, res, tmp_path / "fold.png")
    data = (tmp_path / "fold.png").read_bytes()
    assert out.endswith("fold.png") and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fold.png"]
    # the model drawn is the fit: it reproduces the noiseless curve to a few noise sigma
    truth = 1 + 0.2 * sawtooth(np.mod((t - BJD0) / 0.5837, 1))
    assert np.median(np.abs(res.model(t) - truth)) < 0.03
