"""Run the benchmarks: `python -m benchmarks` lists them, `python -m benchmarks NAME... | all` runs them.

Each benchmark runs our code beside its anchor on the same data in the same run and prints the ratio; absolute
times on a shared 2-core machine are noisy, ratios are what to compare. `all` uses each one's default sizes
(the 4k reprojection and co-add runs take minutes; bench_app needs a frozen build: --app DIST).

Not a speed benchmark, so not in the list: ``python -m benchmarks.ttv_coverage`` measures how often the
TTV posteriors' 68% / 95% intervals hold the truth over independent noise realisations (tens of minutes), and
``python -m benchmarks.bench_ttv_wide`` runs issue 22's wide-prior Kepler-88-like inference at full size (134
transits, b's elements free; tens of minutes per sampler seed).
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "ttv": "likelihood calls/s vs plain ttvfast; local TTV campaign wall time",
    "lombscargle": "periodogram, bootstrap FAP and batch vs astropy LombScargle",
    "multiband": "multi-band vs single-band RR Lyrae period recovery (fractions within 0.1%)",
    "solve": "plate-solve time per frame; sep vs photutils extraction",
    "reproject": "4k reprojection vs reproject_interp and SWarp (time, peak memory)",
    "coadd": "co-addition of N 4k frames vs chunked astropy sigma_clip",
    "ingest": "ingest throughput vs a plain file copy",
    "store": "object store put/read, local vs an S3 server (100 frames); RICE ratio and speed vs gzip",
    "boinc": "work units generated per second; assimilation time per 100 results",
    "queue": "tasks/s through Redis vs in-process (no-op, ingest); upload-to-photometry latency",
    "classify": "real/bogus scores of 100 candidates (numpy braai vs a direct-loop forward pass); held-out ROC AUC",
    "portal": "light-curve API latency, 100k points, table of 100k vs 1M photometry rows (MariaDB or SQLite)",
    "app": "frozen app size, start-up time, peak memory per task kind (needs --app)",
    "transients": "4k ZOGY vs plain numpy ZOGY; injection completeness curve; 100-candidate classification",
    "boinc_real": "real BOINC server: WU and campaign round trips, create_work --stdin WUs/s (needs --app, root)",
}


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        for name, what in BENCHMARKS.items():
            print(f"  {name:<12} python -m benchmarks.bench_{name}   {what}")
        return 0
    names = list(BENCHMARKS) if argv == ["all"] else argv
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    for name in names:
        if name == "app":
            print("== app: run `python -m benchmarks.bench_app --app DIST/openastro_app --zip` on a build")
            continue
        if name == "boinc_real":
            print("== boinc_real: run `python -m benchmarks.bench_boinc_real --app DIST/openastro_app` as root")
            continue
        print(f"== {name}: {BENCHMARKS[name]}", flush=True)
        module = importlib.import_module(f"benchmarks.bench_{name}")
        sys.argv = [f"bench_{name}"]
        module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
