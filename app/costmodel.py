"""Measured cost model per task kind: seconds on a reference core, peak memory, slot disk.

Every constant below was measured on the reference machine (2-core Xeon, Debian 12, 1 thread,
CPU seconds, so that other load on the machine does not inflate it) with::

    python -m benchmarks.bench_app --app dist/openastro_app --costmodel

(2026-11-25; output quoted in docs/volunteer_app.md). :func:`estimate` gives the raw model
(no safety factors); ``work_generator/sizing.py`` turns it into BOINC's ``rsc_fpops_est``
(seconds x the reference core's FLOPS), ``rsc_fpops_bound``, ``rsc_memory_bound`` and
``rsc_disk_bound`` with its margins, in one place. Remember what the client enforces: elapsed
time over ``rsc_fpops_bound`` / host FLOPS aborts the task (197), a working set over
``rsc_memory_bound`` (198), a slot directory over ``rsc_disk_bound`` (196) - and the slot holds the
unpacked app bundle, so ``disk_bytes`` includes it.

Units: seconds (reference core), bytes, days (TTV times); ``planet_steps`` = integration steps per
likelihood call x number of planets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

# --- measured constants (benchmarks/bench_app.py --costmodel) ---------------------------------
APP_START_S = 1.2               # frozen start-up + numpy/scipy/astropy imports, CPU s
APP_BASE_RSS_BYTES = 82e6       # peak RSS of the frozen app, tile kernel imported, no data
APP_BUNDLE_BYTES = 166e6        # onedir bundle unpacked in the slot (x86_64 Linux build)
TTV_CALL_BASE_S = 2.0e-4        # TTV likelihood call: fixed part
TTV_CALL_PER_PLANET_STEP_S = 3.2e-7  # ... plus this per integration step per planet
DYNESTY_OVERHEAD_PER_CALL_S = 1.6e-4  # dynesty rwalk bookkeeping per likelihood call
EMCEE_OVERHEAD_PER_CALL_S = 4.0e-4    # emcee stretch move bookkeeping per call (16 walkers)
DYNESTY_CALLS_PER_WALK = 0.9         # rwalk: calls per iteration / walk length (default
#                                       ndim + 20); 0.82-0.93 at ndim 3-10, 20.8 calls at ndim 3
#                                       in a TTV run (the first iterations sample the cube: 1 call)
DYNESTY_CALLS_PER_SLICE = 4.6         # rslice: calls per iteration / slices (default ndim + 3);
#                                       4.1-4.7 at ndim 3-10
DYNESTY_EXTRA_ITERATIONS_PER_LIVE = 2.9  # niter / nlive = information (nats) + this
TTV_NESTED_EXTRA_RSS_BYTES = 15e6  # dynesty imported + saved run (nested peak 94 MB measured)
TTV_EMCEE_EXTRA_RSS_BYTES = 45e6   # emcee + scipy.optimize (emcee peak 124 MB measured)
DEFAULT_INFORMATION_NATS = 15.0  # KL prior -> posterior of a narrow-bin TTV run (13.3 measured)
TILE_PER_OUTPUT_PIXEL_S = 7.0e-8  # bilinear tile (mapping + sampling), CPU s per output pixel
#                                    (6.7e-8 with the separable-mapping kernel; 1.3e-7 before it)
TILE_RSS_PER_PIXEL_BYTES = 32.0   # per (output tile + input cutout) pixel, peak RSS
#                                    (19.6 and 31.7 in two runs; the larger)
FITS_BYTES_PER_PIXEL = 8.0        # float32 image + float32 weight in the cutout FITS
TILE_RESULT_BYTES_PER_PIXEL = 9.0  # float32 tile + float32 weight + bool footprint (uncompressed)


@dataclass(frozen=True)
class CostEstimate:
    seconds_ref: float    # predicted CPU seconds on the reference core (1 thread)
    memory_bytes: float   # predicted peak RSS
    disk_bytes: float     # predicted slot usage: unpacked app + inputs + outputs + checkpoint


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _estimate(seconds: float, rss_bytes: float, data_bytes: float) -> CostEstimate:
    return CostEstimate(seconds_ref=seconds, memory_bytes=rss_bytes,
                        disk_bytes=APP_BUNDLE_BYTES + data_bytes)


def ttv_call_seconds(planet_steps: float) -> float:
    """CPU seconds of one TTV likelihood call with ``planet_steps`` integration steps x planets."""
    return TTV_CALL_BASE_S + TTV_CALL_PER_PLANET_STEP_S * _positive("planet_steps", planet_steps)


def dynesty_calls_per_iteration(ndim: int, sample: str = "rwalk", walks: int | None = None,
                                slices: int | None = None) -> float:
    """Likelihood calls per dynesty iteration: proportional to the walk length (rwalk) or the
    number of slices (rslice), whose dynesty defaults grow with ``ndim``."""
    ndim_i = int(_positive("ndim", ndim))
    if sample == "rwalk":
        return DYNESTY_CALLS_PER_WALK * (walks or ndim_i + 20)
    if sample == "rslice":
        return DYNESTY_CALLS_PER_SLICE * (slices or ndim_i + 3)
    raise ValueError(f"no cost model for dynesty sample {sample!r} (rwalk or rslice)")


def estimate_ttv_nested(*, nlive: int, ndim: int, planet_steps: float,
                        information_nats: float = DEFAULT_INFORMATION_NATS,
                        sample: str = "rwalk", walks: int | None = None,
                        slices: int | None = None) -> CostEstimate:
    """dynesty static run: niter ~ nlive x (H + 2.9) iterations x calls per iteration."""
    nlive_f, ndim_f = _positive("nlive", nlive), _positive("ndim", ndim)
    niter = nlive_f * (_positive("information_nats", information_nats) + DYNESTY_EXTRA_ITERATIONS_PER_LIVE)
    ncall = niter * dynesty_calls_per_iteration(ndim, sample, walks, slices)
    seconds = APP_START_S + ncall * (ttv_call_seconds(planet_steps) + DYNESTY_OVERHEAD_PER_CALL_S)
    samples = niter + nlive_f
    run_bytes = samples * (2 * ndim_f + 10) * 8.0          # saved run arrays
    rss = APP_BASE_RSS_BYTES + TTV_NESTED_EXTRA_RSS_BYTES + 3 * run_bytes  # run, checkpoint, result
    disk = 2 * run_bytes + 1e6                               # checkpoint + result + spec
    return _estimate(seconds, rss, disk)


def estimate_ttv_emcee(*, nwalkers: int, nsteps: int, ndim: int, planet_steps: float,
                       warm_start: bool = False, n_starts: int = 64) -> CostEstimate:
    """emcee run: nwalkers x nsteps calls, plus the optimiser start (n_starts + <= 400 ndim)."""
    nw, ns, nd = _positive("nwalkers", nwalkers), _positive("nsteps", nsteps), _positive("ndim", ndim)
    ncall = nw * ns + (0 if warm_start else n_starts + 400 * nd)
    seconds = APP_START_S + ncall * (ttv_call_seconds(planet_steps) + EMCEE_OVERHEAD_PER_CALL_S)
    chain_bytes = nw * ns * (2 * nd + 2) * 8.0               # chain_u, chain, log_prob, log_like
    rss = APP_BASE_RSS_BYTES + TTV_EMCEE_EXTRA_RSS_BYTES + 2 * chain_bytes
    disk = 2 * chain_bytes + 1e6
    return _estimate(seconds, rss, disk)


def estimate_reproject_tile(*, tile_pixels: int, cutout_pixels: int) -> CostEstimate:
    """One bilinear tile: cost per output pixel; memory per output + input pixel."""
    tile = _positive("tile_pixels", tile_pixels)
    cutout = _positive("cutout_pixels", cutout_pixels)
    seconds = APP_START_S + TILE_PER_OUTPUT_PIXEL_S * tile
    rss = APP_BASE_RSS_BYTES + TILE_RSS_PER_PIXEL_BYTES * (tile + cutout)
    disk = FITS_BYTES_PER_PIXEL * cutout + TILE_RESULT_BYTES_PER_PIXEL * tile + 1e6
    return _estimate(seconds, rss, disk)


# --- from a work-unit spec ----------------------------------------------------------------------

def _period_lower(dist: Mapping[str, Any]) -> float:
    return float(dist["value"] if dist.get("dist") == "fixed" else dist["min"])


def ttv_planet_steps(likelihood: Mapping[str, Any]) -> float:
    """Integration steps x planets per call for a TTV likelihood spec (app.ttv.likelihood).

    Uses the spec's ``dt`` if given, else P_min / 20 (what the kernel's dt choice gives for
    minute-level timing errors); the span is the observed times +- half the shortest period.
    """
    planets = likelihood["prior"]["planets"]
    p_min = min(_period_lower(p["period"]) for p in planets)
    times = [t for obs in likelihood["observed"].values() for t in obs["time"]]
    span = (max(times) - min(times)) + p_min
    dt = likelihood.get("dt") or p_min / 20.0
    return span / float(dt) * len(planets)


def _free_dims(prior: Mapping[str, Any]) -> int:
    ndim = 0
    for planet in prior["planets"]:
        for key in ("mass", "period", "tconj"):
            ndim += planet[key].get("dist") != "fixed"
        ndim += 2 * (planet["ecc"].get("dist") == "disk")
    return ndim + (prior.get("jitter") is not None and prior["jitter"].get("dist") != "fixed")


def estimate(kind: str, params: Mapping[str, Any]) -> CostEstimate:
    """Cost of one work unit from its kind and spec params.

    TTV kinds: the params of :func:`app.ttv.task.run_ttv_task`. ``reproject-tile``: the spec params;
    ``cutout_shape`` [h, w] may be added (the work generator knows it); without it the cutout is
    taken as the tile grown by 2 px on each side (same pixel scale).
    """
    if kind in ("ttv-nested", "ttv-emcee"):
        like = params["likelihood"]
        steps = ttv_planet_steps(like)
        ndim = max(1, _free_dims(like["prior"]))
        sampler = params["sampler"]
        if kind == "ttv-nested":
            return estimate_ttv_nested(nlive=sampler.get("nlive", 100), ndim=ndim, planet_steps=steps,
                                       sample=sampler.get("sample", "rwalk"), walks=sampler.get("walks"),
                                       slices=sampler.get("slices"))
        return estimate_ttv_emcee(nwalkers=sampler.get("nwalkers", 32), nsteps=sampler.get("nsteps", 2000),
                                  ndim=ndim, planet_steps=steps,
                                  warm_start=sampler.get("init_samples") is not None)
    if kind == "reproject-tile":
        y0, y1, x0, x1 = params["tile_bounds"]
        h, w = params.get("cutout_shape") or (y1 - y0 + 4, x1 - x0 + 4)
        return estimate_reproject_tile(tile_pixels=(y1 - y0) * (x1 - x0), cutout_pixels=int(h) * int(w))
    raise ValueError(f"no cost model for kind {kind!r}")
