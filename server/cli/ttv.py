"""``openastro ttv``: transit times from a light curve, and TTV inference from transit times."""
from __future__ import annotations

import datetime as dt
import os
import time

import click

from app.atomic import atomic_path

from server.core.configfile import read_config_file
from server.core.context import OpenAstro


@click.group()
def ttv() -> None:
    """Transit timing: mid-times from light curves, perturber posteriors from times."""


@ttv.command("times")
@click.argument("lightcurve", type=click.Path(exists=True, dir_okay=False))
@click.option("--params", "params_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Transit parameters (JSON or TOML): period, t0, rp_rs, a_rs, inc or b, u.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Output CSV (default: <var_dir>/results/<lightcurve>_times.csv).")
@click.option("--target", default=None, help="Store the times in the database under this target.")
@click.option("--planet", default="b", show_default=True)
@click.option("--fit-shape/--given-shape", default=True, show_default=True,
              help="Fit rp/rs, a/rs, b and limb darkening to all windows before timing, or time "
                   "with the shape in --params as given.")
@click.option("--keep-partial", is_flag=True, help="Keep the mid-times of partially covered "
              "transits (flag 'partial'; not stored in the database).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write the O-C diagram with error bars to this PNG.")
@click.pass_obj
def times(app: OpenAstro, lightcurve: str, params_path: str, out, target, planet: str,
          fit_shape: bool, keep_partial: bool, plot_path) -> None:
    """Fit mid-transit times in LIGHTCURVE (CSV with time [BJD_TDB d], flux, flux_err and
    optionally instrument; per-instrument exposures go under `instruments` in --params)."""
    import pandas as pd

    from server.timeseries.transit_times import extract_transit_times, write_oc_png

    try:
        params = read_config_file(params_path)
        lc = pd.read_csv(lightcurve)
        table = extract_transit_times(lc, params, fit_shape=fit_shape, keep_partial=keep_partial)
        if plot_path:
            write_oc_png(table, plot_path, title=os.path.basename(lightcurve))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if out is None:
        directory = app.var_dir / "results"
        directory.mkdir(parents=True, exist_ok=True)
        out = directory / (os.path.splitext(os.path.basename(lightcurve))[0] + "_times.csv")
    with atomic_path(out) as tmp:
        table.assign(planet=planet).to_csv(tmp, index=False)
    ok = table["flag"] == "ok"
    click.echo(f"{int(ok.sum())} transit times, {int((~ok).sum())} flagged windows -> {out}")
    for flag, n in table.loc[~ok, "flag"].value_counts().items():
        click.echo(f"  flagged {flag}: {n}")
    shape = table.attrs.get("shape")
    if shape:
        err = shape["errors"]
        click.echo(f"fitted shape: rp/rs = {shape['rp_rs']:.4f} +- {err['rp_rs']:.4f}, "
                   f"a/rs = {shape['a_rs']:.3f} +- {err['a_rs']:.3f}, b = {shape['b']:.3f} +- "
                   f"{err['b']:.3f}, u = [{shape['u'][0]:.3f}, {shape['u'][1]:.3f}]")
    for name, noise in table.attrs.get("noise", {}).items():
        click.echo(f"  {name}: reduced chi2 {noise['chi2_red']:.2f}, red-noise beta {noise['beta']:.2f}")
    if plot_path:
        click.echo(f"O-C diagram -> {plot_path}")
    eph = table.attrs.get("ephemeris")
    if eph:
        click.echo(f"linear ephemeris: t0 = {eph['t0']:.6f} +- {eph['cov'][0][0] ** 0.5:.6f} d, "
                   f"P = {eph['period']:.7f} +- {eph['cov'][1][1] ** 0.5:.7f} d "
                   f"(chi2 = {eph['chi2']:.1f}, n = {eph['n']})")
    if target:
        from server.ttv.store import store_transit_times

        with app.db.session() as session:
            n = store_transit_times(session, target, planet, table)
        click.echo(f"stored {n} transit times for {target} {planet}")


@ttv.command("fit")
@click.argument("times_path", metavar="TIMES", type=click.Path(exists=True, dir_okay=False))
@click.option("--priors", "priors_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="prior_config (JSON or TOML); every key is in docs/ttv.md.")
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="Directory for summary.json, summary.csv, samples.csv, corner.png.")
@click.option("--time-offset", type=float, default=0.0, show_default=True,
              help="Added to the table's times (e.g. 2454833 for BKJD tables).")
@click.option("--sigma-unit", type=click.Choice(["d", "min", "s"]), default="d", show_default=True)
@click.option("--target", default=None, help="Target name for the database records.")
@click.option("--store/--no-store", default=True, show_default=True,
              help="Store the campaign and posteriors in the database.")
