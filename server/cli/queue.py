"""``openastro queue``: what waits, runs and failed on each queue; retry a failed task; purge a queue."""

from __future__ import annotations

import click

from server.core.context import OpenAstro


def _errors(func):
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from server.queue.ops import QueueError

        try:
            return func(*args, **kwargs)
        except QueueError as exc:
            raise click.ClickException(str(exc)) from None
    return wrapper


@click.group()
def queue() -> None:
    """Inspect and manage the pipeline queues on the broker (setting broker_url)."""


@queue.command("status")
@click.option("--failed", "show_failed", is_flag=True, help="Also list each failed task with its error.")
@click.pass_obj
@_errors
def status(app: OpenAstro, show_failed: bool) -> None:
    """Per queue: pending, running and failed tasks, and how long the oldest pending one has waited."""
    from server.queue.celery_app import QUEUES
    from server.queue.ops import failed_tasks, queue_status

    rows = queue_status(app.settings, list(QUEUES))
    click.echo(f"{'queue':<18} {'pending':>8} {'running':>8} {'failed':>7} {'oldest waiting':>15}")
    for row in rows:
        oldest = "-" if row.oldest_waiting_s is None else f"{row.oldest_waiting_s:.0f} s"
        click.echo(f"{row.queue:<18} {row.pending:>8} {row.running:>8} {row.failed:>7} {oldest:>15}")
    if show_failed:
        for rec in failed_tasks(app.settings):
            click.echo(f"FAILED {rec['id']} {rec['name']}{tuple(rec['args'])} on {rec['queue']}: {rec['error']}")


@queue.command("retry")
@click.argument("task_id")
@click.pass_obj
@_errors
def retry(app: OpenAstro, task_id: str) -> None:
    """Send the failed task TASK_ID again (see `openastro queue status --failed`)."""
    from server.queue import tasks
    from server.queue.celery_app import configure

    configure(app)
    new_id = tasks.retry_failed(app.settings, task_id)
    click.echo(f"queued again as {new_id}")


@queue.command("purge")
@click.argument("queue_name", metavar="QUEUE")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
@_errors
def purge(app: OpenAstro, queue_name: str, yes: bool) -> None:
    """Drop every pending task of QUEUE (running and failed ones are kept)."""
    from server.queue.celery_app import QUEUES
    from server.queue.ops import purge as purge_queue

    if queue_name not in QUEUES:
        raise click.ClickException(f"unknown queue {queue_name!r}; queues are {', '.join(QUEUES)}")
    if not yes:
        click.confirm(f"drop every pending task of {queue_name}?", abort=True)
    click.echo(f"dropped {purge_queue(app.settings, queue_name)} pending tasks from {queue_name}")
