"""``openastro transients``: reference images, the transient stage, and the alerts it issued."""
from __future__ import annotations

import click

from server.core.context import OpenAstro


@click.group()
def transients() -> None:
    """Transients: reference images, difference imaging, candidates and alerts (docs/transients.md)."""


@transients.group()
def reference() -> None:
    """Reference images per target and band."""


@reference.command("build")
@click.argument("target")
@click.option("--band", required=True, help="Band of the frames to stack (the calibration's band).")
@click.pass_obj
def reference_build(app: OpenAstro, target: str, band: str) -> None:
    """Stack TARGET's best-seeing calibrated frames in BAND into a new reference image."""
    from server.transients.psf import PSFError
    from server.transients.reference import build_reference

    try:
        b = build_reference(app, target, band)
    except (ValueError, PSFError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"reference #{b.reference_id}: {b.n_frames} frames, FWHM {b.fwhm_arcsec:.2f}\", "
               f"5-sigma depth {b.depth_mag:.2f} mag")


@reference.command("status")
@click.argument("target")
@click.option("--band", required=True)
@click.pass_obj
def reference_status_cmd(app: OpenAstro, target: str, band: str) -> None:
    """Show TARGET's reference in BAND and whether the staleness policy calls for a rebuild."""
    from server.transients.reference import reference_status

    try:
        st = reference_status(app, target, band)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if st.reference_id is None:
        click.echo(f"{target} {band}: no reference ({st.n_eligible} eligible frames)")
        return
    click.echo(f"{target} {band}: reference #{st.reference_id}, {st.n_frames} frames, FWHM {st.fwhm_arcsec:.2f}\", "
               f"depth {st.depth_mag:.2f} mag, built {st.built_at:%Y-%m-%d %H:%M} UTC; {st.n_eligible} eligible frames")
    click.echo("stale: " + "; ".join(st.reasons) if st.stale else "fresh")


@transients.command("run")
@click.argument("observation_ids", nargs=-1, type=int, required=True)
@click.option("--force", is_flag=True, help="Run again where the stage already succeeded.")
@click.pass_obj
def run(app: OpenAstro, observation_ids: tuple[int, ...], force: bool) -> None:
    """Run the transient stage for calibrated OBSERVATION_IDS (recorded by the stage runner)."""
    from server.pipeline.runner import TRANSIENT_STAGE, run_pipeline

    failed = 0
    for o in run_pipeline(app, observation_ids, (TRANSIENT_STAGE,), force=force):
        click.echo(f"#{o.observation_id} {o.stage}: {o.status} {o.message}")
        failed += o.status == "failed"
    if failed:
        raise SystemExit(1)


@transients.command("alerts")
@click.option("--since", default=None, help="Only alerts issued after this ISO 8601 time (UTC).")
@click.option("--limit", default=100, show_default=True, type=int)
@click.pass_obj
def alerts_cmd(app: OpenAstro, since: str | None, limit: int) -> None:
    """List the alerts issued (oldest first)."""
    from server.transients.alertstore import list_alerts, parse_since

    try:
        rows = list_alerts(app, since=parse_since(since), limit=limit)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if not rows:
        click.echo("no alerts")
        return
    click.echo(f"{'id':>5} {'object':<10} {'created (UTC)':<20} {'ra':>10} {'dec':>10} {'band':<5} {'mag':>6} "
               f"{'S/N':>6} {'rb':>5} {'prev':>4}")
    for r in rows:
        mag = f"{r['mag']:.2f}" if r["mag"] is not None else "-"
        click.echo(f"{r['id']:>5} {r['object']:<10} {r['created_at'][:19]:<20} {r['ra_deg']:>10.5f} "
                   f"{r['dec_deg']:>10.5f} {str(r['band']):<5} {mag:>6} {r['snr']:>6.1f} {r['rb']:>5.2f} "
                   f"{r['n_previous']:>4}")


# `openastro transients train` (our real/bogus CNN) lives in its own module
from server.cli.transients_train import train as _train  # noqa: E402

transients.add_command(_train)
