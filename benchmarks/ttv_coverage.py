"""Calibration of the TTV posteriors: do 68% / 95% credible intervals hold the truth that often?

    OMP_NUM_THREADS=1 python -m benchmarks.ttv_coverage [--realisations 12] [--nlive 40] [--production]
        [--sample rwalk|rslice] [--walks W] [--dlogz 0.5] [--transits 100] [--true-bin-only]
        [--known-period-width 0.005] [--seed 20261125] [--first 0] [--ncores 1] [--match-epoch]

For K independent noise realisations of the Kepler-88-like system (app.ttv.synthetic.kepler88_like;
realisation k draws its data from ``SeedSequence([seed, k])`` and seeds the sampler with
``[seed, k, 1]``, both printed) it runs ``server.ttv.inference.run_ttv_inference`` with the cheap
configuration of tests/test_ttv_inference.py (5 free parameters: b's osculating period and tconj,
the perturber's mass, period and phase; dynesty rwalk, nlive 40, dlogz 0.5 unless overridden) and
compares the posterior of ``pert.mass``, ``pert.period`` and ``b.period`` with the truth.

Two truths, because the fit and the simulation define the osculating elements at different times:
* ``nom``: the simulation's elements (``system.truth``: c.mass, c.period, b.period), osculating at
  the *simulation's* integration start, 5 + 10.95 e0 - P_b/2 (e0 = first kept epoch);
* ``eff``: the elements *in the fit's own parameterisation* (osculating at the fit's start,
  t_obs.min() - P_b,min/2 with P_b,min the lower edge of b's period prior, so it moves with
  ``known_period_width``; and at the fit's automatic dt) that reproduce the noiseless simulated
  times: a least-squares fit to ``system.model_times`` started at the nominal truth.  Its chi^2
  (the summary prints the largest) is ~0.01: the model reproduces the truth exactly once its
  start time is accounted for.
  With ``--match-epoch`` the fit takes ``reference_time`` = the simulation's start
  (``system.t_start``), and the two truths coincide up to the integration step.
  This is the truth a calibrated posterior must cover.  A realisation whose effective truth lies
  outside the prior (checked by a prior-transform round trip) is flagged ``TRUTH OUTSIDE PRIOR``:
  its coverage measures the prior, not the sampler.

Per realisation (one flushed line): wall time, likelihood calls, ``dlnL`` = best ln L the sampler
found minus ln L at the effective truth (a clean run finds ~ +2.5 +- 1.6, the chi^2_5/2 of fitting
5 parameters to noise; < -5 means the sampler missed the true likelihood peak: ``MISSED``), and
per parameter z = (posterior mean - truth) / posterior std against both truths, whether the
effective truth lies in the central 68% / 95% interval (``+`` / ``-``), and ``w`` = posterior std /
Fisher (Laplace) std at the effective truth (~1: dynesty's width is right; << 1: too narrow).

Summary: per parameter and truth, the fraction inside 68% / 95% (with the binomial +-1 sigma for K
realisations), mean and std of z (calibrated: mean 0 +- 1/sqrt(K), std 1 +- 1/sqrt(2K)), the mean
width ratio, then a one-line verdict on pert.mass and pert.period against the effective truth.
``--true-bin-only`` narrows ``perturber_period`` to the resonance bin holding 22.3 d
(app.ttv.bins.period_bins around b's fitted mean period 10.894 d: [21.79, 23.23] d, wide of 2:1;
b's mean period is 0.5% below its osculating 10.95 d, so the cut is not at 21.9 d) and runs model 1
only, ~4.5x cheaper than the full run (no-perturber model + both bins) and the same posterior when
the alias bin is rejected (it is, by ln Z > 10, in the test).
"""
from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np
import pandas as pd

# tests/test_ttv_inference.py's CONFIG (seed and ncores are set per realisation / by --ncores)
CHEAP_CONFIG = {"stellar_mass": 0.99, "perturber_period": [20.78, 23.23],
                "perturber_mass": [30.0, 1000.0], "known_mass": 8.7,
                "known_ecc_fixed": [0.05, 90.0], "perturber_ecc_fixed": [0.04, 250.0],
                "known_period_width": 0.005, "known_tconj_width": 0.03,
                "nlive": 40, "dlogz": 0.5, "dynesty_sample": "rwalk"}
