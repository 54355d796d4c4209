"""``openastro store``: is the object store consistent with the database?"""

from __future__ import annotations

import click

from server.core.context import OpenAstro

SHOW = 20  # findings listed per kind; the counts are always complete


def _list(title: str, items) -> None:
    items = list(items)
    if not items:
        return
    click.echo(f"{title}: {len(items)}")
    for item in items[:SHOW]:
        click.echo(f"  {item}")
    if len(items) > SHOW:
        click.echo(f"  ... and {len(items) - SHOW} more")


@click.group()
def store() -> None:
    """Check and repair the object store."""


@store.command("check")
@click.option("--repair", is_flag=True,
              help="Fix what is found: rows in one transaction, then delete orphan and corrupt objects.")
@click.option("--no-verify", "no_verify", is_flag=True, help="Skip re-hashing every object (faster; finds no corruption).")
@click.pass_obj
def check(app: OpenAstro, repair: bool, no_verify: bool) -> None:
    """Find orphan objects (no row refers to them), missing objects (a row refers to a key the store lacks) and
    corrupt objects (bytes that no longer match their hash). Exits 1 when problems remain.

    Run --repair while nothing is ingesting (see docs/ingest.md, "Crash safety")."""
    from server.core.storecheck import check_store, repair_store

    app.db.require_current_schema()
    report = check_store(app.db, app.store, verify=not no_verify)
    click.echo(f"{report.n_objects} objects, {report.n_references} references"
               + ("" if report.verified else " (hashes not verified)"))
    _list("orphan objects (no row refers to them)", report.orphans)
    _list("missing objects (rows refer to keys the store lacks)", report.missing)
    _list("corrupt objects (bytes do not match the key)", report.corrupt)
    if report.marked_missing:
        click.echo(f"{len(report.marked_missing)} observations marked object_missing "
                   "(send the same file again to restore)")
    if report.clean:
        click.echo("store is consistent")
        return
    if not repair:
        raise click.ClickException("the store and the database disagree: run `openastro store check --repair`")
    outcome = repair_store(app.db, app.store, report)
    click.echo(f"repaired: {len(outcome.deleted)} objects deleted, {len(outcome.marked)} rows marked")
    if outcome.left:
        _list("left for a person (keys inside JSON columns)", outcome.left)
        raise click.ClickException(f"{len(outcome.left)} references could not be repaired automatically")
