"""``openastro target``: what the files could not say about a target (its coordinates)."""

from __future__ import annotations

import click

from server.core.context import OpenAstro


@click.group()
def target() -> None:
    """Targets in the database."""


@target.command("set-coords")
@click.argument("name")
@click.argument("ra")
@click.argument("dec")
@click.option("--replace", is_flag=True, help="Overwrite coordinates the target already has.")
@click.pass_obj
def set_coords(app: OpenAstro, name: str, ra: str, dec: str, replace: bool) -> None:
    """Set target NAME's coordinates (ICRS; the target is created if new): RA in degrees or 'HH MM SS.s', Dec in degrees or '+DD MM SS'.

    Needed before an AAVSO- or MPC-only target gets a BJD_TDB light curve. Put a negative Dec after `--` or in
    quotes with its sign: `openastro target set-coords "X Cen" 210.5 -- -45.25`."""
    from server.ingest.targets import parse_dec, parse_ra, set_target_coordinates

    app.db.require_current_schema()
    try:
        change = set_target_coordinates(app.db, name, parse_ra(ra), parse_dec(dec), replace=replace)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    was = "" if change.previous is None else f" (was {change.previous[0]:.6f}, {change.previous[1]:+.6f})"
    click.echo(f"{change.target}: RA {change.ra_deg:.6f} deg, Dec {change.dec_deg:+.6f} deg{was}")


@target.command("set-transit")
@click.argument("name")
@click.argument("params_path", metavar="PARAMS", type=click.Path(exists=True, dir_okay=False))
@click.option("--band", required=True, help="Band whose photometry is timed, e.g. V.")
@click.option("--planet", default="b", show_default=True)
@click.option("--fit-shape/--given-shape", default=True, show_default=True,
              help="Fit the transit shape to all windows before timing, or use PARAMS' shape.")
@click.pass_obj
def set_transit(app: OpenAstro, name: str, params_path: str, band: str, planet: str, fit_shape: bool) -> None:
    """Give target NAME a transit ephemeris and shape (PARAMS, JSON or TOML: period, t0 in BJD_TDB, rp_rs, a_rs,
    inc or b, u). From then on the reactive pipeline times its transits whenever new photometry arrives
    (docs/queue.md)."""
    from server.core.configfile import read_config_file
    from server.pipeline.science import set_transit_params

    app.db.require_current_schema()
    try:
        entry = set_transit_params(app, name, read_config_file(params_path), band=band, planet=planet,
                                   fit_shape=fit_shape)
    except (ValueError, TypeError) as exc:
        raise click.ClickException(str(exc)) from None
    p = entry["params"]
    click.echo(f"{name} {entry['planet']}: period {p['period']} d, t0 {p['t0']} (BJD_TDB); transits timed in "
               f"{entry['band']} ({'fitted' if entry['fit_shape'] else 'given'} shape)")
