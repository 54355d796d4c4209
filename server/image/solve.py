"""Plate solving with astrometry.net's ``solve-field`` fed a ``sep`` source list.

``plate_solve(fits_path)`` never raises for bad data: every failure comes back as
``PlateSolveResult(success=False, reason=..., reason_code=...)`` with one of the codes

* ``bad-input``       - not a FITS file, truncated, absurd NAXIS, no 2-D image
* ``too-few-sources`` - sep found fewer than ``min_sources`` usable stars
* ``no-solution``     - solve-field finished without a solution
* ``timeout``         - the CPU/wall time limit was reached
* ``solver-error``    - solve-field is missing, crashed, or no index file fits the scale

On success the solved WCS (TAN + SIP when ``tweak_order`` > 1) is written into a NEW FITS
file (original pixels, original header minus any old WCS, plus the new WCS), atomically.
Programming errors (wrong argument types) still raise.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from server.image.fitsimage import DEFAULT_MAX_BYTES, is_wcs_keyword, open_image, strip_wcs, write_fits_atomic

DEFAULT_INDEX_DIR = "/usr/share/astrometry"
SOLVE_FIELD = "solve-field"


@dataclass(frozen=True)
class PlateSolveResult:
    success: bool
    reason: str | None = None
    reason_code: str | None = None
    wcs_header: dict | None = None  # FITS keyword -> value of the solved WCS
    solved_path: str | None = None
    n_sources: int = 0
    ra_center_deg: float | None = None
    dec_center_deg: float | None = None
    pixel_scale_arcsec: float | None = None
    rotation_deg: float | None = None  # east of north of the +y axis, as reported by astrometry.net
    parity: str | None = None  # 'normal' (det CD < 0, east left of north-up) | 'flipped'
    n_matches: int = 0
    match_rms_arcsec: float | None = None
    refined: bool = False  # WCS re-fitted on the reference catalog (see plate_solve)
    elapsed_s: float = 0.0
    log_tail: str = field(default="", repr=False)

    def as_dict(self) -> dict:
        """The seed's dict: success, wcs_header, solved_path, reason (plus the diagnostics)."""
        d = asdict(self)
        d.pop("log_tail")
        return d

    def wcs(self):
        from astropy.io import fits
        from astropy.wcs import WCS

        if not self.success or self.wcs_header is None:
            raise ValueError(f"no WCS: plate solve failed ({self.reason})")
        return WCS(fits.Header(self.wcs_header))


def _fail(code: str, reason: str, t0: float, **kw) -> PlateSolveResult:
    return PlateSolveResult(success=False, reason=reason, reason_code=code, elapsed_s=time.monotonic() - t0, **kw)


@dataclass(frozen=True)
class SourceList:
    x: np.ndarray  # 0-based pixel
    y: np.ndarray
    flux: np.ndarray
    fwhm_px: float
    background_rms: float


