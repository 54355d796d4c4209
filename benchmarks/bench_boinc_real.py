"""Through a real BOINC server (scripts/boinc-test-server.sh): round trips and work-unit generation rate.

    python -m benchmarks.bench_boinc_real --app DIST/openastro_app [--wus 2000] [--skip-roundtrip]

* round trip of one small work unit: a 1-bin, quorum-1 TTV campaign (nlive 30) from ``create_campaign`` to
  ``done`` (work-generator daemon pass, create_work, feeder, client RPC, download, run, upload, validator,
  assimilator). The generator daemon's pass interval (10 s) and the client's RPC delays are part of it.
* round trip of a campaign: 2 bins, quorum 2, dynesty nlive 30 (what tests/test_boinc_real.py runs).
* generation rate: ``--wus`` jobs created with one ``bin/create_work --stdin`` call into the real BOINC
  database (one staged input each), timed alone: work units per second (target >= 500). The client is told
  `nomorework` meanwhile and the jobs are cancelled afterwards (``bin/cancel_jobs MIN MAX``). Measured last:
  the cancelled jobs queue up at the assimilator (one ``--error 16`` process each), delaying later work.
Starts the server if it is not running (and stops it at the end only then).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def _roundtrip(server, config: dict, label: str, timeout: float = 900) -> float:
    from server.boinc.campaigns import campaign_status, create_campaign

    app = server.app()
    t0 = time.perf_counter()
    cid = create_campaign(app, None, "ttv", config, executor="boinc", seed=7)
    server.wait(lambda: campaign_status(app, cid).status in ("done", "failed"), timeout, f"{label} to finish")
    elapsed = time.perf_counter() - t0
    status = campaign_status(app, cid)
    print(f"{label:<44} {elapsed:7.1f} s   ({status.status}, {status.counts})", flush=True)
    return elapsed


def _generation_rate(server, n: int) -> float:
    from server.core.boinc_contract import templates_for

    project = server.project()
    staged = "oa_bench_input_v1.json"
    project.stage_bytes(staged, b'{"bench": true}\n')
    os.chmod(project.download_path(staged), 0o644)
    t = templates_for("ttv-nested", 1)
    run_id = int(time.time())
    stdin = "".join(f"--wu_name oa_bench_{run_id}_{i} {staged}\n" for i in range(n))
    argv = ["bin/create_work", "--appname", "openastro_app", "--wu_template", f"templates/{t.input_template}",
            "--result_template", f"templates/{t.output_template}", "--stdin"]
    server.boinccmd("--project", server.env["BOINC_URL"], "nomorework", check=False)
    try:
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=project.root, input=stdin, capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"create_work failed: {proc.stderr[-2000:]}")
        (lo, hi), = server.boinc_sql("SELECT MIN(id), MAX(id) FROM workunit WHERE name LIKE :p",
                                     p=f"oa_bench_{run_id}_%")
        count = hi - lo + 1
        subprocess.run([str(project.root / "bin" / "cancel_jobs"), str(lo), str(hi)], cwd=project.root,
                       capture_output=True, check=True)
    finally:
        server.boinccmd("--project", server.env["BOINC_URL"], "allowmorework", check=False)
    rate = count / elapsed
    print(f"{'create_work --stdin into the real BOINC DB':<44} {count} WUs in {elapsed:.2f} s = {rate:.0f} WUs/s "
          f"(target >= 500)", flush=True)
    return rate


def main() -> None:
    from boinc_real import BoincServer, missing_requirements
    from test_local_executor import small_ttv_campaign_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", required=True, help="the frozen app's onedir bundle (dist/openastro_app)")
    parser.add_argument("--wus", type=int, default=2000)
    parser.add_argument("--skip-roundtrip", action="store_true")
    args = parser.parse_args()
    missing = missing_requirements()
    if missing:
        raise SystemExit("the real BOINC server cannot run here: missing " + ", ".join(missing))
    server = BoincServer.start(Path(args.app).absolute())
    try:
        if not args.skip_roundtrip:
            one = small_ttv_campaign_config()
            one["bins"], one["replicas"] = one["bins"][:1], 1
            _roundtrip(server, one, "one small WU (1 bin, quorum 1, nlive 30)")
            _roundtrip(server, small_ttv_campaign_config(), "campaign (2 bins, quorum 2, nlive 30)")
        # last: BOINC then hands every cancelled bench job to the assimilator (--error 16), one process each
        _generation_rate(server, args.wus)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
