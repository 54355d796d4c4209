"""``openastro site``: observing sites and their upload API keys."""

from __future__ import annotations

import click

from server.core.context import OpenAstro


@click.group(name="site")
def sites() -> None:
    """Add observing sites and issue or revoke their upload API keys."""


@sites.command("add")
@click.argument("name")
@click.option("--lat", "latitude", type=float, default=None, help="Latitude, degrees.")
@click.option("--lon", "longitude", type=float, default=None, help="Longitude, degrees east.")
@click.option("--height", type=float, default=None, help="Height above the ellipsoid, metres.")
@click.pass_obj
def add(app: OpenAstro, name: str, latitude: float | None, longitude: float | None, height: float | None) -> None:
    """Add a site called NAME."""
    from server.ingest.sites import create_site

    app.db.require_current_schema()
    try:
        site = create_site(app.db, name, latitude_deg=latitude, longitude_deg=longitude, height_m=height)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"site #{site.id} {site.name} added")


@sites.command("key")
@click.argument("name")
@click.pass_obj
def key(app: OpenAstro, name: str) -> None:
    """Issue a new upload API key for site NAME (printed once; only its hash is kept)."""
    from server.ingest.sites import issue_api_key

    app.db.require_current_schema()
    try:
        issued = issue_api_key(app.db, name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"API key for site {issued.site_name} (prefix {issued.prefix}). It is shown only now; store it:",
               err=True)
    click.echo(issued.token)


@sites.command("list")
@click.pass_obj
def list_(app: OpenAstro) -> None:
    """List the sites and how many active keys each has."""
    from server.ingest.sites import list_sites

    app.db.require_current_schema()
    for site in list_sites(app.db):
        where = "" if site.latitude_deg is None else f" lat {site.latitude_deg:.4f} lon {site.longitude_deg:.4f}"
        click.echo(f"#{site.id} {site.name}{where} ({site.n_active_keys} active keys)")


@sites.command("revoke")
@click.argument("prefix")
@click.pass_obj
def revoke(app: OpenAstro, prefix: str) -> None:
    """Revoke the API key with PREFIX (the 8 hex characters after 'oa_')."""
    from server.ingest.sites import revoke_api_key

    app.db.require_current_schema()
    try:
        n = revoke_api_key(app.db, prefix)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"revoked {n} key(s) with prefix {prefix}")
