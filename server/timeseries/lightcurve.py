"""Light-curve assembly: photometry table -> one target, one band, BJD_TDB, site offsets, outliers, binning.

Input table (pandas DataFrame), one row per measurement
    time, per row the first present and finite of: ``bjd_tdb`` (already barycentric, used as is), ``jd_utc``
    (mid-exposure JD, UTC), ``time_utc`` (datetime, UTC), ``mjd`` (MJD, UTC);
    ``mag``/``mag_err`` (mag) and/or ``flux``/``flux_err`` (any linear unit); ``band``;
    ``site_id`` (int or missing), ``site_lat``/``site_lon`` (deg, east positive), ``site_height`` (m);
    optional ``observer_code``, ``is_upper_limit``.
Rows without a site location are converted at the geocentre (<= 21 ms error; counted in ``n_geocentric``).

Rules (each a documented, tunable argument of :func:`assemble_lightcurve`)
    * band: the table must hold exactly one band after selecting ``band``; mixed bands are an error.
    * invalid rows (upper limits, non-finite value or error, error <= 0) are dropped and counted, not guessed.
    * per-site offsets (``offsets='median'``): the "work space" is magnitudes when ``mag`` is present (additive
      offsets), otherwise flux (multiplicative offsets). The reference group is the one with the most points
      (groups: ``site_id``, else ``observer_code``, else one "unknown" group). Groups are then aligned one at a
      time, always the one with the most pairs against the already-aligned points: each of its points is paired
      with the aligned light curve at the same instant (linear interpolation between aligned neighbours both
      within ``match_window`` days, or the nearest aligned point within ``match_window / 2``); the offset is the
      median of the paired differences (ratios in flux). At least ``min_pairs`` pairs are required; groups that
      never overlap stay unshifted and are listed in ``unaligned_sites``.
    * outliers (``reject_sigma``, default 5): the light curve is cut into segments at gaps > ``segment_gap``
      days (default 0.5: nights). Each point's residual is taken from a local line through the
      ``reject_window - 1`` (default 6) nearest *currently kept* points of its segment other than itself
      (Theil-Sen: median of pairwise slopes, median intercept), so slopes and night edges do not masquerade as
      outliers; points with fewer than 3 such neighbours are not tested. A point is rejected when
      ``|r - median(r)| > reject_sigma * 1.4826 * MAD(r)`` (median and MAD over the kept points). Every pass
      re-tests all points against the kept ones, so a good point condemned by outlying neighbours is re-admitted
      once they are gone; passes repeat until the kept set is stable (at most 10).
    * output quantity: ``'mag'`` or ``'flux'``. Magnitudes become relative flux ``10**(-0.4 (m - m_med))``
      (``m_med``: median aligned magnitude, stored in ``meta``) with ``sigma_F = 0.4 ln(10) F sigma_m``.
    * binning (``bin_days``): consecutive bins ``[t0 + k*bin, t0 + (k+1)*bin)`` from the first time;
      inverse-variance weighted mean value and time, error ``1/sqrt(sum w)``; ``n_points`` per bin; ``site_id``
      -1 when a bin mixes sites.
Exports (:func:`write_csv`, :func:`write_fits`) carry units and the time system in their headers and are
written atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from app.atomic import atomic_path
import pandas as pd

from server.core.timeconv import SiteLocation, utc_to_bjd_tdb

__all__ = [
    "AssembledLightCurve",
    "assemble_lightcurve",
    "lightcurve_from_db",
    "photometry_frame_from_db",
    "write_csv",
    "write_fits",
    "write_lightcurve",
]

LN10_04 = 0.4 * math.log(10.0)
MAD_TO_SIGMA = 1.4826
Quantity = Literal["mag", "flux"]


@dataclass(frozen=True)
class AssembledLightCurve:
    """One target in one band. ``bjd_tdb`` in days (BJD_TDB); ``value``/``error`` in ``unit``."""

    target: str
    band: str
    quantity: str
    unit: str
    bjd_tdb: np.ndarray
    value: np.ndarray
    error: np.ndarray
    site_id: np.ndarray
    n_points: np.ndarray
    ra_deg: float | None
    dec_deg: float | None
    site_offsets: dict = field(default_factory=dict)
    unaligned_sites: tuple = ()
    n_input: int = 0
    n_rejected: int = 0
    n_invalid: int = 0
    n_upper_limits: int = 0
    n_geocentric: int = 0
    n_outside_iers: int = 0
    rejected_bjd_tdb: np.ndarray = field(default_factory=lambda: np.empty(0))
    bin_days: float | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.bjd_tdb.size)

    def summary(self) -> dict:
        """Plain-data description (JSON-safe) for the database and export headers."""
        return {
            "target": self.target, "band": self.band, "quantity": self.quantity, "unit": self.unit,
            "time_system": "BJD_TDB", "n_points": len(self), "n_input": self.n_input,
            "n_rejected": self.n_rejected, "n_invalid": self.n_invalid, "n_upper_limits": self.n_upper_limits,
            "n_geocentric": self.n_geocentric, "n_outside_iers": self.n_outside_iers,
            "site_offsets": {str(k): float(v) for k, v in self.site_offsets.items()},
            "unaligned_sites": [str(s) for s in self.unaligned_sites], "bin_days": self.bin_days,
            **self.meta,
        }


# ------------------------------------------------------------------------------------------------ helpers


def _column(table: pd.DataFrame, name: str, dtype=float) -> np.ndarray:
    if name not in table.columns:
        return np.full(len(table), np.nan) if dtype is float else np.full(len(table), None, dtype=object)
    col = table[name]
    if dtype is float:
        return pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return col.to_numpy(dtype=object)


def _group_keys(table: pd.DataFrame) -> np.ndarray:
    site = _column(table, "site_id", object)
    observer = _column(table, "observer_code", object)
    keys = []
    for s, o in zip(site, observer):
        if not pd.isna(s):
            keys.append(f"site:{int(s)}")
        elif not pd.isna(o) and str(o):
            keys.append(f"observer:{o}")
        else:
            keys.append("unknown")
    return np.asarray(keys, dtype=object)


def _barycentric_times(table: pd.DataFrame, ra_deg, dec_deg):
    """Per-row BJD_TDB with the precedence bjd_tdb > jd_utc > time_utc > mjd; grouped by site location."""
    n = len(table)
    bjd = _column(table, "bjd_tdb")
    jd = _column(table, "jd_utc")
    mjd = _column(table, "mjd")
    if "time_utc" in table.columns:
        tutc = pd.to_datetime(table["time_utc"], utc=True, errors="coerce")
        jd_from_dt = (tutc - pd.Timestamp("1858-11-17", tz="UTC")).dt.total_seconds().to_numpy(
            dtype=float, na_value=np.nan) / 86400.0 + 2400000.5
    else:
        jd_from_dt = np.full(n, np.nan)
    jd_utc = np.where(np.isfinite(jd), jd, np.where(np.isfinite(jd_from_dt), jd_from_dt, mjd + 2400000.5))
    need = ~np.isfinite(bjd)
    missing = need & ~np.isfinite(jd_utc)
    if missing.any():
        i = int(np.argmax(missing))
        raise ValueError(f"{int(missing.sum())} row(s) have no usable time (bjd_tdb, jd_utc, time_utc or mjd), "
                         f"first at row {table.index[i]!r}")
    out = bjd.copy()
    outside = np.zeros(n, dtype=bool)
    geocentric = np.zeros(n, dtype=bool)
    if need.any():
        if ra_deg is None or dec_deg is None:
            raise ValueError("target coordinates (ra_deg, dec_deg) are needed to convert UTC times to BJD_TDB")
        lat, lon, h = _column(table, "site_lat"), _column(table, "site_lon"), _column(table, "site_height")
        h = np.where(np.isfinite(h), h, 0.0)
        located = np.isfinite(lat) & np.isfinite(lon)
        loc_key = np.array([f"{a!r}/{b!r}/{c!r}" if ok else "geocentre" for a, b, c, ok in zip(lat, lon, h, located)],
                           dtype=object)
        for key in np.unique(loc_key[need]):
            rows = need & (loc_key == key)
            if key == "geocentre":
                conv = utc_to_bjd_tdb(jd_utc[rows], ra_deg=ra_deg, dec_deg=dec_deg, site=None, time_format="jd",
                                      geocenter=True)
                geocentric[rows] = True
            else:
                i = int(np.argmax(rows))
                site = SiteLocation(lat_deg=float(lat[i]), lon_deg=float(lon[i]), height_m=float(h[i]))
                conv = utc_to_bjd_tdb(jd_utc[rows], ra_deg=ra_deg, dec_deg=dec_deg, site=site, time_format="jd")
            out[rows] = conv.bjd_tdb
            outside[rows] = conv.outside_iers
    return out, int(geocentric.sum()), int(outside.sum())


def _paired_offset(t_ref, y_ref, t, y, match_window, multiplicative):
    """Median difference (ratio) of (t, y) against the reference curve at the same instants; (offset, n_pairs)."""
    order = np.argsort(t_ref, kind="stable")
    t_ref, y_ref = t_ref[order], y_ref[order]
    j = np.searchsorted(t_ref, t)
    left = np.clip(j - 1, 0, t_ref.size - 1)
    right = np.clip(j, 0, t_ref.size - 1)
    dl, dr = t - t_ref[left], t_ref[right] - t
    both = (j > 0) & (j < t_ref.size) & (dl <= match_window) & (dr <= match_window) & (dl + dr > 0)
    frac = np.where(both, dl / np.where(dl + dr > 0, dl + dr, 1.0), 0.0)
    interp = y_ref[left] + frac * (y_ref[right] - y_ref[left])
    nearest = np.where(np.abs(dl) <= np.abs(dr), left, right)
    close = np.abs(t - t_ref[nearest]) <= match_window / 2
    ref_val = np.where(both, interp, np.where(close, y_ref[nearest], np.nan))
    ok = np.isfinite(ref_val)
    if multiplicative:
        ok &= ref_val > 0
        d = y[ok] / ref_val[ok]
    else:
        d = y[ok] - ref_val[ok]
    return (float(np.median(d)) if d.size else float("nan")), int(d.size)


def _align_sites(t, y, groups, match_window, min_pairs, multiplicative):
    labels, counts = np.unique(groups, return_counts=True)
    reference = labels[np.argmax(counts)]
    offsets = {reference: 1.0 if multiplicative else 0.0}
    aligned = groups == reference
    y = y.copy()
    pending = [g for g in labels if g != reference]
    while pending:
        trials = []
        for g in pending:
            rows = groups == g
            off, npairs = _paired_offset(t[aligned], y[aligned], t[rows], y[rows], match_window, multiplicative)
            trials.append((npairs, g, off))
        npairs, g, off = max(trials, key=lambda x: x[0])
        if npairs < min_pairs:
            break
        rows = groups == g
        y[rows] = y[rows] / off if multiplicative else y[rows] - off
        offsets[g] = off
        aligned |= rows
        pending.remove(g)
    return y, offsets, tuple(pending), reference


def _segments(t, gap):
    """Index ranges of runs of sorted times with no step larger than ``gap`` days."""
    breaks = np.nonzero(np.diff(t) > gap)[0] + 1
    edges = np.concatenate([[0], breaks, [t.size]])
    return list(zip(edges[:-1], edges[1:]))


def _theil_sen(tn, yn, t):
    """Per row: line through the neighbours (tn, yn) (median pairwise slope, median intercept), evaluated at t."""
    m, k = tn.shape
    a, b = np.triu_indices(k, 1)
    dt = tn[:, b] - tn[:, a]
    with np.errstate(divide="ignore", invalid="ignore"):
        slopes = np.where(dt > 0, (yn[:, b] - yn[:, a]) / dt, np.nan)
    has_slope = np.isfinite(slopes).any(axis=1)
    slope = np.zeros(m)
    slope[has_slope] = np.nanmedian(slopes[has_slope], axis=1)
    intercept = np.median(yn - slope[:, None] * tn, axis=1)
    return intercept + slope * t


def _local_prediction(t, y, keep, window):
    """Prediction for every point of one segment from the ``window - 1`` nearest kept points other than itself;
    NaN where fewer than 3 such neighbours exist."""
    t = t - t[0]
    kept = np.nonzero(keep)[0]
    out = np.full(t.size, np.nan)
    k = min(window - 1, kept.size - 1)
    if k < 3:
        return out
    # kept points: leave-one-out windows of k + 1 kept points (self removed)
    pos = np.arange(kept.size)
    starts = np.clip(pos - (k + 1) // 2, 0, kept.size - (k + 1))
    idx = starts[:, None] + np.arange(k + 1)[None, :]
    idx = idx[idx != pos[:, None]].reshape(kept.size, k)
    nb = kept[idx]
    out[kept] = _theil_sen(t[nb], y[nb], t[kept])
    # rejected points: the k kept points around their place in time (so they can be re-admitted)
    rejected = np.nonzero(~keep)[0]
    if rejected.size:
        ins = np.searchsorted(t[kept], t[rejected])
        starts = np.clip(ins - k // 2, 0, kept.size - k)
        nb = kept[starts[:, None] + np.arange(k)[None, :]]
        out[rejected] = _theil_sen(t[nb], y[nb], t[rejected])
    return out


def _reject_outliers(t, y, nsigma, window, gap, max_iter=10):
    """Iterative clipping of residuals from local robust lines, with re-admission (module docstring)."""
    keep = np.ones(y.size, dtype=bool)
    segments = _segments(t, gap)
    for _ in range(max_iter):
        resid = np.full(y.size, np.nan)
        for lo, hi in segments:
            resid[lo:hi] = y[lo:hi] - _local_prediction(t[lo:hi], y[lo:hi], keep[lo:hi], window)
        tested = np.isfinite(resid)
        basis = tested & keep
        if basis.sum() < 5:
            break
        centre = np.median(resid[basis])
        scale = MAD_TO_SIGMA * np.median(np.abs(resid[basis] - centre))
        if scale <= 0:
            break
        new_keep = ~tested | (np.abs(resid - centre) <= nsigma * scale)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return keep


def _bin(t, y, e, site, bin_days):
    t0 = t.min()
    index = np.floor((t - t0) / bin_days).astype(np.int64)
    uniq, inverse = np.unique(index, return_inverse=True)
    w = e**-2
    sw = np.bincount(inverse, w)
    tb = np.bincount(inverse, w * t) / sw
    yb = np.bincount(inverse, w * y) / sw
    eb = 1.0 / np.sqrt(sw)
    nb = np.bincount(inverse).astype(np.int64)
    smin = np.full(uniq.size, np.iinfo(np.int64).max)
    smax = np.full(uniq.size, np.iinfo(np.int64).min)
    np.minimum.at(smin, inverse, site)
    np.maximum.at(smax, inverse, site)
    sb = np.where(smin == smax, smin, -1)
    return tb, yb, eb, sb, nb


# ------------------------------------------------------------------------------------------------ assembly


def assemble_lightcurve(
    table: pd.DataFrame, *, target: str, band: str | None = None, ra_deg: float | None = None,
    dec_deg: float | None = None, quantity: Quantity = "mag", offsets: Literal["median", "none"] = "median",
    match_window: float = 0.02, min_pairs: int = 3, reject_sigma: float | None = 5.0, reject_window: int = 7,
    segment_gap: float = 0.5, bin_days: float | None = None,
) -> AssembledLightCurve:
    """Assemble one light curve (rules in the module docstring). Raises ``ValueError`` for mixed bands,
    an empty selection, missing columns or times, and bad parameters."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    if quantity not in ("mag", "flux"):
        raise ValueError(f"quantity must be 'mag' or 'flux', got {quantity!r}")
    if offsets not in ("median", "none"):
        raise ValueError(f"offsets must be 'median' or 'none', got {offsets!r}")
    if reject_sigma is not None and not (np.isfinite(reject_sigma) and reject_sigma > 0):
        raise ValueError(f"reject_sigma must be positive or None, got {reject_sigma!r}")
    if not (isinstance(reject_window, (int, np.integer)) and reject_window >= 4):
        raise ValueError(f"reject_window must be an integer >= 4, got {reject_window!r}")
    if not (np.isfinite(segment_gap) and segment_gap > 0):
        raise ValueError(f"segment_gap must be a positive number of days, got {segment_gap!r}")
    if bin_days is not None and not (np.isfinite(bin_days) and bin_days > 0):
        raise ValueError(f"bin_days must be a positive number of days or None, got {bin_days!r}")
    if not (np.isfinite(match_window) and match_window > 0):
        raise ValueError(f"match_window must be a positive number of days, got {match_window!r}")
    if "band" not in table.columns:
        raise ValueError("photometry table has no 'band' column")
    if len(table) == 0:
        raise ValueError(f"no photometry for target {target!r}")

    bands = sorted({str(b) for b in table["band"].dropna().unique()})
    if band is None:
        if len(bands) != 1:
            raise ValueError(f"photometry for {target!r} mixes bands {bands}: choose one with band=...")
        band = bands[0]
    sel = table[table["band"].astype(str) == str(band)]
    if len(sel) == 0:
        raise ValueError(f"no photometry for target {target!r} in band {band!r} (bands present: {bands})")
    n_input = len(sel)

    has_mag = "mag" in sel.columns and np.isfinite(_column(sel, "mag")).any()
    has_flux = "flux" in sel.columns and np.isfinite(_column(sel, "flux")).any()
    if not (has_mag or has_flux):
        raise ValueError(f"photometry for {target!r} in band {band!r} has neither 'mag' nor 'flux' values")
    if quantity == "mag" and not has_mag:
        raise ValueError(f"quantity='mag' asked but the {band!r} photometry of {target!r} has only fluxes")
    work_mag = has_mag
    value = _column(sel, "mag" if work_mag else "flux")
    error = _column(sel, "mag_err" if work_mag else "flux_err")

    upper = _column(sel, "is_upper_limit").astype(float) if "is_upper_limit" in sel.columns else np.zeros(n_input)
    upper = np.nan_to_num(upper, nan=0.0) > 0
    valid = ~upper & np.isfinite(value) & np.isfinite(error) & (error > 0)
    n_upper = int(upper.sum())
    n_invalid = int((~valid & ~upper).sum())
    sel = sel[valid]
    value, error = value[valid], error[valid]
    if value.size == 0:
        raise ValueError(f"no usable photometry for {target!r} in band {band!r}: {n_upper} upper limits, "
                         f"{n_invalid} rows with missing/invalid values or errors")

    bjd, n_geo, n_outside = _barycentric_times(sel, ra_deg, dec_deg)
    groups = _group_keys(sel)
    site_num = np.array([int(g.split(":", 1)[1]) if g.startswith("site:") else -1 for g in groups], dtype=np.int64)
    order = np.argsort(bjd, kind="stable")
    bjd, value, error, groups, site_num = bjd[order], value[order], error[order], groups[order], site_num[order]

    multiplicative = not work_mag
    site_offsets: dict = {}
    unaligned: tuple = ()
    reference = None
    if offsets == "median" and np.unique(groups).size > 1:
        value, site_offsets, unaligned, reference = _align_sites(
            bjd, value, groups, match_window, int(min_pairs), multiplicative)

    keep = np.ones(value.size, dtype=bool)
    if reject_sigma is not None:
        keep = _reject_outliers(bjd, value, float(reject_sigma), int(reject_window), float(segment_gap))
    rejected_t = bjd[~keep]
    bjd, value, error, site_num = bjd[keep], value[keep], error[keep], site_num[keep]

    meta: dict = {"offset_reference": reference, "offset_kind": "ratio" if multiplicative else "additive_mag"}
    if quantity == "flux" and work_mag:
        m_ref = float(np.median(value))
        flux = 10.0 ** (-0.4 * (value - m_ref))
        error = LN10_04 * flux * error
        value = flux
        meta["flux_reference_mag"] = m_ref
    unit = "mag" if quantity == "mag" else ("relative" if work_mag else "flux")

    n_per = np.ones(value.size, dtype=np.int64)
    if bin_days is not None and value.size:
        bjd, value, error, site_num, n_per = _bin(bjd, value, error, site_num, float(bin_days))

    for arr in (bjd, value, error, site_num, n_per, rejected_t):
        arr.setflags(write=False)
    return AssembledLightCurve(
        target=str(target), band=str(band), quantity=quantity, unit=unit, bjd_tdb=bjd, value=value, error=error,
        site_id=site_num, n_points=n_per, ra_deg=ra_deg, dec_deg=dec_deg, site_offsets=site_offsets,
        unaligned_sites=unaligned, n_input=n_input, n_rejected=int((~keep).sum()), n_invalid=n_invalid,
        n_upper_limits=n_upper, n_geocentric=n_geo, n_outside_iers=n_outside, rejected_bjd_tdb=rejected_t,
        bin_days=bin_days, meta=meta,
    )


