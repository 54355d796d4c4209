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
