"""``openastro pipeline``: getting data in (``ingest``)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import click

from server.core.context import OpenAstro
from server.core.db import DatabaseError
from server.core.storage import StorageError

log = logging.getLogger("openastro.ingest")


def shown(text: str) -> str:
    """Text made printable: bytes of a file name that are not UTF-8 (surrogates) are shown as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def expand_paths(paths: tuple[str, ...]) -> list[Path]:
    """Files named on the command line; directories contribute their files recursively (hidden ones skipped)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*")
                              if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)))
        else:
            out.append(path)
    return out


@click.group()
def pipeline() -> None:
    """Ingest observations and run the per-observation stages."""


@pipeline.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--site", "site_name", default=None, help="Site the files come from (see `openastro site list`).")
@click.option("--target", default=None, help="Target name for files that do not name one (AAVSO CSV without Star Name).")
@click.option("--planet", default=None, help="Planet for ETD tables that do not name it, e.g. 'WASP-12 b'.")
@click.pass_obj
def ingest(app: OpenAstro, paths: tuple[str, ...], site_name: str | None, target: str | None,
           planet: str | None) -> None:
    """Ingest FITS images (also .fits.fz), AAVSO extended reports, AAVSO download CSVs, ETD transit tables and
    MPC 80-column records. The format is detected from the content. The same content twice gives the first
    record back. Exits non-zero when any file failed."""
    from server.ingest.service import IngestError, IngestOptions, ingest_path
    from server.ingest.sites import find_site

    app.db.require_current_schema()
    site_id = None
    if site_name is not None:
        try:
            site_id = find_site(app.db, site_name).id
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    options = IngestOptions(site_id=site_id, target=target, planet=planet,
                            max_data_bytes=int(app.settings.fits_max_image_bytes),
                            max_tile_bytes=int(app.settings.fits_max_tile_bytes))
    files = expand_paths(paths)
    new, duplicate, failed, partial = [], [], [], []
    with click.progressbar(files, label="ingesting", show_pos=True, hidden=not app.settings.progress,
                           item_show_func=lambda p: shown(p.name) if p is not None else None) as bar:
        for path in bar:
            try:
                result = ingest_path(app, path, dataclasses.replace(options, original_name=path.name))
            except IngestError as exc:
                failed.append((path, str(exc)))
                continue
            except (DatabaseError, StorageError):
                raise  # the database or store itself is unusable: every further file would fail the same way
            except Exception as exc:  # noqa: BLE001 - one file's unforeseen failure must not stop the batch
                log.exception("unexpected error ingesting %s", shown(str(path)))
                failed.append((path, f"internal error ({type(exc).__name__}: {exc}); please report it"))
                continue
            (new if result.created else duplicate).append((path, result))
            if result.created and result.row_errors:
                partial.append((path, result))
    for path, result in new:
        extra = f", {result.n_rows} rows" if result.kind != "image" else ""
        click.echo(shown(f"new        #{result.observation_id} {path} ({result.source_format}{extra})"))
    for path, result in duplicate:
        click.echo(shown(f"duplicate  #{result.observation_id} {path} (same content as the first record)"))
    for path, result in partial:
        first = result.row_errors[0]
        click.echo(shown(f"bad rows   {path}: {len(result.row_errors)} rows skipped, e.g. line {first.line}: "
                         f"{first.message}"))
    for path, reason in failed:
        click.echo(shown(f"FAILED     {path}: {'; '.join(reason.splitlines())}"), err=True)
    click.echo(f"{len(new)} new, {len(duplicate)} duplicate, {len(failed)} failed")
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(files)} files failed")


@pipeline.command("process")
@click.argument("observation_ids", nargs=-1, type=int)
@click.option("--stage", "stages", multiple=True, type=click.Choice(["solve", "calibrate"]),
              help="Run only these stages (default: solve then calibrate).")
@click.option("--force", is_flag=True, help="Re-run stages that already succeeded.")
@click.pass_obj
def process(app: OpenAstro, observation_ids: tuple[int, ...], stages: tuple[str, ...], force: bool) -> None:
    """Plate-solve and calibrate image observations (default: every image not yet calibrated).

    Each stage's outcome is recorded per observation; finished stages are skipped, so this is safe to re-run.
    Exits non-zero when any observation failed a stage (it stays in the database, flagged with the reason)."""
    from server.pipeline.runner import STAGES, pending_images, run_pipeline

    app.db.require_current_schema()
    ids = list(observation_ids) or pending_images(app)
    if not ids:
        click.echo("nothing to process")
        return
    failed = []
    with click.progressbar(ids, label="solve+calibrate", show_pos=True, hidden=not app.settings.progress) as bar:
        for oid in bar:
            for outcome in run_pipeline(app, [oid], stages or STAGES, force=force):
                if outcome.status == "failed":
                    failed.append(outcome)
    for outcome in failed:
        click.echo(f"FAILED     #{outcome.observation_id} {outcome.stage}: {outcome.message}", err=True)
    click.echo(f"{len(ids) - len(failed)} processed, {len(failed)} failed")
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(ids)} observations failed a stage")


@pipeline.command("stack")
@click.option("--target", required=True, help="Target name (see the observations' OBJECT).")
@click.option("--filter", "band", required=True, help="Band/filter of the frames to stack, e.g. V.")
@click.option("--executor", type=click.Choice(["local", "boinc"]), default=None,
              help="Who runs the reprojection tiles (default: the `executor` setting).")
@click.option("--tile", default=512, show_default=True, help="Output tile size in pixels (one work unit each).")
@click.option("--region", nargs=4, type=float, default=None, metavar="RA DEC WIDTH HEIGHT",
              help="Output region in degrees (default: the union of the frames' footprints).")
@click.option("--replicas", type=click.IntRange(1, 2), default=1, show_default=True,
              help="Results per tile compared by the validator (2 = quorum 2).")
@click.option("--name", default=None, help="Campaign name (default: generated).")
@click.pass_obj
def stack(app: OpenAstro, target: str, band: str, executor: str | None, tile: int, region, replicas: int,
          name: str | None) -> None:
    """Co-add the calibrated frames of TARGET in one band into a deep image with uncertainty and coverage maps.

    Frames without a WCS or calibration are refused with the reason. Reprojection runs as tile work units through
    the executor; with the local executor the stack is co-added before this command returns."""
    from server.boinc.campaigns import run_campaign
    from server.pipeline.stacks import export_stack, plan_stack

    app.db.require_current_schema()
    if app.settings.broker_url:  # a pipeline_slow worker plans, reprojects and co-adds (docs/queue.md)
        from server.queue.reactive import attach
        from server.queue.tasks import send

        attach(app)
        task = send("stack", target, band, executor or app.settings.executor, tile,
                    list(region) if region else None, replicas, name)
        click.echo(f"queued on pipeline_slow as task {task.id}: follow with `openastro queue status`; then "
                   "`openastro pipeline stack-outputs CAMPAIGN_ID`")
        return
    try:
        plan = plan_stack(app, target, band, executor=executor or app.settings.executor, tile=tile,
                          region=tuple(region) if region else None, replicas=replicas, name=name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for oid, reason in plan.refused:
        click.echo(f"refused    #{oid}: {reason}", err=True)
    click.echo(f"campaign {plan.campaign_id}: {plan.n_frames} frames onto a {plan.grid_shape[1]}x{plan.grid_shape[0]} "
               f"grid at {plan.pixel_scale_arcsec:.2f}\"/px")
    if (executor or app.settings.executor) != "local":
        click.echo("work units go to BOINC: `openastro boinc generate --campaign "
                   f"{plan.campaign_id}`; the assimilator co-adds when all tiles are in")
        return
    with click.progressbar(length=1, label="tiles", show_pos=True, hidden=not app.settings.progress) as bar:
        def on_progress(p):
            bar.length = max(p.total, 1)
            bar.update(p.finished - bar.pos)

        progress = run_campaign(app, plan.campaign_id, on_progress=on_progress)
    if progress.error:
        raise click.ClickException(f"{progress.error} of {progress.total} tile work units failed")
    for kind, path in export_stack(app, plan.campaign_id).items():
        click.echo(f"{kind:<12} {path}")


@pipeline.command("stack-outputs")
@click.argument("campaign_id", type=int)
@click.pass_obj
def stack_outputs_cmd(app: OpenAstro, campaign_id: int) -> None:
    """Print the output files of the stack of campaign CAMPAIGN_ID (local or BOINC): image, uncertainty, coverage."""
    from sqlalchemy.exc import NoResultFound

    from server.pipeline.stacks import stack_outputs

    app.db.require_current_schema()
    try:
        out = stack_outputs(app, campaign_id)
    except NoResultFound:
        raise click.ClickException(f"campaign {campaign_id} has no stack (is it a stack campaign?)") from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for kind, path in out["paths"].items():
        click.echo(f"{kind:<12} {path}")
    if out.get("frames_failed"):
        click.echo(f"frames failed: {', '.join(str(f) for f in out['frames_failed'])}")
