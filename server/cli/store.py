"""``openastro store``: the content-addressed object store (local directory or S3): check, repair, migrate."""

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
    """The content-addressed object store (local directory or S3): check, repair, migrate."""


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
    abort = getattr(app.store, "abort_incomplete_uploads", None)  # S3: multipart uploads left by killed writers
    if repair and abort is not None:
        click.echo(f"aborted {abort()} incomplete multipart uploads")
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


@store.command("migrate")
@click.option("--to", "to_url", required=True, metavar="s3://BUCKET/PREFIX",
              help="Destination store on the S3 API (endpoint and credentials as for OPENASTRO_STORAGE_URL).")
@click.option("--endpoint-url", default=None, help="S3-compatible endpoint (default: OPENASTRO_S3_ENDPOINT_URL).")
@click.option("--verify-existing", is_flag=True,
              help="Re-hash objects already at the destination (reads them all) instead of trusting name + size.")
@click.pass_obj
def migrate(app: OpenAstro, to_url: str, endpoint_url: str | None, verify_existing: bool) -> None:
    """Copy every object of the configured store to TO (resumable, verified, idempotent: run it again after an
    interruption). Then set OPENASTRO_STORAGE_URL=TO: keys are content hashes, the database needs no change."""
    from server.core.settings import SettingsError
    from server.core.storage_migrate import migrate_store
    from server.core.storage_s3 import open_s3_store

    overrides = {"storage_url": to_url}
    if endpoint_url:
        overrides["s3_endpoint_url"] = endpoint_url
    try:
        dest = open_s3_store(app.settings.with_overrides(**overrides))
    except (SettingsError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--to") from None
    source = app.store
    total = sum(1 for _ in source.keys())
    click.echo(f"copying {total} objects from {source!r} to {dest.url}")
    if app.settings.progress:
        with click.progressbar(length=total, label="migrating", show_pos=True) as bar:
            report = migrate_store(source, dest, verify_existing=verify_existing,
                                   progress=lambda _key, _status: bar.update(1))
    else:
        report = migrate_store(source, dest, verify_existing=verify_existing)
    click.echo(report.summary(dest.url))
    if report.corrupt:
        raise click.ClickException(f"{len(report.corrupt)} corrupt objects were not copied: run "
                                   "'openastro store check' on the source")
