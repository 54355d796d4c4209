"""``openastro users``: portal accounts (roles admin and scientist)."""

from __future__ import annotations

import sys

import click

from server.core.context import OpenAstro


@click.group()
def users() -> None:
    """Portal users: add, list, disable."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "scientist"]), required=True, help="admin or scientist.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.pass_obj
def add(app: OpenAstro, name: str, role: str, password_stdin: bool) -> None:
    """Add user NAME (the password is prompted for, or read with --password-stdin; only a scrypt hash is kept)."""
    from server.web.auth import AuthError, create_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    app.db.require_current_schema()
    try:
        uid = create_user(app.db, name, role, password)
    except AuthError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"user #{uid} {name} ({role}) added")


@users.command("list")
@click.pass_obj
def list_(app: OpenAstro) -> None:
    """List the users and their roles."""
    from server.web.auth import list_users

    app.db.require_current_schema()
    for u in list_users(app.db):
        click.echo(f"#{u['id']} {u['name']} ({u['role']}){' disabled' if u['disabled'] else ''}")


@users.command("disable")
@click.argument("name")
@click.pass_obj
def disable(app: OpenAstro, name: str) -> None:
    """Disable user NAME and end their sessions."""
    from server.web.auth import AuthError, disable_user

    app.db.require_current_schema()
    try:
        disable_user(app.db, name)
    except AuthError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"user {name} disabled")
