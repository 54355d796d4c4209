"""Co-addition: ours (server.image.coadd, streaming) vs chunked astropy sigma_clip, same frames on disk.

    python -m benchmarks.bench_coadd [--n 20] [--size 4096] [--chunk-rows 32] [--repeats 1]

N float32 frames (+ one weight map each) are written to a temporary directory: Gaussian noise
with a different level per frame, 0.1 % cosmic-ray-like outliers, a NaN stripe. Writing them is
not timed (they are then usually in the page cache for both methods). Both methods read the same
files row-chunk by row-chunk, clip 3 sigma for 3 rounds around the median with a MAD scale, and
write an SNR^2-weighted mean, 1/sqrt(sum w) and a coverage map as FITS.

What is measured, each method in its own fresh process with 1 thread:
* ``compute``: wall time of the whole co-addition call inside the worker - opening the 2N
  files, reading, clipping, combining and writing the three output images (ours also fsyncs
  them) - i.e. everything except the interpreter start-up and imports;
* ``wall``: the worker process from start to exit, including start-up and imports;
* ``peak``: the worker's peak resident memory (ru_maxrss).
With ``--repeats R`` the two methods run alternately R times each (ours, astropy, ours, ...), each pair
gives one ratio, and the summary is the median of the pair ratios: on a shared VM sequential timings
drift by +-25 %, and alternating pairs cancel most of it. The ratio line compares the two in the
same run. Issue #7's goal: ours in under half the
chunked-astropy time (ratio >= 2) with peak memory under 1 GB at N = 100 on 4k frames. The
anchor (shared/anchors.md) measured chunked astropy at N=100, 4k on an idle machine: 44.9 s,
494 MB; on a shared machine compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._measure import run_measured


def _header(size):
    from astropy.io import fits

    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 150.0, 30.0
    h["CRPIX1"] = h["CRPIX2"] = size / 2 + 0.5
    h["CD1_1"], h["CD2_2"] = -2.0 / 3600, 2.0 / 3600
    h["CD1_2"] = h["CD2_1"] = 0.0
    return h


def make_frames(tmp: Path, n: int, size: int):
    from astropy.io import fits

    rng = np.random.default_rng(3)
    hdr = _header(size)
    paths, wpaths = [], []
    for i in range(n):
        sigma = rng.uniform(1.0, 3.0)
        d = rng.standard_normal((size, size), dtype=np.float32)
        d *= np.float32(sigma)
        k = max(1, size * size // 1000)
        d.ravel()[rng.integers(0, size * size, k)] += np.float32(50 * sigma)
        d[:, (i * 37) % size] = np.nan
        w = np.full((size, size), 1.0 / sigma**2, np.float32)
        p, wp = tmp / f"f{i:04d}.fits", tmp / f"w{i:04d}.fits"
        fits.PrimaryHDU(d, header=hdr).writeto(p)
        fits.PrimaryHDU(w, header=hdr).writeto(wp)
        paths.append(str(p))
        wpaths.append(str(wp))
    return paths, wpaths


def worker_ours(listfile: str, out: str) -> None:
    from server.image.coadd import co_add

    paths, wpaths = json.loads(Path(listfile).read_text())
    t0 = time.perf_counter()
    res = co_add(paths, wpaths, out_dir=out)
    print(json.dumps({"compute_s": time.perf_counter() - t0, "chunk_rows": res["chunk_rows"],
                      "working_mb": res["working_bytes"] / 2**20, "n_rejected": res["n_rejected"]}))


def worker_astropy(listfile: str, out: str, chunk_rows: int) -> None:
    from astropy.io import fits
    from astropy.stats import sigma_clip

    paths, wpaths = json.loads(Path(listfile).read_text())
    t0 = time.perf_counter()
    hd = [fits.open(p, memmap=False, lazy_load_hdus=True) for p in paths]
    hw = [fits.open(p, memmap=False, lazy_load_hdus=True) for p in wpaths]
    ny, nx = hd[0][0].shape
    stack = np.empty((ny, nx), np.float32)
    unc = np.empty((ny, nx), np.float32)
    cov = np.empty((ny, nx), np.int16)
    for r0 in range(0, ny, chunk_rows):
        r1 = min(ny, r0 + chunk_rows)
        d = np.stack([h[0].section[r0:r1] for h in hd]).astype(np.float32)
        w = np.stack([h[0].section[r0:r1] for h in hw]).astype(np.float32)
        bad = ~np.isfinite(d) | (w <= 0)
        c = sigma_clip(np.ma.array(d, mask=bad), sigma=3.0, maxiters=3, cenfunc="median", stdfunc="mad_std", axis=0)
        keep = ~np.ma.getmaskarray(c)
        wk = np.where(keep, w, 0).astype(np.float64)
        sw = wk.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            stack[r0:r1] = (wk * np.where(keep, d, 0)).sum(axis=0) / sw
            unc[r0:r1] = 1 / np.sqrt(sw)
        cov[r0:r1] = keep.sum(axis=0)
    for h in hd + hw:
        h.close()
    hdr = _header(nx)
    for name, arr in (("stack", stack), ("unc", unc), ("cov", cov)):
        fits.PrimaryHDU(arr, header=hdr).writeto(Path(out) / f"astropy_{name}.fits", overwrite=True)
    print(json.dumps({"compute_s": time.perf_counter() - t0}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--chunk-rows", type=int, default=32, help="astropy baseline chunk height (anchor: 32)")
    ap.add_argument("--skip-astropy", action="store_true")
    ap.add_argument("--repeats", type=int, default=1, help="alternating runs of each method (median pair ratio)")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        kind, listfile, out, *rest = args.worker
        if kind == "ours":
            worker_ours(listfile, out)
        else:
            worker_astropy(listfile, out, int(rest[0]))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_coadd_") as td:
        tmp = Path(td)
        t0 = time.perf_counter()
        paths, wpaths = make_frames(tmp, args.n, args.size)
        listfile = tmp / "list.json"
        listfile.write_text(json.dumps([paths, wpaths]))
        print(f"N={args.n} frames of {args.size}x{args.size} float32 (+ weight maps) written in "
              f"{time.perf_counter() - t0:.0f} s; 1 thread each")
        (tmp / "ours").mkdir()
        n_values = args.n * args.size**2
        ours_cmd = [sys.executable, "-m", "benchmarks.bench_coadd", "--worker", "ours", str(listfile), str(tmp / "ours")]
        ast_cmd = [sys.executable, "-m", "benchmarks.bench_coadd", "--worker", "astropy", str(listfile), str(tmp),
                   str(args.chunk_rows)]
        pairs = []
        for rep in range(max(1, args.repeats)):
            tag = f"[{rep + 1}/{args.repeats}] " if args.repeats > 1 else ""
            ours = run_measured(ours_cmd)
            print(f"{tag}ours (streaming, median/MAD)    compute {ours['compute_s']:7.2f} s  wall {ours['wall_s']:7.2f} s"
                  f"  peak {ours['peak_mb']:6.0f} MB  (chunk {ours['chunk_rows']} rows, plan {ours['working_mb']:.0f} "
                  f"MB; {ours['compute_s'] / n_values * 1e9:.1f} ns per input pixel)", flush=True)
            if args.skip_astropy:
                continue
            ast = run_measured(ast_cmd)
            print(f"{tag}astropy sigma_clip, {args.chunk_rows}-row chunks compute {ast['compute_s']:7.2f} s  wall "
                  f"{ast['wall_s']:7.2f} s  peak {ast['peak_mb']:6.0f} MB  ({ast['compute_s'] / n_values * 1e9:.1f} ns "
                  f"per input pixel)", flush=True)
            pairs.append((ours, ast))
        if args.skip_astropy:
            return 0
        ratios = [a["compute_s"] / o["compute_s"] for o, a in pairs]
        ratio = float(np.median(ratios))
        wall = float(np.median([a["wall_s"] / o["wall_s"] for o, a in pairs]))
        peak = max(o["peak_mb"] for o, _ in pairs)
        label = f"median of {len(pairs)} alternating pairs" if len(pairs) > 1 else ""
        print(f"ratio astropy/ours ({label or 'one pair'}): time {ratio:.2f}x (wall {wall:.2f}x), peak memory "
              f"{max(a['peak_mb'] for _, a in pairs) / peak:.2f}x" + (
                  f"; pair ratios {', '.join(f'{r:.2f}' for r in ratios)}" if len(pairs) > 1 else ""))
        print(f"issue #7 goal (time ratio >= 2, our peak < 1024 MB): "
              f"{'met' if ratio >= 2 and peak < 1024 else 'NOT met'} in this run")
        from astropy.io import fits

        a_cov = fits.getdata(tmp / "astropy_cov.fits")
        o_cov = fits.getdata(tmp / "ours" / "stack_cov.fits")
        print(f"coverage agreement with astropy: {np.mean(a_cov == o_cov) * 100:.3f} % of pixels identical "
              f"(rules differ: ours normalises residuals by each frame's noise and floors the scale)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
