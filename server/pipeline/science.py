"""The science half of the reactive pipeline: new photometry -> light curves -> period search and transit timing.

Three steps per target, each idempotent by a fingerprint of the data it read (``photometry_sha256``: SHA-256 of the
target's photometry rows), stored with what it wrote:

``update_lightcurves``
    assembles one light curve per band (BJD_TDB, magnitudes, per-site offsets, 5-sigma outlier rejection: the
    ``openastro results lightcurve`` defaults), stores each as CSV in the object store with a ``LightCurve`` row.
``search_period``
    Lomb-Scargle on the bands with at least ``period_search_min_points`` points: one band alone, two or more in one
    multi-band periodogram (shared period), as ``openastro results periodogram`` does; Baluev / analytic FAP (no
    random numbers), stored as a ``Periodogram`` row (band NULL and ``meta.bands`` for a multi-band search).
``time_transits``
    only for a target with a transit ephemeris and shape (``set_transit_params``, kept in ``Target.meta``):
    ``server.ttv.handoff.transit_times_from_db`` re-measures every transit of the band and replaces the pipeline's
    ``TransitTime`` rows; ``new_times`` says whether the target's transit-time table changed (the trigger for TTV
    re-inference).

A step whose stored fingerprint equals the current one does nothing (``skipped``): a re-delivered task, or one of
many triggers for the same data, changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tempfile
from dataclasses import dataclass, field

from sqlalchemy import select

from server.core.context import OpenAstro
from server.core.db.models import LightCurve, Periodogram, PhotometryPoint, Target

TRANSIT_KEYS = ("period", "t0")


@dataclass(frozen=True)
class ScienceOutcome:
    target: str
    step: str       # lightcurve, period_search, transit_timing
    status: str     # ok, skipped (data already used), insufficient (not enough data), not_applicable
    message: str = ""
    photometry_sha256: str | None = None
    new_times: bool = False  # transit_timing only: the target's transit-time table changed
    row_ids: tuple[int, ...] = field(default_factory=tuple)


def _target(session, name: str) -> Target:
    target = session.scalars(select(Target).where(Target.name == name)).one_or_none()
    if target is None:
        raise ValueError(f"no target named {name!r} in the database")
    return target


def photometry_fingerprint(session, target_id: int) -> tuple[str, dict[str, int]]:
    """(SHA-256 of the target's photometry rows, points per band). A re-calibrated frame replaces its rows (new
    ids), so any change to the data changes the hash."""
    rows = session.execute(
        select(PhotometryPoint.id, PhotometryPoint.band, PhotometryPoint.jd_utc, PhotometryPoint.bjd_tdb,
               PhotometryPoint.mag, PhotometryPoint.mag_err, PhotometryPoint.flux, PhotometryPoint.flux_err,
               PhotometryPoint.is_upper_limit, PhotometryPoint.site_id)
        .where(PhotometryPoint.target_id == target_id).order_by(PhotometryPoint.id)).all()
    h = hashlib.sha256()
    counts: dict[str, int] = {}
    for row in rows:
        h.update(json.dumps([None if isinstance(v, float) and not math.isfinite(v) else v for v in row],
                            default=str).encode())
        counts[str(row[1])] = counts.get(str(row[1]), 0) + 1
    return h.hexdigest(), counts


def targets_of_photometry(app: OpenAstro, observation_id: int) -> list[str]:
    """Names of the targets an observation's photometry rows belong to (what a calibrated frame gave new data)."""
    with app.db.session() as s:
        return sorted(set(s.scalars(select(Target.name).join(PhotometryPoint, PhotometryPoint.target_id == Target.id)
                                    .where(PhotometryPoint.observation_id == int(observation_id)))))


def _newest_meta(session, model, target_id: int) -> dict:
    row = session.scalars(select(model).where(model.target_id == target_id).order_by(model.id.desc())).first()
    return dict(row.meta or {}) if row is not None else {}


