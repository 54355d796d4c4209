"""Task kinds of the volunteer app: thin adapters from a work-unit spec to the kernels.

Each task module exposes ``run(ctx: TaskContext) -> TaskOutput``. The task reads its inputs from
``ctx.inputs`` (logical name -> resolved path), reports progress with ``ctx.progress(fraction)``,
polls ``ctx.should_stop()`` (raising :class:`Interrupted` once its checkpoint is saved), and
checkpoints at ``ctx.checkpoint_path`` every ``ctx.checkpoint_period_s`` seconds if its kind
checkpoints (policy for an existing checkpoint: :func:`app.checkpoint.inspect_checkpoint`).
``app.main`` writes the result envelope from the returned arrays, atomically, to the resolved
output path.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from app.spec import WorkUnitSpec

TASK_MODULES = {
    "ttv-nested": "app.tasks.ttv_nested",
    "ttv-emcee": "app.tasks.ttv_emcee",
    "reproject-tile": "app.tasks.reproject_tile",
}


class InputError(ValueError):
    """An input file is missing, unreadable or malformed."""


class Interrupted(Exception):
    """The task stopped on request (SIGTERM) after saving its checkpoint."""


@dataclass(frozen=True)
class TaskOutput:
    arrays: Mapping[str, Any]
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class TaskContext:
    spec: WorkUnitSpec
    inputs: Mapping[str, Path]
    checkpoint_path: Path
    checkpoint_period_s: float
    progress: Callable[[float], None]
    should_stop: Callable[[], bool]


def task_module(kind: str):
    try:
        name = TASK_MODULES[kind]
    except KeyError:
        raise ValueError(f"no task module for kind {kind!r}") from None
    return importlib.import_module(name)
