"""Stage 8: TTV inference for one system, run locally (all bins, all models).

``run_ttv_inference(ttv_data, prior_config)`` builds one sampling task per
(model, period bin, run) with :mod:`app.ttv` (the same tasks the volunteer app runs),
executes them sequentially or in a process pool, merges runs of a bin, combines bins by
evidence x prior mass and compares the models with no, one and two perturbers (``pert`` and
``pert2``; the two-perturber model is binned over the first perturber's period exactly like
the one-perturber model, the second perturber's period range is one bin).
Every ``prior_config`` key is documented in docs/ttv.md (:data:`CONFIG_DEFAULTS`).
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import csv
import json
import math
import multiprocessing
import os

import numpy as np
import pandas as pd

from app.atomic import atomic_open, atomic_write_text
from app.ttv.bins import PeriodBin, period_bins
from app.ttv.combine import combine_bins, merge_bin_runs
from app.ttv.task import run_ttv_task
from server.timeseries.transit_times import fit_linear_ephemeris, validate_ttv_table

CONFIG_DEFAULTS = {
    "stellar_mass": None,            # M_sun (required)
    "perturber_period": None,        # [min, max] days (required)
    "perturber_mass": None,          # [min, max] Earth masses, log-uniform (required)
    "perturber_period_prior": "loguniform",   # or "uniform"
    "perturber_period_bins": None,   # explicit [[lo, hi], ...] days; default: resonance bins
    "resonance_max_order": 4,
    "resonance_max_j": 6,
    "perturber_ecc_max": 0.3,        # e ~ U(0, emax), omega ~ U(0, 360 deg)
    "perturber_ecc_fixed": None,     # [e, omega_deg]: fix instead of sampling
    "known_mass": 10.0,              # Earth masses: a number (fixed) or [min, max] (free); or {"b": ..., ...}
    "known_mass_prior": "loguniform",  # prior of the free known masses: "loguniform" or "uniform"
    "stellar_mass_err": 0.0,         # M_sun, 1-sigma (Gaussian): propagated into the reported Earth masses
    "known_ecc_max": 0.1,
    "known_ecc_fixed": None,         # [e, omega_deg] (or {"b": [e, w], ...})
    "known_period_width": 0.01,      # half-width of the osculating-period prior, fraction of P
    "known_tconj_width": 0.05,       # half-width of the tconj prior, fraction of P
    "jitter": None,                  # [min, max] days, log-uniform extra scatter
    "reference_time": None,          # epoch of the osculating elements (t_obs convention); None = default
    "sampler": "dynesty",            # or "emcee"
    "nlive": 100,
    "dynesty_sample": "rwalk",
    "walks": None,
    "dlogz": 0.1,
    "emcee_nwalkers": 32,
    "emcee_nsteps": 2000,
    "warm_start": None,              # {"param_names": [...], "samples": [[...]]} (emcee)
    "seed": 0,                       # int or list of ints (SeedSequence entropy)
    "runs_per_bin": 1,
    "missed_peak_lnl": 20.0,         # a run whose best ln L is this far below its bin's best run missed the peak
    "missed_peak_reruns": 1,         # reruns (new seeds) of a model's winning bin when its best fit is flagged
    "chi2_flag": 10.0,               # best-fit chi^2/N above this is flagged (and triggers the reruns)
    "models": [0, 1],                # numbers of perturbers to compare (subset of [0, 1, 2])
    "second_perturber_period": None,  # [min, max] days (required when 2 in models)
    "second_perturber_mass": None,   # [min, max] Earth masses, log-uniform; default perturber_mass
    "second_perturber_ecc_fixed": None,  # [e, omega_deg]; default: disk prior perturber_ecc_max
    "ncores": 1,
    "n_posterior_samples": 4000,
}
_REQUIRED = ("stellar_mass",)
_REQUIRED_WITH_PERTURBERS = ("perturber_period", "perturber_mass")  # when models include 1 or 2
M_JUP_IN_M_EARTH = 317.8284065946748
TTVNEST_MASS_UNIT = 3.0e-6  # ttvnest reports planet masses as M_p / M_star in units of 3e-6
PERTURBERS = ("pert", "pert2")  # planet names of the first and second perturber
MODEL_NAMES = {0: "no-perturber", 1: "one-perturber", 2: "two-perturber"}  # Posterior.model


def validate_prior_config(cfg: dict) -> dict:
    """Defaults filled in; ValueError for unknown keys, missing keys and empty ranges."""
    if not isinstance(cfg, dict):
        raise ValueError(f"prior_config must be a dict, got {type(cfg).__name__}")
    unknown = sorted(set(cfg) - set(CONFIG_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown prior_config key(s) {unknown}; see docs/ttv.md for the "
                         f"{len(CONFIG_DEFAULTS)} keys")
    out = dict(CONFIG_DEFAULTS, **cfg)
    missing = [k for k in _REQUIRED if out[k] is None]
    models_ = out["models"] if isinstance(out["models"], (list, tuple)) else ()
    if any(m != 0 for m in models_):
        missing += [k for k in _REQUIRED_WITH_PERTURBERS if out[k] is None]
    if missing:
        raise ValueError(f"prior_config needs {missing}")
    if out["known_mass_prior"] not in ("uniform", "loguniform"):
        raise ValueError(f"known_mass_prior must be uniform or loguniform, got {out['known_mass_prior']!r}")
    err = out["stellar_mass_err"]
    if isinstance(err, bool) or not isinstance(err, (int, float)) or not (0 <= err < float(out["stellar_mass"])):
        raise ValueError(f"stellar_mass_err must be a number in [0, stellar_mass) M_sun, got {err!r}")
    for key in ("perturber_period", "perturber_mass", "jitter", "second_perturber_period",
                "second_perturber_mass"):
        v = out[key]
        if v is None:
            continue
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise ValueError(f"prior_config[{key!r}] must be [min, max], got {v!r}")
        if not (0 < float(v[0]) < float(v[1])):
            raise ValueError(f"prior_config[{key!r}] = {list(v)} is an empty or non-positive range")
    ref = out["reference_time"]
    if ref is not None and (isinstance(ref, bool) or not isinstance(ref, (int, float))
                            or not math.isfinite(ref)):
        raise ValueError(f"prior_config['reference_time'] must be a finite time in days, got {ref!r}")
    if out["sampler"] not in ("dynesty", "emcee"):
        raise ValueError(f"prior_config['sampler'] must be 'dynesty' or 'emcee', got "
                         f"{out['sampler']!r}")
    if out["perturber_period_prior"] not in ("uniform", "loguniform"):
        raise ValueError(f"perturber_period_prior must be uniform or loguniform, got "
                         f"{out['perturber_period_prior']!r}")
    models = out["models"]
    if (not isinstance(models, (list, tuple)) or not models
            or not all(isinstance(m, int) and not isinstance(m, bool) for m in models)
            or not set(models) <= {0, 1, 2} or len(set(models)) != len(models)):
        raise ValueError(f"models must be a non-empty list of distinct numbers of perturbers "
                         f"from [0, 1, 2], got {models!r}")
    if 2 in models:
        if out["second_perturber_period"] is None:
            raise ValueError("models includes 2 (two perturbers): prior_config needs "
                             "second_perturber_period = [min, max] days, a range that does not "
                             "overlap perturber_period")
        a_lo, a_hi = (float(v) for v in out["perturber_period"])
        b_lo, b_hi = (float(v) for v in out["second_perturber_period"])
        if b_lo < a_hi and a_lo < b_hi:
            raise ValueError(f"second_perturber_period {[b_lo, b_hi]} overlaps perturber_period "
                             f"{[a_lo, a_hi]}; give disjoint ranges (the two perturbers are "
                             f"told apart by their period ranges)")
    if out["second_perturber_ecc_fixed"] is not None and (
            not isinstance(out["second_perturber_ecc_fixed"], (list, tuple))
            or len(out["second_perturber_ecc_fixed"]) != 2):
        raise ValueError(f"second_perturber_ecc_fixed must be [e, omega_deg], got "
                         f"{out['second_perturber_ecc_fixed']!r}")
    if not 0 < float(out["perturber_ecc_max"]) < 1:
        raise ValueError(f"perturber_ecc_max must be in (0, 1), got {out['perturber_ecc_max']}")
    if int(out["runs_per_bin"]) < 1 or int(out["ncores"]) < 1:
        raise ValueError("runs_per_bin and ncores must be >= 1")
    return out


def _per_planet(value, name):
    return value.get(name) if isinstance(value, dict) else value


def _known_mass_prior(cfg: dict, name: str) -> dict:
    """Planet ``name``'s mass prior from ``known_mass`` (a number: fixed; [min, max]: free, Earth masses)."""
    value = _per_planet(cfg["known_mass"], name)
    if value is None:
        raise ValueError(f"known_mass has no entry for transiting planet {name!r}: {cfg['known_mass']!r}")
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) \
                or not 0 < float(value[0]) < float(value[1]):
            raise ValueError(f"known_mass for planet {name!r} must be a number or [min, max] with "
                             f"0 < min < max (Earth masses), got {value!r}")
        return {"dist": cfg["known_mass_prior"], "min": float(value[0]), "max": float(value[1])}
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"known_mass for planet {name!r} must be > 0 Earth masses or [min, max], got {value!r}")
    return {"dist": "fixed", "value": float(value)}