def extract_sources(data: np.ndarray, *, thresh_sigma: float = 5.0, max_sources: int = 500,
                    min_area: int = 5) -> SourceList:
    """sep background + extraction; returns the brightest clean point-like sources first."""
    import sep

    arr = np.ascontiguousarray(data, dtype=np.float32)
    finite = np.isfinite(arr)
    mask = ~finite
    if mask.any():
        arr = np.where(finite, arr, np.float32(np.nanmedian(arr) if finite.any() else 0.0))
    bkg = sep.Background(arr, mask=mask, bw=64, bh=64, fw=3, fh=3)
    sub = arr - bkg.back()
    rms = float(bkg.globalrms)
    if not np.isfinite(rms) or rms <= 0:
        rms = float(np.std(sub[finite])) if finite.any() else 1.0
    sep.set_extract_pixstack(max(300000, arr.size // 4))
    sep.set_sub_object_limit(4096)
    objs = sep.extract(sub, thresh_sigma, err=rms, mask=mask, minarea=min_area, deblend_cont=0.005)
    if len(objs) == 0:
        return SourceList(np.empty(0), np.empty(0), np.empty(0), float("nan"), rms)
    a, b = objs["a"], objs["b"]
    # reject line-like detections (satellite trails, bad columns) and sep-truncated ones
    keep = (b > 0) & (a / np.maximum(b, 1e-6) < 3.0) & ((objs["flag"] & sep.OBJ_TRUNC) == 0)
    objs = objs[keep]
    order = np.argsort(-objs["flux"])[:max_sources]
    objs = objs[order]
    fwhm = float(np.median(2.3548 * np.sqrt(0.5 * (objs["a"] ** 2 + objs["b"] ** 2)))) if len(objs) else float("nan")
    x, y = objs["x"].astype(float), objs["y"].astype(float)
    if len(objs) and np.isfinite(fwhm):
        # windowed (Gaussian-weighted) centroids: less biased by noise and neighbours than isophotal ones
        wx, wy, wflag = sep.winpos(sub, x, y, np.full(len(x), max(fwhm, 1.0) / 2.3548), mask=mask)
        good = (wflag == 0) & np.isfinite(wx) & np.isfinite(wy) & (np.hypot(wx - x, wy - y) < max(fwhm, 1.0))
        x, y = np.where(good, wx, x), np.where(good, wy, y)
    return SourceList(x, y, objs["flux"].astype(float), fwhm, rms)


def write_xylist(path: Path, sources: SourceList, shape: tuple[int, int]) -> None:
    """astrometry.net xylist: BINTABLE with X, Y (1-based FITS pixels), FLUX, sorted by flux."""
    from astropy.io import fits

    cols = [fits.Column(name="X", format="D", array=sources.x + 1.0),
            fits.Column(name="Y", format="D", array=sources.y + 1.0),
            fits.Column(name="FLUX", format="D", array=sources.flux)]
    hdu = fits.BinTableHDU.from_columns(cols)
    hdu.header["IMAGEW"] = shape[1]
    hdu.header["IMAGEH"] = shape[0]
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)


# ----------------------------------------------------------------------------- WCS refinement

def _gnomonic(ra, dec, ra0, dec0):
    """Standard coordinates (xi, eta) in degrees of (ra, dec) about the tangent point (ra0, dec0)."""
    a, d = np.radians(ra), np.radians(dec)
    a0, d0 = np.radians(ra0), np.radians(dec0)
    cosc = np.sin(d) * np.sin(d0) + np.cos(d) * np.cos(d0) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cosc
    eta = (np.sin(d) * np.cos(d0) - np.cos(d) * np.sin(d0) * np.cos(a - a0)) / cosc
    return np.degrees(xi), np.degrees(eta)


def _inverse_gnomonic(xi, eta, ra0, dec0):
    x, y = np.radians(xi), np.radians(eta)
    d0 = np.radians(dec0)
    rho = np.hypot(x, y)
    c = np.arctan(rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        dec = np.arcsin(np.cos(c) * np.sin(d0) + np.where(rho > 0, y * np.sin(c) * np.cos(d0) / rho, 0.0))
        ra = np.radians(ra0) + np.arctan2(x * np.sin(c), rho * np.cos(d0) * np.cos(c) - y * np.sin(d0) * np.sin(c))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def _sip_terms(u, v, degree):
    return [(p, q) for p in range(degree + 1) for q in range(degree + 1) if 2 <= p + q <= degree]


@dataclass(frozen=True)
class WcsFit:
    wcs: object  # astropy.wcs.WCS
    n_used: int
    rms_arcsec: float


def fit_tan_sip(x, y, ra, dec, *, crpix: tuple[float, float], crval_guess: tuple[float, float],
                sip_degree: int | None = None, iterations: int = 4):
    """Linear least-squares TAN(-SIP) fit of 0-based pixel (x, y) to (ra, dec) in degrees.

    Standard coordinates about CRVAL are modelled as CD @ (u + A(u, v), v + B(u, v)) with
    u = x + 1 - CRPIX1, v = y + 1 - CRPIX2 (FITS 1-based CRPIX). The tangent point is moved to
    the fitted zero point and the fit repeated. Returns an astropy WCS.
    """
    from astropy.wcs import WCS

    x, y, ra, dec = (np.asarray(v, dtype=float) for v in (x, y, ra, dec))
    u = x + 1.0 - crpix[0]
    v = y + 1.0 - crpix[1]
    terms = _sip_terms(u, v, sip_degree) if sip_degree and sip_degree >= 2 else []
    design = np.column_stack([np.ones_like(u), u, v] + [u**p * v**q for p, q in terms])
    ra0, dec0 = crval_guess
    for _ in range(iterations):
        xi, eta = _gnomonic(ra, dec, ra0, dec0)
        cx, *_ = np.linalg.lstsq(design, xi, rcond=None)
        cy, *_ = np.linalg.lstsq(design, eta, rcond=None)
        ra0, dec0 = _inverse_gnomonic(cx[0], cy[0], ra0, dec0)
        ra0, dec0 = float(ra0), float(dec0)
    cd = np.array([[cx[1], cx[2]], [cy[1], cy[2]]])
    w = WCS(naxis=2)
    w.wcs.crpix = list(crpix)
    w.wcs.crval = [ra0, dec0]
    w.wcs.cd = cd
    w.wcs.radesys = "ICRS"
    w.wcs.equinox = 2000.0
    if terms:
        from astropy.wcs import Sip

        cdinv = np.linalg.inv(cd)
        g = np.vstack([cx[3:], cy[3:]])  # higher-order terms in standard coordinates
        ab = cdinv @ g
        a = np.zeros((sip_degree + 1, sip_degree + 1))
        b = np.zeros_like(a)
        for k, (p, q) in enumerate(terms):
            a[p, q], b[p, q] = ab[0, k], ab[1, k]
        w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    else:
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.set()
    return w


def refine_wcs(sources: SourceList, wcs, catalog, shape: tuple[int, int], *, sip_degree: int | None = None,
               min_matches: int = 6) -> WcsFit | None:
    """Re-fit ``wcs`` on sep sources matched to ``catalog`` stars; None if too few matches.

    Matching radius starts at max(3 px, 1.5 FWHM) and shrinks to max(1 px, 0.5 FWHM);
    pairs beyond 3 robust sigma of the residuals are dropped at each round.
    """
    from scipy.spatial import cKDTree

    from server.image.catalogs import angular_separation_deg

    ny, nx = shape
    c = wcs.all_pix2world([[(nx - 1) / 2.0, (ny - 1) / 2.0], [0.0, 0.0]], 0)
    radius = float(angular_separation_deg(c[0, 0], c[0, 1], c[1, 0], c[1, 1])) * 1.05
    cat = catalog.cone(float(c[0, 0]), float(c[0, 1]), min(radius, 90.0))
    if len(cat) < min_matches:
        return None
    cra, cdec = cat["ra"].to_numpy(float), cat["dec"].to_numpy(float)
    tree = cKDTree(np.column_stack([sources.x, sources.y]))
    fwhm = sources.fwhm_px if np.isfinite(sources.fwhm_px) else 3.0
    r = max(3.0, 1.5 * fwhm)
    current, result = wcs, None
    for r_px in (r, 0.5 * (r + max(1.0, 0.5 * fwhm)), max(1.0, 0.5 * fwhm)):
        px, py = current.all_world2pix(cra, cdec, 0)
        ok = np.isfinite(px) & (px > -0.5) & (px < nx - 0.5) & (py > -0.5) & (py < ny - 0.5)
        if ok.sum() < min_matches:
            return result
        d, j = tree.query(np.column_stack([px[ok], py[ok]]), k=1, distance_upper_bound=r_px)
        hit = np.isfinite(d)
        ci = np.flatnonzero(ok)[hit]
        sj = j[hit]
        # keep one catalog star per source (the closest)
        order = np.argsort(d[hit])
        _, first = np.unique(sj[order], return_index=True)
        keep = order[first]
        ci, sj = ci[keep], sj[keep]
        if len(ci) < min_matches:
            return result
        deg = sip_degree if sip_degree is not None else (2 if len(ci) >= 40 else None)
        crpix = ((nx + 1) / 2.0, (ny + 1) / 2.0)
        center = current.all_pix2world([[(nx - 1) / 2.0, (ny - 1) / 2.0]], 0)[0]
        for _ in range(3):
            w = fit_tan_sip(sources.x[sj], sources.y[sj], cra[ci], cdec[ci], crpix=crpix,
                            crval_guess=(float(center[0]), float(center[1])), sip_degree=deg)
            fra, fdec = w.all_pix2world(sources.x[sj], sources.y[sj], 0)
            res = angular_separation_deg(fra, fdec, cra[ci], cdec[ci]) * 3600.0
            sig = max(1.4826 * np.median(np.abs(res - np.median(res))) + np.median(res), 1e-3)
            good = res <= 3.0 * sig
            if good.all() or good.sum() < min_matches:
                break
            ci, sj = ci[good], sj[good]
        current = w
        result = WcsFit(w, int(len(ci)), float(np.sqrt(np.mean(res**2))))
    return result


# astrometry.net index quad diameters (arcmin) of the 4100-series (Tycho-2) files 4107..4119
_INDEX_QUAD_ARCMIN = {7: (22, 30), 8: (30, 42), 9: (42, 60), 10: (60, 85), 11: (85, 120), 12: (120, 170),
                      13: (170, 240), 14: (240, 340), 15: (340, 480), 16: (480, 680), 17: (680, 1000),
                      18: (1000, 1400), 19: (1400, 2000)}


def select_index_files(index_dir: str | os.PathLike, field_arcmin: tuple[float, float] | None) -> list[Path]:
    """Index files of ``index_dir`` whose quads fit a field of the given size range (arcmin).

    astrometry.net can use quads from ~10% to 100% of the field size; we keep indexes whose
    largest quads reach 30% of the short side (smaller ones rarely help and cost loading time),
    and with no size
    known every index file is used.
    """
    files = sorted(Path(index_dir).glob("index-*.fits"))
    if field_arcmin is None:
        return files
    lo, hi = field_arcmin
    chosen = []
    for f in files:
        scale = None
        parts = f.name.split("-")
        if len(parts) >= 3 and parts[2][:2].isdigit():
            scale = int(parts[2][:2])
        if scale is None or scale not in _INDEX_QUAD_ARCMIN:
            chosen.append(f)  # unknown naming: let the solver decide
            continue
        qlo, qhi = _INDEX_QUAD_ARCMIN[scale]
        if qhi >= 0.3 * lo and qlo <= hi:
            chosen.append(f)
    return chosen


BUILD_INDEX = "build-astrometry-index"
LOCAL_INDEX_MAX_FIELD_ARCMIN = 60.0


def local_index_scales(field_min_arcmin: float) -> list[tuple[float, float]]:
    """Quad-size ranges (arcmin) of the two local indexes for a field whose short side is given."""
    f = float(field_min_arcmin)
    return [(0.15 * f, 0.45 * f), (0.4 * f, 1.1 * f)]


def build_local_index(catalog, ra_deg: float, dec_deg: float, radius_deg: float, field_min_arcmin: float,
                      outdir: Path, *, timeout_s: float = 60.0, max_stars: int = 20000) -> list[Path]:
    """Build small astrometry.net index files from ``catalog`` stars around a pointing hint.

    The Debian Tycho-2 index files have quads of >= 22 arcmin, so fields under ~30 arcmin rarely
    solve with them. Around a known pointing, our deeper offline catalog (Gaia G <= 10 + Tycho-2)
    gives enough stars to build quads of 15-110 % of the field size in well under a second.
    Returns the index paths (empty if the cone holds fewer than 5 stars).
    """
    from astropy.io import fits

    if shutil.which(BUILD_INDEX) is None:
        return []
    stars = catalog.cone(float(ra_deg) % 360.0, float(dec_deg), min(float(radius_deg), 30.0))
    stars = stars[np.isfinite(stars["mag"].to_numpy(float))].sort_values("mag").head(max_stars)
    if len(stars) < 5:
        return []
    src = outdir / "local_stars.fits"
    fits.BinTableHDU.from_columns([
        fits.Column(name="RA", format="D", array=stars["ra"].to_numpy(float)),
        fits.Column(name="DEC", format="D", array=stars["dec"].to_numpy(float)),
        fits.Column(name="MAG", format="E", array=stars["mag"].to_numpy(float)),
    ]).writeto(src, overwrite=True)
    out = []
    for k, (lo, hi) in enumerate(local_index_scales(field_min_arcmin)):
        nside = max(1, int(round(3517.0 / max(lo, 0.5))))  # healpix cell side ~ smallest quad
        path = outdir / f"local-index-{k}.fits"
        cmd = [BUILD_INDEX, "-i", str(src), "-o", str(path), "-N", str(nside), "-l", f"{lo:.4g}", "-u", f"{hi:.4g}",
               "-S", "MAG", "-A", "RA", "-D", "DEC", "-E", "-M", "-I", str(99000 + k), "-n", "10", "-p", "16",
               "-j", "1", "-t", str(outdir)]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, cwd=outdir)
        except subprocess.TimeoutExpired:
            continue
        if proc.returncode == 0 and path.exists():
            out.append(path)
    return out


def pointing_from_header(header) -> tuple[float, float] | None:
    """Approximate pointing (deg) from RA/DEC (degrees) or OBJCTRA/OBJCTDEC (sexagesimal) keywords."""
    ra, dec = header.get("RA"), header.get("DEC")
    if isinstance(ra, (int, float)) and isinstance(dec, (int, float)) and -90 <= dec <= 90:
        return float(ra) % 360.0, float(dec)
    ra_s, dec_s = header.get("OBJCTRA"), header.get("OBJCTDEC")
    for a, d in ((ra_s, dec_s), (ra, dec)):
        if isinstance(a, str) and isinstance(d, str):
            try:
                from astropy import units as u
                from astropy.coordinates import SkyCoord

                c = SkyCoord(a.strip(), d.strip(), unit=(u.hourangle, u.deg))
                return float(c.ra.deg), float(c.dec.deg)
            except ValueError:
                continue
    return None


def _read_corr(path: Path) -> tuple[int, float | None]:
    from astropy.io import fits

    from server.image.catalogs import angular_separation_deg

    if not path.exists():
        return 0, None
    with fits.open(path) as h:
        d = h[1].data
        if d is None or len(d) == 0:
            return 0, None
        sep = angular_separation_deg(d["field_ra"], d["field_dec"], d["index_ra"], d["index_dec"]) * 3600
    return int(len(d)), float(np.sqrt(np.mean(sep**2)))


def plate_solve(fits_path: str, *, scale_hint=None, timeout_s: float = 60, index_dir=None, workdir=None,
                ra_dec_hint: tuple[float, float, float] | None = None, output_path: str | None = None,
                min_sources: int = 8, tweak_order: int = 2, max_bytes: int = DEFAULT_MAX_BYTES,
                catalog=None, refine_sip_degree: int | None = None,
                use_header_pointing: bool = False) -> PlateSolveResult:
    """Solve ``fits_path``; see the module docstring for the result and failure codes.

    scale_hint: arcsec/px as a number (searched +-15%) or a (low, high) pair; None = blind.
    ra_dec_hint: (ra_deg, dec_deg, radius_deg) to restrict the search; None = whole sky.
    index_dir: directory of astrometry.net index files (default /usr/share/astrometry).
    workdir: where temporary solver files go (a private temp dir inside it, removed after).
    output_path: where the solved FITS goes (default: ``<input stem>.solved.fits`` in ``workdir``
        when given, else next to the input).
    catalog: a CatalogProvider (e.g. ``default_offline_catalog()``). When given:
        (1) with a pointing hint and a scale hint, for fields under 1 degree, small local index
        files are built from it around the hint (fields under ~30 arcmin need them, see
        build_local_index);
        (2) astrometry.net's solution is re-fitted on sep sources matched to its stars: TAN,
        or TAN-SIP of ``refine_sip_degree`` (default: SIP-2 with >= 40 matches, else TAN). If
        fewer than 6 stars match, astrometry.net's own WCS is kept (``refined`` False).
    use_header_pointing: without ``ra_dec_hint``, take the pointing from the RA/DEC or
        OBJCTRA/OBJCTDEC keywords with a radius of max(1 deg, field diagonal).
    """
    t0 = time.monotonic()
    if not timeout_s or timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    try:
        data, header = open_image(fits_path, max_bytes=max_bytes)
    except ValueError as exc:
        return _fail("bad-input", str(exc), t0)
    ny, nx = data.shape
    if shutil.which(SOLVE_FIELD) is None:
        return _fail("solver-error", f"{SOLVE_FIELD} not found on PATH (install Debian astrometry.net)", t0)

    sources = extract_sources(data)
    n_src = len(sources.x)
    if n_src < min_sources:
        return _fail("too-few-sources", f"sep found {n_src} usable sources, need at least {min_sources}", t0,
                     n_sources=n_src)

    if scale_hint is None:
        scale_lo = scale_hi = None
    elif np.ndim(scale_hint) == 0:
        s = float(scale_hint)
        if not s > 0:
            raise ValueError(f"scale_hint must be > 0 arcsec/px, got {scale_hint!r}")
        scale_lo, scale_hi = 0.85 * s, 1.15 * s
    else:
        scale_lo, scale_hi = (float(v) for v in scale_hint)
        if not 0 < scale_lo <= scale_hi:
            raise ValueError(f"scale_hint must be (low, high) with 0 < low <= high, got {scale_hint!r}")
    field_arcmin = None
    if scale_lo is not None:
        field_arcmin = (min(nx, ny) * scale_lo / 60.0, np.hypot(nx, ny) * scale_hi / 60.0)

    if ra_dec_hint is None and use_header_pointing:
        p = pointing_from_header(header)
        if p is not None:
            diag_deg = np.hypot(nx, ny) * (scale_hi if scale_hi else 10.0) / 3600.0
            ra_dec_hint = (p[0], p[1], max(1.0, diag_deg))
    index_dir = Path(index_dir or DEFAULT_INDEX_DIR)
    indexes = select_index_files(index_dir, field_arcmin)
    # local indexes only where the Tycho-2 series is thin: fields whose short side is under 1 degree
    want_local = (catalog is not None and ra_dec_hint is not None and field_arcmin is not None
                  and field_arcmin[0] < LOCAL_INDEX_MAX_FIELD_ARCMIN)
    if not indexes and not want_local:
        return _fail("solver-error", f"no astrometry.net index files in {index_dir} for a field of "
                     f"{field_arcmin} arcmin", t0, n_sources=n_src)

    fits_path = Path(fits_path)
    if output_path:
        out_path = Path(output_path)
    elif workdir:
        out_path = Path(workdir) / (fits_path.stem + ".solved.fits")
    else:
        out_path = fits_path.with_name(fits_path.stem + ".solved.fits")
    base = Path(workdir) if workdir else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="solve-", dir=base) as tmp:
        tmp = Path(tmp)
        xy = tmp / "sources.xy.fits"
        write_xylist(xy, sources, (ny, nx))
        local = []
        if want_local:
            ra_h, dec_h, rad_h = (float(v) for v in ra_dec_hint)
            local = build_local_index(catalog, ra_h, dec_h, rad_h + field_arcmin[1] / 120.0, field_arcmin[0], tmp,
                                      timeout_s=max(10.0, timeout_s / 2))
        if not indexes and not local:
            return _fail("solver-error", f"no index files: none in {index_dir} for {field_arcmin} arcmin and "
                         "no local index could be built", t0, n_sources=n_src)
        cfg = tmp / "astrometry.cfg"
        cfg.write_text("".join(f"index {p}\n" for p in [*local, *indexes]) + f"cpulimit {int(np.ceil(timeout_s))}\n")
        cmd = [SOLVE_FIELD, str(xy), "--config", str(cfg), "--width", str(nx), "--height", str(ny),
               "--x-column", "X", "--y-column", "Y", "--sort-column", "FLUX",
               "--no-plots", "--overwrite", "--dir", str(tmp), "--temp-dir", str(tmp),
               "--cpulimit", str(int(np.ceil(timeout_s))), "--tweak-order", str(int(tweak_order)),
               "--crpix-center", "--new-fits", "none", "--index-xyls", "none", "--rdls", "none",
               "--match", "none", "--axy", str(tmp / "sources.axy"),
               "--corr", str(tmp / "out.corr"), "--wcs", str(tmp / "out.wcs"), "--solved", str(tmp / "out.solved")]
        if scale_lo is not None:
            cmd += ["--scale-units", "arcsecperpix", "--scale-low", f"{scale_lo:.6g}", "--scale-high", f"{scale_hi:.6g}"]
        if ra_dec_hint is not None:
            ra, dec, rad = (float(v) for v in ra_dec_hint)
            cmd += ["--ra", f"{ra:.6f}", "--dec", f"{dec:.6f}", "--radius", f"{rad:.4f}"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp, env=env,
                                start_new_session=True)
        wall = timeout_s + 5.0  # grace for index loading; --cpulimit counts CPU time only
        try:
            log, _ = proc.communicate(timeout=wall)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            log, _ = proc.communicate()
            return _fail("timeout", f"solve-field exceeded {wall:.0f} s wall time", t0, n_sources=n_src,
                         log_tail=log.decode(errors="replace")[-2000:])
        text = log.decode(errors="replace")
        solved = (tmp / "out.solved").exists() and (tmp / "out.wcs").exists()
        if not solved:
            if proc.returncode != 0:
                return _fail("solver-error", f"solve-field exited with status {proc.returncode}", t0,
                             n_sources=n_src, log_tail=text[-2000:])
            if "cpu time limit reached" in text.lower() or "time limit" in text.lower():
                return _fail("timeout", f"no solution within the {timeout_s:g} s CPU limit", t0,
                             n_sources=n_src, log_tail=text[-2000:])
            return _fail("no-solution", f"no astrometric solution from {n_src} sources with "
                         f"{len(indexes) + len(local)} index files", t0, n_sources=n_src, log_tail=text[-2000:])
        from astropy.io import fits
        from astropy.wcs import WCS

        wcs_hdr = fits.getheader(tmp / "out.wcs")
        wcs_keys = fits.Header([c for c in wcs_hdr.cards if is_wcs_keyword(c.keyword)])
        n_match, rms = _read_corr(tmp / "out.corr")

    refined = False
    if catalog is not None:
        fit = refine_wcs(sources, WCS(wcs_keys), catalog, (ny, nx), sip_degree=refine_sip_degree)
        if fit is not None:
            hdr = fit.wcs.to_header(relax=True)
            wcs_keys = fits.Header([c for c in hdr.cards if is_wcs_keyword(c.keyword)])
            n_match, rms, refined = fit.n_used, fit.rms_arcsec, True

    new_header = strip_wcs(header)
    for key in ("NAXIS", "NAXIS1", "NAXIS2", "BITPIX", "EXTEND", "SIMPLE", "BSCALE", "BZERO"):
        new_header.remove(key, ignore_missing=True)
    new_header.update(wcs_keys)
    new_header["PLTSOLVD"] = (True, "plate solved by astrometry.net via OpenAstro")
    write_fits_atomic(out_path, data, new_header)

    w = WCS(wcs_keys)
    center = w.all_pix2world([[(nx - 1) / 2.0, (ny - 1) / 2.0]], 0)[0]
    cd = w.wcs.cd if w.wcs.has_cd() else w.wcs.get_pc() * w.wcs.cdelt[:, None]
    det = float(np.linalg.det(cd))
    scale = float(np.sqrt(abs(det)) * 3600.0)
    rot = float(np.degrees(np.arctan2(cd[0, 1], cd[1, 1])))  # angle of +y from north, through east
    return PlateSolveResult(
        success=True, wcs_header={k: wcs_keys[k] for k in wcs_keys.keys() if k not in ("COMMENT", "HISTORY", "")},
        solved_path=str(out_path), n_sources=n_src, ra_center_deg=float(center[0]), dec_center_deg=float(center[1]),
        pixel_scale_arcsec=scale, rotation_deg=rot, parity="flipped" if det > 0 else "normal", n_matches=n_match,
        match_rms_arcsec=rms, refined=refined, elapsed_s=time.monotonic() - t0, log_tail=text[-2000:])
