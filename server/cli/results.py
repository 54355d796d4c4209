"""``openastro results``: light curves and periodograms from the database."""

from __future__ import annotations

import io
import json
import click
import numpy as np

from server.core.context import OpenAstro


@click.group()
def results() -> None:
    """Light curves (BJD_TDB) and Lomb-Scargle periodograms of targets in the database."""


def _assembly_options(func, multiple_bands: bool = False):
    if multiple_bands:
        func = click.option("--band", "bands", multiple=True,
                            help="Photometric band, e.g. V; repeat for several. Default: every band of the target. "
                                 "Two or more bands: one multi-band periodogram (shared period).")(func)
    else:
        func = click.option("--band", required=True, help="Photometric band, e.g. V.")(func)
    func = click.option("--quantity", type=click.Choice(["mag", "flux"]), default="mag", show_default=True,
                        help="Magnitudes, or relative flux converted from them.")(func)
    func = click.option("--bin-days", type=float, default=None, help="Bin width in days (default: no binning).")(func)
    func = click.option("--reject-sigma", type=float, default=5.0, show_default=True,
                        help="Outlier threshold in robust sigmas; 0 disables rejection.")(func)
    return func


def _load(app: OpenAstro, target: str, band: str, quantity: str, bin_days, reject_sigma):
    from server.timeseries.lightcurve import lightcurve_from_db

    with app.db.session() as session:
        return lightcurve_from_db(session, target, band, quantity=quantity, bin_days=bin_days,
                                  reject_sigma=reject_sigma if reject_sigma and reject_sigma > 0 else None)


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