def _ecc_prior(fixed, emax):
    if fixed is not None:
        return {"dist": "fixed", "e": float(fixed[0]), "omega_deg": float(fixed[1])}
    return {"dist": "disk", "emax": float(emax)}


def _check_table(ttv_data: pd.DataFrame) -> dict:
    """Validate the table; returns per-planet observed data and linear ephemerides."""
    if not isinstance(ttv_data, pd.DataFrame):
        raise ValueError(f"ttv_data must be a pandas DataFrame, got {type(ttv_data).__name__}")
    df = ttv_data.copy()
    if "planet" not in df.columns:
        raise ValueError(f"ttv_data needs columns planet, epoch, t_obs, sigma; has "
                         f"{list(df.columns)}")
    validate_ttv_table(df)
    planets = {}
    for name, g in df.groupby("planet", sort=False):
        ep = g["epoch"].to_numpy(float)
        if np.any(np.diff(ep) <= 0):
            raise ValueError(f"planet {name!r}: epochs are unsorted (rows must be in increasing "
                             f"epoch order); sort them or check the table")
        t = g["t_obs"].to_numpy(float)
        s = g["sigma"].to_numpy(float)
        if len(g) < 3:
            raise ValueError(f"planet {name!r} has {len(g)} transit times; need at least 3")
        eph = fit_linear_ephemeris(ep, t, s)
        resid = t - (eph.t0 + eph.period * ep)
        if np.max(np.abs(resid)) > 0.25 * eph.period:
            worst = int(np.argmax(np.abs(resid)))
            hint = ""
            if np.any(t > 2.4e6) and np.any(t < 2.4e6):
                hint = (" Some times look like full JD/BJD (> 2400000) and others like offsets "
                        "(e.g. BJD - 2454833): use one convention.")
            raise ValueError(f"planet {name!r}: epochs and times disagree (row with epoch "
                             f"{int(ep[worst])} is {resid[worst]:.3f} d from the linear "
                             f"ephemeris, period {eph.period:.5f} d).{hint}")
        planets[str(name)] = {"epoch": ep.astype(int).tolist(), "time": t.tolist(),
                              "sigma": s.tolist(), "ephemeris": eph}
    return planets


