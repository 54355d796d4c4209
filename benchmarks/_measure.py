"""Run one benchmark worker in a fresh process and report its wall time and peak memory.

Usage (from the benchmark scripts): ``run_measured(argv)`` spawns
``python -m benchmarks._measure argv...``, which runs ``argv`` as *its* child and prints that
child's ``ru_maxrss`` (``resource.RUSAGE_CHILDREN``), so one measurement never includes another.
The worker may print one JSON object on its last stdout line (e.g. its own inner timings).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1"}


def run_measured(argv: list[str], *, cwd=None) -> dict:
    env = {**os.environ, **THREAD_ENV}
    proc = subprocess.run([sys.executable, "-m", "benchmarks._measure", *argv], capture_output=True, text=True,
                          env=env, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {argv} failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    outer = json.loads(lines[-1])
    inner = json.loads(lines[-2]) if len(lines) >= 2 else {}
    return {**inner, **outer}


def main() -> int:
    argv = sys.argv[1:]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        return proc.returncode
    for line in proc.stdout.strip().splitlines():
        if line.startswith("{"):
            print(line)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"wall_s": wall, "peak_mb": peak_kb / 1024.0}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
