"""Shared adapter for the TTV kinds (``ttv-nested`` = dynesty, ``ttv-emcee`` = emcee).

Spec: ``inputs`` is empty (the transit times travel in ``params``); ``params`` is the
``spec_params`` of :func:`app.ttv.task.run_ttv_task` (likelihood, sampler, label; see that
module), with ``sampler.name`` "dynesty" for ttv-nested and "emcee" for ttv-emcee.

Seed: ``spec.seed`` is handed to the TTV kernel as the entropy list of its SeedSequence
(``SeedSequence([entropy, *spawn_key])``): deterministic per work unit and distinct between the
spawned children of one campaign seed.

Checkpoints: the kernel writes its own atomic checkpoint (a pickled dynesty sampler, or an emcee
``.npz``) at ``ctx.checkpoint_path``, which is job.xml's ``checkpoint_filename``. Before running,
this adapter decodes an existing checkpoint and applies :func:`app.checkpoint.inspect_checkpoint`
(unreadable -> moved aside, start over; other format/version/kind -> CheckpointMismatch).

Result arrays: those of :mod:`app.ttv.results` for the kind; the kernel's own result meta is kept
under ``meta["ttv"]`` so :func:`ttv_result_from_envelope` rebuilds the ``TTVRunResult``.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

from app.checkpoint import CheckpointMismatch, CheckpointUnreadable, inspect_checkpoint
from app.spec import SpecError
from app.tasks import Interrupted, TaskContext, TaskOutput

SAMPLER_FOR_KIND = {"ttv-nested": "dynesty", "ttv-emcee": "emcee"}


def _read_checkpoint_header(path, sampler: str) -> dict:
    """The checkpoint's identifying fields; CheckpointUnreadable if it cannot be decoded."""
    if sampler == "dynesty":
        try:
            with open(path, "rb") as handle:
                state = pickle.load(handle)  # our own file, written on this machine
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError,
                IndexError, TypeError, ValueError, MemoryError) as exc:
            raise CheckpointUnreadable(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(state, dict):
            raise CheckpointUnreadable(f"unpickled a {type(state).__name__}, not a checkpoint")
        return state
    import numpy as np

    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            for name in npz.files:  # decompress everything: catches truncation
                npz[name]
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointUnreadable(f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(meta, dict):
        raise CheckpointUnreadable("checkpoint meta is not an object")
    return meta


def check_existing_checkpoint(path, sampler: str) -> bool:
    """True when a usable checkpoint exists (resume); False for a fresh start."""
    from app.ttv.samplers import CHECKPOINT_FORMAT, CHECKPOINT_VERSION

    return inspect_checkpoint(Path(path), lambda p: _read_checkpoint_header(p, sampler),
                              {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
                               "kind": sampler})


def validate_params(kind: str, params: dict) -> None:
    """Fail fast (SpecError) on params the TTV kernel would reject."""
    from app.ttv.likelihood import TTVLikelihood
    from app.ttv.samplers import make_strategy

    sampler = params.get("sampler")
    expected = SAMPLER_FOR_KIND[kind]
    if not isinstance(sampler, dict) or sampler.get("name") != expected:
        raise SpecError(f"{kind} needs params.sampler.name == {expected!r}, got {sampler!r}")
    try:
        TTVLikelihood(params["likelihood"])
        make_strategy(sampler)
    except KeyError as exc:
        raise SpecError(f"{kind} params lack {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise SpecError(f"{kind} params: {exc}") from exc


def run_ttv(ctx: TaskContext, kind: str) -> TaskOutput:
    from app.ttv.task import TaskStopped, run_ttv_task

    if ctx.spec.inputs:
        raise SpecError(f"{kind} takes no input files (times travel in params), "
                        f"got {sorted(ctx.spec.inputs)}")
    params = ctx.spec.params
    validate_params(kind, params)
    checkpoint = str(ctx.checkpoint_path)
    had_checkpoint = check_existing_checkpoint(checkpoint, SAMPLER_FOR_KIND[kind])
    try:
        result = run_ttv_task(params, list(ctx.spec.seed), checkpoint,
                              checkpoint_every_s=ctx.checkpoint_period_s,
                              on_progress=ctx.progress, should_stop=ctx.should_stop)
    except TaskStopped as exc:
        raise Interrupted(str(exc)) from exc
    except ValueError as exc:
        # The kernel names the checkpoint path when it refuses one (other run / dynesty version).
        if had_checkpoint and str(exc).startswith(checkpoint):
            raise CheckpointMismatch(str(exc)) from exc
        raise SpecError(f"{kind}: {exc}") from exc
    if result.kind != kind:
        raise RuntimeError(f"TTV kernel returned a {result.kind!r} result for a {kind!r} task")
    return TaskOutput(arrays=dict(result.arrays), meta={"ttv": result.meta})


def ttv_result_from_envelope(envelope):
    """Rebuild the :class:`app.ttv.results.TTVRunResult` from an openastro.result envelope."""
    from app.ttv.results import make_result

    if envelope.kind not in SAMPLER_FOR_KIND:
        raise ValueError(f"result kind {envelope.kind!r} is not a TTV kind")
    if not isinstance(envelope.meta.get("ttv"), dict):
        raise ValueError("TTV result envelope lacks its 'ttv' meta")
    return make_result(envelope.kind, envelope.meta["ttv"], dict(envelope.arrays))
