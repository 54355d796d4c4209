"""The TTV likelihood cannot crash (issue 22, item 2).

Every parameter vector the integrator cannot handle gives ln L = -inf, counted by reason in the
likelihood's diagnostics and the result meta; vectors that worked before give the same ln L
(tests/data/ttv/loglike_reference.json, written by the code before this change); a derandomized
property test draws from the whole prior box of the wide Kepler-88-like problem of the issue
(perturber 14-40 d, 1-2000 Earth masses; tests/_ttv_wide.py) for 0, 1 and 2 perturbers.
"""
import json
import math
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from _ttv_data import small_task
from _ttv_wide import wide_task_specs
from app.ttv.likelihood import REJECTIONS, TTVLikelihood
from app.ttv.samplers import EmceeStrategy, _UnitCube
from app.ttv.synthetic import kepler88_like
from app.ttv.task import run_ttv_task
from fuzz import fuzz

HERE = os.path.dirname(os.path.abspath(__file__))
SPECS = wide_task_specs(n_transits=40)
LIKES = {m: TTVLikelihood(spec["likelihood"]) for m, spec in SPECS.items()}
BATCH = 20        # unit-cube vectors per hypothesis example
EXAMPLES = 500    # x BATCH = 10,000 draws per model


def _is_loglike(v) -> bool:
    return type(v) is float and (math.isfinite(v) or v == -math.inf)


def test_vectors_that_worked_before_give_the_same_loglike():
    # Same to 1e-9 relative, not bitwise: the reference was written on one machine, and glibc's libm picks
    # CPU-specific variants of sin/cos/exp that may differ in the last bit elsewhere (docs/ttv.md). On the machine
    # that wrote it, the values are bitwise equal; a real change of the model moves ln L by far more than 1e-9.
    with open(os.path.join(HERE, "data", "ttv", "loglike_reference.json")) as fh:
        ref = json.load(fh)["cases"]
    cases = {f"wide-{m}": spec["likelihood"] for m, spec in SPECS.items()}
    cases["small"] = small_task()[0]["likelihood"]
    n_valid = 0
    for name, spec in cases.items():
        like = TTVLikelihood(spec)
        for u, want in zip(ref[name]["u"], ref[name]["logl"]):
            got = like(like.prior(np.array(u)))
            assert want != "error", "the reference run never failed on these draws"
            want = float.fromhex(want)
            if want == -1e300:  # the old "no model" value: now -inf, with a reason
                assert got == -math.inf
            else:
                assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-6), (name, u, got, want)
                n_valid += 1
    assert n_valid > 1000  # 1143 of the 1200 draws were valid


@pytest.mark.parametrize("model", [0, 1, 2])
def test_loglike_over_the_whole_prior_box_is_finite_or_minus_inf_and_never_raises(model):
    like = LIKES[model]
    like.reset_diagnostics()
    target = _UnitCube(like, like.prior)  # emcee's coordinates: periodic ones wrap
    ndim = like.prior.ndim
    periodic = np.array(like.prior.periodic, dtype=int)

    @fuzz(EXAMPLES)
    @given(arrays(np.float64, (BATCH, ndim), elements=st.floats(0.0, 1.0)),
           st.integers(-2, 2))
    def check(u, turns):
        shifted = u.copy()
        if len(periodic):
            shifted[:, periodic] += turns  # emcee walkers leave [0, 1) on the angle and wrap
        for row, row_shifted in zip(u, shifted):
            value = target(row_shifted)
            assert _is_loglike(value), (row, value)
        # the nested-sampling path (prior transform, then ln L) agrees with emcee's
        wrapped = shifted[0].copy()
        wrapped[periodic] %= 1.0
        assert like(like.prior(wrapped)) == target(shifted[0])

    check()
    diag = like.diagnostics
    assert diag["calls"] >= EXAMPLES * (BATCH + 1)
    assert diag["rejected"]["exception"] == 0  # the last-resort net never fired
    assert set(diag["rejected"]) == set(REJECTIONS)