TRUE_PERIOD = 22.3           # days: the perturber's period in kepler88_like
REPORTED = ("pert.mass", "pert.period", "b.period")
VERDICT_PARAMS = ("pert.mass", "pert.period")
SIM_NAME = {"pert": "c", "b": "b"}  # fit planet name -> kepler88_like planet name
MISSED_DLNL = -5.0
PRODUCTION_KEYS = ("nlive", "dlogz", "dynesty_sample", "walks", "runs_per_bin", "missed_peak_lnl",
                   "missed_peak_reruns", "chi2_flag", "known_period_width")


@dataclass(frozen=True)
class ParamCheck:
    mean: float
    std: float
    z_nom: float       # against the simulation's nominal elements
    z_eff: float       # against the effective truth in the fit's parameterisation
    in68: bool         # effective truth inside the central 68% interval
    in95: bool
    in68_nom: bool
    in95_nom: bool
    width_ratio: float  # posterior std / Fisher std


@dataclass(frozen=True)
class EffectiveTruth:
    values: dict[str, float]     # free parameter -> value in the fit's parameterisation
    fisher_sd: dict[str, float]  # Laplace std from the Jacobian there
    log_like: float              # ln L there on the noisy data
    asimov_chi2: float           # chi^2 to the noiseless times (~0)
    outside_prior: tuple[str, ...]  # free parameters whose truth the prior excludes


@dataclass(frozen=True)
class RealisationResult:
    index: int
    data_seed: list[int]
    sampler_seed: list[int]
    wall_s: float
    ncall: int
    dlnl: float
    truth: EffectiveTruth
    checks: dict[str, ParamCheck]


def _table(system) -> pd.DataFrame:
    return pd.DataFrame({"planet": "b", "epoch": system.epochs, "t_obs": system.times,
                         "sigma": system.sigma})


def true_bin(df: pd.DataFrame, cfg: dict) -> tuple[float, float]:
    """The resonance bin (as run_ttv_inference cuts it) that holds TRUE_PERIOD."""
    from app.ttv.bins import period_bins
    from server.timeseries.transit_times import fit_linear_ephemeris

    eph = fit_linear_ephemeris(df["epoch"], df["t_obs"], df["sigma"])
    lo, hi = cfg["perturber_period"]
    b = next(b for b in period_bins(eph.period, lo, hi) if b.period_min <= TRUE_PERIOD < b.period_max)
    return b.period_min, b.period_max


def make_config(args: argparse.Namespace, df: pd.DataFrame, sampler_seed: list[int]) -> dict:
    cfg = dict(CHEAP_CONFIG, nlive=args.nlive, dlogz=args.dlogz, dynesty_sample=args.sample,
               known_period_width=args.known_period_width, seed=sampler_seed, ncores=args.ncores)
    if args.walks is not None:
        cfg["walks"] = args.walks
    if args.production:
        # the sampler settings a campaign gets when its TOML says nothing (server.ttv.inference.CONFIG_DEFAULTS)
        from server.ttv.inference import CONFIG_DEFAULTS

        cfg.update({k: CONFIG_DEFAULTS[k] for k in PRODUCTION_KEYS})
    if args.true_bin_only:
        cfg["perturber_period"] = list(true_bin(df, cfg))
        cfg["models"] = [1]
    return cfg


def _nominal(name: str, truth: dict) -> float:
    """Nominal truth of a free parameter named as in the fit (``pert.mass`` -> c.mass)."""
    planet, key = name.split(".", 1)
    sim = SIM_NAME[planet]
    if key in ("secosw", "sesinw"):
        e, w = truth[f"{sim}.e"], math.radians(truth[f"{sim}.omega_deg"])
        return math.sqrt(e) * (math.cos(w) if key == "secosw" else math.sin(w))
    return float(truth[f"{sim}.{key}"])


