"""``ttv-emcee``: one emcee ensemble run (e.g. a warm start from a previous posterior).

See :mod:`app.tasks._ttv` for the spec, checkpoint and result conventions.
"""

from __future__ import annotations

from app.tasks import TaskContext, TaskOutput
from app.tasks._ttv import run_ttv

KIND = "ttv-emcee"


def run(ctx: TaskContext) -> TaskOutput:
    return run_ttv(ctx, KIND)
