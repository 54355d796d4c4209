"""Task throughput through Redis vs in-process, and upload-to-photometry latency.

Run: ``python -m benchmarks.bench_queue [--noops N] [--files N] [--uploads N]`` from the repository root
(needs ``redis-server``; a private one is started with scripts/redis_test_server.sh and stopped at the end).

Cases, each on a fresh SQLite database and object store:
  * no-op tasks: N ``noop`` tasks run in-process (embedded mode, Celery eager) vs sent to Redis and run by one
    ``pipeline_fast`` worker process (from the first send until the queue is empty and nothing runs);
  * ingest: N small FITS frames through the ``ingest`` task, in-process vs through Redis and one worker (reactive
    pipeline off, so only the ingest is timed);
  * latency: one synthetic 384x384 frame from ``ingest_path`` (what the upload API calls) to its target's
    photometry stored and on to the target's light curve (science chain), embedded (in the ingesting process) vs
    through Redis with a ``pipeline_fast`` and a ``science_inference`` worker waiting;
  * ``--uploads N`` (default 50): N such frames uploaded while a long task holds the ``mcmc`` worker, wall time
    until all are calibrated by a 2-process ``pipeline_fast`` worker (the issue's scenario, too slow for the tests).
Prints tasks/s and the ratio of Redis to in-process measured in the same run.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.bench_ingest import make_frames  # noqa: E402
from server.core.context import OpenAstro  # noqa: E402
from server.core.settings import load_settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


class Services:
    """A private Redis and worker processes, all stopped by PID at the end."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        out = subprocess.run([str(ROOT / "scripts" / "redis_test_server.sh"), str(tmp / "redis")], check=True,
                             capture_output=True, text=True).stdout.split()
        self.url, self.redis_pid = f"redis://127.0.0.1:{out[0]}/0", int(out[1])
        self.workers: list[tuple[subprocess.Popen, object]] = []

    def worker(self, queue: str, values: dict, concurrency: int = 1) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENASTRO_")}
        env.update({"OPENASTRO_" + k.upper(): str(v) for k, v in values.items()})
        log_path = self.tmp / f"worker-{queue}-{len(self.workers)}.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen([sys.executable, "-m", "server.cli", "worker", "--queues", queue, "--concurrency",
                                 str(concurrency), "--loglevel", "INFO"], env=env, cwd=str(ROOT), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.workers.append((proc, log))
        deadline = time.monotonic() + 60
        while b" ready." not in log_path.read_bytes():  # celery's "celery@host ready." line
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"worker for {queue} did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop_workers(self) -> None:
        for proc, log in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            log.close()
        self.workers = []

    def close(self) -> None:
        self.stop_workers()
        os.kill(self.redis_pid, signal.SIGTERM)


def _app(var: Path, **values) -> OpenAstro:
    """The benchmark's own process, set up as the CLI does: queue configured, reactive pipeline by its setting."""
    from server.queue.celery_app import configure
    from server.queue.reactive import attach, reactive_enabled

    app = OpenAstro(load_settings(env={}, overrides={"var_dir": str(var), "progress": False, **values}))
    app.db.upgrade()
    configure(app)
    if reactive_enabled(app.settings):
        attach(app)
    return app


def _drained(app, queue: str) -> bool:
    from server.queue.ops import queue_status

    (s,) = queue_status(app.settings, [queue])
    return s.pending == 0 and s.running == 0