def _gauss_newton(resid, n: int, max_iter: int = 30) -> tuple[np.ndarray, np.ndarray, float]:
    """Minimise |resid(z)|^2 from z = 0 (z in units of ~1e-6 of each parameter, where the model
    is smooth): Gauss-Newton with central-difference Jacobians and step halving.  Returns
    (z, Jacobian at z, chi^2).  (MINPACK's LM stopped at its start point on some realisations.)"""
    z = np.zeros(n)
    r = resid(z)
    cost = float(r @ r)

    def jacobian(z):
        cols = []
        for i in range(n):
            e = np.zeros(n)
            e[i] = 1.0
            cols.append(0.5 * (resid(z + e) - resid(z - e)))
        return np.column_stack(cols)

    for _ in range(max_iter):
        jac = jacobian(z)
        step = np.linalg.lstsq(jac, -r, rcond=None)[0]
        for t in 0.5 ** np.arange(12):
            r_new = resid(z + t * step)
            if float(r_new @ r_new) < cost:
                break
        else:
            break
        z, r, old, cost = z + t * step, r_new, cost, float(r_new @ r_new)
        if old - cost < 1e-6 * old + 1e-9:
            break
    return z, jacobian(z), cost


def effective_truth(like_spec: dict, system) -> EffectiveTruth:
    """The truth in the fit's parameterisation: least squares of the fit's own model (same start
    time, same dt) to the noiseless simulated times, started at the nominal truth."""
    from app.ttv.likelihood import TTVLikelihood

    like = TTVLikelihood(like_spec)
    names = like.prior.names
    x0 = np.array([_nominal(n, system.truth) for n in names])
    scale = 1e-6 * np.maximum(np.abs(x0), 1.0)

    def resid(z):
        m = like.model_times(x0 + z * scale)
        return np.full(len(system.sigma), 1e3) if m is None else (m - system.model_times) / system.sigma

    z, jac, chi2 = _gauss_newton(resid, len(x0))
    x = x0 + z * scale
    sd = np.sqrt(np.diag(np.linalg.inv(jac.T @ jac))) * scale
    # the prior transform round trip (inverse clips to the unit cube) moves x iff it is outside
    back = like.prior(like.prior.inverse(x))
    outside = tuple(n for n, a, b in zip(names, x, back) if abs(a - b) > 1e-9 * max(1.0, abs(a)))
    return EffectiveTruth(dict(zip(names, x)), dict(zip(names, sd)), float(like(x)), chi2, outside)


def _check(samples: pd.Series, interval: dict, nominal: float, effective: float,
           fisher_sd: float) -> ParamCheck:
    mean, std = float(samples.mean()), float(samples.std())

    def inside(level, t):
        lo, hi = interval[level]
        return bool(lo <= t <= hi)

    return ParamCheck(mean, std, (mean - nominal) / std, (mean - effective) / std,
                      inside("68", effective), inside("95", effective),
                      inside("68", nominal), inside("95", nominal), std / fisher_sd)


def _like_spec_of_true_bin(cfg: dict, df: pd.DataFrame) -> dict:
    from server.ttv.inference import plan_tasks

    _, tasks, _ = plan_tasks(df, cfg)
    task = next(t for t in tasks if t["model"] == 1
                and t["bin"].period_min <= TRUE_PERIOD < t["bin"].period_max)
    return task["spec"]["likelihood"]


def run_realisation(k: int, args: argparse.Namespace) -> RealisationResult:
    from app.ttv.synthetic import kepler88_like
    from server.ttv.inference import run_ttv_inference

    data_seed, sampler_seed = [args.seed, k], [args.seed, k, 1]
    system = kepler88_like(np.random.default_rng(np.random.SeedSequence(data_seed)),
                           n_transits=args.transits)
    df = _table(system)
    cfg = make_config(args, df, sampler_seed)
    if args.match_epoch:
        cfg["reference_time"] = system.t_start
    truth = effective_truth(_like_spec_of_true_bin(cfg, df), system)
    t0 = time.perf_counter()
    res = run_ttv_inference(df, cfg)
    wall = time.perf_counter() - t0
    m1 = res["models"][1]
    ncall = sum(int(r.meta.get("ncall_total", 0)) for _, r in res["task_results"])
    checks = {name: _check(res["posterior_samples"][name], res["credible_intervals"][name],
                           _nominal(name, system.truth), truth.values[name],
                           truth.fisher_sd[name])
              for name in REPORTED if name in truth.values}
    return RealisationResult(k, data_seed, sampler_seed, wall, ncall,
                             m1["best_log_likelihood"] - truth.log_like, truth, checks)