@pytest.fixture(scope="module")
def long_like():
    """The issue's configuration: 134 transits, where TTVFast fails near 14 d and ~2000 M_earth."""
    return TTVLikelihood(wide_task_specs(n_transits=134)[1]["likelihood"])


# unit-cube draws (b.period, b.secosw, b.sesinw, b.tconj, pert.mass, pert.period, pert.secosw,
# pert.sesinw, pert.tconj) found by a seeded scan near (14 d, 2000 M_earth)
NAN_TIMES = [0.16267087433652383, 0.7240797155870501, 0.9090844381539971, 0.4600232907566758,
             0.9979525206772355, 0.06100530758570066, 0.2654987928559305, 0.980302087071833,
             0.7439096253516175]   # 1969 M_earth at 14.93 d: TTVFast returns NaN times
BUFFER_FULL = [0.6217509280759834, 0.8560950824105203, 0.05258161804459549, 0.20076236529994895,
               0.9633209941637305, 0.011222512487016568, 0.9807378816601081, 0.08583946904876816,
               0.17699349478051962]  # 1513 M_earth at 14.17 d: the TTVFast symbol called exit()


@pytest.mark.parametrize("u, reason", [(NAN_TIMES, "nonfinite_times"),
                                       (BUFFER_FULL, "buffer_full")])
def test_integrator_failures_of_the_reported_crash_give_minus_inf_and_are_counted(long_like, u, reason):
    long_like.reset_diagnostics()
    assert long_like(long_like.prior(np.array(u))) == -math.inf
    assert long_like.model.last_failure == reason
    assert long_like.diagnostics["rejected"][reason] == 1
    assert long_like.diagnostics["calls"] == 1


def test_unphysical_and_non_finite_vectors_give_minus_inf_with_their_reason():
    like = LIKES[1]
    names = list(like.prior.names)
    x0 = like.prior(np.full(like.prior.ndim, 0.5))
    cases = []
    for name, value, reason in [("pert.mass", 0.0, "invalid_parameters"),
                                ("pert.mass", -5.0, "invalid_parameters"),
                                ("pert.period", -14.0, "invalid_parameters"),
                                ("b.tconj", math.nan, "invalid_parameters"),
                                ("pert.mass", math.inf, "invalid_parameters"),
                                ("pert.mass", 1e307, "bad_elements"),  # 10**log10_mu would overflow
                                ("pert.secosw", 1.2, "bad_elements")]:        # e = 1.44 + ... >= 1
        x = x0.copy()
        x[names.index(name)] = value
        cases.append((x, reason))
    for x, reason in cases:
        like.reset_diagnostics()
        assert like(x) == -math.inf, (x, reason)
        assert like.diagnostics["rejected"][reason] == 1, (x, reason, like.diagnostics)


def test_emcee_walkers_start_at_finite_loglike_and_the_result_meta_counts_rejections():
    with open(os.path.join(HERE, "data", "ttv", "loglike_reference.json")) as fh:
        ref = json.load(fh)["cases"]["wide-1"]
    prior = LIKES[1].prior
    bad = [prior(np.array(u)) for u, v in zip(ref["u"], ref["logl"]) if float.fromhex(v) == -1e300]
    good = [prior(np.array(u)) for u, v in zip(ref["u"], ref["logl"]) if float.fromhex(v) > -1e300]
    warm = np.array(bad[:20] + good[:4])  # most warm-start samples have no model: ln L = -inf
    spec = dict(SPECS[1], sampler={"name": "emcee", "nwalkers": 20, "nsteps": 2, "ball": 1e-4,
                                   "init_samples": warm.tolist()})
    result = run_ttv_task(spec, [3], None)
    assert np.all(np.isfinite(result.arrays["log_prob"][0]))
    diag = result.meta["likelihood_diagnostics"]
    assert sum(diag["rejected"].values()) >= 10 and diag["calls"] >= 60
    # a dynesty run over the whole box (no-perturber model: cheap) records its calls too
    nested = run_ttv_task(dict(SPECS[0], sampler={"name": "dynesty", "nlive": 10, "dlogz": 5.0}),
                          [3], None)
    assert nested.meta["likelihood_diagnostics"]["calls"] > 10 * 10  # at least ten per live point