def update_lightcurves(app: OpenAstro, target_name: str) -> ScienceOutcome:
    from server.timeseries.lightcurve import lightcurve_from_db, write_csv

    with app.db.session() as s:
        target = _target(s, target_name)
        sha, counts = photometry_fingerprint(s, target.id)
        if not counts:
            return ScienceOutcome(target_name, "lightcurve", "insufficient", "no photometry", sha)
        if _newest_meta(s, LightCurve, target.id).get("photometry_sha256") == sha:
            return ScienceOutcome(target_name, "lightcurve", "skipped", "light curves already use these data", sha)
        curves = []
        for band in sorted(counts):
            try:
                curves.append(lightcurve_from_db(s, target_name, band, reject_sigma=5.0))
            except ValueError as exc:  # e.g. only upper limits in this band
                curves.append(str(exc))
    stored = []
    for lc in curves:
        if isinstance(lc, str) or len(lc) == 0:
            continue
        with tempfile.TemporaryDirectory(dir=app.work_dir("science")) as tmp:
            key = app.store.put_file(write_csv(lc, f"{tmp}/lc.csv")).key
        stored.append((lc, key))
    if not stored:
        return ScienceOutcome(target_name, "lightcurve", "insufficient", "; ".join(c for c in curves
                                                                                  if isinstance(c, str)), sha)
    ids = []
    with app.db.session() as s:
        target = _target(s, target_name)
        for lc, key in stored:
            row = LightCurve(target_id=target.id, band=lc.band, n_points=len(lc), n_rejected=lc.n_rejected,
                             storage_key=key, meta={**lc.summary(), "photometry_sha256": sha, "source": "pipeline"})
            s.add(row)
            s.flush()
            ids.append(int(row.id))
    bands = ", ".join(f"{lc.band} {len(lc)}" for lc, _ in stored)
    return ScienceOutcome(target_name, "lightcurve", "ok", f"light curves stored: {bands} points", sha, False,
                          tuple(ids))


def _periodogram(curves, threads: int):
    """One band: Lomb-Scargle with the Baluev FAP; two or more: the multi-band periodogram, analytic FAP."""
    import numpy as np

    if len(curves) == 1:
        from server.timeseries.periodogram import lomb_scargle_result

        (lc,) = curves
        return lomb_scargle_result(lc.bjd_tdb, lc.value, lc.error, fap_method="baluev", threads=threads)
    from server.timeseries.multiband import multiband_periodogram

    return multiband_periodogram(
        np.concatenate([lc.bjd_tdb for lc in curves]), np.concatenate([lc.value for lc in curves]),
        np.concatenate([lc.error for lc in curves]), np.concatenate([[lc.band] * len(lc) for lc in curves]),
        fap_method="analytic", threads=threads)


def search_period(app: OpenAstro, target_name: str) -> ScienceOutcome:
    import numpy as np

    from server.timeseries.lightcurve import lightcurve_from_db

    min_points = app.settings.period_search_min_points
    with app.db.session() as s:
        target = _target(s, target_name)
        sha, counts = photometry_fingerprint(s, target.id)
        bands = sorted(b for b, n in counts.items() if n >= min_points)
        if not bands:
            return ScienceOutcome(target_name, "period_search", "insufficient",
                                  f"no band has {min_points} points (period_search_min_points): {counts}", sha)
        if _newest_meta(s, Periodogram, target.id).get("photometry_sha256") == sha:
            return ScienceOutcome(target_name, "period_search", "skipped", "period search already used these data",
                                  sha)
        curves = [lightcurve_from_db(s, target_name, b, reject_sigma=5.0) for b in bands]
        lc_ids = {b: s.scalar(select(LightCurve.id).where(LightCurve.target_id == target.id, LightCurve.band == b)
                              .order_by(LightCurve.id.desc()).limit(1)) for b in bands}
    try:
        res = _periodogram(curves, app.settings.lombscargle_threads)
    except ValueError as exc:  # e.g. every point at one instant: no baseline to search
        return ScienceOutcome(target_name, "period_search", "insufficient", str(exc), sha)
    lc_id = lc_ids[curves[0].band] if len(curves) == 1 else None
    band = curves[0].band if len(curves) == 1 else None
    window = getattr(res, "window_power", None)
    arrays = {"frequency": res.frequency, "power": res.power}
    if window is not None:
        arrays["window_power"] = window
    buf = io.BytesIO()
    np.savez(buf, **arrays, meta=np.array(json.dumps({"format": "openastro.periodogram", "version": 1,
                                                      "units": "cycles/day"})))
    key = app.store.put_bytes(buf.getvalue()).key
    meta = {"best_frequency": float(res.best_frequency), "best_power": float(res.best_power), "nterms": res.nterms,
            "n_points": res.n_points if isinstance(res.n_points, dict) else int(res.n_points),
            "baseline_d": float(res.baseline), "bands": bands, "photometry_sha256": sha, "source": "pipeline",
            "warnings": [{"kind": w.kind, "message": w.message} for w in res.warnings]}
    with app.db.session() as s:
        target = _target(s, target_name)
        row = Periodogram(light_curve_id=lc_id, target_id=target.id, band=band, best_period=float(res.best_period),
                          best_period_err=float(res.best_period_err), fap=float(res.fap), fap_method=res.fap_method,
                          storage_key=key, meta=meta)
        s.add(row)
        s.flush()
        row_id = int(row.id)
    return ScienceOutcome(target_name, "period_search", "ok",
                          f"{'+'.join(bands)}: best period {res.best_period:.6f} d, FAP {res.fap:.3g}", sha, False,
                          (row_id,))


