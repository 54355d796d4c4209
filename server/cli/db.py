"""``openastro db``: create and migrate the schema."""

from __future__ import annotations

import click

from server.core.context import OpenAstro


@click.group()
def db() -> None:
    """Create, migrate and inspect the database schema."""


@db.command("upgrade")
@click.argument("revision", default="head")
@click.pass_obj
def upgrade(app: OpenAstro, revision: str) -> None:
    """Create the schema or migrate it to REVISION (default: the newest)."""
    app.db.upgrade(revision)
    click.echo(f"database at revision {app.db.current_revision()} ({app.db})")


@db.command("downgrade")
@click.argument("revision")
@click.pass_obj
def downgrade(app: OpenAstro, revision: str) -> None:
    """Migrate the schema down to REVISION ('base' drops everything)."""
    app.db.downgrade(revision)
    click.echo(f"database at revision {app.db.current_revision()} ({app.db})")


@db.command("status")
@click.pass_obj
def status(app: OpenAstro) -> None:
    """Show the schema revision and whether it matches the code."""
    app.db.check_connection()
    current, head = app.db.current_revision(), app.db.head_revision()
    click.echo(f"database: {app.db}")
    click.echo(f"revision: {current or '(none)'}; code needs: {head}")
    if current != head:
        raise click.ClickException("schema is not current: run `openastro db upgrade`")
