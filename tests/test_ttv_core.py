"""TTV kernels: forward model, priors, bins, result files."""
import json
import math

import numpy as np
import pytest
import ttvfast

from app.ttv.bins import period_bins
from app.ttv.likelihood import TTVLikelihood
from app.ttv.model import ObservedPlanet, TTVModel, estimate_max_events
from app.ttv.priors import PriorTransform, parse_prior_spec
from app.ttv.results import load_result, make_result, save_result, to_dynesty_results

THETA = np.array([[math.log10(3e-5 / 0.99), 10.95, 0.2, 0.1, 5.0],
                  [math.log10(6e-4 / 0.99), 22.3, 0.1, -0.15, 12.0]])


def _plain_times(model, theta, planet=0):
    """Reference: the ttvfast package's own Python wrapper on the same elements."""
    model.set_elements(theta)
    p = model._params
    planets = [ttvfast.models.Planet(*p[2 + 7 * i:9 + 7 * i]) for i in range(2)]
    out = ttvfast.ttvfast(planets, model.stellar_mass, model.t_start, model.dt, model.t_end)
    idx, _, times, _, _ = (np.array(a) for a in out["positions"])
    return times[(idx == planet) & (times != -2.0)]


def test_ctypes_core_gives_identical_times_to_ttvfast_wrapper():
    obs = [ObservedPlanet(0, np.arange(0, 100))]
    model = TTVModel(2, 0.99, obs, 0.0, 1100.0, 10.95 / 20,
                     estimate_max_events(0.0, 1100.0, [10.0, 20.0]))
    ours = model.transit_times(THETA)[0]
    ref = _plain_times(model, THETA)
    np.testing.assert_array_equal(ours, ref[:100])


def test_epoch_matching_when_first_transit_precedes_integration_start():
    # epochs counted from tconj = 5.0; data start at epoch 3 while integration starts at 20 d,
    # i.e. after tconj: epochs must still line up (no off-by-one)
    epochs = np.arange(3, 40)
    obs = [ObservedPlanet(0, epochs)]
    model = TTVModel(2, 0.99, obs, 20.0, 460.0, 10.95 / 20, 400)
    got = model.transit_times(THETA)[0]
    ref = _plain_times(model, THETA)
    # the plain list starts with the first transit after t=20 d, which is epoch 2 (t~26.9)
    first = int(np.rint((ref[0] - 5.0) / 10.95))
    assert first == 2
    np.testing.assert_array_equal(got, ref[epochs - first])
    assert np.all(np.abs(got - (5.0 + 10.95 * epochs)) < 0.5 * 10.95)


def test_model_reports_missing_epochs_instead_of_garbage():
    obs = [ObservedPlanet(0, np.array([0, 1, 500]))]  # epoch 500 is beyond the integration
    model = TTVModel(2, 0.99, obs, 0.0, 300.0, 0.5, 200)
    assert model.transit_times(THETA) is None


def test_automatic_dt_meets_its_accuracy_target():
    spec = {"prior": {"stellar_mass": 0.99, "planets": [
        {"name": "b", "mass": {"dist": "fixed", "value": 9.0},
         "period": {"dist": "fixed", "value": 10.95},
         "ecc": {"dist": "fixed", "e": 0.05, "omega_deg": 90.0},
         "tconj": {"dist": "fixed", "value": 5.0}},
        {"name": "c", "mass": {"dist": "fixed", "value": 200.0},
         "period": {"dist": "fixed", "value": 22.3},
         "ecc": {"dist": "fixed", "e": 0.04, "omega_deg": 250.0},
         "tconj": {"dist": "fixed", "value": 12.0}}]},
        "observed": {"b": {"epoch": list(range(60)), "time": [5.0 + 10.95 * i for i in range(60)],
                           "sigma": [1e-3] * 60}},
        "dt_tolerance_s": 5.0}
    like = TTVLikelihood(spec)
    fine = TTVLikelihood(dict(spec, dt=10.95 / 400)).model_times(np.empty(0))
    got = like.model_times(np.empty(0))
    ep = np.arange(60.0)
    a = np.column_stack([np.ones(60), ep])
    d = got - fine
    d -= a @ np.linalg.lstsq(a, d, rcond=None)[0]
    assert np.max(np.abs(d)) * 86400 < 5.0 * 1.5  # tolerance checked vs P/320, here vs P/400
    assert like.dt >= 10.95 / 80


def test_prior_errors_name_the_bad_key_and_range():
    good = {"stellar_mass": 1.0, "planets": [
        {"name": "b", "mass": {"dist": "loguniform", "min": 1, "max": 10},
         "period": {"dist": "uniform", "min": 5, "max": 6},
         "ecc": {"dist": "disk", "emax": 0.2}, "tconj": {"dist": "phase", "t_ref": 0.0}}]}
    parse_prior_spec(good)
    bad = json.loads(json.dumps(good))
    bad["planets"][0]["mass"]["maxx"] = 3
    with pytest.raises(ValueError, match="maxx"):
        parse_prior_spec(bad)
    bad = json.loads(json.dumps(good))
    bad["planets"][0]["period"] = {"dist": "uniform", "min": 6, "max": 6}
    with pytest.raises(ValueError, match=r"empty range \[6.0, 6.0\]"):
        parse_prior_spec(bad)
    with pytest.raises(ValueError, match="colour"):
        parse_prior_spec(dict(good, colour=1))