def build_prior_spec(cfg: dict, observed: dict, n_perturbers: int,
                     period_range: tuple[float, float] | None) -> dict:
    """app.ttv prior spec: known planets from their ephemerides, plus ``pert`` (period in
    ``period_range``) when ``n_perturbers`` >= 1 and ``pert2`` (period in
    ``second_perturber_period``) when it is 2."""
    planets = []
    single = n_perturbers == 0 and len(observed) == 1  # strictly periodic: e, omega irrelevant
    for name, obs in observed.items():
        eph = obs["ephemeris"]
        p, t0 = eph.period, eph.t0
        dp = max(cfg["known_period_width"] * p, 10 * math.sqrt(eph.cov[1][1]))
        dt = max(cfg["known_tconj_width"] * p, 10 * math.sqrt(eph.cov[0][0]))
        planets.append({
            "name": name,
            "mass": _known_mass_prior(cfg, name),
            "period": {"dist": "uniform", "min": p - dp, "max": p + dp},
            "ecc": (_ecc_prior((0.0, 90.0), None) if single else
                    _ecc_prior(_per_planet(cfg["known_ecc_fixed"], name), cfg["known_ecc_max"])),
            "tconj": {"dist": "uniform", "min": t0 - dt, "max": t0 + dt}})
    t_ref = min(o["ephemeris"].t0 for o in observed.values())
    if n_perturbers >= 1:
        lo, hi = period_range
        planets.append(_perturber("pert", cfg["perturber_mass"], cfg["perturber_period_prior"],
                                  (lo, hi), cfg["perturber_ecc_fixed"], cfg, t_ref))
    if n_perturbers >= 2:
        planets.append(_perturber("pert2", cfg["second_perturber_mass"] or cfg["perturber_mass"],
                                  cfg["perturber_period_prior"],
                                  tuple(map(float, cfg["second_perturber_period"])),
                                  cfg["second_perturber_ecc_fixed"], cfg, t_ref))
    planets.sort(key=lambda q: q["period"].get("min", q["period"].get("value")))
    spec = {"stellar_mass": float(cfg["stellar_mass"]), "planets": planets}
    if cfg["jitter"] is not None:
        spec["jitter"] = {"dist": "loguniform", "min": float(cfg["jitter"][0]),
                          "max": float(cfg["jitter"][1])}
    return spec