@results.command("lightcurve")
@click.argument("target")
@_assembly_options
@click.option("--format", "fmt", type=click.Choice(["csv", "fits"]), default="csv", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Output file (default: <var_dir>/results/<target>_<band>.<format>).")
@click.pass_obj
def lightcurve(app: OpenAstro, target: str, band: str, quantity: str, bin_days, reject_sigma, fmt: str, out) -> None:
    """Assemble TARGET's light curve in one band and export it as CSV or FITS."""
    from server.timeseries.lightcurve import write_lightcurve

    try:
        lc = _load(app, target, band, quantity, bin_days, reject_sigma)
        if out is None:
            directory = app.var_dir / "results"
            directory.mkdir(parents=True, exist_ok=True)
            out = directory / f"{_safe_name(target)}_{_safe_name(band)}.{fmt}"
        path = write_lightcurve(lc, out, fmt)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{lc.target} {lc.band}: {len(lc)} points (BJD_TDB {lc.bjd_tdb.min():.5f} .. "
               f"{lc.bjd_tdb.max():.5f}), {lc.n_rejected} rejected, {lc.n_invalid} invalid, "
               f"{lc.n_upper_limits} upper limits")
    if lc.unaligned_sites:
        click.echo(f"warning: sites without overlap, left unshifted: {', '.join(lc.unaligned_sites)}")
    click.echo(f"wrote {path}")


def _periodogram_assembly_options(func):
    return _assembly_options(func, multiple_bands=True)


def _target_bands(app: OpenAstro, target: str) -> list[str]:
    from server.timeseries.lightcurve import photometry_frame_from_db

    with app.db.session() as session:
        _, frame = photometry_frame_from_db(session, target)
    bands = sorted({str(b) for b in frame["band"].dropna()})
    if not bands:
        raise ValueError(f"target {target!r} has no photometry in the database")
    return bands


@results.command("periodogram")
@click.argument("target")
@_periodogram_assembly_options
@click.option("--min-period", type=float, default=None, help="Shortest period searched, days.")
@click.option("--max-period", type=float, default=None, help="Longest period searched, days (default: baseline).")
@click.option("--oversampling", type=float, default=5.0, show_default=True, help="Grid points per peak width.")
@click.option("--nterms", type=int, default=1, show_default=True, help="Harmonics in the model.")
@click.option("--fap-method", type=click.Choice(["baluev", "bootstrap"]), default="baluev", show_default=True,
              help="baluev: analytic (for several bands the multi-band analytic FAP, docs/lightcurves.md).")
@click.option("--n-bootstrap", type=int, default=1000, show_default=True)
@click.option("--seed", type=int, default=None, help="Bootstrap seed (default: fresh entropy, printed).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write a phase-folded plot here (.png, .pdf, .svg, ...: the suffix picks the format).")
@click.option("--save", is_flag=True, help="Store the spectrum and record a Periodogram row.")
@click.pass_obj
def periodogram(app: OpenAstro, target: str, bands: tuple, quantity: str, bin_days, reject_sigma, min_period,
                max_period, oversampling, nterms, fap_method, n_bootstrap, seed, plot, save) -> None:
    """Lomb-Scargle period search on TARGET's light curve: one band, or all its bands at once."""
    from server.timeseries.periodogram import lomb_scargle_result, plot_phase_folded

    from server.core.plotformat import plot_format

    seed_seq = np.random.SeedSequence(seed)
    try:
        if plot:
            plot_format(plot)  # refuse an unknown suffix before the search
        bands = list(dict.fromkeys(bands)) or _target_bands(app, target)
        if len(bands) >= 2:
            if plot or save:
                raise ValueError("--plot and --save take one band's periodogram; give a single --band")
            _multiband(app, target, bands, quantity, bin_days, reject_sigma, min_period, max_period, oversampling,
                       nterms, fap_method, n_bootstrap, seed_seq)
            return
        band = bands[0]
        lc = _load(app, target, band, quantity, bin_days, reject_sigma)
        res = lomb_scargle_result(
            lc.bjd_tdb, lc.value, lc.error, min_period=min_period, max_period=max_period,
            oversampling=oversampling, nterms=nterms, fap_method=fap_method, n_bootstrap=n_bootstrap,
            rng=np.random.default_rng(seed_seq), threads=app.settings.lombscargle_threads,
        )
        if plot:
            plot_phase_folded(lc.bjd_tdb, lc.value, lc.error, res, plot, ylabel=f"{lc.band} [{lc.unit}]",
                              invert_y=lc.quantity == "mag", title=f"{lc.target} {lc.band}")
    except (ValueError, TypeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{lc.target} {lc.band}: {res.n_points} points over {res.baseline:.3f} d, "
               f"{res.frequency.size} frequencies")
    _echo_best_period(res, fap_method, seed_seq)
    if plot:
        click.echo(f"wrote {plot}")
    if save:
        _save(app, lc, res, seed_seq if fap_method == "bootstrap" else None)


def _echo_best_period(res, fap_method: str, seed_seq) -> None:
    """The lines every period search prints: best period, FAP, the bootstrap seed, warnings."""
    fap = "< 1e-300" if res.fap == 0.0 else f"{res.fap:.3g}"  # Baluev underflows for very strong peaks
    click.echo(f"best period {res.best_period:.8f} +- {res.best_period_err:.2g} d  power {res.best_power:.4f}  "
               f"FAP {fap} ({res.fap_method})")
    if fap_method == "bootstrap":
        click.echo(f"bootstrap seed entropy {seed_seq.entropy}")
    for w in res.warnings:
        click.echo(f"warning [{w.kind}]: {w.message}")


def _multiband(app, target, bands, quantity, bin_days, reject_sigma, min_period, max_period, oversampling, nterms,
               fap_method, n_bootstrap, seed_seq) -> None:
    """One periodogram over ``bands`` (each assembled like a single-band light curve); prints the result."""
    from server.timeseries.multiband import multiband_periodogram

    curves = [_load(app, target, b, quantity, bin_days, reject_sigma) for b in bands]
    res = multiband_periodogram(
        np.concatenate([lc.bjd_tdb for lc in curves]), np.concatenate([lc.value for lc in curves]),
        np.concatenate([lc.error for lc in curves]), np.concatenate([[lc.band] * len(lc) for lc in curves]),
        min_period=min_period, max_period=max_period, oversampling=oversampling, nterms=nterms,
        fap_method="analytic" if fap_method == "baluev" else "bootstrap", n_bootstrap=n_bootstrap,
        rng=np.random.default_rng(seed_seq), threads=app.settings.lombscargle_threads)
    counts = ", ".join(f"{b} {n}" for b, n in res.n_points.items())
    click.echo(f"{target} multi-band ({counts} points) over {res.baseline:.3f} d, {res.frequency.size} frequencies")
    _echo_best_period(res, fap_method, seed_seq)


def _save(app: OpenAstro, lc, res, seed_seq) -> None:
    from sqlalchemy import select

    from server.core.db.models import LightCurve, Periodogram, Target

    buf = io.BytesIO()
    np.savez(buf, frequency=res.frequency, power=res.power, window_power=res.window_power,
             meta=np.array(json.dumps({"format": "openastro.periodogram", "version": 1, "units": "cycles/day"})))
    stored = app.store.put_bytes(buf.getvalue())
    meta = {
        "best_frequency": res.best_frequency, "best_power": res.best_power, "nterms": res.nterms,
        "n_points": res.n_points, "baseline_d": res.baseline, "engine": res.engine,
        "n_bootstrap": res.n_bootstrap, "warnings": [{"kind": w.kind, "message": w.message} for w in res.warnings],
    }
    if seed_seq is not None:
        meta["seed_entropy"] = str(seed_seq.entropy)
    with app.db.session() as session:
        target = session.scalars(select(Target).where(Target.name == lc.target)).one()
        lc_row = LightCurve(target_id=target.id, band=lc.band, n_points=len(lc), n_rejected=lc.n_rejected,
                            meta=lc.summary())
        session.add(lc_row)
        session.flush()
        row = Periodogram(light_curve_id=lc_row.id, target_id=target.id, band=lc.band,
                          best_period=res.best_period, best_period_err=res.best_period_err, fap=res.fap,
                          fap_method=res.fap_method, storage_key=stored.key, meta=meta)
        session.add(row)
        session.flush()
        click.echo(f"saved periodogram {row.id} (spectrum {stored.key})")


# --- campaign posterior export (BOINC engineer; the command lives in server/cli/results_posterior.py) ---------
from server.cli.results_posterior import posterior as _posterior  # noqa: E402

results.add_command(_posterior)
