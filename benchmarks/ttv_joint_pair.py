"""Joint fit of two transiting planets (every mass free): how close do the masses come, at what cost?

    OMP_NUM_THREADS=1 python -m benchmarks.ttv_joint_pair [--system near21|kepler9] [--span 600] [--nlive 40]
        [--sample rwalk] [--free-ecc] [--seed 1]

Simulates the pair with ``app.ttv.synthetic.transiting_system`` (seed ``--seed``; sigma 1-2 min for near21,
2-4 min for kepler9), fits it with ``server.ttv.inference.run_ttv_inference`` (model 0: transiting planets only;
masses log-uniform 3-100 / 3-300 Earth masses; eccentricities fixed at the truth unless ``--free-ecc`` (then
uniform on the disk e < 0.1 / 0.2);
``reference_time`` = the simulation's start, so the truth is in the fit's own parameterisation) and prints the
wall time, likelihood calls, best chi^2 and every parameter's median, 68% half-width and z = (median - truth) /
half-width.  ``near21``: b 20 Earth masses at 10 d, c 15 at 20.5 d (the test's system); ``kepler9``:
Kepler-9-like, 43.5 and 29.9 Earth masses at 19.24 and 38.91 d (TTVs of hours).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from app.ttv.synthetic import ExtraPlanet, transiting_system
from server.ttv.inference import run_ttv_inference

SYSTEMS = {
    "near21": ((ExtraPlanet("b", 20.0, 10.0, 0.02, 90.0, 5.0), ExtraPlanet("c", 15.0, 20.5, 0.02, 250.0, 12.0)),
               (1.0, 2.0), [3.0, 100.0], 0.002, 0.01, 0.1),
    "kepler9": ((ExtraPlanet("b", 43.5, 19.24, 0.05, 90.0, 5.0), ExtraPlanet("c", 29.9, 38.91, 0.05, 250.0, 20.0)),
                (2.0, 4.0), [3.0, 300.0], 0.01, 0.05, 0.2),
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--system", choices=sorted(SYSTEMS), default="near21")
    ap.add_argument("--span", type=float, default=600.0, help="days of transits")
    ap.add_argument("--nlive", type=int, default=40)
    ap.add_argument("--sample", default="rwalk")
    ap.add_argument("--free-ecc", action="store_true", help="sample both e-vectors too")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    planets, sigma_min, mass_range, pwidth, twidth, emax = SYSTEMS[args.system]
    system = transiting_system(np.random.default_rng(args.seed), planets, stellar_mass=1.0, span_days=args.span,
                               sigma_min=sigma_min)
    table = pd.DataFrame({"planet": system.planet, "epoch": system.epochs, "t_obs": system.times,
                          "sigma": system.sigma})
    cfg = {"stellar_mass": 1.0, "models": [0], "known_mass": mass_range, "known_ecc_max": emax,
           "known_period_width": pwidth, "known_tconj_width": twidth, "reference_time": system.t_start,
           "nlive": args.nlive, "dynesty_sample": args.sample, "dlogz": 0.5, "seed": args.seed}
    if not args.free_ecc:
        cfg["known_ecc_fixed"] = {p.name: [p.e, p.omega_deg] for p in planets}
    counts = table["planet"].value_counts().to_dict()
    print(f"{args.system}: {len(table)} times {counts}, span {args.span:g} d, nlive {args.nlive} {args.sample}, "
          f"e {'free' if args.free_ecc else 'fixed'}, seed {args.seed}", flush=True)
    t0 = time.perf_counter()
    result = run_ttv_inference(table, cfg)
    model = result["models"][0]
    print(f"wall {time.perf_counter() - t0:.1f} s, {model['likelihood_diagnostics']['calls']} likelihood calls, "
          f"chi2_best {model['chi2_best']:.1f} for {len(table)} times; flags: {result['flags'] or 'none'}")
    ci = result["credible_intervals"]
    for name, truth in system.truth.items():
        if name in ci:
            lo, hi = ci[name]["68"]
            half = (hi - lo) / 2
            print(f"  {name:14s} truth {truth:<10.6g} median {ci[name]['median']:<12.7g} +- {half:<10.3g} "
                  f"z = {(ci[name]['median'] - truth) / half:+.2f}")


if __name__ == "__main__":
    main()