def _perturber(name, mass, period_prior, period_range, ecc_fixed, cfg, t_ref) -> dict:
    return {"name": name,
            "mass": {"dist": "loguniform", "min": float(mass[0]), "max": float(mass[1])},
            "period": {"dist": period_prior, "min": float(period_range[0]),
                       "max": float(period_range[1])},
            "ecc": _ecc_prior(ecc_fixed, cfg["perturber_ecc_max"]),
            "tconj": {"dist": "phase", "t_ref": t_ref}}


def _check_second_perturber(cfg: dict, observed: dict) -> None:
    lo, hi = (float(v) for v in cfg["second_perturber_period"])
    for name, o in observed.items():
        p = o["ephemeris"].period
        if lo <= p <= hi:
            raise ValueError(f"second_perturber_period {[lo, hi]} contains known planet "
                             f"{name!r}'s period {p:.4f} d; give a range on one side of it")


def make_bins(cfg: dict, observed: dict) -> list[PeriodBin]:
    lo, hi = (float(v) for v in cfg["perturber_period"])
    known = [o["ephemeris"].period for o in observed.values()]
    for p in known:
        if lo <= p <= hi:
            raise ValueError(f"perturber_period {[lo, hi]} contains a known planet's period "
                             f"{p:.4f} d; give a range on one side of it")
    if cfg["perturber_period_bins"] is not None:
        bins = []
        for i, (a, b) in enumerate(cfg["perturber_period_bins"]):
            if not (lo <= float(a) < float(b) <= hi):
                raise ValueError(f"perturber_period_bins[{i}] = {[a, b]} is empty or outside "
                                 f"perturber_period {[lo, hi]}")
            bins.append(PeriodBin(i, float(a), float(b), "user", "user"))
        return bins
    nearest = min(known, key=lambda p: min(abs(math.log(p / lo)), abs(math.log(p / hi))))
    return period_bins(nearest, lo, hi, max_order=int(cfg["resonance_max_order"]),
                       max_j=int(cfg["resonance_max_j"]))


def _sampler_options(cfg: dict, prior_names, warm) -> dict:
    if cfg["sampler"] == "dynesty":
        return {"name": "dynesty", "nlive": int(cfg["nlive"]), "sample": cfg["dynesty_sample"],
                "walks": cfg["walks"], "dlogz": float(cfg["dlogz"])}
    opts = {"name": "emcee", "nwalkers": int(cfg["emcee_nwalkers"]),
            "nsteps": int(cfg["emcee_nsteps"])}
    if warm is not None:
        opts["init_samples"] = warm
    return opts


def _warm_samples(cfg, names, period_range):
    ws = cfg["warm_start"]
    if ws is None:
        return None
    got = list(ws.get("param_names", []))
    if got != list(names):
        raise ValueError(f"warm_start parameters {got} do not match this model's {list(names)}")
    s = np.asarray(ws["samples"], float)
    if period_range is not None and "pert.period" in names:
        k = list(names).index("pert.period")
        s = s[(s[:, k] >= period_range[0]) & (s[:, k] <= period_range[1])]
    return s.tolist() if len(s) else None


def plan_tasks(ttv_data: pd.DataFrame, prior_config: dict) -> tuple[dict, list[dict], list]:
    """Validated config, task list [{model, bin, run, spec, seed}], and bins."""
    cfg = validate_prior_config(prior_config)
    observed = _check_table(ttv_data)
    bins = make_bins(cfg, observed) if max(cfg["models"]) >= 1 else []
    if 2 in cfg["models"]:
        _check_second_perturber(cfg, observed)
    obs_plain = {k: {"epoch": v["epoch"], "time": v["time"], "sigma": v["sigma"]}
                 for k, v in observed.items()}
    first = min(min(v["time"]) for v in observed.values())
    root = [int(x) for x in (cfg["seed"] if isinstance(cfg["seed"], list) else [cfg["seed"]])]
    tasks = []
    warm_model = max(cfg["models"])  # warm_start belongs to the largest model
    for model in sorted(cfg["models"]):
        for b in (bins if model >= 1 else [None]):
            rng_ = None if b is None else (b.period_min, b.period_max)
            prior = build_prior_spec(cfg, observed, model, rng_)
            from app.ttv.likelihood import start_time
            from app.ttv.priors import PriorTransform

            transform = PriorTransform(prior)
            names = transform.names
            if cfg["reference_time"] is not None:  # the work unit's own check, before any task runs
                bounds = dict(zip((p.name for p in transform.spec.planets), transform.period_bounds()))
                start_time(first, min(bounds[n][0] for n in observed), cfg["reference_time"],
                           name="reference_time")
            warm = (_warm_samples(cfg, names, rng_) if model >= 1 and model == warm_model
                    else None)
            for run in range(int(cfg["runs_per_bin"])):
                likelihood = {"prior": prior, "observed": obs_plain}
                if cfg["reference_time"] is not None:
                    likelihood["t_start"] = cfg["reference_time"]
                spec = {"likelihood": likelihood,
                        "sampler": _sampler_options(cfg, names, warm),
                        "label": {"model": model, "bin": None if b is None else b.index,
                                  "run": run}}
                seed = root + [model, -1 if b is None else b.index, run]
                tasks.append({"model": model, "bin": b, "run": run, "spec": spec,
                              "seed": [s % (2 ** 32) for s in seed]})
    return cfg, tasks, bins