def test_emcee_start_fails_clearly_when_no_prior_draw_has_a_finite_loglike():
    class Never:
        diagnostics = {"calls": 0, "rejected": {}}

        def __call__(self, x):
            return -math.inf

    prior = LIKES[0].prior
    strategy = EmceeStrategy(nwalkers=4, nsteps=1, n_starts=2)
    with pytest.raises(ValueError, match="no finite ln L in 202 prior draws"):
        strategy._initial(_UnitCube(Never(), prior), prior, np.random.default_rng(0))


@pytest.mark.slow
def test_wide_prior_kepler88_like_dynesty_run_finishes_and_recovers_the_perturber():
    """The issue's failing run, sized to finish in ~30 s of CPU: a Kepler-88-like system (40 transits of b,
    sigma 3-6 min, data seed 2), b's elements fixed at the truth and the perturber's eccentricity too (0.04,
    250 deg), free: perturber mass (log-uniform 1-2000 Earth masses), period (log-uniform 14-40 d: the whole wide
    prior, through the region where TTVFast fails) and phase.  dynesty rwalk, nlive 100, dlogz 0.5.  A single run
    finds the peak for about a third of the sampler seeds (docs/ttv.md "Wide-prior run": others settle on a mode
    at 16.39 d, 530 in ln L below it), and which seeds do depends on the last bits of libm on the machine. So the
    test does what the inference does with a flagged run (``missed_peak_reruns``): it runs again with the next
    seed, up to 16 seeds (all missing by chance: ~0.3% at a 1/3 success rate; ~25 s CPU a run). Every run must finish with its rejections counted and no exception;
    the first run whose chi^2/N < 2 (the peak) is compared with the truth (within 3 sigma)."""
    s = kepler88_like(np.random.default_rng(2), n_transits=40, sigma_min=(3.0, 6.0))
    b, c = s.truth_spec["planets"]
    prior = {"stellar_mass": 0.99, "planets": [b, {
        "name": "c", "mass": {"dist": "loguniform", "min": 1.0, "max": 2000.0},
        "period": {"dist": "loguniform", "min": 14.0, "max": 40.0}, "ecc": c["ecc"],
        "tconj": {"dist": "phase", "t_ref": 0.0}}]}
    spec = {"likelihood": {"prior": prior, "t_start": s.t_start, "observed": {"b": {
                "epoch": s.epochs.tolist(), "time": s.times.tolist(), "sigma": s.sigma.tolist()}}},
            "sampler": {"name": "dynesty", "nlive": 100, "sample": "rwalk", "dlogz": 0.5}}
    norm = float(np.sum(np.log(2 * np.pi * s.sigma ** 2)))
    missed = []
    for seed in range(1, 17):
        result = run_ttv_task(spec, [seed], None)
        diag = result.meta["likelihood_diagnostics"]
        assert sum(diag["rejected"].values()) > 0 and diag["rejected"]["exception"] == 0
        chi2_per_obs = (-2 * result.arrays["logl"].max() - norm) / len(s.times)
        if chi2_per_obs < 2.0:
            break
        missed.append((seed, round(chi2_per_obs, 1)))
    else:
        pytest.fail(f"the sampler missed the peak with every seed: {missed}")
    post = result.posterior(np.random.default_rng(0))
    for k, name in enumerate(result.param_names):
        mean, sd = post[:, k].mean(), post[:, k].std()
        assert abs(mean - s.truth[name]) < 3 * sd, (name, mean, sd, s.truth[name])


def test_inference_summary_reports_the_likelihood_diagnostics_of_each_model():
    from server.ttv.inference import run_ttv_inference, summary_dict
    from _ttv_wide import WIDE, wide_system, wide_table

    res = run_ttv_inference(wide_table(wide_system(n_transits=20)),
                            dict(WIDE, models=[0], nlive=10, dlogz=5.0))
    diag = summary_dict(res)["models"]["0"]["likelihood_diagnostics"]
    assert diag["calls"] > 100 and set(diag["rejected"]) == set(REJECTIONS)