@click.pass_obj
def fit(app: OpenAstro, times_path: str, priors_path: str, out_dir, time_offset: float,
        sigma_unit: str, target, store: bool) -> None:
    """Posterior on a hidden perturber from the transit times in TIMES (CSV: [planet,] epoch,
    time, sigma), running every period bin locally."""
    from app.ttv.summary import format_interval
    from server.timeseries.transit_times import load_transit_time_table
    from server.ttv.inference import (is_perturber_param, plan_tasks, run_ttv_inference,
                                      summary_dict, write_corner_png, write_summary_csv,
                                      write_summary_json)

    try:
        cfg = read_config_file(priors_path)
        cfg.setdefault("ncores", app.settings.ncores)
        data = load_transit_time_table(times_path, time_offset=time_offset, sigma_unit=sigma_unit)
        _, tasks, bins = plan_tasks(data, cfg)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{len(data)} transit times, {len(bins)} period bins, {len(tasks)} sampling runs")
    for b in bins:
        click.echo(f"  bin {b.index}: [{b.period_min:.3f}, {b.period_max:.3f}] d "
                   f"({b.side} of {b.resonance})")
    name = f"ttv-{os.path.splitext(os.path.basename(times_path))[0]}-" \
           f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}"
    out_dir = out_dir or str(app.var_dir / "results" / name)
    os.makedirs(out_dir, exist_ok=True)
    reporter = SamplingReporter(len(tasks))
    try:
        result = run_ttv_inference(data, cfg, progress=reporter.task_done, status=reporter.beat,
                                   checkpoint_dir=os.path.join(out_dir, "checkpoints"))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    write_summary_json(result, os.path.join(out_dir, "summary.json"))
    write_summary_csv(result, os.path.join(out_dir, "summary.csv"))
    with atomic_path(os.path.join(out_dir, "samples.csv")) as tmp:
        result["posterior_samples"].to_csv(tmp, index=False)
    write_corner_png(result, os.path.join(out_dir, "corner.png"))
    for row in result["bin_evidences"]:
        click.echo(f"bin {row['index']} [{row['period_min']:.3f}, {row['period_max']:.3f}] d: "
                   f"ln Z = {row['log_z']:.2f} +- {row['log_z_err']:.2f}, "
                   f"P(bin) = {row['probability']:.3g}")
    mc = result.get("model_comparison")
    if mc:
        for key, lnb in mc.items():
            if key.startswith("ln_bayes_factor_"):
                a, b = key[len("ln_bayes_factor_"):].split("_vs_")
                click.echo(f"ln B({a} vs {b} perturbers) = {lnb:.2f}")
        click.echo(f"preferred: {mc['preferred_n_perturbers']} perturber(s)")
    for k, ci in result["credible_intervals"].items():
        if is_perturber_param(k) or k.endswith((".mass_earth", ".mass_ttvnest")):
            click.echo(f"{k}: {format_interval(k, ci['median'], *ci['68'])}")
    for flag in result["flags"]:
        click.echo(f"warning: {flag}")
    click.echo(f"results in {out_dir}")
    if store:
        from server.ttv.store import store_ttv_result

        with app.db.session() as session:
            cid = store_ttv_result(session, app.store, target, name, result,
                                   summary_dict(result))
        click.echo(f"stored campaign {name} (id {cid})")


class SamplingReporter:
    """Progress of ``ttv fit`` on stderr: a line when a sampling run finishes, and at most one line every
    ``every_s`` seconds while runs sample (run label, fraction done, iteration and ln Z for nested sampling)."""

    def __init__(self, total: int, every_s: float = 2.0) -> None:
        self.total, self.done, self.every_s = total, 0, every_s
        self.last = -float("inf")
        self.started = time.monotonic()

    @staticmethod
    def _label(label) -> str:
        if isinstance(label, dict):
            return ", ".join(f"{k} {v}" for k, v in label.items() if v is not None)
        return str(label)

    def task_done(self, done: int, total: int, label) -> None:
        self.done = done
        click.echo(f"sampling: {done}/{total} runs done ({self._label(label)} finished, "
                   f"{time.monotonic() - self.started:.0f} s)", err=True)

    def beat(self, label, info: dict) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        parts = [f"{100.0 * info['fraction']:.0f}%"] if "fraction" in info else []
        if "iteration" in info:
            parts.append(f"iteration {info['iteration']}")
        if "log_z" in info and info["log_z"] > -1e299:
            parts.append(f"ln Z = {info['log_z']:.2f}")
        if "step" in info:
            parts.append(f"step {info['step']}/{info['nsteps']}")
        click.echo(f"sampling: {self.done}/{self.total} runs done; {self._label(label)}: {', '.join(parts)} "
                   f"({now - self.started:.0f} s)", err=True)


@ttv.command("ephemeris")
@click.argument("table", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", type=click.Choice(["linear", "decay", "precession", "all"]), default="all",
              show_default=True, help="Ephemeris model to fit; 'all' fits the three and compares them.")
