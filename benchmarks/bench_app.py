"""Volunteer app benchmark: frozen size, start-up time, and time / peak memory per task kind.

    python -m benchmarks.bench_app [--app PATH] [--repeats 5] [--zip] [--costmodel]

PATH is the frozen onedir bundle (dist/openastro_app) or its executable. Each task kind runs the
test work unit of tests/app_workunits.py in a BOINC-like slot (stub mode, captured init_data.xml)
through the frozen binary, and the same work unit through the unfrozen venv
(``python -m app.main``) as the anchor measured in the same run; the ratio is printed.

``--costmodel`` also measures the constants of app/costmodel.py (TTV likelihood call cost for two
data spans, dynesty calls per iteration, tile cost for two tile sizes) and prints them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parent.parent
GNU_TIME = "/usr/bin/time"
sys.path.insert(0, str(REPO / "tests"))

import app_workunits as aw  # noqa: E402


def timed_run(command: list[str], cwd: Path) -> tuple[int, float, float, str, float]:
    """(exit code, wall seconds, peak RSS MB, stderr, CPU seconds) of one child process.

    Measured by GNU time around the child: a child forked straight from this (large) Python
    process would report this process's RSS as its own peak (Linux keeps the pre-exec high-water
    mark in ru_maxrss).
    """
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "time.txt"
        with tempfile.TemporaryFile("w+") as err:
            done = subprocess.run([GNU_TIME, "-o", str(report), "-f", "%x %e %M %U %S", *command],
                                  cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
            err.seek(0)
            text = err.read()
        fields = report.read_text().split()[-5:]
    code, wall, rss_kb, user, system = int(fields[0]), *map(float, fields[1:])
    if done.returncode != code:
        code = done.returncode
    return code, wall, rss_kb / 1024.0, text, user + system


def bundle_stats(bundle: Path) -> tuple[int, int]:
    files = [p for p in bundle.rglob("*") if p.is_file() and not p.is_symlink()]
    return sum(p.stat().st_size for p in files), len(files)


def startup(exe: Path, repeats: int) -> dict[str, float]:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, args in (("--version", ["--version"]), ("run --help", ["run", "--help"])):
            times = [timed_run([str(exe), *args], Path(tmp))[1] for _ in range(repeats)]
            out[f"{label} (frozen)"] = statistics.median(times)
            # the anchor: the same entry point unfrozen
            venv = [timed_run([sys.executable, "-m", "app.main", *args], Path(tmp))[1]
                    for _ in range(repeats)]
            out[f"{label} (venv python -m app.main)"] = statistics.median(venv)
    return out


MAKERS = {"reproject-tile": aw.reproject_tile_workunit, "ttv-nested": aw.ttv_nested_workunit,
          "ttv-emcee": aw.ttv_emcee_workunit}


def predict(wu):
    """app.costmodel's estimate for a test work unit."""
    import io

    from astropy.io import fits

    from app.costmodel import estimate

    params = dict(wu.spec["params"])
    if "cutout.fits" in wu.files:
        with fits.open(io.BytesIO(wu.files["cutout.fits"])) as hdul:
            params["cutout_shape"] = list(hdul[0].data.shape)
    return estimate(wu.spec["kind"], params)


def run_kind(kind: str, command: list[str], wu=None) -> tuple[float, float, float]:
    """(wall s, peak RSS MB, CPU s) of one work unit of ``kind`` in a stub-mode slot."""
    wu = wu or MAKERS[kind]()
    with tempfile.TemporaryDirectory() as tmp:
        slot = aw.lay_out_slot(Path(tmp), wu, mode="stub")
        code, wall, rss, stderr, cpu = timed_run(command, slot.slot_dir)
        if code != 0:
            raise SystemExit(f"{kind} failed with exit {code}:\n{stderr}")
    return wall, rss, cpu


