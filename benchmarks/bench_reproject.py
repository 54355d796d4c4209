"""Reprojection: ours (app.reproject_kernel) vs reproject_interp (fastest settings) vs SWarp.

    python -m benchmarks.bench_reproject [--size 4096] [--no-swarp]

One synthetic frame (stars + noise, TAN + SIP WCS, 2.1"/px, rotated 17 deg) onto a size x size
grid at 2.0"/px. Every method runs in its own fresh process (peak memory = that process's
``ru_maxrss``, measured by the parent); each prints its inner compute time, and the wall time
includes reading and writing FITS (SWarp's time always does). Ratios are printed against ours.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._measure import run_measured


def _headers(size: int):
    from astropy.io import fits

    def tan(scale, rot, ra, dec, sip):
        s = scale / 3600
        c, sn = np.cos(np.radians(rot)), np.sin(np.radians(rot))
        h = fits.Header()
        h["CTYPE1"], h["CTYPE2"] = ("RA---TAN-SIP", "DEC--TAN-SIP") if sip else ("RA---TAN", "DEC--TAN")
        h["CRVAL1"], h["CRVAL2"] = ra, dec
        h["CRPIX1"], h["CRPIX2"] = size / 2 + 0.5, size / 2 + 0.5
        h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -s * c, s * sn, s * sn, s * c
        h["RADESYS"] = "ICRS"
        if sip:
            r = size / 2
            h["A_ORDER"] = h["B_ORDER"] = 2
            h["A_2_0"], h["A_0_2"], h["B_1_1"] = 2.0 / r**2, 1.0 / r**2, 1.5 / r**2
        return h

    return tan(2.1, 17.0, 150.0, 30.0, True), tan(2.0, 0.0, 150.02, 30.01, False)


def make_input(tmp: Path, size: int) -> tuple[Path, Path]:
    from astropy.io import fits

    rng = np.random.default_rng(1)
    hin, hout = _headers(size)
    data = rng.normal(400.0, 20.0, (size, size)).astype(np.float32)
    n = size * size // 4000
    ys, xs = rng.uniform(0, size, n), rng.uniform(0, size, n)
    amp = 10 ** rng.uniform(2, 4, n)
    for y, x, a in zip(ys.astype(int), xs.astype(int), amp):  # small Gaussian stars, 7x7 stamps
        y0, y1, x0, x1 = max(0, y - 3), min(size, y + 4), max(0, x - 3), min(size, x + 4)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        data[y0:y1, x0:x1] += (a * np.exp(-0.5 * ((yy - y) ** 2 + (xx - x) ** 2) / 1.3**2)).astype(np.float32)
    inp = tmp / "input.fits"
    fits.PrimaryHDU(data, header=hin).writeto(inp, overwrite=True)
    hout["NAXIS"], hout["NAXIS1"], hout["NAXIS2"] = 2, size, size
    head = tmp / "target.hdr"
    head.write_text(hout.tostring(sep="\n"))
    return inp, head


def worker(method: str, inp: str, head: str, out: str) -> None:
    from astropy.io import fits
    from astropy.wcs import WCS

    hout = fits.Header.fromstring(Path(head).read_text(), sep="\n")
    shape = (hout["NAXIS2"], hout["NAXIS1"])
    data, hin = fits.getdata(inp, header=True)
    t0 = time.perf_counter()
    if method == "ours":
        from app.reproject_kernel import reproject_array

        res = reproject_array(data, None, hin, hout, shape)
        arr = res.data
        extra = {"step": res.step, "max_error_px": res.max_error_px}
    elif method == "interp":
        from reproject import reproject_interp

        arr, _ = reproject_interp((data, WCS(hin)), WCS(hout), shape_out=shape, order="bilinear",
                                  roundtrip_coords=False, block_size=(1024, 1024))
        extra = {}
    else:
        raise ValueError(f"unknown method {method!r}")
    compute = time.perf_counter() - t0
    fits.PrimaryHDU(arr.astype(np.float32), header=hout).writeto(out, overwrite=True)
    print(json.dumps({"compute_s": compute, **extra}))


def run_swarp(tmp: Path, inp: Path, head: Path):
    exe = shutil.which("SWarp") or shutil.which("swarp")
    if exe is None:
        return None
    out = tmp / "swarp_out.fits"
    shutil.copy(head, tmp / "swarp_out.head")
    argv = [exe, str(inp), "-c", os.devnull, "-IMAGEOUT_NAME", str(out), "-WEIGHTOUT_NAME", str(tmp / "swarp_w.fits"),
            "-RESAMPLING_TYPE", "BILINEAR", "-SUBTRACT_BACK", "N", "-COMBINE", "Y", "-COMBINE_TYPE", "AVERAGE",
            "-RESAMPLE_DIR", str(tmp), "-NTHREADS", "1", "-VERBOSE_TYPE", "QUIET", "-WRITE_XML", "N",
            "-FSCALASTRO_TYPE", "NONE", "-DELETE_TMPFILES", "Y", "-MEM_MAX", "2048", "-COMBINE_BUFSIZE", "1024"]
    return run_measured(argv), out


def compare(ours_path: Path, ref_path: Path) -> dict:
    from astropy.io import fits
    from scipy import ndimage

    a = fits.getdata(ours_path).astype(float)
    b = fits.getdata(ref_path).astype(float)
    both = ndimage.binary_erosion(np.isfinite(a) & np.isfinite(b) & (b != 0), iterations=3)
    rel = np.abs(a[both] - b[both]) / np.abs(b[both])
    return {"max_rel": float(rel.max()), "median_rel": float(np.median(rel)), "n": int(both.sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--no-swarp", action="store_true")
    ap.add_argument("--worker", nargs=4, metavar=("METHOD", "INPUT", "HEAD", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_reproject_") as td:
        tmp = Path(td)
        inp, head = make_input(tmp, args.size)
        print(f"frame {args.size}x{args.size} float32 -> grid {args.size}x{args.size}; 1 thread each")
        results = {}
        for method in ("ours", "interp"):
            out = tmp / f"{method}.fits"
            results[method] = run_measured([sys.executable, "-m", "benchmarks.bench_reproject", "--worker", method,
                                            str(inp), str(head), str(out)])
        sw = None if args.no_swarp else run_swarp(tmp, inp, head)
        if sw is not None:
            results["swarp"] = sw[0]
        ours = results["ours"]
        print(f"{'method':<22}{'compute s':>10}{'wall s':>9}{'peak MB':>9}{'wall/ours':>10}{'mem/ours':>9}")
        for name, label in (("ours", "ours (bilinear)"), ("interp", "reproject_interp"), ("swarp", "SWarp BILINEAR")):
            if name not in results:
                continue
            r = results[name]
            comp = f"{r['compute_s']:.2f}" if "compute_s" in r else "-"
            print(f"{label:<22}{comp:>10}{r['wall_s']:>9.2f}{r['peak_mb']:>9.0f}"
                  f"{r['wall_s'] / ours['wall_s']:>10.2f}{r['peak_mb'] / ours['peak_mb']:>9.2f}")
        print(f"compute-time ratio reproject_interp / ours: {results['interp']['compute_s'] / ours['compute_s']:.1f}x")
        print(f"mapping: step {ours.get('step')} px, max checked error {ours.get('max_error_px'):.2e} px")
        acc = compare(tmp / "ours.fits", tmp / "interp.fits")
        print(f"accuracy vs reproject_interp (interior, {acc['n']} px): max |diff|/|value| {acc['max_rel']:.2e}, "
              f"median {acc['median_rel']:.2e}")
        if sw is not None:
            acc = compare(tmp / "ours.fits", sw[1])
            print(f"agreement with SWarp (interior, {acc['n']} px): max |diff|/|value| {acc['max_rel']:.2e}, "
                  f"median {acc['median_rel']:.2e} (SWarp's bilinear kernel and pixel conventions differ)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