def _run_one(task, checkpoint_dir, status=None):
    """One sampling task. ``status``: a callable or a queue (``put``) that gets ``(label, info)`` beats."""
    ckpt = None
    if checkpoint_dir is not None:
        b = "none" if task["bin"] is None else task["bin"].index
        attempt = task.get("attempt", 0)
        ckpt = os.path.join(checkpoint_dir, f"ttv-m{task['model']}-b{b}-r{task['run']}"
                                            + (f"-a{attempt}" if attempt else "") + ".ckpt")
    on_status = None
    if status is not None:
        label = task["spec"]["label"]
        send = status.put if hasattr(status, "put") else status

        def on_status(info):
            send((label, info))
    return run_ttv_task(task["spec"], task["seed"], ckpt, checkpoint_every_s=30.0, on_status=on_status)


def sum_diagnostics(results) -> dict:
    """Likelihood diagnostics of several task results added up: {"calls": n, "rejected": {reason: n}} (see
    app.ttv.likelihood; results written before the counters existed contribute nothing)."""
    total = {"calls": 0, "rejected": {}}
    for r in results:
        d = r.meta.get("likelihood_diagnostics") or {}
        total["calls"] += int(d.get("calls", 0))
        for k, v in (d.get("rejected") or {}).items():
            total["rejected"][k] = total["rejected"].get(k, 0) + int(v)
    return total


def _intervals(samples: np.ndarray, names) -> dict:
    """Median and 68/95% intervals per parameter; circular for angles (app.ttv.summary)."""
    from app.ttv.summary import intervals

    return intervals(samples, names)


def _derived(samples: np.ndarray, names, cfg: dict | None = None,
             rng: np.random.Generator | None = None) -> tuple[np.ndarray, list[str]]:
    """Sampled columns plus, per planet: ``e`` and ``omega_deg`` (from secosw, sesinw), and for a free mass
    ``mass_mjup`` (Jupiter masses at the nominal stellar mass), ``mass_ttvnest`` (M_p / M_star in units of
    3e-6, ttvnest's unit: what the TTVs measure, independent of M_star) and ``mass_earth`` (Earth masses with
    the stellar mass drawn from N(stellar_mass, stellar_mass_err) per sample, from ``rng``)."""
    names = list(names)
    cols = [samples]
    extra = []
    planets = list(dict.fromkeys(n.split(".", 1)[0] for n in names if "." in n))
    mstar_draw = None
    for p in planets:
        if f"{p}.secosw" in names:
            c, s = samples[:, names.index(f"{p}.secosw")], samples[:, names.index(f"{p}.sesinw")]
            cols += [(c * c + s * s)[:, None], (np.degrees(np.arctan2(s, c)) % 360.0)[:, None]]
            extra += [f"{p}.e", f"{p}.omega_deg"]
        if f"{p}.mass" in names:
            mass = samples[:, names.index(f"{p}.mass")]  # Earth masses at the nominal stellar mass
            cols.append((mass / M_JUP_IN_M_EARTH)[:, None])
            extra.append(f"{p}.mass_mjup")
            if cfg is not None:
                from app.ttv.priors import M_EARTH_IN_M_SUN

                mstar = float(cfg["stellar_mass"])
                if mstar_draw is None:
                    err = float(cfg.get("stellar_mass_err") or 0.0)
                    mstar_draw = np.full(len(samples), mstar)
                    if err > 0:
                        if rng is None:
                            raise ValueError("propagating stellar_mass_err needs an rng")
                        mstar_draw = mstar + err * rng.standard_normal(len(samples))
                        while np.any(bad := mstar_draw <= 0):  # truncate at 0 (redraw)
                            mstar_draw[bad] = mstar + err * rng.standard_normal(int(bad.sum()))
                cols.append((mass * M_EARTH_IN_M_SUN / mstar / TTVNEST_MASS_UNIT)[:, None])
                cols.append((mass * mstar_draw / mstar)[:, None])
                extra += [f"{p}.mass_ttvnest", f"{p}.mass_earth"]
    return np.hstack(cols), names + extra