# ------------------------------------------------------------------------------------------------ database


def photometry_frame_from_db(session, target_name: str):
    """(Target row, DataFrame of all its photometry joined with site locations). ValueError if unknown."""
    from sqlalchemy import select

    from server.core.db.models import PhotometryPoint, Site, Target

    target = session.scalars(select(Target).where(Target.name == target_name)).one_or_none()
    if target is None:
        raise ValueError(f"no target named {target_name!r} in the database")
    rows = session.execute(
        select(PhotometryPoint, Site.latitude_deg, Site.longitude_deg, Site.height_m)
        .outerjoin(Site, PhotometryPoint.site_id == Site.id)
        .where(PhotometryPoint.target_id == target.id)
        .order_by(PhotometryPoint.jd_utc, PhotometryPoint.id)
    ).all()
    records = [{
        "site_id": p.site_id, "observer_code": p.observer_code, "time_utc": p.time_utc, "jd_utc": p.jd_utc,
        "bjd_tdb": p.bjd_tdb, "band": p.band, "mag": p.mag, "mag_err": p.mag_err, "flux": p.flux,
        "flux_err": p.flux_err, "is_upper_limit": bool(p.is_upper_limit), "source": p.source,
        "site_lat": lat, "site_lon": lon, "site_height": h,
    } for p, lat, lon, h in rows]
    columns = ["site_id", "observer_code", "time_utc", "jd_utc", "bjd_tdb", "band", "mag", "mag_err", "flux",
               "flux_err", "is_upper_limit", "source", "site_lat", "site_lon", "site_height"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    frame["site_id"] = frame["site_id"].astype("Int64")
    return target, frame


def lightcurve_from_db(session, target_name: str, band: str, **kwargs) -> AssembledLightCurve:
    """Assemble the ``band`` light curve of ``target_name`` from PhotometryPoint rows (read only).

    ``kwargs`` go to :func:`assemble_lightcurve`. Raises ``ValueError`` for an unknown target, no photometry,
    or no photometry in ``band``.
    """
    target, frame = photometry_frame_from_db(session, target_name)
    if frame.empty:
        raise ValueError(f"target {target_name!r} has no photometry in the database")
    return assemble_lightcurve(frame, target=target.name, band=band, ra_deg=target.ra_deg, dec_deg=target.dec_deg,
                               **kwargs)


# ------------------------------------------------------------------------------------------------ export


def _atomic_write(path, write) -> str:
    with atomic_path(path) as tmp:
        write(tmp)
    return os.fspath(path)


def _value_columns(lc: AssembledLightCurve):
    name = "mag" if lc.quantity == "mag" else "flux"
    return name, f"{name}_err"


def write_csv(lc: AssembledLightCurve, path) -> str:
    """CSV with a ``#`` header block: target, band, time system, column units, offsets (JSON)."""
    vname, ename = _value_columns(lc)
    header = [
        "# OpenAstro Compute light curve (format openastro.lightcurve.csv, version 1)",
        f"# target: {lc.target}",
        f"# band: {lc.band}",
        "# time_system: BJD_TDB (Julian days, TDB scale, solar-system barycentre)",
        f"# columns: bjd_tdb [d], {vname} [{lc.unit}], {ename} [{lc.unit}], site_id [-1 = unknown or mixed], "
        "n_points [measurements per row]",
        f"# summary: {json.dumps(lc.summary(), sort_keys=True, default=str)}",
        f"bjd_tdb,{vname},{ename},site_id,n_points",
    ]
    lines = [f"{t:.10f},{v:.10g},{e:.6g},{int(s)},{int(n)}"
             for t, v, e, s, n in zip(lc.bjd_tdb, lc.value, lc.error, lc.site_id, lc.n_points)]

    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write("\n".join(header + lines) + "\n")

    return _atomic_write(path, write)


def write_fits(lc: AssembledLightCurve, path) -> str:
    """FITS binary table with TUNITn per column and TIMESYS/TIMEREF/TIMEUNIT keywords (FITS time standard)."""
    from astropy.io import fits

    vname, ename = _value_columns(lc)
    unit = "" if lc.unit in ("relative", "flux") else lc.unit
    cols = fits.ColDefs([
        fits.Column(name="bjd_tdb", format="D", unit="d", array=np.asarray(lc.bjd_tdb)),
        fits.Column(name=vname, format="D", unit=unit, array=np.asarray(lc.value)),
        fits.Column(name=ename, format="D", unit=unit, array=np.asarray(lc.error)),
        fits.Column(name="site_id", format="K", array=np.asarray(lc.site_id)),
        fits.Column(name="n_points", format="K", array=np.asarray(lc.n_points)),
    ])
    hdu = fits.BinTableHDU.from_columns(cols, name="LIGHTCURVE")
    h = hdu.header
    h["OBJECT"] = (lc.target, "target name")
    h["FILTER"] = (lc.band, "photometric band")
    h["TIMESYS"] = ("TDB", "time scale of bjd_tdb")
    h["TIMEREF"] = ("SOLARSYSTEM", "times referred to the solar-system barycentre")
    h["TIMEUNIT"] = ("d", "unit of time columns")
    h["JDREF"] = (0.0, "bjd_tdb is a full Julian date")
    h["QUANTITY"] = (lc.quantity, "mag or flux")
    h["VALUNIT"] = (lc.unit, "unit of values (relative: F / F(median mag))")
    if lc.ra_deg is not None:
        h["RA_OBJ"] = (float(lc.ra_deg), "[deg] target right ascension (ICRS)")
    if lc.dec_deg is not None:
        h["DEC_OBJ"] = (float(lc.dec_deg), "[deg] target declination (ICRS)")
    h["NREJECT"] = (lc.n_rejected, "points rejected as outliers")
    h["NINVALID"] = (lc.n_invalid, "rows dropped: missing/invalid value or error")
    h["NUPLIM"] = (lc.n_upper_limits, "upper limits dropped")
    h["NGEOCEN"] = (lc.n_geocentric, "points without site location (geocentric BJD)")
    if lc.bin_days is not None:
        h["BINDAYS"] = (float(lc.bin_days), "[d] bin width")
    for key, off in lc.site_offsets.items():
        h.add_history(f"offset {key}: {off:.6g} ({lc.meta.get('offset_kind', '')})")
    primary = fits.PrimaryHDU()
    primary.header["ORIGIN"] = "OpenAstro Compute"
    hdul = fits.HDUList([primary, hdu])
    return _atomic_write(path, lambda tmp: hdul.writeto(tmp, overwrite=True))


def write_lightcurve(lc: AssembledLightCurve, path, fmt: Literal["csv", "fits"] = "csv") -> str:
    if fmt == "csv":
        return write_csv(lc, path)
    if fmt == "fits":
        return write_fits(lc, path)
    raise ValueError(f"format must be 'csv' or 'fits', got {fmt!r}")
