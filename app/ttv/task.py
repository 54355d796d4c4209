"""One TTV work unit, as the volunteer app and the local executor run it.

``spec_params`` (plain JSON, the ``params`` of a ``ttv-nested``/``ttv-emcee`` work unit)::

    {"likelihood": {"prior": {...}, "observed": {...}, "dt": 0.5475, "dt_tolerance_s": null},
     "sampler": {"name": "dynesty", "nlive": 100, "sample": "rwalk", "dlogz": 0.1}
                 | {"name": "emcee", "nwalkers": 32, "nsteps": 2000,
                    "init_samples": [[...], ...]},
     "label": {...}}    # free-form plain data copied into the result meta (system, bin, model)

The result is a :class:`app.ttv.results.TTVRunResult`; save it with
:func:`app.ttv.results.save_result`.
"""
from __future__ import annotations

import time

from .likelihood import TTVLikelihood
from .results import TTVRunResult
from .samplers import make_strategy

_TASK_KEYS = ("likelihood", "sampler", "label")


class TaskStopped(Exception):
    """The run checkpointed and stopped because ``should_stop()`` returned True."""


def run_ttv_task(spec_params: dict, seed: list[int], checkpoint_path=None, *,
                 checkpoint_every_s: float = 60.0, on_progress=None,
                 should_stop=None, on_status=None) -> TTVRunResult:
    """Run (or resume) one TTV sampling task; raises :class:`TaskStopped` when stopped.

    ``on_progress(fraction)`` and ``on_status(info)``: see :class:`app.ttv.samplers._Progress`."""
    if not isinstance(spec_params, dict):
        raise ValueError(f"spec_params must be a table, got {type(spec_params).__name__}")
    unknown = sorted(set(spec_params) - set(_TASK_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in TTV task params; allowed {_TASK_KEYS}")
    for key in ("likelihood", "sampler"):
        if key not in spec_params:
            raise ValueError(f"TTV task params need {key!r}")
    if (not isinstance(seed, (list, tuple)) or not seed
            or not all(isinstance(s, int) and s >= 0 for s in seed)):
        raise ValueError(f"seed must be a non-empty list of non-negative ints, got {seed!r}")
    t0 = time.perf_counter()
    like = TTVLikelihood(spec_params["likelihood"])
    strategy = make_strategy(spec_params["sampler"])
    meta = {"label": spec_params.get("label", {}), "dt": like.dt, "dt_note": like.dt_note,
            "n_obs": like.n_obs}
    outcome = strategy.run(like, like.prior, list(seed), checkpoint_path,
                           checkpoint_every_s=checkpoint_every_s, on_progress=on_progress,
                           should_stop=should_stop, meta=meta, on_status=on_status)
    if outcome.status == "stopped":
        raise TaskStopped(f"checkpointed to {checkpoint_path} after {outcome.ncall} calls")
    result = outcome.result
    result.meta["wall_s_last_session"] = time.perf_counter() - t0
    return result


def main(argv=None) -> int:
    """``python -m app.ttv.task SPEC.json OUT.npz [CHECKPOINT]``: run or resume one task.

    SPEC.json holds {"params": <spec_params>, "seed": [ints]}; exit code 0 when OUT.npz
    is written, 3 when stopped by SIGTERM (checkpoint written).
    """
    import argparse
    import json
    import signal

    from .results import save_result

    ap = argparse.ArgumentParser(prog="python -m app.ttv.task")
    ap.add_argument("spec")
    ap.add_argument("out")
    ap.add_argument("checkpoint", nargs="?")
    ap.add_argument("--checkpoint-every", type=float, default=60.0)
    args = ap.parse_args(argv)
    with open(args.spec) as fh:
        spec = json.load(fh)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        result = run_ttv_task(spec["params"], spec["seed"], args.checkpoint,
                              checkpoint_every_s=args.checkpoint_every,
                              should_stop=lambda: bool(stop))
    except TaskStopped:
        return 3
    save_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