def measure_costmodel(exe: Path) -> None:
    """Constants for app/costmodel.py, measured in-process on this machine."""
    import numpy as np

    from app.reproject_kernel import reproject_tile
    from app.ttv.likelihood import TTVLikelihood
    from app.ttv.task import run_ttv_task

    print("\n## cost model constants (in-process, 1 thread)")
    rows = []
    for n_transits in (30, 120):
        like = TTVLikelihood(aw._ttv_likelihood(7, n_transits))
        x = like.prior(np.full(like.prior.ndim, 0.5))
        calls = 300
        t0 = time.process_time()
        for _ in range(calls):
            like(x)
        per_call = (time.process_time() - t0) / calls
        steps = (like.t_end - like.t_start) / like.dt * len(like.prior.spec.planets)
        rows.append((steps, per_call))
        print(f"ttv likelihood: n_transits={n_transits} planet-steps/call={steps:.0f} "
              f"t_call={per_call * 1e3:.3f} ms")
    (s1, t1), (s2, t2) = rows
    slope = (t2 - t1) / (s2 - s1)
    base = t1 - slope * s1
    print(f"TTV_CALL_BASE_S = {base:.3e}   TTV_CALL_PER_PLANET_STEP_S = {slope:.3e}")

    wu = aw.ttv_nested_workunit()
    result = run_ttv_task(wu.spec["params"], list(wu.spec["seed"]), None)
    niter = int(result.arrays["niter"])
    nlive = int(result.arrays["nlive"])
    ncall = int(result.meta["ncall_total"])
    info = float(result.arrays["information"][-1])
    print(f"dynesty: nlive={nlive} niter={niter} ncall={ncall} information={info:.2f} nats "
          f"-> calls/iter={ncall / niter:.1f} niter/nlive={niter / nlive:.2f}")

    tile_rows = []
    for size in (300, 900):
        wu = aw.reproject_tile_workunit(tile=(0, size, 0, size))
        p = wu.spec["params"]
        from astropy.io import fits
        import io

        with fits.open(io.BytesIO(wu.files["cutout.fits"])) as hdul:
            data, weight, header = hdul[0].data.astype(float), hdul[1].data.astype(float), hdul[0].header
        t0 = time.process_time()
        reproject_tile(data, weight, header, p["cutout_origin"], p["output_wcs"], p["tile_bounds"])
        elapsed = time.process_time() - t0
        _, rss, _ = run_kind("reproject-tile", [str(exe), "run"], wu)
        pixels = size * size + data.size  # output tile + input cutout pixels
        tile_rows.append((size * size, elapsed, pixels, rss))
        print(f"reproject tile {size}x{size} (cutout {data.shape}): {elapsed:.3f} CPU s, "
              f"frozen peak RSS {rss:.0f} MB")
    (p1, e1, q1, r1), (p2, e2, q2, r2) = tile_rows
    slope = (e2 - e1) / (p2 - p1)
    print(f"TILE_BASE_S = {e1 - slope * p1:.3e}   TILE_PER_PIXEL_S = {slope:.3e}")
    per_px = (r2 - r1) * 2**20 / (q2 - q1)
    print(f"TILE_RSS_BASE_BYTES = {r1 * 2**20 - per_px * q1:.3e}   TILE_RSS_PER_PIXEL_BYTES = {per_px:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", default=None,
                        help="frozen bundle dir or its executable (default: build one now, ~1-2 min)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--zip", action="store_true", help="also time/size the BOINC zip")
    parser.add_argument("--costmodel", action="store_true", help="measure cost-model constants")
    args = parser.parse_args(argv)
    if args.app is None:
        from server.boinc.package import build_frozen_app

        build_root = Path(tempfile.mkdtemp(prefix="openastro-bench-build-"))
        t0 = time.perf_counter()
        args.app = str(build_frozen_app(build_root))
        print(f"built the frozen app in {time.perf_counter() - t0:.0f} s ({args.app})")
    path = Path(args.app)
    exe = path / "openastro_app" if path.is_dir() else path
    bundle = exe.parent

    size, nfiles = bundle_stats(bundle)
    print(f"## frozen app: {bundle}")
    print(f"size: {size / 1e6:.1f} MB in {nfiles} files")
    if args.zip:
        from server.boinc.package import zip_bundle

        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            zip_bundle(bundle, Path(tmp) / "app.zip")
            print(f"BOINC zip: {(Path(tmp) / 'app.zip').stat().st_size / 1e6:.1f} MB "
                  f"(zipped in {time.perf_counter() - t0:.1f} s)")
    for label, seconds in startup(exe, args.repeats).items():
        print(f"start-up {label}: {seconds * 1e3:.0f} ms (median of {args.repeats})")
    venv_cmd = [sys.executable, "-m", "app.main", "run"]
    print("\n| kind | frozen wall / CPU | frozen peak RSS | venv wall / CPU | venv peak RSS "
          "| CPU ratio frozen/venv |")
    print("|---|---|---|---|---|---|")
    calibration = []
    for kind in ("reproject-tile", "ttv-nested", "ttv-emcee"):
        wu = MAKERS[kind]()
        fw, frss, fcpu = run_kind(kind, [str(exe), "run"], wu)
        vw, vrss, vcpu = run_kind(kind, venv_cmd, wu)
        print(f"| {kind} | {fw:.2f} s / {fcpu:.2f} s | {frss:.0f} MB | {vw:.2f} s / {vcpu:.2f} s "
              f"| {vrss:.0f} MB | {fcpu / vcpu:.2f} |")
        calibration.append((kind, predict(wu), fcpu, frss))
    print("\n| kind | cost model CPU s | measured frozen CPU s | ratio | model peak RSS | measured peak RSS |")
    print("|---|---|---|---|---|---|")
    for kind, est, cpu, rss in calibration:
        print(f"| {kind} | {est.seconds_ref:.2f} | {cpu:.2f} | {est.seconds_ref / cpu:.2f} "
              f"| {est.memory_bytes / 1e6:.0f} MB | {rss:.0f} MB |")
    if args.costmodel:
        measure_costmodel(exe)
    print(json.dumps({"bundle_bytes": size, "files": nfiles}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