def test_prior_transform_inverse_round_trips():
    spec = {"stellar_mass": 1.0, "planets": [
        {"name": "b", "mass": {"dist": "loguniform", "min": 1, "max": 10},
         "period": {"dist": "uniform", "min": 5, "max": 6},
         "ecc": {"dist": "disk", "emax": 0.2}, "tconj": {"dist": "phase", "t_ref": 3.0}}],
        "jitter": {"dist": "loguniform", "min": 1e-5, "max": 1e-2}}
    prior = PriorTransform(spec)
    u = np.random.default_rng(1).random((50, prior.ndim))
    for row in u:
        np.testing.assert_allclose(prior.inverse(prior(row)), row, atol=1e-12)
    x = np.array([prior(r) for r in u])
    e = x[:, 2] ** 2 + x[:, 3] ** 2
    assert np.all(e <= 0.2) and np.all((x[:, 4] >= 3.0) & (x[:, 4] <= 3.0 + x[:, 1]))


def test_bins_split_at_resonances_and_midpoints():
    bins = period_bins(10.95, 18.0, 30.0)
    edges = [b.period_min for b in bins] + [bins[-1].period_max]
    # 2:1 (21.9 d) and 7:3 (25.55 d) are edges; the anchors' wrong mode (25.3 d) and the
    # truth (22.3 d) fall in different bins, and the truth's bin is the wide side of 2:1
    assert any(abs(e - 21.9) < 1e-9 for e in edges)
    assert any(abs(e - 10.95 * 7 / 3) < 1e-9 for e in edges)
    truth_bin = next(b for b in bins if b.period_min <= 22.3 < b.period_max)
    assert truth_bin.resonance == "2:1" and truth_bin.side == "wide"
    assert not truth_bin.period_min <= 25.3 < truth_bin.period_max
    masses = [b.prior_mass("loguniform", 18.0, 30.0) for b in bins]
    assert sum(masses) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="straddles"):
        period_bins(10.95, 5.0, 30.0)


def _nested_result():
    n = 5
    arrays = {"samples": np.ones((n, 2)), "samples_u": np.full((n, 2), 0.5),
              "samples_id": np.arange(n), "samples_it": np.arange(n), "ncall": np.ones(n, int),
              "logl": np.linspace(-10, -1, n), "logvol": -np.arange(1, n + 1) / 3.0,
              "logwt": np.linspace(-12, -3, n), "logz": np.linspace(-12, -2, n),
              "logzerr": np.full(n, 0.1), "information": np.linspace(0, 1, n),
              "niter": np.int64(n), "nlive": np.int64(3), "eff": np.float64(50.0)}
    return make_result("ttv-nested", {"param_names": ["a", "b"], "seed": [1, 2]}, arrays)


def test_result_round_trip_and_dynesty_rebuild(tmp_path):
    res = _nested_result()
    path = tmp_path / "r.npz"
    save_result(path, res)
    back = load_result(path)
    assert back.meta == res.meta
    for k, v in res.arrays.items():
        np.testing.assert_array_equal(back.arrays[k], v)
    dres = to_dynesty_results(back)
    np.testing.assert_array_equal(dres.logl, res.arrays["logl"])
    assert dres.niter == 5


