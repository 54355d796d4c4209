"""The measured cost model: structure and scaling (calibration vs real runs is printed by
benchmarks/bench_app.py, never asserted on timings here)."""

from __future__ import annotations

import pytest

from app import costmodel as cm


def test_nested_cost_beyond_start_up_scales_with_nlive_and_planet_steps():
    small = cm.estimate_ttv_nested(nlive=50, ndim=3, planet_steps=1000)
    double_live = cm.estimate_ttv_nested(nlive=100, ndim=3, planet_steps=1000)
    assert (double_live.seconds_ref - cm.APP_START_S) == pytest.approx(2 * (small.seconds_ref - cm.APP_START_S))
    longer = cm.estimate_ttv_nested(nlive=50, ndim=3, planet_steps=10000)
    assert longer.seconds_ref > small.seconds_ref
    more_info = cm.estimate_ttv_nested(nlive=50, ndim=3, planet_steps=1000, information_nats=40)
    assert more_info.seconds_ref > small.seconds_ref


def test_disk_includes_the_unpacked_app_and_memory_the_base_process():
    est = cm.estimate_ttv_nested(nlive=100, ndim=7, planet_steps=5000)
    assert est.disk_bytes > cm.APP_BUNDLE_BYTES
    assert est.memory_bytes > cm.APP_BASE_RSS_BYTES


def test_emcee_warm_start_skips_the_optimiser_calls():
    cold = cm.estimate_ttv_emcee(nwalkers=32, nsteps=100, ndim=5, planet_steps=2000)
    warm = cm.estimate_ttv_emcee(nwalkers=32, nsteps=100, ndim=5, planet_steps=2000, warm_start=True)
    per_call = cm.ttv_call_seconds(2000) + cm.EMCEE_OVERHEAD_PER_CALL_S
    assert cold.seconds_ref - warm.seconds_ref == pytest.approx((64 + 400 * 5) * per_call)


def test_tile_memory_grows_with_tile_and_cutout_pixels():
    small = cm.estimate_reproject_tile(tile_pixels=512 * 512, cutout_pixels=600 * 600)
    big = cm.estimate_reproject_tile(tile_pixels=2048 * 2048, cutout_pixels=2200 * 2200)
    assert big.memory_bytes > small.memory_bytes
    assert big.seconds_ref > small.seconds_ref
    assert big.disk_bytes > small.disk_bytes


@pytest.mark.parametrize("kwargs, name", [
    ({"nlive": 0, "ndim": 3, "planet_steps": 10}, "nlive"),
    ({"nlive": 10, "ndim": 3, "planet_steps": float("inf")}, "planet_steps"),
    ({"nlive": True, "ndim": 3, "planet_steps": 10}, "nlive"),
])
def test_nonsense_sizes_are_refused_with_the_value(kwargs, name):
    with pytest.raises(ValueError, match=f"{name} must be a positive finite number"):
        cm.estimate_ttv_nested(**kwargs)


def _spec(kind, sampler, ecc=None, jitter=None):
    planets = [{"name": "b", "mass": {"dist": "fixed", "value": 8.7},
                "period": {"dist": "fixed", "value": 10.95},
                "ecc": {"dist": "fixed", "e": 0.05, "omega_deg": 90.0},
                "tconj": {"dist": "fixed", "value": 5.0}},
               {"name": "c", "mass": {"dist": "loguniform", "min": 10, "max": 1000},
                "period": {"dist": "uniform", "min": 21.5, "max": 23.0},
                "ecc": ecc or {"dist": "disk", "emax": 0.3},
                "tconj": {"dist": "phase", "t_ref": 0.0}}]
    prior = {"stellar_mass": 0.99, "planets": planets}
    if jitter:
        prior["jitter"] = jitter
    observed = {"b": {"epoch": [0, 1, 2], "time": [5.0, 15.95, 1100.0], "sigma": [1e-3] * 3}}
    return {"kind": kind, "params": {"likelihood": {"prior": prior, "observed": observed},
                                     "sampler": sampler}}


def test_spec_estimates_count_free_dimensions_and_span():
    assert cm._free_dims(_spec("ttv-nested", {})["params"]["likelihood"]["prior"]) == 5
    prior = _spec("ttv-nested", {}, jitter={"dist": "loguniform", "min": 1e-5, "max": 1e-2})
    assert cm._free_dims(prior["params"]["likelihood"]["prior"]) == 6
    steps = cm.ttv_planet_steps(_spec("ttv-nested", {})["params"]["likelihood"])
    assert steps == pytest.approx((1095.0 + 10.95) / (10.95 / 20) * 2)
    nested = cm.estimate("ttv-nested", _spec("ttv-nested", {"name": "dynesty", "nlive": 100})["params"])
    assert nested == cm.estimate_ttv_nested(nlive=100, ndim=5, planet_steps=steps)
    emcee = cm.estimate("ttv-emcee", _spec("ttv-emcee", {"name": "emcee", "nwalkers": 32, "nsteps": 500})["params"])
    assert emcee.seconds_ref > cm.APP_START_S


def test_tile_estimate_uses_the_cutout_shape_when_given():
    params = {"tile_bounds": [0, 512, 0, 512]}
    assert cm.estimate("reproject-tile", params) == cm.estimate_reproject_tile(
        tile_pixels=512 * 512, cutout_pixels=516 * 516)
    given = cm.estimate("reproject-tile", dict(params, cutout_shape=[600, 700]))
    assert given == cm.estimate_reproject_tile(tile_pixels=512 * 512, cutout_pixels=600 * 700)
    with pytest.raises(ValueError, match="no cost model"):
        cm.estimate("other", {})


def test_nested_calls_per_iteration_follow_the_walk_length_and_slices():
    # dynesty's defaults: rwalk walks = ndim + 20, rslice slices = ndim + 3
    assert cm.dynesty_calls_per_iteration(7) == pytest.approx(cm.DYNESTY_CALLS_PER_WALK * 27)
    assert cm.dynesty_calls_per_iteration(7, walks=50) == pytest.approx(cm.DYNESTY_CALLS_PER_WALK * 50)
    assert cm.dynesty_calls_per_iteration(7, "rslice") == pytest.approx(cm.DYNESTY_CALLS_PER_SLICE * 10)
    three = cm.estimate_ttv_nested(nlive=100, ndim=3, planet_steps=5000)
    seven = cm.estimate_ttv_nested(nlive=100, ndim=7, planet_steps=5000)
    assert (seven.seconds_ref - cm.APP_START_S) / (three.seconds_ref - cm.APP_START_S) == pytest.approx(27 / 23)
    with pytest.raises(ValueError, match="no cost model for dynesty sample 'unif'"):
        cm.dynesty_calls_per_iteration(3, "unif")