def is_perturber_param(name: str) -> bool:
    """True for the perturbers' parameters (``pert.*``, ``pert2.*``), sampled or derived."""
    return name.split(".", 1)[0] in PERTURBERS and "." in name


def _execute(tasks: list[dict], cfg: dict, checkpoint_dir, progress, status) -> list:
    """Run sampling tasks (a process pool when ``ncores`` > 1); results in task order."""
    results = [None] * len(tasks)
    ncores = min(int(cfg["ncores"]), len(tasks))
    if ncores > 1:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Manager() if status else contextlib.nullcontext() as manager, \
                cf.ProcessPoolExecutor(max_workers=ncores, mp_context=ctx) as pool:
            queue = manager.Queue() if status else None
            futs = {pool.submit(_run_one, t, checkpoint_dir, queue): i for i, t in enumerate(tasks)}
            pending, n = set(futs), 0
            while pending:
                finished, pending = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                while queue is not None and not queue.empty():
                    status(*queue.get())
                for fut in finished:
                    n += 1
                    results[futs[fut]] = fut.result()
                    if progress:
                        progress(n, len(tasks), tasks[futs[fut]]["spec"]["label"])
    else:
        for i, t in enumerate(tasks):
            results[i] = _run_one(t, checkpoint_dir, (lambda beat: status(*beat)) if status else None)
            if progress:
                progress(i + 1, len(tasks), t["spec"]["label"])
    return results


def best_log_likelihood(result) -> float:
    """The highest ln L a sampling run reached (nested: its dead/live points; emcee: its chain)."""
    arr = result.arrays["logl" if result.kind == "ttv-nested" else "log_like"].ravel()
    return float(np.max(arr)) if arr.size else -np.inf


def _reruns(tasks, results, attempt: int, cfg: dict, norm: float, n_obs: int) -> list[dict]:
    """Tasks to run again: for each model whose best run has chi^2/N above ``chi2_flag`` (the sampler may have
    settled on a secondary mode), every first-attempt run of that run's bin, with a new seed. Each model is judged
    on its own: model comparison needs every model's peak, and a model that fits worse than a larger one may have
    missed its peak (it costs at most ``missed_peak_reruns`` runs of one bin when it is simply the wrong model)."""
    extra = []
    for model in sorted({t["model"] for t in tasks}):
        pairs = [(t, r) for t, r in zip(tasks, results) if t["model"] == model]
        best_t, best_r = max(pairs, key=lambda tr: best_log_likelihood(tr[1]))
        chi2 = -2.0 * best_log_likelihood(best_r) - norm
        if chi2 / max(n_obs, 1) <= float(cfg["chi2_flag"]):
            continue
        for t, _ in pairs:
            if t["bin"] is best_t["bin"] and t.get("attempt", 0) == 0:
                spec = dict(t["spec"], label=dict(t["spec"]["label"], attempt=attempt))
                extra.append(dict(t, spec=spec, attempt=attempt,
                                  seed=[s % (2 ** 32) for s in t["seed"] + [1000 + attempt]]))
    return extra


def _peak_finders(tasks, results, tolerance: float) -> tuple[set, list]:
    """Ids of the tasks whose runs are merged, and the tasks that missed the peak: a run whose best ln L is more
    than ``tolerance`` below the best run of the same model and bin sampled another (lower) mode, and merging it
    would put weight on that mode. With one run in a bin, nothing is dropped."""
    best: dict = {}
    for t, r in zip(tasks, results):
        key = (t["model"], None if t["bin"] is None else t["bin"].index)
        best[key] = max(best.get(key, -np.inf), best_log_likelihood(r))
    keep, missed = set(), []
    for t, r in zip(tasks, results):
        key = (t["model"], None if t["bin"] is None else t["bin"].index)
        if best_log_likelihood(r) >= best[key] - tolerance:
            keep.add(id(t))
        else:
            missed.append(t)
    return keep, missed