def _wait(predicate, timeout=600.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not finish")
        time.sleep(interval)


def bench_noop(tmp: Path, services: Services, n: int) -> dict:
    from server.queue.tasks import send

    app = _app(tmp / "noop-embedded")
    t0 = time.perf_counter()
    for _ in range(n):
        send("noop")
    embedded = time.perf_counter() - t0
    values = {"var_dir": str(tmp / "noop-redis"), "broker_url": services.url, "reactive": "off"}
    app = _app(tmp / "noop-redis", broker_url=services.url, reactive="off")
    services.worker("pipeline_fast", values)
    t0 = time.perf_counter()
    for _ in range(n):
        send("noop")
    _wait(lambda: _drained(app, "pipeline_fast"))
    redis_s = time.perf_counter() - t0
    services.stop_workers()
    return {"case": f"{n} no-op tasks", "in_process_per_s": n / embedded, "redis_per_s": n / redis_s,
            "redis_over_in_process_time": redis_s / embedded}


def bench_ingest(tmp: Path, services: Services, n: int) -> dict:
    from server.queue.tasks import send

    frames = make_frames(Path(tempfile.mkdtemp(dir=tmp)), n, 256, False)
    _app(tmp / "ingest-embedded", reactive="off")
    t0 = time.perf_counter()
    for p in frames:
        send("ingest", str(p))
    embedded = time.perf_counter() - t0
    values = {"var_dir": str(tmp / "ingest-redis"), "broker_url": services.url, "reactive": "off"}
    app = _app(tmp / "ingest-redis", broker_url=services.url, reactive="off")
    services.worker("pipeline_fast", values)
    t0 = time.perf_counter()
    for p in frames:
        send("ingest", str(p))
    _wait(lambda: _drained(app, "pipeline_fast"))
    redis_s = time.perf_counter() - t0
    services.stop_workers()
    return {"case": f"ingest of {n} 256x256 FITS frames", "in_process_per_s": n / embedded,
            "redis_per_s": n / redis_s, "redis_over_in_process_time": redis_s / embedded}


def _spec():
    from server.synth import FrameSpec

    return FrameSpec(83.8, -5.4, (384, 384), 14.0, rotation_deg=30, zero_point=18.5, color_term=0.10, exptime_s=2.0,
                     fill_from_mag=None, mag_limit=11.0, instrument="DemoCam")


def _synthetic_frames(directory: Path, n: int, seed0: int) -> list[Path]:
    from server.image.catalogs import default_offline_catalog
    from server.synth import render_frame, write_frame

    spec = _spec()
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        path = directory / f"frame_{seed0 + k}.fits"
        write_frame(render_frame(spec, np.random.default_rng(seed0 + k), default_offline_catalog()), path,
                    strip_wcs=True)
        paths.append(path)
    return paths


def _calibrated(app, ids) -> bool:
    from sqlalchemy import func, select

    from server.core.db.models import Observation

    with app.db.session() as s:
        return s.scalar(select(func.count()).select_from(Observation).where(
            Observation.id.in_(ids), Observation.status == "calibrated")) == len(ids)


def _bench_star(app) -> str:
    """Create the target "Bench star": an isolated, unsaturated V~9 star with a catalog colour inside the
    benchmark's frames (all frames share the pointing), so that calibration stores its photometry."""
    from server.core.db.models import Target
    from server.image.catalogs import default_offline_catalog
    from server.synth import render_frame

    spec = _spec()
    t = render_frame(spec, np.random.default_rng(0), default_offline_catalog()).truth
    ny, nx = spec.shape
    ok = (t["x"] > 40) & (t["x"] < nx - 40) & (t["y"] > 40) & (t["y"] < ny - 40) & ~t["saturated"] \
        & ~t["color_synthetic"]
    for i in np.argsort(np.abs(t["mag"].to_numpy() - 9.0)):
        d = np.hypot(t["x"] - t["x"].iloc[i], t["y"] - t["y"].iloc[i])
        if ok.iloc[i] and not np.any((d > 0) & (d < 12) & (t["mag"] < t["mag"].iloc[i] + 4)):
            with app.db.session() as s:
                s.add(Target(name="Bench star", ra_deg=float(t["ra"].iloc[i]), dec_deg=float(t["dec"].iloc[i])))
            return "Bench star"
    raise RuntimeError("no isolated V~9 star in the benchmark field")


def _has_photometry(app, oid: int) -> bool:
    from sqlalchemy import select

    from server.core.db.models import PhotometryPoint

    with app.db.session() as s:
        return s.scalar(select(PhotometryPoint.id).where(PhotometryPoint.observation_id == oid).limit(1)) is not None


def _light_curves(app, n_input: int) -> bool:
    from sqlalchemy import select

    from server.core.db.models import LightCurve

    with app.db.session() as s:
        return any((lc.meta or {}).get("n_input") == n_input for lc in s.scalars(select(LightCurve)))


def bench_latency(tmp: Path, services: Services) -> dict:
    """One frame from ``ingest_path`` (what the upload API calls) to its photometry stored, and on to the target's
    light curve stored by the science chain. Embedded, both happen inside the ingest call."""
    from server.ingest.service import IngestOptions, ingest_path

    a, b = _synthetic_frames(tmp / "latency", 2, 900)
    app = _app(tmp / "latency-embedded", reactive="on")
    target = _bench_star(app)
    ingest_path(app, _synthetic_frames(tmp / "warm", 1, 1)[0], IngestOptions(target=target))  # warm caches
    t0 = time.perf_counter()
    oid = ingest_path(app, a, IngestOptions(target=target)).observation_id
    embedded = time.perf_counter() - t0
    assert _has_photometry(app, oid) and _light_curves(app, 2)
    values = {"var_dir": str(tmp / "latency-redis"), "broker_url": services.url}
    app = _app(tmp / "latency-redis", broker_url=services.url)
    _bench_star(app)
    services.worker("pipeline_fast", values)
    services.worker("science_inference", values)
    ingest_path(app, _synthetic_frames(tmp / "warm-redis", 1, 2)[0], IngestOptions(target=target))
    _wait(lambda: _light_curves(app, 1))  # the workers have loaded the catalog, the solver's indexes, astropy
    _wait(lambda: _drained(app, "science_inference"))
    t0 = time.perf_counter()
    oid = ingest_path(app, b, IngestOptions(target=target)).observation_id
    upload_s = time.perf_counter() - t0
    _wait(lambda: _has_photometry(app, oid))
    photometry_s = time.perf_counter() - t0
    _wait(lambda: _light_curves(app, 2))
    lightcurve_s = time.perf_counter() - t0
    services.stop_workers()
    return {"case": "one 384x384 frame, upload to stored photometry (and light curve)",
            "in_process_s": embedded, "redis_photometry_s": photometry_s, "redis_lightcurve_s": lightcurve_s,
            "redis_upload_returns_s": upload_s, "redis_over_in_process_time": lightcurve_s / embedded}


def bench_uploads_beside_mcmc(tmp: Path, services: Services, n: int) -> dict:
    from server.ingest.service import IngestOptions, ingest_path
    from server.queue.tasks import send

    frames = _synthetic_frames(tmp / "uploads", n, 2000)
    values = {"var_dir": str(tmp / "uploads-redis"), "broker_url": services.url}
    app = _app(tmp / "uploads-redis", broker_url=services.url)
    services.worker("mcmc", values)
    services.worker("pipeline_fast", values, concurrency=2)
    send("hold", 3600)
    t0 = time.perf_counter()
    ids = [ingest_path(app, p, IngestOptions(target="Orion field")).observation_id for p in frames]
    _wait(lambda: _calibrated(app, ids), timeout=3000, interval=0.5)
    wall = time.perf_counter() - t0
    from server.queue.ops import queue_status

    (mcmc,) = queue_status(app.settings, ["mcmc"])
    services.stop_workers()
    return {"case": f"{n} uploads solved+calibrated while mcmc is busy", "wall_s": wall, "frames_per_s": n / wall,
            "mcmc_task_still_running": mcmc.running == 1}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noops", type=int, default=500)
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--uploads", type=int, default=50, help="0 skips the uploads-beside-mcmc case")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        services = Services(tmp)
        try:
            rows = [bench_noop(tmp, services, args.noops), bench_ingest(tmp, services, args.files),
                    bench_latency(tmp, services)]
            if args.uploads:
                rows.append(bench_uploads_beside_mcmc(tmp, services, args.uploads))
        finally:
            services.close()
    for row in rows:
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