# --- transit timing ----------------------------------------------------------------------------------------------


def set_transit_params(app: OpenAstro, target_name: str, params: dict, *, band: str, planet: str = "b",
                       fit_shape: bool = True) -> dict:
    """Give a target the transit ephemeris and shape its transit timing needs (``period`` and ``t0`` in BJD_TDB
    days, and the shape: ``rp_rs``, ``a_rs``, ``inc`` or ``b``, ``u``, as ``extract_transit_times`` takes them).
    The pipeline then times its transits in ``band`` whenever new photometry arrives."""
    if not isinstance(params, dict):
        raise TypeError(f"transit parameters must be a mapping, got {type(params).__name__}")
    missing = [k for k in TRANSIT_KEYS if k not in params]
    if missing:
        raise ValueError(f"transit parameters lack {missing} (have {sorted(params)})")
    period = params["period"]
    if not isinstance(period, (int, float)) or not math.isfinite(period) or period <= 0:
        raise ValueError(f"transit period must be a positive number of days, got {period!r}")
    if not band or not planet:
        raise ValueError(f"band and planet must be non-empty, got band={band!r} planet={planet!r}")
    entry = {"params": json.loads(json.dumps(params)), "band": str(band), "planet": str(planet),
             "fit_shape": bool(fit_shape)}
    with app.db.session() as s:
        target = _target(s, target_name)
        target.meta = {**(target.meta or {}), "transit": entry}  # a new dict: the JSON column sees the change
    return entry


def has_transit_params(app: OpenAstro, target_name: str) -> bool:
    with app.db.session() as s:
        return bool((_target(s, target_name).meta or {}).get("transit"))


def time_transits(app: OpenAstro, target_name: str) -> ScienceOutcome:
    from server.ttv.handoff import transit_times_from_db
    from server.ttv.reinfer import transit_table

    with app.db.session() as s:
        target = _target(s, target_name)
        entry = dict((target.meta or {}).get("transit") or {})
        sha, counts = photometry_fingerprint(s, target.id)
    if not entry:
        return ScienceOutcome(target_name, "transit_timing", "not_applicable", "no transit ephemeris", sha)
    if entry.get("timed_photometry_sha256") == sha:
        return ScienceOutcome(target_name, "transit_timing", "skipped", "transits already timed on these data", sha)
    if counts.get(entry["band"], 0) == 0:
        return ScienceOutcome(target_name, "transit_timing", "insufficient", f"no {entry['band']} photometry", sha)

    def table_hash():
        try:
            return transit_table(app, target_name)[2]
        except ValueError:  # no transit times yet
            return None

    before = table_hash()
    try:
        result = transit_times_from_db(app, target_name, entry["band"], entry["params"], planet=entry["planet"],
                                       fit_shape=entry.get("fit_shape", True))
    except ValueError as exc:  # too few points to normalise or time: wait for more data
        return ScienceOutcome(target_name, "transit_timing", "insufficient", str(exc), sha)
    after = table_hash()
    with app.db.session() as s:
        target = _target(s, target_name)
        meta = dict(target.meta or {})
        meta["transit"] = {**meta.get("transit", {}), "timed_photometry_sha256": sha}
        target.meta = meta
    flagged = int((result.times["flag"] != "ok").sum()) if len(result.times) else 0
    return ScienceOutcome(target_name, "transit_timing", "ok",
                          f"{result.n_stored} transit times of {result.planet} stored, {flagged} windows flagged",
                          sha, before != after)
