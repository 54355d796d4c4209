"""Image-front benchmark: source extraction and plate solving per frame.

    python -m benchmarks.bench_solve [--quick] [--repeats 3]
    python -m benchmarks.bench_solve --sweep 20      # solve rate over random sky positions

For synthetic frames rendered from real catalog stars (server.synth) it prints, per frame:
* extraction: our sep path (background + extract + windowed centroids) beside photutils
  (Background2D + detect_sources + SourceCatalog) on the same pixels, and the ratio;
* solving: our ``plate_solve`` (sep source list, scale hint, header pointing, local index,
  catalog refinement), the same scale-only and blind, and astrometry.net's own
  ``solve-field`` on the image (its image2xy extraction, same scale hint) as the anchor,
  with each solution's worst WCS error against the truth over the frame.
Timings are wall seconds on this (shared, noisy) machine: compare ratios within one run.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_v] = "1"

import numpy as np  # noqa: E402

FRAMES = {  # name: (ra, dec, shape, scale "/px, rotation)
    "1k-1.2as-20arcmin": (270.0, -25.0, (1024, 1024), 1.2, 200.0),
    "1k-3as-51arcmin": (150.0, 30.0, (1024, 1024), 3.0, -30.0),
    "2.4k-3as-2deg": (200.0, -60.0, (2400, 2400), 3.0, 120.0),
    "4k-2as-2.3deg": (83.8, -5.4, (4096, 4096), 2.0, 10.0),
}
QUICK = ("1k-1.2as-20arcmin", "1k-3as-51arcmin")


def _best(fn, repeats):
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def _photutils_extract(data):
    from photutils.background import Background2D, MedianBackground
    from photutils.segmentation import SourceCatalog, detect_sources

    bkg = Background2D(data, (64, 64), filter_size=(3, 3), bkg_estimator=MedianBackground())
    sub = data - bkg.background
    seg = detect_sources(sub, 5.0 * bkg.background_rms, n_pixels=5)
    cat = SourceCatalog(sub, seg)
    return len(cat.x_centroid)


def _max_err(true_wcs, solved_wcs, shape):
    from server.image.catalogs import angular_separation_deg

    ny, nx = shape
    gy, gx = np.mgrid[0:ny - 1:9j, 0:nx - 1:9j]
    a = true_wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    b = solved_wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    return float(angular_separation_deg(a[0], a[1], b[0], b[1]).max() * 3600)


def _native_solve_field(path, scale, shape, tmp, timeout_s):
    """astrometry.net's own pipeline on the image: image2xy extraction + solve, same scale hint."""
    from astropy.io import fits
    from astropy.wcs import WCS

    from server.image.solve import select_index_files

    ny, nx = shape
    idx = select_index_files("/usr/share/astrometry", (min(nx, ny) * scale * 0.85 / 60, np.hypot(nx, ny) * scale * 1.15 / 60))
    cfg = Path(tmp) / "native.cfg"
    cfg.write_text("".join(f"index {p}\n" for p in idx) + f"cpulimit {timeout_s}\n")
    out = Path(tmp) / "native"
    out.mkdir(exist_ok=True)
    cmd = ["solve-field", str(path), "--config", str(cfg), "--no-plots", "--overwrite", "--dir", str(out),
           "--scale-units", "arcsecperpix", "--scale-low", str(0.85 * scale), "--scale-high", str(1.15 * scale),
           "--cpulimit", str(timeout_s), "--new-fits", "none", "--wcs", str(out / "n.wcs"), "--temp-dir", str(out)]
    t0 = time.perf_counter()
    try:
        subprocess.run(cmd, capture_output=True, timeout=timeout_s + 10, cwd=out)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - t0, None
    dt = time.perf_counter() - t0
    if not (out / "n.wcs").exists():
        return dt, None
    return dt, WCS(fits.getheader(out / "n.wcs"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the two 1k frames")
    ap.add_argument("--repeats", type=int, default=3, help="extraction repeats (best of)")
    ap.add_argument("--timeout", type=int, default=60, help="solver time limit per attempt [s]")
    ap.add_argument("--sweep", type=int, default=0, metavar="N",
                    help="instead: solve N frames at random sky positions, scales 0.5-3 \"/px, fields 20'-2 deg")
    args = ap.parse_args(argv)
    if args.sweep:
        return sweep(args.sweep, args.timeout)

    from server.image.catalogs import default_offline_catalog
    from server.image.fitsimage import open_image
    from server.image.solve import extract_sources, plate_solve
    from server.synth import FrameSpec, render_frame, write_frame

    t0 = time.perf_counter()
    cat = default_offline_catalog()
    print(f"offline catalog load: {time.perf_counter() - t0:.2f} s")
    names = QUICK if args.quick else tuple(FRAMES)
    have_native = shutil.which("solve-field") is not None
    cols = ["frame", "sep s", "photutils s", "ratio", "|", "solve s", "err'", "scale-only s", "err'", "blind s", "err'",
            "|", "solve-field s", "err'", "ratio"]
    widths = [20, 7, 11, 6, 1, 7, 6, 12, 6, 7, 6, 1, 13, 6, 6]
    print(" ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths))))
    print("(err' = worst sky error of the solved WCS over a 9x9 grid, arcsec)")
    with tempfile.TemporaryDirectory(prefix="bench-solve-") as tmp:
        for name in names:
            ra, dec, shape, scale, rot = FRAMES[name]
            spec = FrameSpec(ra, dec, shape, scale, rotation_deg=rot, fwhm_px=3.0)
            frame = render_frame(spec, np.random.default_rng(1), cat)
            path = Path(tmp) / f"{name}.fits"
            write_frame(frame, path)
            data, _ = open_image(path)
            t_sep, _ = _best(lambda: extract_sources(data), args.repeats)
            t_pu, _ = _best(lambda: _photutils_extract(data), args.repeats)
            res = {}
            for mode, kw in (("full", dict(scale_hint=scale, use_header_pointing=True)),
                             ("scale", dict(scale_hint=scale)), ("blind", dict(scale_hint=None))):
                t1 = time.perf_counter()
                r = plate_solve(str(path), timeout_s=args.timeout, catalog=cat, workdir=tmp, **kw)
                dt = time.perf_counter() - t1
                res[mode] = (dt, _max_err(frame.wcs, r.wcs(), shape) if r.success else None)
            if have_native:
                t_nat, w_nat = _native_solve_field(path, scale, shape, tmp, args.timeout)
                e_nat = _max_err(frame.wcs, w_nat, shape) if w_nat is not None else None
            else:
                t_nat, e_nat = float("nan"), None

            def fmt(e):
                return f"{e:6.2f}" if e is not None else "  FAIL"

            print(f"{name:<20} {t_sep:7.3f} {t_pu:11.3f} {t_pu / t_sep:6.1f} | {res['full'][0]:7.2f} {fmt(res['full'][1])} "
                  f"{res['scale'][0]:12.2f} {fmt(res['scale'][1])} {res['blind'][0]:7.2f} {fmt(res['blind'][1])} | "
                  f"{t_nat:13.2f} {fmt(e_nat)} {t_nat / res['full'][0]:6.2f}", flush=True)
    print("ratio columns: photutils/sep extraction time; solve-field-native/our-solve time (>1 = we are faster)")
    return 0


def sweep(n: int, timeout_s: int, seed: int = 2026) -> int:
    """Solve-rate sweep: uniform random sky positions, log-uniform scales 0.5-3 "/px, fields 20'-120'
    (frame side capped at 2400 px, so fine scales get the smaller fields), full hints."""
    from server.image.catalogs import default_offline_catalog
    from server.image.solve import plate_solve
    from server.synth import FrameSpec, render_frame, write_frame

    rng = np.random.default_rng(seed)
    cat = default_offline_catalog()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        for i in range(n):
            ra = rng.uniform(0, 360)
            dec = np.degrees(np.arcsin(rng.uniform(-1, 1)))
            scale = float(np.exp(rng.uniform(np.log(0.5), np.log(3.0))))
            field = rng.uniform(20, 120)
            side = int(min(2400, max(512, field * 60 / scale)))
            spec = FrameSpec(ra, dec, (side, side), scale, rotation_deg=rng.uniform(0, 360),
                             flip=bool(rng.random() < 0.2), fwhm_px=float(rng.uniform(2.2, 4.5)))
            frame = render_frame(spec, np.random.default_rng(i), cat)
            path = Path(tmp) / f"sweep{i}.fits"
            write_frame(frame, path)
            t0 = time.perf_counter()
            r = plate_solve(str(path), scale_hint=scale, timeout_s=timeout_s, catalog=cat, use_header_pointing=True,
                            workdir=tmp)
            dt = time.perf_counter() - t0
            err = _max_err(frame.wcs, r.wcs(), spec.shape) if r.success else None
            n_real = int((frame.truth["in_frame"] & (frame.truth["origin"] != "synthetic")).sum())
            rows.append((r.success, err, dt))
            print(f"{i:3d} ra {ra:7.2f} dec {dec:6.2f} scale {scale:4.2f} side {side:4d} field "
                  f"{side * scale / 60:5.1f}' real stars {n_real:4d}: "
                  f"{'ok' if r.success else r.reason_code:>15} err {err if err is not None else float('nan'):6.3f}\" "
                  f"{dt:6.1f} s", flush=True)
            path.unlink()
    ok = [r for r in rows if r[0]]
    errs = np.array([r[1] for r in ok]) if ok else np.array([np.nan])
    print(f"solved {len(ok)}/{n} = {100 * len(ok) / n:.0f} %; within 1\": {int((errs < 1).sum())}; "
          f"worst {np.nanmax(errs):.3f}\"; median time {np.median([r[2] for r in rows]):.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
