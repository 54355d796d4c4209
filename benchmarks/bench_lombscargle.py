"""Lomb-Scargle benchmark: our nifty-ls engine beside astropy's LombScargle (default method) on the same data.

Run: ``python -m benchmarks.bench_lombscargle [--astropy-batch N]`` (from the repository root). Prints wall
times and the ratio astropy / ours measured in the same run. Thread counts are pinned to 1.

Cases (anchors in shared/anchors.md were measured on this kind of machine):
  * single periodogram, N=1k / M=10k and N=10k / M=100k: power on the grid (ours at eps 1e-12, the precision
    the tests hold to 1e-8 against astropy's exact method) and the full ``lomb_scargle_result`` (off-grid
    refinement, uncertainty, spectral window, Baluev FAP);
  * bootstrap FAP with 100 resamples at N=1k and N=10k;
  * a batch of 1000 light curves x 1000 points (shared times, M=10k): astropy in a Python loop vs our batched
    power and our full batch (every curve's refinement, uncertainty and FAP). ``--astropy-batch N`` times only
    N astropy curves and scales to 1000 (printed as such) to keep the run short; likewise
    ``--astropy-bootstrap`` (default 20 of the 100 resamples at N=10k, where astropy needs ~1 s per resample).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from astropy.timeseries import LombScargle  # noqa: E402

from server.timeseries.periodogram import (  # noqa: E402
    FrequencyGrid,
    _bootstrap_max_power,
    grid_power,
    lomb_scargle_batch,
    lomb_scargle_result,
)


def best_of(fn, repeat):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def make_data(rng, n, baseline=100.0):
    t = 2460000.0 + np.sort(rng.uniform(0.0, baseline, n))
    dy = rng.uniform(0.5, 1.5, n)
    y = 0.3 * np.sin(2 * np.pi * t / 1.2345) + rng.normal(0, 1, n) * dy
    return t, y, dy


def grid_for(t, m):
    baseline = float(np.ptp(t))
    fmin = 1.0 / baseline
    df = 1.0 / (5 * baseline)
    return FrequencyGrid(fmin=fmin, df=df, n=int(m))


def line(label, ours, ref, extra=""):
    print(f"{label:<46s} ours {ours * 1e3:10.2f} ms   astropy {ref * 1e3:10.2f} ms   "
          f"ratio {ref / ours:8.1f}x {extra}")


def single(rng, n, m):
    t, y, dy = make_data(rng, n)
    grid = grid_for(t, m)
    freq = grid.frequencies()
    repeat = 5 if n <= 1000 else 3
    t_ref, ref = best_of(lambda: LombScargle(t, y, dy).power(freq), repeat)
    t_ours, ours = best_of(lambda: grid_power(t, y, dy, grid), repeat)
    diff = np.max(np.abs(ours - ref))
    line(f"power N={n} M={m}", t_ours, t_ref, f"(max |ours - astropy default| = {diff:.1e})")
    max_period = 1.0 / grid.fmin
    min_period = 1.0 / grid.fmax
    t_full, _ = best_of(lambda: lomb_scargle_result(t, y, dy, min_period=min_period, max_period=max_period,
                                                     oversampling=5), repeat)
    line(f"full result (refine+err+window+Baluev) N={n}", t_full, t_ref)


def bootstrap(rng, n, m, n_boot=100, astropy_boot=100):
    t, y, dy = make_data(rng, n)
    grid = grid_for(t, m)
    freq = grid.frequencies()
    ls = LombScargle(t, y, dy)
    pmax = ls.power(freq).max()
    sample = min(astropy_boot, n_boot)
    t0 = time.perf_counter()
    ls.false_alarm_probability(pmax, method="bootstrap", minimum_frequency=freq[0], maximum_frequency=freq[-1],
                               samples_per_peak=5, method_kwds={"n_bootstraps": sample, "random_seed": 1})
    t_ref = (time.perf_counter() - t0) * n_boot / sample
    t0 = time.perf_counter()
    _bootstrap_max_power(t, y, dy, grid, 1, n_boot, np.random.default_rng(1), 1, "nifty")
    t_ours = time.perf_counter() - t0
    note = "" if sample == n_boot else f"(astropy: {sample} resamples timed, scaled to {n_boot})"
    line(f"bootstrap FAP {n_boot} resamples N={n} M={m}", t_ours, t_ref, note)


def batch(rng, n_curves=1000, n=1000, m=10_000, astropy_sample=1000):
    t = 2460000.0 + np.sort(rng.uniform(0.0, 100.0, n))
    dy = np.full(n, 1.0)
    ys = rng.normal(0, 1, (n_curves, n))
    grid = grid_for(t, m)
    freq = grid.frequencies()
    sample = min(astropy_sample, n_curves)
    t0 = time.perf_counter()
    for i in range(sample):
        LombScargle(t, ys[i], dy).power(freq)
    t_ref = (time.perf_counter() - t0) * n_curves / sample
    note = "" if sample == n_curves else f"(astropy: {sample} curves timed, scaled to {n_curves})"
    t0 = time.perf_counter()
    grid_power(t, ys, dy, grid)
    t_power = time.perf_counter() - t0
    line(f"batch {n_curves} x {n} pts, M={m}: power", t_power, t_ref, note)
    curves = [(t, ys[i], dy) for i in range(n_curves)]
    t0 = time.perf_counter()
    lomb_scargle_batch(curves, min_period=1.0 / grid.fmax, max_period=1.0 / grid.fmin)
    t_full = time.perf_counter() - t0
    line(f"batch {n_curves} x {n} pts: full results + Baluev", t_full, t_ref, note)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--astropy-batch", type=int, default=1000,
                        help="astropy curves to time in the batch case (scaled to 1000)")
    parser.add_argument("--astropy-bootstrap", type=int, default=20,
                        help="astropy resamples to time at N=10k (scaled to 100; ~1 s each)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(2026)
    # warm-up: imports, finufft plans, astropy IERS-free code paths
    t, y, dy = make_data(rng, 200)
    grid_power(t, y, dy, grid_for(t, 1000))
    LombScargle(t, y, dy).power(grid_for(t, 1000).frequencies())
    print("Lomb-Scargle: ours (nifty-ls, 1 thread) vs astropy LombScargle default method ('auto' -> 'fast' on a "
          "regular grid); ratio = astropy / ours")
    single(rng, 1_000, 10_000)
    single(rng, 10_000, 100_000)
    bootstrap(rng, 1_000, 10_000)
    bootstrap(rng, 10_000, 100_000, astropy_boot=args.astropy_bootstrap)
    batch(rng, astropy_sample=args.astropy_batch)


if __name__ == "__main__":
    main()
