"""``openastro campaign ...``: launch, follow and cancel campaigns (TTV inference on the executors)."""

from __future__ import annotations

import json
import time

import click

from server.core.configfile import read_config_file
from server.core.context import OpenAstro


@click.group()
def campaign() -> None:
    """Campaigns: a TTV inference or a stack, run as work units by the local executor or BOINC."""


@campaign.command("launch")
@click.argument("times", type=click.Path(exists=True, dir_okay=False))
@click.option("--priors", "priors_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="TTV prior config (TOML or JSON; keys in docs/ttv.md).")
@click.option("--bins", "bins", default="auto", show_default=True,
              help="'auto' (resonance bins) or JSON [[lo, hi], ...] in days.")
@click.option("--replicas", type=click.IntRange(1, 2), default=2, show_default=True,
              help="Results per work unit compared before one is trusted (BOINC quorum).")
@click.option("--sampler", type=click.Choice(["dynesty", "emcee"]), default=None,
              help="Override the prior config's sampler.")
@click.option("--nlive", type=click.IntRange(10), default=None, help="Override the prior config's nlive.")
@click.option("--executor", type=click.Choice(["local", "boinc"]), default=None,
              help="Who runs the work units (default: the executor setting).")
@click.option("--name", default=None, help="Campaign name (unique).")
@click.option("--seed", type=int, default=None, help="Root seed (default: fresh entropy, recorded).")
@click.option("--no-run", is_flag=True,
              help="Create the campaign only (run it later with `openastro campaign run ID`, or a daemon does).")
@click.option("--app-command", default=None, help="Local executor: the volunteer app to run (a frozen build).")
@click.pass_obj
def launch(app: OpenAstro, times, priors_path, bins, replicas, sampler, nlive, executor, name, seed, no_run,
           app_command) -> None:
    """Launch a TTV campaign on transit times TIMES (CSV: epoch, time, sigma [, planet])."""
    from server.boinc.campaigns import CampaignError, create_campaign, ttv_campaign_config
    from server.timeseries.transit_times import load_transit_time_table

    try:
        prior_config = read_config_file(priors_path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if sampler:
        prior_config["sampler"] = sampler
    if nlive:
        prior_config["nlive"] = nlive
    try:
        table = load_transit_time_table(times)
        bins_value = "auto" if bins == "auto" else json.loads(bins)
        config = ttv_campaign_config(table, prior_config, replicas=replicas, bins=bins_value)
        app.db.require_current_schema()  # after the inputs: a bad file is reported before a missing schema
        cid = create_campaign(app, name, "ttv", config, executor=executor or app.settings.executor, seed=seed)
    except (CampaignError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"campaign {cid}: {len(config['bins'])} period bins, replicas {replicas}, "
               f"executor {executor or app.settings.executor}")
    if no_run:
        click.echo(f"not run; start it with: openastro campaign run {cid}")
        return
    _run(app, cid, app_command)


@campaign.command("run")
@click.argument("campaign_id", type=int)
@click.option("--app-command", default=None, help="Local executor: the volunteer app to run (a frozen build).")
@click.pass_obj
def run(app: OpenAstro, campaign_id: int, app_command) -> None:
    """Run campaign CAMPAIGN_ID: one launched with --no-run, or one whose local run was interrupted (work units
    already finished are kept; BOINC: submit its work units)."""
    from server.boinc.campaigns import CampaignError, campaign_status

    try:
        st = campaign_status(app, campaign_id)
        if st.status in ("done", "failed") and st.total and st.finished == st.total:
            click.echo(f"campaign {campaign_id} has already finished")
            _print_status(st)
            return
        if st.executor != "local" and st.status != "created":
            raise CampaignError(f"campaign {campaign_id} was already submitted to BOINC ({st.status}); "
                                f"follow it with `openastro campaign status {campaign_id} --follow`")
        _run(app, campaign_id, app_command)
    except CampaignError as exc:
        raise click.ClickException(str(exc)) from None


def _run(app, cid: int, app_command: str | None) -> None:
    from server.boinc.campaigns import campaign_status, run_campaign
    from server.boinc.executors import LocalExecutor

    status = campaign_status(app, cid)
    if app.settings.broker_url and app_command is None:  # a worker of the mcmc queue runs it (docs/queue.md)
        from server.queue.reactive import attach
        from server.queue.tasks import send

        attach(app)
        click.echo(f"queued on mcmc as task {send('run_campaign', cid).id}: follow with `openastro campaign "
                   f"status {cid}`")
        return
    if status.executor == "local":
        executor = LocalExecutor(app, app_command=[app_command] if app_command else None, echo=click.echo)
        show = app.settings.progress
        with click.progressbar(length=1, label="work units", show_pos=True) if show else _nullbar() as bar:
            def progress(p):
                if show:
                    bar.length = max(p.total, 1)
                    bar.update(p.finished - bar.pos)
            result = run_campaign(app, cid, executor=executor, on_progress=progress)
        click.echo(f"local executor: {result.done} done, {result.error} failed, {result.invalid} invalid "
                   f"results, {result.replicas_run} replicas run")
    else:
        result = run_campaign(app, cid)
        click.echo(f"submitted to BOINC: {result.total} work units")
    _print_status(campaign_status(app, cid))


class _nullbar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _print_status(st) -> None:
    from app.ttv.summary import format_interval

    click.echo(f"campaign {st.id} '{st.name}' ({st.kind}, {st.executor}): {st.status}, "
               f"{st.finished}/{st.total} work units finished "
               + ", ".join(f"{k} {v}" for k, v in sorted(st.counts.items())))
    if st.kind == "ttv":
        click.echo(f"{'bin':>4} {'done':>5} {'error':>5} {'open':>5} {'ln Z':>12} {'P(bin)':>9}")
        for b in st.bins:
            lz = "" if b.log_evidence is None else f"{b.log_evidence:12.3f}"
            pb = "" if b.probability is None else f"{b.probability:9.3g}"
            click.echo(f"{b.bin_index:>4} {b.done:>5} {b.error:>5} {b.running:>5} {lz:>12} {pb:>9}")
        post = st.summary.get("posterior")
        if post and post.get("median"):
            for name, med, lo, hi in zip(post["param_names"], post["median"], post["q16"], post["q84"]):
                click.echo(f"  {name:<14} {format_interval(name, med, lo, hi)}")
    if st.invalid_results:
        click.echo(f"invalid results rejected by the validator: {st.invalid_results}")
    for err in st.errors:
        click.echo(f"FAILED work unit {err['wu']}: {err['reason']} (error_mask {err['error_mask']})")


@campaign.command("status")
@click.argument("campaign_id", type=int)
@click.option("--follow", is_flag=True, help="Refresh with a progress bar until the campaign finishes.")
@click.option("--interval", type=float, default=5.0, show_default=True, help="Seconds between refreshes.")
@click.pass_obj
def status(app: OpenAstro, campaign_id: int, follow: bool, interval: float) -> None:
    """Progress per bin, evidences, failures."""
    from server.boinc.campaigns import CampaignError, campaign_status

    try:
        st = campaign_status(app, campaign_id)
    except CampaignError as exc:
        raise click.ClickException(str(exc)) from None
    if follow:
        with click.progressbar(length=max(st.total, 1), label=f"campaign {campaign_id}", show_pos=True) as bar:
            while True:
                bar.length = max(st.total, 1)
                bar.update(st.finished - bar.pos)
                if st.status in ("done", "failed", "cancelled"):
                    break
                time.sleep(interval)
                st = campaign_status(app, campaign_id)
    _print_status(st)


@campaign.command("cancel")
@click.argument("campaign_id", type=int)
@click.pass_obj
def cancel(app: OpenAstro, campaign_id: int) -> None:
    """Cancel a campaign: unfinished work units are not run (on BOINC their jobs are cancelled there too)."""
    from server.boinc.campaigns import CampaignError, cancel_campaign

    try:
        n = cancel_campaign(app, campaign_id)
    except CampaignError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"campaign {campaign_id} cancelled ({n} unfinished work units)")
