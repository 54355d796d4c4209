"""Photometric calibration of a plate-solved frame against a reference catalog.

Model (units: magnitudes; flux F in ADU summed in the aperture, t = EXPTIME in seconds):

    m_inst = -2.5 log10(F / t)
    m_cat  = m_inst + ZP + CT * colour

``ZP`` is the catalog magnitude of a colour-0 star giving 1 ADU/s; ``CT`` is the colour term per
magnitude of the catalog colour (B-V for the bundled catalog, see ``catalog.color_name``).

Procedure: sep background (64 px mesh) and extraction (5 sigma), windowed centroids, circular
aperture photometry (default radius 2.5 FWHM, at least 3 px) with Poisson + background errors;
catalog stars projected through the frame's WCS and matched one-to-one within max(2 px, 1 FWHM);
calibrators exclude saturated or flagged sources, stars with a catalog neighbour inside the
aperture (+1 FWHM) brighter than 3 mag fainter than themselves, and stars without a colour. The
weighted least-squares fit of (ZP, CT) uses sigma^2 = sigma_inst^2 + sigma_cat^2, iterating a
k-sigma clip (k = 3, sigma = 1.4826 MAD of the residuals) until no star changes state.
Parameter errors are the covariance of the weighted fit scaled by max(1, reduced chi^2).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from server.image.fitsimage import DEFAULT_MAX_BYTES, open_image


class CalibrationError(ValueError):
    """The frame cannot be calibrated (no WCS, no EXPTIME, too few usable catalog stars)."""


@dataclass(frozen=True)
class CalibrationResult:
    zero_point: float
    zero_point_err: float
    color_term: float
    color_term_err: float  # 0 when the colour term was held fixed
    scatter_mag: float  # RMS of the residuals of the stars kept in the fit
    catalog_matches: int  # stars used in the final fit
    calibrated_sources: pd.DataFrame = field(repr=False)
    n_rejected: int = 0  # calibrators removed by the sigma clip
    band: str = "V"
    fwhm_px: float = float("nan")
    color_name: str = "B-V"
    aperture_radius_px: float = float("nan")
    chi2_reduced: float = float("nan")
    n_matched_total: int = 0  # sources matched to any catalog star (before quality cuts)
    color_term_fixed: bool = False

    def as_dict(self) -> dict:
        """The seed's dict (zero_point, color_term, scatter_mag, catalog_matches, calibrated_sources)."""
        return {
            "zero_point": self.zero_point, "zero_point_err": self.zero_point_err,
            "color_term": self.color_term, "color_term_err": self.color_term_err,
            "scatter_mag": self.scatter_mag, "catalog_matches": self.catalog_matches,
            "n_rejected": self.n_rejected, "band": self.band, "color_name": self.color_name,
            "fwhm_px": self.fwhm_px, "aperture_radius_px": self.aperture_radius_px,
            "chi2_reduced": self.chi2_reduced, "color_term_fixed": self.color_term_fixed,
            "calibrated_sources": self.calibrated_sources.replace({np.nan: None}).to_dict(orient="records"),
        }


@dataclass(frozen=True)
class LinearFit:
    zero_point: float
    zero_point_err: float
    color_term: float
    color_term_err: float
    used: np.ndarray  # bool mask of the points kept
    scatter: float
    chi2_reduced: float


def fit_zero_point(dmag, dmag_err, color, *, color_term: float | None = None, clip_sigma: float = 3.0,
                   max_iter: int = 20, min_points: int = 3) -> LinearFit:
    """Weighted fit of dmag = ZP + CT * color with iterative sigma clipping.

    ``color_term`` given: CT is held at that value and only ZP is fitted.
    Raises CalibrationError if fewer than ``min_points`` points survive.
    """
    dmag, dmag_err, color = (np.asarray(v, dtype=float) for v in (dmag, dmag_err, color))
    n_par = 1 if color_term is not None else 2
    ok = np.isfinite(dmag) & np.isfinite(dmag_err) & (dmag_err > 0) & np.isfinite(color)
    if ok.sum() < max(min_points, n_par + 1):
        raise CalibrationError(f"{int(ok.sum())} usable calibration stars, need at least {max(min_points, n_par + 1)}")
    used = ok.copy()
    w = 1.0 / dmag_err**2
    for _ in range(max_iter):
        if used.sum() < max(min_points, n_par + 1):
            raise CalibrationError(f"sigma clipping left {int(used.sum())} stars, need at least {max(min_points, n_par + 1)}")
        if color_term is None:
            a = np.column_stack([np.ones(used.sum()), color[used]])
            y = dmag[used]
        else:
            a = np.ones((used.sum(), 1))
            y = dmag[used] - color_term * color[used]
        ww = w[used]
        ata = a.T @ (a * ww[:, None])
        try:
            cov = np.linalg.inv(ata)
        except np.linalg.LinAlgError:
            raise CalibrationError("degenerate calibration fit: all calibration stars have the same colour") from None
        beta = cov @ (a.T @ (ww * y))
        zp = beta[0]
        ct = beta[1] if color_term is None else float(color_term)
        resid = dmag - zp - ct * color
        r_used = resid[used]
        dof = max(int(used.sum()) - n_par, 1)
        chi2 = float(np.sum(ww * r_used**2) / dof)
        sig = 1.4826 * np.median(np.abs(r_used - np.median(r_used)))
        # clip on the larger of the robust scatter and the formal error of each star
        thresh = clip_sigma * np.maximum(sig, dmag_err)
        new_used = ok & (np.abs(resid) <= thresh)
        if np.array_equal(new_used, used):
            break
        used = new_used
    cov = cov * max(1.0, chi2)
    return LinearFit(float(zp), float(np.sqrt(cov[0, 0])), float(ct),
                     float(np.sqrt(cov[1, 1])) if color_term is None else 0.0, used,
                     float(np.sqrt(np.mean(r_used**2))), chi2)


