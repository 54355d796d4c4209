"""Ingest throughput beside a plain file copy of the same files.

Run: ``python -m benchmarks.bench_ingest [--files N] [--side PX] [--rows N]`` from the repository root.

Cases, each on a fresh SQLite database and object store in a temporary directory:
  * FITS frames (uint16, ``side`` x ``side``, N.I.N.A.-style headers): ``ingest_path`` per file (hash, structure
    and metadata checks, store with fsync, one transaction) vs ``shutil.copyfile`` (the floor) and copy + fsync
    (what a durable store has to do at least);
  * the same frames RICE-compressed (``.fits.fz``), where ingest also decompresses once to check the tiles;
  * re-ingesting the plain frames (every file a duplicate: hash + one query);
  * one AAVSO Extended report of ``rows`` observations (parse, validate, insert the points).
Prints files/s and MB/s and the ratio of ingest time to copy time measured in the same run.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402

from server.core.context import OpenAstro  # noqa: E402
from server.ingest.service import ingest_path  # noqa: E402
from server.core.settings import load_settings  # noqa: E402


def make_frames(directory: Path, n: int, side: int, compressed: bool) -> list[Path]:
    rng = np.random.default_rng(12345)
    paths = []
    for i in range(n):
        data = rng.poisson(1200.0, (side, side)).astype(np.uint16)
        h = fits.Header()
        h["DATE-OBS"] = f"2024-03-05T21:{i // 60 % 60:02d}:{i % 60:02d}.000"
        h["EXPOSURE"], h["FILTER"], h["INSTRUME"], h["OBJECT"] = 60.0, "V", "Bench Cam", "Bench Field"
        h["XBINNING"], h["YBINNING"], h["EGAIN"] = 1, 1, 1.0
        if compressed:
            path = directory / f"frame{i:03d}.fits.fz"
            fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, h, compression_type="RICE_1")]).writeto(path)
        else:
            path = directory / f"frame{i:03d}.fits"
            fits.PrimaryHDU(data, h).writeto(path)
        paths.append(path)
    return paths


def make_report(path: Path, rows: int) -> Path:
    lines = ["#TYPE=Extended", "#OBSCODE=BNCH", "#SOFTWARE=bench", "#DELIM=,", "#DATE=JD", "#OBSTYPE=CCD"]
    rng = np.random.default_rng(7)
    for i in range(rows):
        lines.append(f"BENCH VAR,{2459000.0 + i * 0.01:.5f},{11 + rng.normal(0, 0.1):.3f},0.010,V,NO,STD,"
                     "na,na,na,na,na,na,na,na")
    path.write_text("\n".join(lines) + "\n")
    return path


def fresh_app(root: Path, name: str) -> OpenAstro:
    app = OpenAstro(load_settings(env={}, overrides={"var_dir": str(root / name), "progress": False}))
    app.db.upgrade()
    return app


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def copy_all(paths: list[Path], dest: Path, fsync: bool) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for p in paths:
        target = dest / p.name
        shutil.copyfile(p, target)
        if fsync:
            fd = os.open(target, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def report(label: str, n: int, nbytes: int, seconds: float, reference: float | None = None) -> None:
    ratio = "" if reference is None else f"   x{seconds / reference:6.2f} of plain copy"
    print(f"  {label:<34} {seconds:8.3f} s  {n / seconds:8.1f} files/s  {nbytes / seconds / 1e6:8.1f} MB/s{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--rows", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        (root / "plain").mkdir()
        (root / "fz").mkdir()
        plain = make_frames(root / "plain", args.files, args.side, compressed=False)
        packed = make_frames(root / "fz", args.files, args.side, compressed=True)
        plain_bytes = sum(p.stat().st_size for p in plain)
        packed_bytes = sum(p.stat().st_size for p in packed)
        print(f"{args.files} frames of {args.side}x{args.side} uint16: {plain_bytes / 1e6:.1f} MB plain, "
              f"{packed_bytes / 1e6:.1f} MB RICE-compressed")

        t_copy = timed(lambda: copy_all(plain, root / "copy", fsync=False))
        t_copy_sync = timed(lambda: copy_all(plain, root / "copy-sync", fsync=True))
        app = fresh_app(root, "var-plain")
        t_ingest = timed(lambda: [ingest_path(app, p) for p in plain])
        t_dup = timed(lambda: [ingest_path(app, p) for p in plain])
        t_copy_fz = timed(lambda: copy_all(packed, root / "copy-fz", fsync=False))
        app_fz = fresh_app(root, "var-fz")
        t_ingest_fz = timed(lambda: [ingest_path(app_fz, p) for p in packed])

        print("plain FITS")
        report("plain copy (shutil.copyfile)", len(plain), plain_bytes, t_copy)
        report("copy + fsync", len(plain), plain_bytes, t_copy_sync, t_copy)
        report("ingest_path (new files)", len(plain), plain_bytes, t_ingest, t_copy)
        report("ingest_path (all duplicates)", len(plain), plain_bytes, t_dup, t_copy)
        print(f"  ingest / (copy + fsync): x{t_ingest / t_copy_sync:.2f}")
        print("RICE-compressed .fits.fz (ingest decompresses each frame once to check it)")
        report("plain copy (shutil.copyfile)", len(packed), packed_bytes, t_copy_fz)
        report("ingest_path (new files)", len(packed), packed_bytes, t_ingest_fz, t_copy_fz)

        table = make_report(root / "report.txt", args.rows)
        app_t = fresh_app(root, "var-table")
        t0 = time.perf_counter()
        result = ingest_path(app_t, table)
        t_table = time.perf_counter() - t0
        print(f"AAVSO Extended report, {args.rows} rows ({table.stat().st_size / 1e6:.2f} MB)")
        print(f"  ingest_path: {t_table:.3f} s, {result.n_rows / t_table:,.0f} rows/s "
              f"({result.n_rows} points written, {len(result.row_errors)} bad rows)")


if __name__ == "__main__":
    main()