def run_ttv_inference(ttv_data: pd.DataFrame, prior_config: dict, *, progress=None,
                      checkpoint_dir: str | None = None, status=None) -> dict:
    """Posterior on a hidden perturber from transit times (see module docstring).

    ``ttv_data``: columns planet, epoch, t_obs (BJD_TDB days or a constant offset), sigma
    (days).  ``progress(done_tasks, total_tasks, label)`` is called as tasks finish;
    ``status(label, info)`` about twice a second per running task while it samples (info: fraction
    and the sampler's numbers, e.g. iteration and ln Z; see app.ttv.samplers._Progress).
    """
    cfg, tasks, bins = plan_tasks(ttv_data, prior_config)
    results = _execute(tasks, cfg, checkpoint_dir, progress, status)
    sig = np.concatenate([np.asarray(v, float) for v in
                          ttv_data.groupby("planet", sort=False)["sigma"].agg(list)])
    norm = float(np.sum(np.log(2 * np.pi * sig ** 2)))
    n_obs = len(ttv_data)
    reruns_done = []
    for attempt in range(1, int(cfg["missed_peak_reruns"]) + 1):
        extra = _reruns(tasks, results, attempt, cfg, norm, n_obs)
        if not extra:
            break
        reruns_done += [(t["model"], None if t["bin"] is None else t["bin"].index) for t in extra]
        results += _execute(extra, cfg, checkpoint_dir, progress, status)
        tasks += extra
    keep, missed = _peak_finders(tasks, results, float(cfg["missed_peak_lnl"]))
    rng = np.random.default_rng(np.random.SeedSequence(
        [int(x) for x in (cfg["seed"] if isinstance(cfg["seed"], list) else [cfg["seed"]])]
        + [99]))
    out = {"config": cfg, "models": {}, "flags": [], "task_results": list(zip(tasks, results)),
           "missed_peak_runs": [t["spec"]["label"] for t in missed]}
    for model, bin_index in sorted(set(reruns_done), key=str):
        out["flags"].append(f"model {model}: the best fit (bin {bin_index}) was flagged chi2/N > "
                            f"{cfg['chi2_flag']:g}; its bin was run again with new seeds")
    for t in missed:
        lab = t["spec"]["label"]
        out["flags"].append(f"model {lab['model']}: run {lab['run']} (attempt {lab.get('attempt', 0)}) of bin "
                            f"{lab['bin']} missed the peak (best ln L more than {cfg['missed_peak_lnl']:g} below "
                            f"its bin's best run) and is not merged")
    for model in sorted(cfg["models"]):
        mres = [(t, r) for t, r in zip(tasks, results) if t["model"] == model and id(t) in keep]
        if cfg["sampler"] == "emcee":
            samples = np.concatenate([r.posterior(rng) for _, r in mres])
            names = mres[0][1].param_names
            logz = (float("nan"), float("nan"))
            bin_rows = []
        elif model == 0:
            merged = merge_bin_runs([r for _, r in mres])
            samples = merged.posterior(rng, n=int(cfg["n_posterior_samples"]))
            names = merged.param_names
            logz = merged.log_evidence
            bin_rows = []
        else:
            blist = [{"index": b.index, "period_min": b.period_min, "period_max": b.period_max,
                      "prior_mass": b.prior_mass(cfg["perturber_period_prior"],
                                                 *map(float, cfg["perturber_period"]))}
                     for b in bins]
            by_bin = {}
            for t, r in mres:
                by_bin.setdefault(t["bin"].index, []).append(r)
            comb = combine_bins(blist, by_bin, rng, n_samples=int(cfg["n_posterior_samples"]))
            samples, names = comb.samples, list(comb.param_names)
            logz = (comb.log_z, comb.log_z_err)
            bin_rows = [dict(s.to_dict(), resonance=b.resonance, side=b.side)
                        for s, b in zip(comb.bins, bins)]
        best_logl, best = -np.inf, None
        for _, r in mres:
            key = "logl" if r.kind == "ttv-nested" else "log_like"
            arr = r.arrays[key].ravel()
            k = int(np.argmax(arr))
            if arr[k] > best_logl:
                best_logl = float(arr[k])
                best = (r.arrays["samples"][k] if r.kind == "ttv-nested"
                        else r.arrays["chain"].reshape(-1, len(r.param_names))[k])
        full, full_names = _derived(samples, names, cfg, rng)
        chi2_best = -2.0 * best_logl - norm
        if chi2_best / max(n_obs, 1) > float(cfg["chi2_flag"]):
            out["flags"].append(f"model {model}: best fit has chi2/N = {chi2_best / n_obs:.1f}; "
                                f"the prior may exclude the data or errors are underestimated")
        diag = sum_diagnostics(r for _, r in mres)
        if diag["rejected"].get("exception", 0):
            out["flags"].append(f"model {model}: {diag['rejected']['exception']} likelihood calls hit an unexpected "
                                f"arithmetic error (counted as ln L = -inf); please report it")
        out["models"][model] = {
            "likelihood_diagnostics": diag,
            "log_evidence": float(logz[0]), "log_evidence_err": float(logz[1]),
            "posterior_samples": pd.DataFrame(full, columns=full_names),
            "best_fit": dict(zip(names, map(float, best))), "best_log_likelihood": best_logl,
            "chi2_best": chi2_best, "credible_intervals": _intervals(full, full_names),
            "bins": bin_rows}
    main = out["models"][max(out["models"])]
    out.update({k: main[k] for k in ("log_evidence", "log_evidence_err", "posterior_samples",
                                     "best_fit", "credible_intervals")})
    out["bin_evidences"] = main["bins"]
    if len(out["models"]) >= 2 and cfg["sampler"] == "dynesty":
        out["model_comparison"] = compare_models(
            {m: out["models"][m]["log_evidence"] for m in out["models"]})
    return out


