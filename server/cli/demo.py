"""``openastro demo``: the main job end to end on embedded defaults."""

from __future__ import annotations

import click

from server.core.context import OpenAstro


@click.command()
@click.option("--quick", is_flag=True, help="Smallest sizes (used by the tests).")
@click.pass_obj
def demo(app: OpenAstro, quick: bool) -> None:
    """Run the whole pipeline on synthetic data with embedded defaults (SQLite, local store, local executor)."""
    from server.pipeline.demo import run_demo

    run_demo(app, quick=quick, echo=click.echo)
