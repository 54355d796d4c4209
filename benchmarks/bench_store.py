"""Object-store throughput (local directory vs an S3-compatible server) and RICE compression of raw frames.

Run: ``python -m benchmarks.bench_store [--frames 100] [--side 512] [--rice-side 2048] [--rice-frames 4]``
from the repository root (the S3 server is moto_server, started by scripts/s3-test-server.sh on 127.0.0.1).

Cases:
  * store: ``put_file`` of ``frames`` uint16 FITS frames (``side`` x ``side``), then reading each back
    (local: ``open().read()``; S3: ``path()`` into an empty cache = download + SHA-256 check), for the local store
    and the S3 store; prints MB/s and the S3/local time ratio measured in the same run;
  * RICE: ``rice_compress`` (RICE_1 tiles + the exact-restore check) on synthetic 16-bit sky frames
    (``rice-side`` x ``rice-side``, Poisson sky of 1000 e- at gain 1 plus 5 ADU read noise and stars) beside gzip
    level 6 (zlib) of the same bytes as the anchor: compression ratio and MB/s of each.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import secrets  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402

from server.core.storage import LocalObjectStore  # noqa: E402
from server.core.storage_s3 import S3ObjectStore, make_client  # noqa: E402
from server.ingest.compress import original_bytes, rice_compress  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BENCH_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def sky_frame(rng: np.random.Generator, side: int) -> np.ndarray:
    sky = rng.poisson(1000.0, (side, side)).astype(np.float64) + rng.normal(0.0, 5.0, (side, side))
    for _ in range(side // 16):
        y, x = rng.integers(4, side - 4, 2)
        sky[y - 2:y + 3, x - 2:x + 3] += rng.uniform(500, 20000) * np.exp(-np.add.outer(
            np.arange(-2, 3) ** 2, np.arange(-2, 3) ** 2) / 2.0)
    return np.clip(sky, 0, 65535).astype(np.uint16)


def write_frames(directory: Path, n: int, side: int, seed: int = 2026) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        header = fits.Header({"DATE-OBS": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}", "EXPTIME": 60.0})
        path = directory / f"frame{i:03d}.fits"
        fits.PrimaryHDU(sky_frame(rng, side), header).writeto(path)
        paths.append(path)
    return paths


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "s3-test-server.sh"), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
            return proc, endpoint
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the S3 server did not start")


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_stores(work: Path, frames: int, side: int) -> None:
    (work / "frames").mkdir()
    paths = write_frames(work / "frames", frames, side)
    total_mb = sum(p.stat().st_size for p in paths) / 1e6
    print(f"store: {frames} frames of {side}x{side} uint16 ({total_mb / frames:.2f} MB each, {total_mb:.1f} MB)")
    os.environ.update(BENCH_CREDENTIALS)
    proc, endpoint = start_server()
    try:
        bucket = f"bench-{secrets.token_hex(4)}"
        make_client(endpoint, "us-east-1", 3).create_bucket(Bucket=bucket)
        local = LocalObjectStore(work / "local")
        s3 = S3ObjectStore(f"s3://{bucket}/bench", cache_dir=work / "s3-cache", endpoint_url=endpoint)
        results = {}
        for name, store in (("local", local), ("s3", s3)):
            keys: list[str] = []
            put = timed(lambda: keys.extend(store.put_file(p).key for p in paths))

            def read_all(store=store, keys=keys):
                for key in keys:
                    with store.open(key) as fh:
                        fh.read()

            get = timed(read_all)
            results[name] = (put, get)
            print(f"  {name:<6} put {put:6.2f} s ({total_mb / put:7.1f} MB/s, {frames / put:6.1f} frames/s)   "
                  f"read {get:6.2f} s ({total_mb / get:7.1f} MB/s)")
        (lp, lg), (sp, sg) = results["local"], results["s3"]
        print(f"  ratio s3/local: put {sp / lp:.1f}x, read {sg / lg:.1f}x "
              f"(S3 read = download into an empty cache + SHA-256 check)")
    finally:
        proc.terminate()
        proc.wait()


def bench_rice(work: Path, frames: int, side: int) -> None:
    (work / "rice").mkdir()
    paths = write_frames(work / "rice", frames, side, seed=7)
    raw_total = packed_total = gz_total = 0
    t_rice = t_gzip = t_restore = 0.0
    for p in paths:
        raw = p.read_bytes()
        raw_total += len(raw)
        t0 = time.perf_counter()
        result = rice_compress(p, p.with_suffix(".fz"))
        t_rice += time.perf_counter() - t0
        assert result.path is not None, result.reason
        packed_total += result.compressed_size
        t_restore += timed(lambda: original_bytes(result.path))
        t0 = time.perf_counter()
        gz_total += len(zlib.compress(raw, 6))
        t_gzip += time.perf_counter() - t0
    mb = raw_total / 1e6
    print(f"RICE: {frames} synthetic 16-bit sky frames of {side}x{side} ({mb / frames:.1f} MB each)")
    print(f"  RICE_1  ratio {raw_total / packed_total:5.2f}x  compress+verify {mb / t_rice:6.1f} MB/s  "
          f"({t_rice / frames:.2f} s/frame); restore original {mb / t_restore:6.1f} MB/s")
    print(f"  gzip -6 ratio {raw_total / gz_total:5.2f}x  compress        {mb / t_gzip:6.1f} MB/s  "
          f"({t_gzip / frames:.2f} s/frame)")
    print(f"  RICE vs gzip: {gz_total / packed_total:.2f}x smaller, {t_gzip / t_rice:.2f}x the speed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--rice-frames", type=int, default=4)
    parser.add_argument("--rice-side", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        bench_stores(Path(tmp), args.frames, args.side)
        bench_rice(Path(tmp), args.rice_frames, args.rice_side)


if __name__ == "__main__":
    main()