def compare_models(log_evidence: dict[int, float]) -> dict:
    """ln Bayes factors ``ln_bayes_factor_<a>_vs_<b>`` (a > b) for every pair of models and the
    number of perturbers with the largest evidence (equal prior odds)."""
    models = sorted(log_evidence)
    out = {"log_evidence": {str(m): float(log_evidence[m]) for m in models}}
    for i, b in enumerate(models):
        for a in models[i + 1:]:
            out[f"ln_bayes_factor_{a}_vs_{b}"] = float(log_evidence[a] - log_evidence[b])
    out["preferred_n_perturbers"] = int(max(models, key=lambda m: log_evidence[m]))
    return out


def summary_dict(result: dict) -> dict:
    """JSON-serialisable summary of a run_ttv_inference result."""
    models = {}
    for m, v in result["models"].items():
        models[str(m)] = {k: v[k] for k in ("log_evidence", "log_evidence_err", "best_fit",
                                             "best_log_likelihood", "chi2_best",
                                             "credible_intervals", "bins", "likelihood_diagnostics")}
        models[str(m)]["n_samples"] = len(v["posterior_samples"])
    cfg = {k: v for k, v in result["config"].items() if k != "warm_start"}
    return {"format": "openastro.ttv-summary", "version": 1, "config": cfg, "models": models,
            "model_comparison": result.get("model_comparison"), "flags": result["flags"]}


def _atomic_text(path, text):
    atomic_write_text(path, text)


def write_summary_json(result: dict, path) -> None:
    _atomic_text(path, json.dumps(summary_dict(result), indent=2, sort_keys=True, default=float))


def write_summary_csv(result: dict, path) -> None:
    """One row per (model, parameter): median and 68/95% intervals."""
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "parameter", "median", "lo68", "hi68", "lo95", "hi95", "best_fit"])
    for m, v in result["models"].items():
        for name, ci in v["credible_intervals"].items():
            w.writerow([m, name, ci["median"], *ci["68"], *ci["95"], v["best_fit"].get(name, "")])
    _atomic_text(path, buf.getvalue())


def write_corner_png(result: dict, path, params=None, model=None) -> None:
    """A corner plot (histograms + pairwise scatter) of the posterior samples, in the format of ``path``'s
    suffix (.png, .pdf, .svg, ...)."""
    from server.core.plotformat import plot_format

    fmt = plot_format(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = max(result["models"]) if model is None else model
    df = result["models"][m]["posterior_samples"]
    cols = params or [c for c in df.columns if is_perturber_param(c) and c.split(".", 1)[1] not in
                      ("secosw", "sesinw", "mass_mjup", "mass_ttvnest", "mass_earth")]
    cols = cols or [c for c in df.columns if c.endswith(".mass_earth")] or list(df.columns)
    n = len(cols)
    fig, axes = plt.subplots(n, n, figsize=(2.2 * n, 2.2 * n), squeeze=False)
    for i, yi in enumerate(cols):
        for j, xj in enumerate(cols):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            if i == j:
                ax.hist(df[xj], bins=40, histtype="step", color="k")
                ax.set_yticks([])
            else:
                ax.plot(df[xj], df[yi], ",", alpha=0.3, color="k")
            if i == n - 1:
                ax.set_xlabel(xj, fontsize=8)
            if j == 0 and i > 0:
                ax.set_ylabel(yi, fontsize=8)
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    try:
        with atomic_open(path) as fh:
            fig.savefig(fh, format=fmt, dpi=80)
    finally:
        plt.close(fig)
