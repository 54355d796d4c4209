"""TTV inference end to end: inject a Kepler-88-like perturber and recover it.

Cheap configuration (stated): planet b's mass (8.7 M_earth) and eccentricity (0.05, 90 deg)
and the perturber's eccentricity (0.04, 250 deg) are fixed at the truth; free are b's
osculating period and conjunction time, the perturber's mass, period and phase (5
parameters).  100 transits, sigma 1-2 min, dynesty rwalk nlive 40, dlogz 0.5; the
perturber-period prior [20.78, 23.23] d splits into the two bins either side of 2:1
(the mirror-image alias of the truth lies in the 'narrow' bin).

The truth is compared where it is defined: the simulation's osculating elements hold at its own
integration start (``system.t_start``), which the fit takes as ``reference_time``.  Without it the fit's
elements would hold at a time set by the prior's lower period edge, and the nominal truth would sit
2-3 posterior sigma away in mass and ~10 sigma in b's period even for a perfect posterior
(benchmarks/ttv_coverage.py measures both).  b's period prior is +-1%: b's osculating period is 0.5%
above its mean period, so +-0.5% would exclude the truth in most realisations.

At nlive 40, rwalk can settle on a secondary mode ~2,400 ln L below the true peak (chi^2/N ~ 57), depending
on the sampler seed and on the last bits of libm's results, which differ between CPUs: the same seed 3 found
the peak on one machine and missed it on another. So the fixture lets the inference do what it does in
production: two runs per bin, a flagged winning bin is run again with new seeds (``missed_peak_reruns``, here up
to 5 times) and runs that missed the peak are not merged. On this data a single nlive-40 run missed in 4 of 7
tries on one machine (seeds 3-5 and their reruns), so all twelve attempts miss with a chance of about 0.1%; with
seed 4 both first runs missed, one rerun found the peak and the merged posterior was 0.7 sigma from the truth. The test then asserts that model 1 is not flagged, so an inference that
never finds the peak fails as "missed the peak", not as a puzzling posterior offset.
"""
import numpy as np
import pandas as pd
import pytest

from app.ttv.synthetic import kepler88_like
from server.ttv.inference import (run_ttv_inference, write_corner_png, write_summary_csv,
                                  write_summary_json)

CONFIG = {"stellar_mass": 0.99, "perturber_period": [20.78, 23.23],
          "perturber_mass": [30.0, 1000.0], "known_mass": 8.7, "known_ecc_fixed": [0.05, 90.0],
          "perturber_ecc_fixed": [0.04, 250.0], "known_period_width": 0.005,
          "known_tconj_width": 0.03, "nlive": 40, "dlogz": 0.5, "seed": 3, "ncores": 2}


def _table(system):
    return pd.DataFrame({"planet": "b", "epoch": system.epochs, "t_obs": system.times,
                         "sigma": system.sigma})


@pytest.fixture(scope="module")
def injected():
    system = kepler88_like(np.random.default_rng(2), n_transits=100)
    cfg = dict(CONFIG, known_period_width=0.01, reference_time=system.t_start, runs_per_bin=2,
               missed_peak_reruns=5)
    return system, run_ttv_inference(_table(system), cfg)


@pytest.mark.slow
def test_injected_perturber_mass_and_period_within_two_sigma(injected):
    system, res = injected
    post = res["posterior_samples"]
    for name, truth in (("pert.mass", system.truth["c.mass"]),
                        ("pert.period", system.truth["c.period"]),
                        ("b.period", system.truth["b.period"])):
        mean, std = post[name].mean(), post[name].std()
        assert abs(mean - truth) < 2 * std, (name, mean, std, truth)
    assert abs(post["pert.mass_mjup"].median() - 0.65) < 0.01
    # the sampler found the true likelihood peak: a run stuck on the secondary mode (chi^2/N ~ 50)
    # would be flagged, and its posterior would miss the truth by tens of sigma
    assert not [f for f in res["flags"] if f.startswith("model 1: best fit")], res["flags"]


@pytest.mark.slow
def test_true_bin_carries_the_evidence_and_the_alias_bin_is_rejected(injected):
    _, res = injected
    bins = {b["index"]: b for b in res["bin_evidences"]}
    true_bin = next(b for b in bins.values() if b["period_min"] <= 22.3 < b["period_max"])
    wrong = [b for b in bins.values() if b is not true_bin]
    assert true_bin["probability"] > 0.99
    for b in wrong:
        assert b["log_z"] < true_bin["log_z"] - 10.0  # visibly rejected
    assert res["model_comparison"]["preferred_n_perturbers"] == 1
    assert res["model_comparison"]["ln_bayes_factor_1_vs_0"] > 100.0


@pytest.mark.slow
def test_summary_files_are_written(injected, tmp_path):
    _, res = injected
    write_summary_json(res, tmp_path / "s.json")
    write_summary_csv(res, tmp_path / "s.csv")
    write_corner_png(res, tmp_path / "c.png")
    import json

    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["models"]["1"]["credible_intervals"]["pert.period"]["68"][0] < 22.31
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert "pert.mass" in (tmp_path / "s.csv").read_text()