@click.option("--nlive", type=click.IntRange(min=10), default=400, show_default=True,
              help="dynesty live points per model.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed of the sampler's random generator (default: fresh entropy, printed).")
@click.option("--time-offset", type=float, default=0.0, show_default=True,
              help="Added to the table's times (e.g. 2454833 for BKJD tables).")
@click.option("--sigma-unit", type=click.Choice(["d", "min", "s"]), default="d", show_default=True)
@click.option("--max-dpdt", type=float, default=1000.0, show_default=True,
              help="Half-width of the uniform prior on dP/dt (ms/yr) of the decay model.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Summary JSON (default: <var_dir>/results/<table>_ephemeris.json).")
@click.pass_obj
def ephemeris(app: OpenAstro, table: str, model: str, nlive: int, seed, time_offset: float,
              sigma_unit: str, max_dpdt: float, out) -> None:
    """Fit linear, orbital-decay and apsidal-precession ephemerides to the transit and occultation times in
    TABLE (CSV: epoch, time, sigma[, type]; half-integer epochs are occultations) and compare them by ln Z
    and BIC."""
    import json

    import numpy as np

    from server.ttv.ephemeris import MODELS, compare_ephemerides, default_priors, load_timing_table

    models = MODELS if model == "all" else (model,)
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    try:
        data = load_timing_table(table, time_offset=time_offset, sigma_unit=sigma_unit)
        priors = {"dpdn": default_priors(data, max_abs_dpdt_ms_yr=max_dpdt)["dpdn"]}
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{data.n} times ({int((~data.occultation).sum())} transits, {int(data.occultation.sum())} "
               f"occultations), models {', '.join(models)}, nlive {nlive}, seed {seed}")
    reporter = SamplingReporter(len(models))
    fitted = []

    def done(fit):
        fitted.append(fit)
        reporter.task_done(len(fitted), len(models), fit.model)

    try:
        result = compare_ephemerides(data, models, rng=np.random.default_rng(seed), nlive=nlive, priors=priors,
                                     status=reporter.beat, done=done)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for fit in result.fits:
        click.echo(f"{fit.model}: ln Z = {fit.log_z:.2f} +- {fit.log_z_err:.2f}, BIC = {fit.bic:.2f}, "
                   f"chi2 = {fit.chi2_min:.1f} (n = {fit.n}, k = {fit.k})")
        for name in fit.sample_names:
            click.echo(f"  {name} = {fit.median[name]:.10g} +- {fit.std[name]:.3g}")
    best = result.preferred_by_evidence
    for fit in result.fits:
        if fit.model != best:
            click.echo(f"ln B({best} vs {fit.model}) = {result.ln_bayes_factor(best, fit.model):.2f}, "
                       f"delta BIC = {fit.bic - result.fit(best).bic:.2f}")
    click.echo(f"preferred by evidence: {best}; by BIC: {result.preferred_by_bic}")
    if out is None:
        directory = app.var_dir / "results"
        directory.mkdir(parents=True, exist_ok=True)
        out = directory / (os.path.splitext(os.path.basename(table))[0] + "_ephemeris.json")
    summary = dict(result.summary(), table=os.path.abspath(table), seed=seed, nlive=nlive,
                   time_offset=time_offset, max_dpdt_ms_yr=max_dpdt)
    with atomic_path(out) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2)
    click.echo(f"summary -> {out}")


@ttv.command("times-from-db")
@click.argument("target")
@click.option("--band", required=True, help="Band of the target's photometry, e.g. V.")
@click.option("--params", "params_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Transit parameters (JSON or TOML): period, t0 (BJD_TDB), rp_rs, a_rs, inc or b, u.")
@click.option("--planet", default="b", show_default=True)
@click.option("--fit-shape/--given-shape", default=True, show_default=True,
              help="Fit the transit shape to all windows before timing, or use --params' shape.")
@click.pass_obj
def times_from_db(app: OpenAstro, target: str, band: str, params_path: str, planet: str,
                  fit_shape: bool) -> None:
    """Mid-transit times of TARGET from its photometry in the database, stored for TTV campaigns.

    The light curve (BJD_TDB, relative flux) is assembled from the calibrated and archival photometry, normalised
    out of transit, and fitted per transit; re-running replaces the stored times."""
    from server.ttv.handoff import transit_times_from_db

    app.db.require_current_schema()
    try:
        result = transit_times_from_db(app, target, band, read_config_file(params_path), planet=planet,
                                       fit_shape=fit_shape)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    flagged = result.times[result.times["flag"] != "ok"]
    click.echo(f"{result.n_stored} transit times stored for {target} {planet}; {len(flagged)} windows flagged")
    for row in flagged.itertuples():
        click.echo(f"  epoch {row.epoch}: {row.flag}")
