"""``ttv-nested``: one dynesty static nested-sampling run (system, period bin, seed).

See :mod:`app.tasks._ttv` for the spec, checkpoint and result conventions.
"""

from __future__ import annotations

from app.tasks import TaskContext, TaskOutput
from app.tasks._ttv import run_ttv

KIND = "ttv-nested"


def run(ctx: TaskContext) -> TaskOutput:
    return run_ttv(ctx, KIND)
