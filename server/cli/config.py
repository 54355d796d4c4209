"""``openastro config``: inspect settings."""

from __future__ import annotations

import json

import click

from server.core.context import OpenAstro
from server.core.settings import describe


@click.group()
def config() -> None:
    """Inspect the effective settings."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def show(app: OpenAstro, as_json: bool) -> None:
    """Print every setting with its value and where it came from."""
    rows = describe(app.settings)
    if as_json:
        click.echo(json.dumps({name: value for name, value, _s, _h in rows}, indent=2, default=str))
        return
    width = max(len(r[0]) for r in rows)
    for name, value, source, _help in rows:
        click.echo(f"{name:<{width}}  {value!s:<40}  ({source})")
    click.echo(f"{'-> database':<{width}}  {app.settings.resolved_database_url}")
    storage = app.settings.storage_url or app.settings.resolved_storage_dir
    click.echo(f"{'-> storage':<{width}}  {storage}")
