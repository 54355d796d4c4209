"""``openastro store``: the object store (migration to S3)."""

from __future__ import annotations

import click

from server.core.context import OpenAstro


@click.group()
def store() -> None:
    """The content-addressed object store (local directory or S3)."""


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