def _frame_wcs(header, path):
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        w = WCS(header)
    if not w.has_celestial or w.celestial.naxis != 2:
        raise CalibrationError(f"{path}: no celestial WCS in the header; plate-solve the frame first")
    return w.celestial


def calibrate_frame(fits_path: str | os.PathLike, catalog, *, aperture_radius_px: float | None = None,
                    thresh_sigma: float = 5.0, match_radius_px: float | None = None,
                    saturation_adu: float | None = None, gain_e_per_adu: float | None = None,
                    color_term: float | None = None, min_stars: int = 5, clip_sigma: float = 3.0,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> CalibrationResult:
    """Calibrate a plate-solved FITS frame against ``catalog`` (a CatalogProvider).

    saturation_adu / gain_e_per_adu default to the header's SATURATE / GAIN (else 0.95 x the
    frame maximum and 1.0). ``color_term`` fixes the colour term (e.g. from the instrument
    registry) instead of fitting it. Raises CalibrationError (a ValueError) with the counts when
    fewer than ``min_stars`` calibrators remain, and ValueError for unreadable files.
    """
    import sep

    data, header = open_image(fits_path, max_bytes=max_bytes)
    wcs = _frame_wcs(header, fits_path)
    exptime = header.get("EXPTIME", header.get("EXPOSURE"))
    try:
        exptime = float(exptime)
    except (TypeError, ValueError):
        raise CalibrationError(f"{fits_path}: EXPTIME missing or not a number ({exptime!r})") from None
    if not exptime > 0:
        raise CalibrationError(f"{fits_path}: EXPTIME must be > 0 s, got {exptime!r}")
    if min_stars < 2:
        raise ValueError(f"min_stars must be >= 2, got {min_stars!r}")
    band = str(header.get("FILTER", "V")).strip() or "V"
    if saturation_adu is None:
        sat_hdr = header.get("SATURATE")
        saturation_adu = float(sat_hdr) if isinstance(sat_hdr, (int, float)) else 0.95 * float(np.nanmax(data))
    if gain_e_per_adu is None:
        g = header.get("GAIN", header.get("EGAIN"))
        gain_e_per_adu = float(g) if isinstance(g, (int, float)) and g > 0 else 1.0

    arr = np.ascontiguousarray(data, dtype=np.float32)
    mask = ~np.isfinite(arr)
    if mask.any():
        arr = np.where(mask, np.float32(0), arr)
    bkg = sep.Background(arr, mask=mask, bw=64, bh=64, fw=3, fh=3)
    back = bkg.back()
    sub = arr - back
    rms_map = bkg.rms()
    sep.set_extract_pixstack(max(300000, arr.size // 4))
    sep.set_sub_object_limit(4096)
    objs = sep.extract(sub, thresh_sigma, err=bkg.globalrms, mask=mask, minarea=5, deblend_cont=0.005)
    if len(objs) == 0:
        raise CalibrationError(f"{fits_path}: no sources above {thresh_sigma} sigma")
    x, y = objs["x"].astype(float), objs["y"].astype(float)
    peak_total = objs["peak"] + back[np.clip(np.round(y).astype(int), 0, arr.shape[0] - 1),
                                     np.clip(np.round(x).astype(int), 0, arr.shape[1] - 1)]
    saturated = peak_total >= 0.95 * saturation_adu
    clean = (~saturated) & (objs["flag"] == 0) & (objs["b"] > 0)
    sizes = 2.3548 * np.sqrt(0.5 * (objs["a"] ** 2 + objs["b"] ** 2))
    fwhm = float(np.median(sizes[clean])) if clean.sum() >= 3 else float(np.median(sizes))
    wx, wy, wflag = sep.winpos(sub, x, y, np.full(len(x), max(fwhm, 1.0) / 2.3548), mask=mask)
    good_w = (wflag == 0) & np.isfinite(wx) & np.isfinite(wy) & (np.hypot(wx - x, wy - y) < max(fwhm, 1.0))
    x, y = np.where(good_w, wx, x), np.where(good_w, wy, y)
    r_ap = float(aperture_radius_px) if aperture_radius_px else max(2.5 * fwhm, 3.0)
    if not r_ap > 0:
        raise ValueError(f"aperture_radius_px must be > 0, got {aperture_radius_px!r}")
    flux, flux_err, ap_flag = sep.sum_circle(sub, x, y, r_ap, err=rms_map, gain=gain_e_per_adu, mask=mask)
    with np.errstate(divide="ignore", invalid="ignore"):
        inst = np.where(flux > 0, -2.5 * np.log10(flux / exptime), np.nan)
        inst_err = np.where(flux > 0, 1.0857362 * flux_err / flux, np.nan)
    ra, dec = wcs.all_pix2world(x, y, 0)

    # catalog stars in the frame
    ny, nx = arr.shape
    corners = wcs.all_pix2world([[(nx - 1) / 2, (ny - 1) / 2], [0, 0], [nx - 1, 0], [0, ny - 1], [nx - 1, ny - 1]], 0)
    from server.image.catalogs import angular_separation_deg

    radius = float(angular_separation_deg(corners[0, 0], corners[0, 1], corners[1:, 0], corners[1:, 1]).max()) * 1.02
    cat = catalog.cone(float(corners[0, 0]), float(corners[0, 1]), min(radius, 90.0))
    color_name = cat.attrs.get("color_name", getattr(catalog, "color_name", "B-V"))
    n_cat = len(cat)
    match_r = float(match_radius_px) if match_radius_px else max(2.0, fwhm)

    cat_idx = np.full(len(x), -1, dtype=int)
    blended = np.zeros(len(x), dtype=bool)
    if n_cat:
        from scipy.spatial import cKDTree

        cx, cy = wcs.all_world2pix(cat["ra"].to_numpy(float), cat["dec"].to_numpy(float), 0)
        cmag = cat["mag"].to_numpy(float)
        ctree = cKDTree(np.column_stack([cx, cy]))
        d, j = ctree.query(np.column_stack([x, y]), k=1, distance_upper_bound=match_r)
        hit = np.isfinite(d)
        # one-to-one: a catalog star keeps only its closest source
        order = np.argsort(np.where(hit, d, np.inf))
        seen = set()
        for i in order:
            if not hit[i]:
                break
            if j[i] in seen:
                continue
            seen.add(j[i])
            cat_idx[i] = j[i]
        # blend check: another catalog star within the aperture (+1 FWHM) brighter than mag + 3
        for i in np.flatnonzero(cat_idx >= 0):
            k = cat_idx[i]
            near = ctree.query_ball_point([cx[k], cy[k]], r_ap + fwhm)
            blended[i] = any(m != k and cmag[m] < cmag[k] + 3.0 for m in near)

    matched = cat_idx >= 0
    get = lambda col: np.where(matched, cat[col].to_numpy(float)[np.maximum(cat_idx, 0)], np.nan)  # noqa: E731
    cmag_s, cmag_err_s, ccol_s = get("mag"), get("mag_err"), get("color")
    cmag_err_s = np.where(np.isfinite(cmag_err_s), cmag_err_s, 0.0)
    edge = (x < r_ap) | (x > nx - 1 - r_ap) | (y < r_ap) | (y > ny - 1 - r_ap)
    usable = (matched & clean & ~blended & ~edge & (ap_flag == 0) & np.isfinite(inst) & np.isfinite(cmag_s)
              & (inst_err < 0.2))
    if color_term is None or color_term != 0.0:
        usable &= np.isfinite(ccol_s)
    n_usable = int(usable.sum())
    if n_usable < min_stars:
        raise CalibrationError(
            f"{fits_path}: too few catalog stars to calibrate: {n_usable} usable (need >= {min_stars}); "
            f"{n_cat} catalog stars in the field, {int(matched.sum())} matched, "
            f"{int((matched & saturated).sum())} saturated, {int((matched & blended).sum())} blended, "
            f"{int((matched & ~np.isfinite(ccol_s)).sum())} without colour")
    dmag = cmag_s - inst
    dmag_err = np.hypot(inst_err, cmag_err_s)
    col_for_fit = np.where(np.isfinite(ccol_s), ccol_s, 0.0) if color_term is not None else ccol_s
    fit = fit_zero_point(np.where(usable, dmag, np.nan), dmag_err, col_for_fit, color_term=color_term,
                         clip_sigma=clip_sigma, min_points=min_stars)
    mean_col = float(np.mean(ccol_s[fit.used])) if color_term is None else 0.0
    col_assumed = ~np.isfinite(ccol_s)
    col_cal = np.where(col_assumed, mean_col, ccol_s)
    mag_cal = inst + fit.zero_point + fit.color_term * col_cal
    mag_cal_err = np.sqrt(inst_err**2 + fit.zero_point_err**2 + (col_cal * fit.color_term_err) ** 2)

    sources = pd.DataFrame({
        "x": x, "y": y, "ra": ra, "dec": dec, "flux_adu": flux, "flux_err_adu": flux_err,
        "inst_mag": inst, "inst_mag_err": inst_err, "saturated": saturated, "sep_flag": objs["flag"].astype(int),
        "catalog_id": pd.array(np.where(matched, cat["source_id"].astype(str).to_numpy()[np.maximum(cat_idx, 0)], None),
                               dtype="string") if n_cat else pd.array([None] * len(x), dtype="string"),
        "catalog_mag": cmag_s, "catalog_color": ccol_s, "blended": blended,
        "calibrator": usable, "used_in_fit": fit.used, "rejected": usable & ~fit.used,
        "color_assumed": col_assumed, "mag": mag_cal, "mag_err": mag_cal_err,
    })
    return CalibrationResult(
        zero_point=fit.zero_point, zero_point_err=fit.zero_point_err, color_term=fit.color_term,
        color_term_err=fit.color_term_err, scatter_mag=fit.scatter, catalog_matches=int(fit.used.sum()),
        calibrated_sources=sources, n_rejected=int((usable & ~fit.used).sum()), band=band, fwhm_px=fwhm,
        color_name=str(color_name), aperture_radius_px=r_ap, chi2_reduced=fit.chi2_reduced,
        n_matched_total=int(matched.sum()), color_term_fixed=color_term is not None)


def update_instrument_registry(session, site_id: int, camera: str, result: CalibrationResult, *,
                               observation_id: int | None = None, telescope: str | None = None,
                               pixel_scale_arcsec: float | None = None, gain_e_per_adu: float | None = None):
    """Append ``result`` to the history of (site, camera), creating the instrument if new.

    The instrument's zero_point / color_term become the inverse-variance weighted means of its
    history in the same band (errors: 1/sqrt(sum of weights)); ``n_calibrations`` counts all
    history rows. Runs inside the caller's session (one transaction); returns the Instrument.
    """
    from sqlalchemy import select

    from server.core.db.models import Instrument, InstrumentCalibration

    if not camera or not str(camera).strip():
        raise ValueError(f"camera name must be non-empty, got {camera!r}")
    camera = str(camera).strip()
    inst = session.execute(select(Instrument).where(Instrument.site_id == site_id, Instrument.camera == camera)
                           ).scalar_one_or_none()
    if inst is None:
        inst = Instrument(site_id=site_id, camera=camera, telescope=telescope, n_calibrations=0)
        session.add(inst)
        session.flush()
    if telescope and not inst.telescope:
        inst.telescope = telescope
    if pixel_scale_arcsec:
        inst.pixel_scale_arcsec = float(pixel_scale_arcsec)
    if gain_e_per_adu:
        inst.gain_e_per_adu = float(gain_e_per_adu)
    session.add(InstrumentCalibration(
        instrument_id=inst.id, observation_id=observation_id, band=result.band,
        zero_point=result.zero_point, zero_point_err=result.zero_point_err,
        color_term=result.color_term, color_term_err=None if result.color_term_fixed else result.color_term_err,
        scatter_mag=result.scatter_mag, n_stars=result.catalog_matches))
    session.flush()
    rows = session.execute(select(InstrumentCalibration).where(InstrumentCalibration.instrument_id == inst.id)
                           ).scalars().all()
    same = [r for r in rows if r.band == result.band]

    def wmean(vals, errs):
        v = np.array(vals, dtype=float)
        e = np.array([x if x and x > 0 else np.nan for x in errs], dtype=float)
        ok = np.isfinite(v) & np.isfinite(e)
        if not ok.any():
            return (float(np.nanmean(v)) if np.isfinite(v).any() else None), None
        w = 1.0 / e[ok] ** 2
        return float(np.sum(w * v[ok]) / np.sum(w)), float(1.0 / np.sqrt(np.sum(w)))

    inst.zero_point, inst.zero_point_err = wmean([r.zero_point for r in same], [r.zero_point_err for r in same])
    fitted = [r for r in same if r.color_term_err]
    if fitted:
        inst.color_term, inst.color_term_err = wmean([r.color_term for r in fitted], [r.color_term_err for r in fitted])
    inst.n_calibrations = len(rows)
    session.flush()
    return inst