def _flag(ok: bool) -> str:
    return "+" if ok else "-"


def format_line(r: RealisationResult) -> str:
    missed = " MISSED" if r.dlnl < MISSED_DLNL else "       "
    parts = [(f"{r.index:3d} data {r.data_seed} {r.wall_s:6.1f} s {r.ncall / 1e3:6.1f}k calls "
              f"dlnL {r.dlnl:+7.1f}{missed}")]
    if r.truth.outside_prior:
        parts.append(f"TRUTH OUTSIDE PRIOR: {', '.join(r.truth.outside_prior)}")
    for name, c in r.checks.items():
        parts.append(f"{name} z {c.z_eff:+6.2f} (nom {c.z_nom:+6.2f}) "
                     f"{_flag(c.in68)}{_flag(c.in95)} w {c.width_ratio:4.2f}")
    return " | ".join(parts)


def _binomial_sd(p: float, k: int) -> float:
    return math.sqrt(p * (1.0 - p) / k)


def summarise(results: list[RealisationResult]) -> list[str]:
    k = len(results)
    lines = [(f"summary over {k} realisations (expected 68%: 0.68 +- {_binomial_sd(0.68, k):.2f}, "
              f"95%: 0.95 +- {_binomial_sd(0.95, k):.2f}; z mean 0 +- {1 / math.sqrt(k):.2f}, "
              f"std 1 +- {1 / math.sqrt(2 * k):.2f})"),
             (f"{'parameter':<12} {'truth':<5} {'in 68%':>7} {'in 95%':>7} {'mean z':>7} "
              f"{'std z':>6} {'std/Fisher':>10}")]
    for name in results[0].checks:
        cs = [r.checks[name] for r in results]
        w = float(np.mean([c.width_ratio for c in cs]))
        for label, z, i68, i95 in (("eff", [c.z_eff for c in cs], [c.in68 for c in cs],
                                    [c.in95 for c in cs]),
                                   ("nom", [c.z_nom for c in cs], [c.in68_nom for c in cs],
                                    [c.in95_nom for c in cs])):
            lines.append(f"{name:<12} {label:<5} {np.mean(i68):7.2f} {np.mean(i95):7.2f} "
                         f"{np.mean(z):+7.2f} {np.std(z, ddof=1) if k > 1 else float('nan'):6.2f} "
                         f"{w:10.2f}")
    lines.append(f"effective truth: largest chi^2 to the noiseless times "
                 f"{max(r.truth.asimov_chi2 for r in results):.3g} (~0: it reproduces the truth)")
    walls = [r.wall_s for r in results]
    lines.append(f"wall time per run: median {np.median(walls):.1f} s, range "
                 f"{min(walls):.1f}-{max(walls):.1f} s; total {sum(walls) / 60:.1f} min")
    lines.append("verdict: " + verdict(results))
    return lines