def test_pickled_or_malformed_result_files_are_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, meta=np.array(json.dumps({"format": "openastro.ttv-result", "version": 1,
                                              "kind": "ttv-nested", "param_names": ["a"]})),
             samples=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="plain-data"):
        load_result(path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        load_result(tmp_path / "junk.npz")
    res = _nested_result()
    arrays = dict(res.arrays)
    del arrays["logz"]
    np.savez(tmp_path / "short.npz", meta=np.array(json.dumps(res.meta)), **arrays)
    with pytest.raises(ValueError, match="missing \\['logz'\\]"):
        load_result(tmp_path / "short.npz")
    meta = dict(res.meta, version=99)
    np.savez(tmp_path / "v99.npz", meta=np.array(json.dumps(meta)), **res.arrays)
    with pytest.raises(ValueError, match="version 99"):
        load_result(tmp_path / "v99.npz")


def test_likelihood_rejects_bad_transit_tables():
    base = {"prior": {"stellar_mass": 1.0, "planets": [
        {"name": "b", "mass": {"dist": "fixed", "value": 5.0},
         "period": {"dist": "uniform", "min": 9.9, "max": 10.1},
         "ecc": {"dist": "fixed", "e": 0.0, "omega_deg": 90.0},
         "tconj": {"dist": "uniform", "min": -0.1, "max": 0.1}}]}}
    times = [10.0 * i for i in range(5)]
    cases = [
        ({"epoch": [0, 1, 2, 3, 4], "time": times, "sigma": [1e-3, 1e-3, float("nan"), 1e-3, 1e-3]},
         "sigma must be finite"),
        ({"epoch": [0, 1, 2, 3, 4], "time": times, "sigma": [1e-3, 0.0, 1e-3, 1e-3, 1e-3]},
         "sigma must be finite and > 0"),
        ({"epoch": [0, 1, 1, 3, 4], "time": times, "sigma": [1e-3] * 5}, "duplicates"),
        ({"epoch": [0, 2, 1, 3, 4], "time": times, "sigma": [1e-3] * 5}, "strictly increasing"),
        ({"epoch": [0, 1], "time": times[:2], "sigma": [1e-3] * 2}, "need more transits"),
    ]
    for obs, msg in cases:
        with pytest.raises(ValueError, match=msg):
            TTVLikelihood(dict(base, observed={"b": obs}))


def test_emcee_warm_start_draws_walkers_from_the_previous_posterior():
    from _ttv_data import small_task
    from app.ttv.task import run_ttv_task

    truth = [206.588, 22.3, 12.0]
    previous = np.array(truth) + np.array([0.05, 3e-5, 1e-3]) * np.random.default_rng(3).standard_normal((200, 3))
    params, system = small_task(sampler={"name": "emcee", "nwalkers": 8, "nsteps": 20,
                                         "init_samples": previous.tolist()})
    res = run_ttv_task(params, [5], None)
    first = res.arrays["chain"][0]
    # every walker starts inside the previous posterior's cloud (ball 1e-4 in unit-cube units)
    assert np.all(np.abs(first[:, 0] - truth[0]) < 1.0)
    assert np.all(np.abs(first[:, 1] - truth[1]) < 1e-3)
    assert res.meta["options"]["warm_start"] is True
    assert np.all(np.isfinite(res.arrays["log_prob"]))


def test_runs_of_one_bin_merge_and_bins_combine_by_evidence_times_prior_mass():
    from _ttv_data import small_task
    from app.ttv.combine import combine_bins, merge_bin_runs
    from app.ttv.task import run_ttv_task

    params, _ = small_task(nlive=10)
    a, b = run_ttv_task(params, [1], None), run_ttv_task(params, [2], None)
    merged = merge_bin_runs([a, b])
    assert len(merged.arrays["logl"]) == len(a.arrays["logl"]) + len(b.arrays["logl"])
    za, zb, zm = a.log_evidence, b.log_evidence, merged.log_evidence
    assert zm[1] < min(za[1], zb[1])  # more live points: a smaller evidence error
    assert min(za[0], zb[0]) - 3 * zm[1] < zm[0] < max(za[0], zb[0]) + 3 * zm[1]
    # two "bins" with the same likelihood: probabilities follow Z_k * pi_k exactly
    bins = [{"index": 0, "period_min": 1.0, "period_max": 2.0, "prior_mass": 0.25},
            {"index": 1, "period_min": 2.0, "period_max": 3.0, "prior_mass": 0.75}]
    comb = combine_bins(bins, {0: [a], 1: [a]}, np.random.default_rng(0), n_samples=400)
    assert [s.probability for s in comb.bins] == pytest.approx([0.25, 0.75])
    assert comb.log_z == pytest.approx(za[0])
    assert comb.samples.shape == (400, 3)


def test_reference_time_sets_the_epoch_of_the_elements_and_matches_the_synthetic_truth():
    from app.ttv.synthetic import kepler88_like

    system = kepler88_like(np.random.default_rng(5), n_transits=40)
    observed = {"b": {"epoch": system.epochs.tolist(), "time": system.times.tolist(),
                      "sigma": system.sigma.tolist()}}
    # every parameter fixed at the truth: at the simulation's start the fit's model reproduces
    # the noiseless times exactly; elements read at another epoch do not (by minutes)
    at_truth = TTVLikelihood({"prior": system.truth_spec, "observed": observed, "dt": 10.95 / 80,
                              "t_start": system.t_start}).model_times(np.empty(0))
    np.testing.assert_allclose(at_truth, system.model_times, rtol=0, atol=1e-9)
    shifted = TTVLikelihood({"prior": system.truth_spec, "observed": observed, "dt": 10.95 / 80,
                             "t_start": system.t_start - 0.3}).model_times(np.empty(0))
    assert np.max(np.abs(shifted - system.model_times)) * 1440 > 1.0
    # giving the default start explicitly changes nothing, bit for bit
    default = TTVLikelihood({"prior": system.truth_spec, "observed": observed, "dt": 10.95 / 80})
    explicit = TTVLikelihood({"prior": system.truth_spec, "observed": observed, "dt": 10.95 / 80,
                              "t_start": default.t_start})
    np.testing.assert_array_equal(default.model_times(np.empty(0)), explicit.model_times(np.empty(0)))
    first = float(system.times.min())
    for bad, msg in ((first + 0.1, "before the first observed transit"),
                     (first - 11.0, "before the first observed transit"),
                     (float("nan"), "finite number"), ("10", "finite number")):
        with pytest.raises(ValueError, match=msg):
            TTVLikelihood({"prior": system.truth_spec, "observed": observed, "t_start": bad})