@pytest.mark.slow
def test_data_without_ttvs_prefer_no_perturber():
    system = kepler88_like(np.random.default_rng(4), n_transits=100, with_perturber=False)
    cfg = dict(CONFIG, perturber_mass=[1.0, 1000.0], perturber_period_bins=[[21.9, 23.23]],
               known_ecc_fixed=None, known_ecc_max=0.1)
    res = run_ttv_inference(_table(system), cfg)
    assert res["model_comparison"]["preferred_n_perturbers"] == 0
    assert res["model_comparison"]["ln_bayes_factor_1_vs_0"] < -2.0


def test_bad_inputs_give_clear_errors():
    system = kepler88_like(np.random.default_rng(2), n_transits=30)
    df = _table(system)
    with pytest.raises(ValueError, match="perturber_periodd"):
        run_ttv_inference(df, dict(CONFIG, perturber_periodd=[1, 2]))
    with pytest.raises(ValueError, match="empty"):
        run_ttv_inference(df, dict(CONFIG, perturber_mass=[10.0, 10.0]))
    with pytest.raises(ValueError, match="contains a known planet"):
        run_ttv_inference(df, dict(CONFIG, perturber_period=[5.0, 30.0]))
    mixed = df.copy()
    mixed.loc[5, "t_obs"] += 2454833.0  # one row in full BJD, the rest in BKJD-like offsets
    with pytest.raises(ValueError, match="one convention"):
        run_ttv_inference(mixed, CONFIG)
    unsorted = df.iloc[[1, 0] + list(range(2, len(df)))]
    with pytest.raises(ValueError, match="unsorted"):
        run_ttv_inference(unsorted, CONFIG)
    with pytest.raises(ValueError, match="at least 3"):
        run_ttv_inference(df.iloc[:2], CONFIG)
    with pytest.raises(ValueError, match="reference_time"):
        run_ttv_inference(df, dict(CONFIG, reference_time="2455000"))
    with pytest.raises(ValueError, match="must precede the first transit"):
        run_ttv_inference(df, dict(CONFIG, reference_time=float(df["t_obs"].iloc[3])))
    few = df.iloc[:5]
    with pytest.raises(ValueError, match="need more transits than free parameters"):
        run_ttv_inference(few, CONFIG)


class _Run:  # the two fields the peak checks read from a sampling result
    def __init__(self, best_logl):
        self.kind, self.arrays = "ttv-nested", {"logl": np.array([best_logl - 50.0, best_logl])}


def test_runs_far_below_their_bins_best_run_are_not_merged():
    from server.ttv.inference import _peak_finders

    # stand-ins for PeriodBin objects (only their .index is read)
    tasks = [{"model": 1, "bin": type("B", (), {"index": i})(), "spec": {"label": {"run": r, "bin": i}}}
             for i, r in ((0, 0), (0, 1), (1, 0))]
    tasks[1]["bin"] = tasks[0]["bin"]
    results = [_Run(530.0), _Run(-2240.0), _Run(-9000.0)]  # bin 0: one run found the peak, one did not
    keep, missed = _peak_finders(tasks, results, tolerance=20.0)
    assert keep == {id(tasks[0]), id(tasks[2])}  # bin 1's only run stays: nothing to compare it with
    assert missed == [tasks[1]]


def test_a_flagged_winning_bin_is_run_again_with_new_seeds_and_only_that_bin():
    """Each model on its own: a model that fits worse than a larger one may have missed its peak (model
    comparison needs both peaks), so every flagged model's winning bin is run again, and only that bin."""
    from server.ttv.inference import _reruns

    bins = [type("B", (), {"index": i})() for i in range(2)]
    tasks = [{"model": 1, "bin": bins[i], "run": 0, "seed": [3, 1, i, 0],
              "spec": {"label": {"model": 1, "bin": i, "run": 0}}} for i in range(2)]
    tasks.append({"model": 0, "bin": None, "run": 0, "seed": [3, 0, -1, 0],
                  "spec": {"label": {"model": 0, "bin": None, "run": 0}}})
    norm, n_obs = 0.0, 100
    flagged = [_Run(-0.5 * 56.7 * n_obs), _Run(-0.5 * 900.0 * n_obs),  # best chi2/N = 56.7 in bin 0
               _Run(-0.5 * 96086.0 * n_obs)]
    extra = _reruns(tasks, flagged, 1, {"chi2_flag": 10.0}, norm, n_obs)
    assert [(t["model"], t["bin"] and t["bin"].index, t["attempt"], t["spec"]["label"]["attempt"]) for t in extra] \
        == [(0, None, 1, 1), (1, 0, 1, 1)]
    assert all(t["seed"] != orig["seed"] for t, orig in zip(extra, (tasks[2], tasks[0])))
    found = [_Run(-0.5 * 1.1 * n_obs), _Run(-0.5 * 900.0 * n_obs),  # model 1's winning bin fits: only model 0
             _Run(-0.5 * 96086.0 * n_obs)]
    assert [t["model"] for t in _reruns(tasks, found, 1, {"chi2_flag": 10.0}, norm, n_obs)] == [0]
