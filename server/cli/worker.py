"""``openastro worker``: Celery workers for the pipeline queues, one worker (and concurrency) per queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import click

from server.core.context import OpenAstro


@click.command()
@click.option("--queues", default="pipeline_fast,pipeline_slow,science_inference,mcmc", show_default=True,
              help="Comma-separated queues; each gets its own worker with the queue's concurrency.")
@click.option("--concurrency", type=click.IntRange(1, 256), default=None,
              help="Processes per queue (default: the queue's table value, at most the setting ncores).")
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_obj
def worker(app: OpenAstro, queues: str, concurrency: int | None, loglevel: str) -> None:
    """Run the tasks queued on the broker (setting broker_url). Concurrency per queue: pipeline_fast 4,
    pipeline_slow 2, science_inference 2, mcmc 1, each at most the machine's cores."""
    from server.queue.celery_app import QUEUES, scaled_concurrency

    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in names if q not in QUEUES]
    if unknown or not names:
        raise click.ClickException(f"unknown queue(s) {unknown or names}; queues are {', '.join(QUEUES)}")
    if not app.settings.broker_url:
        raise click.ClickException("no broker: set broker_url (OPENASTRO_BROKER_URL=redis://...); without one, "
                                   "tasks run in the process that queues them and need no worker")
    app.db.require_current_schema()
    if len(names) == 1:
        _run_one(app, names[0], concurrency or scaled_concurrency(names[0], app.settings.ncores), loglevel)
        return
    # one child worker per queue, so that each queue keeps its own processes (a long mcmc task never takes a
    # pipeline_fast slot); this process forwards SIGTERM/SIGINT and waits for them
    argv = [sys.executable, "-m", "server.cli", "worker", "--loglevel", loglevel]
    children = [subprocess.Popen(argv + ["--queues", q] + (["--concurrency", str(concurrency)] if concurrency else []))
                for q in names]

    def forward(signum, _frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    if any(codes):
        raise click.ClickException(f"worker exit codes {dict(zip(names, codes))}")


def _run_one(app: OpenAstro, queue: str, concurrency: int, loglevel: str) -> None:
    from server.queue.reactive import attach, reactive_enabled
    from server.queue.celery_app import configure

    configure(app)
    if reactive_enabled(app.settings):
        attach(app)
    else:
        from server.queue.reactive import register_tasks

        register_tasks()
    from server.queue.celery_app import celery

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    celery.worker_main(["worker", "--queues", queue, "--concurrency", str(concurrency), "--loglevel", loglevel,
                        "--hostname", f"{queue}.{os.getpid()}@%h", "--without-gossip", "--without-mingle"])
