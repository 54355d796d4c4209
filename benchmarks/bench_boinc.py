"""BOINC side benchmark: work units generated per second, and assimilation time per 100 results.

    python -m benchmarks.bench_boinc [--bins 40] [--frames 4] [--frame-size 1024] [--tile 256] [--results 100]

* generation: a TTV campaign (``--bins`` bins, the Kepler-88-like test system) and an image campaign
  (``--frames`` frames x tiles) are planned, written to the database and object store, staged and created
  with ``bin/create_work --stdin`` in a fake project (tests/fake_boinc_tools.py stand-ins: Python launches,
  like the real tools' own start-up). Printed: work units per second for each, and the time in create_work.
* assimilation: ``--results`` canonical results of a TTV campaign (10 bins; one real nested run's result
  file reused for every work unit) handed to the assimilator in-process, as ``dispatch`` sees them; the
  start-up of one ``openastro-assimilate`` process (what BOINC pays per result on top) is measured
  separately and added. Anchor: the time to copy the same result files into the object store alone
  (the minimum any assimilator must spend), measured in the same run; the ratio is printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def _app(tmp: Path):
    from server.core.context import OpenAstro
    from server.core.settings import load_settings

    app = OpenAstro(load_settings(env={}, overrides={"var_dir": str(tmp / "var"), "progress": False}))
    app.db.upgrade()
    return app


def _project(tmp: Path):
    from boinc_fakes import make_fake_project, run_tool
    from work_generator.boinc_project import BoincProject
    from work_generator.templates import write_templates

    root = make_fake_project(tmp / "project")
    write_templates(root / "templates")
    (root / "project.xml").write_text((REPO / "project.xml").read_text())
    run_tool(root, "xadd")
    return BoincProject(root)


def bench_generation(tmp: Path, bins: int, frames: int, size: int, tile: int) -> None:
    import numpy as np
    from astropy.io import fits

    from boinc_fakes import small_ttv_params
    from server.boinc.campaigns import create_campaign, create_stack_campaign
    from work_generator.generate import generate

    app, project = _app(tmp), _project(tmp)
    params = small_ttv_params()
    edges = np.linspace(22.0, 22.6, bins + 1)
    config = {"kind": "ttv", "likelihood": params["likelihood"], "perturber": "c", "sampler": params["sampler"],
              "replicas": 2, "bins": [{"index": i, "period_min": float(a), "period_max": float(b),
                                       "prior_mass": 1.0 / bins} for i, (a, b) in enumerate(zip(edges, edges[1:]))]}
    cid = create_campaign(app, "bench-ttv", "ttv", config, executor="boinc", seed=1)
    t0 = time.perf_counter()
    report = generate(app, cid, project=project)
    dt = time.perf_counter() - t0
    print(f"TTV campaign: {report.submitted} work units in {dt:.2f} s = {report.submitted / dt:.1f} WU/s "
          f"({len(report.calls)} create_work call(s); includes choosing dt per bin)")

    rng = np.random.default_rng(0)
    keys = []
    for i in range(frames):
        d = 2.0 / 3600
        header = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.0,
                  "CRPIX1": size / 2 + 3 * i, "CRPIX2": size / 2, "CD1_1": -d, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": d}
        path = tmp / f"frame{i}.fits"
        fits.PrimaryHDU(rng.normal(100, 5, (size, size)).astype(np.float32), header=fits.Header(header)).writeto(path)
        keys.append({"key": app.store.put_file(path).key})
    grid = dict(header, CRPIX1=size / 2, NAXIS=2, NAXIS1=size, NAXIS2=size)
    cid = create_stack_campaign(app, keys, grid, (size, size), executor="boinc", tile=tile, seed=2)
    t0 = time.perf_counter()
    report = generate(app, cid, project=project)
    dt = time.perf_counter() - t0
    print(f"image campaign: {frames} frames of {size}^2, tile {tile}: {report.submitted} work units in {dt:.2f} s "
          f"= {report.submitted / dt:.1f} WU/s (cutout FITS written, staged, created)")


def bench_assimilation(tmp: Path, n_results: int) -> None:
    from assimilator.main import dispatch
    from boinc_fakes import small_ttv_params, small_ttv_result_bytes, spec_for
    from server.core.boinc_contract import fanout_dir
    from server.boinc.campaigns import create_campaign
    from server.core.db.models import WorkUnit

    app = _app(tmp / "assim")
    data = small_ttv_result_bytes((1, 0, 0))
    params = small_ttv_params()
    n_bins = 10
    config = {"kind": "ttv", "likelihood": params["likelihood"], "perturber": "c", "sampler": params["sampler"],
              "replicas": 2, "bins": [{"index": b, "period_min": 22.2, "period_max": 22.4, "prior_mass": 0.1}
                                      for b in range(n_bins)]}
    cid = create_campaign(app, "bench-assim", "ttv", config, seed=3)
    upload = tmp / "upload"
    calls = []
    with app.db.session() as session:
        for i in range(n_results):
            name = f"oa_bench_b{i % n_bins:02d}_r{i // n_bins:03d}"
            wu = WorkUnit(campaign_id=cid, name=name, kind="ttv-nested", bin_index=i % n_bins, run_index=i // n_bins,
                          spec=spec_for(params, (1, 0, 0)), input_files={"quorum": 2}, state="sent")
            session.add(wu)
            session.flush()
            fname = f"{name}_0_r{1000 + i}_0"
            path = upload / fanout_dir(fname) / fname
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            calls.append([str(wu.id), str(path)])
    t0 = time.perf_counter()
    for args in calls:
        dispatch(app, args)
    ours = time.perf_counter() - t0
    store = _app(tmp / "anchor").store
    t0 = time.perf_counter()
    for _, path in calls:
        store.put_file(path)
    anchor = time.perf_counter() - t0
    env = dict(os.environ, OPENASTRO_VAR_DIR=str(tmp / "assim" / "var"))
    starts = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "openastro-assimilate"), "--error", "1", "none", "0", "0"],
                       env=env, capture_output=True)
        starts.append(time.perf_counter() - t0)
    start = min(starts)
    per100 = 100.0 / n_results
    print(f"assimilation of {n_results} ttv-nested results ({n_bins} bins; each call re-merges its bin, recombines bins): "
          f"{ours * per100:.1f} s per 100 in-process + {start:.2f} s process start-up each = "
          f"{(ours + start * n_results) * per100:.1f} s per 100 as BOINC calls it")
    print(f"anchor (copy into the object store only): {anchor * per100:.2f} s per 100; ratio in-process/anchor "
          f"{ours / max(anchor, 1e-9):.0f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bins", type=int, default=40)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--frame-size", type=int, default=1024)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--results", type=int, default=100)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-boinc-") as tmp:
        bench_generation(Path(tmp), args.bins, args.frames, args.frame_size, args.tile)
        bench_assimilation(Path(tmp), args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