def verdict(results: list[RealisationResult]) -> str:
    """One line: calibrated, or how not (pert.mass and pert.period against the effective truth;
    fractions outside 2 binomial sigma of 68% / 95%, or any run that missed the peak)."""
    k = len(results)
    missed = sum(r.dlnl < MISSED_DLNL for r in results)
    excluded = sum(bool(r.truth.outside_prior) for r in results)
    problems = []
    if excluded:
        names = sorted({n for r in results for n in r.truth.outside_prior})
        problems.append(f"{excluded}/{k} realisations have the truth outside the prior "
                        f"({', '.join(names)}): widen it before judging the sampler")
    if missed:
        problems.append(f"{missed}/{k} runs missed the likelihood peak (dlnL < {MISSED_DLNL:g})")
    for name in VERDICT_PARAMS:
        cs = [r.checks[name] for r in results if name in r.checks]
        for level, p, got in (("68%", 0.68, np.mean([c.in68 for c in cs])),
                              ("95%", 0.95, np.mean([c.in95 for c in cs]))):
            if abs(got - p) > 2.0 * _binomial_sd(p, k):
                side = "too narrow" if got < p else "too wide"
                problems.append(f"{name} {level} coverage {got:.2f} ({side})")
    if not problems:
        return (f"calibrated within binomial noise for K={k} (pert.mass, pert.period vs the "
                f"effective truth)")
    return "NOT calibrated: " + "; ".join(problems)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ttv_coverage",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--realisations", type=int, default=12)
    ap.add_argument("--first", type=int, default=0,
                    help="index k of the first realisation (rerun one: --first 3 --realisations 1)")
    ap.add_argument("--nlive", type=int, default=40)
    ap.add_argument("--sample", choices=("rwalk", "rslice"), default="rwalk")
    ap.add_argument("--walks", type=int, default=None, help="dynesty walks (default: dynesty's)")
    ap.add_argument("--dlogz", type=float, default=0.5)
    ap.add_argument("--transits", type=int, default=100)
    ap.add_argument("--true-bin-only", action="store_true",
                    help="only model 1 in the period bin holding 22.3 d")
    ap.add_argument("--known-period-width", type=float,
                    default=CHEAP_CONFIG["known_period_width"],
                    help="half-width of b's period prior, fraction of P (test: 0.005, default of "
                         "run_ttv_inference: 0.01)")
    ap.add_argument("--seed", type=int, default=20261125, help="root of every SeedSequence")
    ap.add_argument("--ncores", type=int, default=1)
    ap.add_argument("--production", action="store_true",
                    help="sampler, reruns and missed-peak settings from server.ttv.inference.CONFIG_DEFAULTS "
                         "(what a campaign gets by default) instead of the cheap test settings")
    ap.add_argument("--match-epoch", action="store_true",
                    help="fit with reference_time = the simulation's start, so nominal = effective truth")
    args = ap.parse_args(argv)
    if args.production:
        from server.ttv.inference import CONFIG_DEFAULTS as d

        args.nlive, args.dlogz, args.sample, args.walks = d["nlive"], d["dlogz"], d["dynesty_sample"], d["walks"]
        args.known_period_width = d["known_period_width"]
        print(f"production defaults: runs_per_bin {d['runs_per_bin']}, missed_peak_reruns "
              f"{d['missed_peak_reruns']}, chi2_flag {d['chi2_flag']}, missed_peak_lnl {d['missed_peak_lnl']}",
              flush=True)
    print(f"Kepler-88-like, {args.transits} transits, 5 free parameters; dynesty {args.sample} "
          f"nlive {args.nlive} walks {args.walks or 'default'} dlogz {args.dlogz}; "
          f"known_period_width {args.known_period_width}; "
          f"{'true bin only, model 1' if args.true_bin_only else 'models [0, 1], all bins'}; "
          f"data seeds SeedSequence([{args.seed}, k]), sampler seeds [{args.seed}, k, 1]", flush=True)
    print("  k data seed   wall   calls   dlnL          | per parameter: z vs effective truth "
          "(nom: vs nominal), effective truth in 68%/95% (+/-), w = std/Fisher std", flush=True)
    results = []
    for k in range(args.first, args.first + args.realisations):
        results.append(run_realisation(k, args))
        print(format_line(results[-1]), flush=True)
    print("\n".join(summarise(results)), flush=True)
    print(miss_rate_line(results, args.production), flush=True)


def miss_rate_line(results: list[RealisationResult], production: bool) -> str:
    """The miss rate after the reruns run_ttv_inference makes, with its one-sided 95% upper bound
    (Clopper-Pearson: with 0 misses in K it is 1 - 0.05^(1/K), 9.5% for K = 30)."""
    from scipy.stats import beta

    k, missed = len(results), sum(r.dlnl < MISSED_DLNL for r in results)
    upper = float(beta.ppf(0.95, missed + 1, k - missed)) if missed < k else 1.0
    where = "production defaults" if production else "these settings"
    return (f"miss rate at {where}: {missed}/{k} = {missed / max(k, 1):.1%} "
            f"(one-sided 95% upper bound {upper:.1%}; target < 2%)")


if __name__ == "__main__":
    main()
