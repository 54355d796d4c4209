"""``openastro-app``: the volunteer app's entry point (runs frozen under BOINC's wrapper).

    openastro-app run [--slot DIR] [--spec wu.json] [--out result.npz]
                      [--checkpoint openastro_checkpoint.dat] [--fraction-done fraction_done]
                      [--ncpus N] [--boinc-finish-file]
    openastro-app --version

The task kind comes from the spec. Order matters at start-up: read ``init_data.xml`` (no numpy),
cap the BLAS/OpenMP threads to its ncpus, switch astropy offline, and only then import the task
modules (which import numpy/scipy/astropy). Exit codes: see ``app.runtime`` and
docs/volunteer_app.md; every failure prints exactly one ``error: ...`` line on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

from app import runtime
from app.runtime import log
from app.version import APP_VERSION

DEFAULT_SPEC = "wu.json"
DEFAULT_OUT = "result.npz"
DEFAULT_CHECKPOINT = "openastro_checkpoint.dat"
DEFAULT_FRACTION_DONE = "fraction_done"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openastro-app",
        description="OpenAstro Compute volunteer app: runs one work unit (ttv-nested, ttv-emcee, "
                    "reproject-tile) in a BOINC slot or a plain directory.")
    parser.add_argument("--version", action="version", version=f"openastro-app {APP_VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the work unit described by the spec file")
    run.add_argument("--slot", default=".", help="slot directory (default: current directory)")
    run.add_argument("--spec", default=DEFAULT_SPEC, help="open name of the work-unit spec")
    run.add_argument("--out", default=DEFAULT_OUT, help="open name of the result file")
    run.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                     help="checkpoint file name (job.xml's checkpoint_filename)")
    run.add_argument("--fraction-done", default=DEFAULT_FRACTION_DONE,
                     help="fraction-done file name (job.xml's fraction_done_filename)")
    run.add_argument("--ncpus", type=int, default=None,
                     help="threads to use (default: init_data.xml's ncpus, else 1)")
    run.add_argument("--checkpoint-period", type=float, default=None,
                     help="seconds between checkpoints (default: init_data.xml, else 60)")
    run.add_argument("--boinc-finish-file", action="store_true",
                     help="write boinc_finish_called (only when run as a bare BOINC main program, "
                          "without the wrapper)")
    return parser


def _fail(code: int, message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run_command(args)
    return runtime.EXIT_USAGE  # pragma: no cover - argparse requires a command


def run_command(args: argparse.Namespace) -> int:
    from app import slot as slotmod

    started_wall = time.monotonic()
    started_cpu = time.process_time()
    slot_dir = Path(args.slot)
    if not slot_dir.is_dir():
        return _fail(runtime.EXIT_USAGE, f"slot directory {slot_dir} does not exist")
    try:
        config = slotmod.load_slot_config(slot_dir)
    except ValueError as exc:
        log(f"ignoring init_data.xml: {exc}; using standalone defaults")
        config = slotmod.SlotConfig(under_boinc=False)
    ncpus = args.ncpus if args.ncpus is not None else config.ncpus
    period = args.checkpoint_period if args.checkpoint_period is not None else config.checkpoint_period_s
    if ncpus < 1 or not period > 0:
        return _fail(runtime.EXIT_USAGE, f"--ncpus must be >= 1 and --checkpoint-period > 0 "
                                         f"(got {ncpus}, {period})")
    if runtime.numpy_already_imported():
        # Only happens in-process (tests): the caps would no longer take effect.
        log("numpy already imported: thread caps not applied by this call")
    runtime.cap_threads(ncpus)
    stop = runtime.StopFlag().install()

    if getattr(sys, "frozen", False):
        removed = runtime.clean_stale_extractions(slot_dir, getattr(sys, "_MEIPASS", None))
        for path in removed:
            log(f"removed stale PyInstaller extraction dir {path.name}")

    try:
        return _run(args, slot_dir, config, ncpus, period, stop, started_wall, started_cpu)
    except MemoryError:
        return _fail(runtime.EXIT_OUT_OF_MEMORY,
                     f"out of memory (work unit needs more than this host can give; "
                     f"rsc_memory_bound={config.rsc_memory_bound})")
    finally:
        stop.uninstall()


def _run(args, slot_dir, config, ncpus, period, stop, started_wall, started_cpu) -> int:
    from app import checkpoint as ckpt
    from app import slot as slotmod
    from app.spec import SpecError, load_spec

    # --- spec ----------------------------------------------------------------------------------
    try:
        spec_file = slotmod.resolve_input(slot_dir, args.spec)
        spec = load_spec(spec_file.path)
    except FileNotFoundError as exc:
        return _fail(runtime.EXIT_BAD_SPEC, f"work-unit spec missing: {exc}")
    except (SpecError, ValueError, OSError) as exc:
        return _fail(runtime.EXIT_BAD_SPEC, f"malformed work-unit spec {args.spec}: {exc}")

    # --- outputs: fail now, not after hours of work ----------------------------------------------
    try:
        out = slotmod.resolve_output(slot_dir, args.out)
    except (ValueError, OSError) as exc:
        return _fail(runtime.EXIT_OUTPUT_UNWRITABLE, f"cannot resolve output {args.out}: {exc}")
    checkpoint_path = slot_dir / args.checkpoint
    fraction_path = slot_dir / args.fraction_done
    for directory in {out.path.parent, checkpoint_path.parent, fraction_path.parent}:
        try:
            slotmod.check_writable(directory)
        except OSError as exc:
            return _fail(runtime.EXIT_OUTPUT_UNWRITABLE,
                         f"output directory {directory} is not writable: {exc}")
    ckpt.remove_stale_temps(checkpoint_path, (".{name}.*.tmp", ".ckpt-*"))
    ckpt.remove_stale_temps(out.path)

    # --- inputs --------------------------------------------------------------------------------
    inputs = {}
    for logical, open_name in spec.inputs.items():
        try:
            inputs[logical] = slotmod.resolve_input(slot_dir, open_name).path
        except (FileNotFoundError, ValueError, OSError) as exc:
            return _fail(runtime.EXIT_BAD_INPUT, f"input {logical!r}: {exc}")

    log(f"start kind={spec.kind} wu={config.wu_name or '-'} ncpus={ncpus} "
        f"checkpoint_period={period:g}s under_boinc={config.under_boinc} "
        f"out={'stub->' if out.via_stub else ''}{out.path}")

    # Heavy imports only now, with threads capped.
    runtime.go_offline()
    from app.spec import result_meta, write_result
    from app.tasks import InputError, Interrupted, TaskContext, task_module

    progress_file = runtime.ProgressFile(fraction_path)
    progress_file.write(0.0, force=True)
    ctx = TaskContext(spec=spec, inputs=inputs, checkpoint_path=checkpoint_path,
                      checkpoint_period_s=period, progress=progress_file.write,
                      should_stop=stop.is_set)
    try:
        output = task_module(spec.kind).run(ctx)
    except Interrupted:
        log(f"stopped by signal {stop.signum}: checkpointed, exiting {runtime.EXIT_INTERRUPTED}")
        return runtime.EXIT_INTERRUPTED
    except ckpt.CheckpointMismatch as exc:
        return _fail(runtime.EXIT_CHECKPOINT_MISMATCH, f"refusing checkpoint {checkpoint_path.name}: {exc}")
    except SpecError as exc:
        return _fail(runtime.EXIT_BAD_SPEC, f"malformed work-unit spec {args.spec}: {exc}")
    except InputError as exc:
        return _fail(runtime.EXIT_BAD_INPUT, str(exc))
    except MemoryError:
        raise
    except Exception as exc:  # a bug: keep the traceback for stderr_out, then one summary line
        traceback.print_exc(file=sys.stderr)
        return _fail(runtime.EXIT_INTERNAL, f"internal error in {spec.kind}: {type(exc).__name__}: {exc}")

    timings = {"wall_s": time.monotonic() - started_wall,
               "cpu_s": time.process_time() - started_cpu}
    meta = result_meta(spec.kind, spec.seed, app_version=APP_VERSION, wu_name=config.wu_name,
                       timings=timings, extra=dict(output.meta))
    try:
        write_result(out.path, meta, output.arrays)
    except OSError as exc:
        return _fail(runtime.EXIT_OUTPUT_UNWRITABLE, f"cannot write output {out.path}: {exc}")
    progress_file.write(1.0, force=True)
    if args.boinc_finish_file:
        runtime.write_boinc_finish_file(slot_dir, 0)
    log(f"done: wrote {args.out} ({out.path}), wall={timings['wall_s']:.1f}s cpu={timings['cpu_s']:.1f}s")
    return runtime.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
