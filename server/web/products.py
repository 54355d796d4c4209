"""What the portal reads: targets, light curves, periodograms, transit times, campaigns and stacks, as plain data.

Pure queries over the ORM (one read transaction each) plus the encoders of the download formats. The HTTP layer
(:mod:`server.web.read_api`) and the pages (:mod:`server.web.pages`) both call these; neither writes SQL.

Conventions (written into every download): times are BJD_TDB in days (``bjd_tdb``) and JD(UTC) of mid-exposure
(``jd_utc``); magnitudes in mag; fluxes in the unit the pipeline stored (normalised); periods in days; transit
times and O-C in days (O-C also in minutes).

Published (readable without logging in): targets, their light curves, periodograms and transit times, stacks
whose status is ``done`` and campaigns whose status is ``done`` with their posteriors. Everything else
(observations, running or failed campaigns and stacks) needs a logged-in scientist or admin.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import and_, func, select

from server.core.db.models import (
    Campaign,
    Observation,
    Periodogram,
    PhotometryPoint,
    Posterior,
    Stack,
    Target,
    TransitTime,
)

PUBLISHED_STATUS = "done"
LC_COLUMNS = ("bjd_tdb", "jd_utc", "mag", "mag_err", "flux", "flux_err", "is_upper_limit", "observation_id",
              "site_id", "observer_code", "source", "id")
LC_UNITS = {"bjd_tdb": "d", "jd_utc": "d", "mag": "mag", "mag_err": "mag", "flux": "", "flux_err": ""}
LC_DESCRIPTIONS = {
    "bjd_tdb": "Barycentric Julian Date (TDB) of mid-exposure",
    "jd_utc": "Julian Date (UTC) of mid-exposure",
    "mag": "magnitude", "mag_err": "1-sigma magnitude uncertainty",
    "flux": "flux (normalised)", "flux_err": "1-sigma flux uncertainty",
    "is_upper_limit": "true: mag is a faint limit (not detected)",
    "observation_id": "observation the point was measured on", "site_id": "observing site",
    "observer_code": "AAVSO observer code", "source": "pipeline or archive the point came from",
    "id": "row id (use with after_id to page)",
}


class NotFound(LookupError):
    """The asked-for object does not exist (or is not visible to this reader)."""


class BadParameter(ValueError):
    """A query parameter has a value the API cannot use; the message names it."""


@dataclass(frozen=True)
class Page:
    items: list[dict]
    total: int
    limit: int
    offset: int

    def to_dict(self) -> dict:
        return {"items": self.items, "total": self.total, "limit": self.limit, "offset": self.offset}


def _target_dict(t: Target) -> dict:
    return {"id": t.id, "name": t.name, "ra_deg": t.ra_deg, "dec_deg": t.dec_deg, "kind": t.kind}


def angular_separation_deg(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle distance (degrees) by the haversine formula (stable for small separations)."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(v, float)) for v in (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1))))


def list_targets(db, *, name: str | None = None, ra: float | None = None, dec: float | None = None,
                 radius: float | None = None, kind: str | None = None, limit: int = 50, offset: int = 0) -> Page:
    """Targets whose name contains ``name`` (case-insensitive) and/or within ``radius`` degrees of (ra, dec)."""
    cone = (ra, dec, radius)
    if any(v is not None for v in cone) and not all(v is not None for v in cone):
        raise BadParameter(f"a cone search needs ra, dec and radius together, got ra={ra} dec={dec} radius={radius}")
    if ra is not None and not (0 <= ra < 360):
        raise BadParameter(f"ra={ra} is outside [0, 360) degrees")
    if dec is not None and not (-90 <= dec <= 90):
        raise BadParameter(f"dec={dec} is outside [-90, 90] degrees")
    if radius is not None and not (0 < radius <= 180):
        raise BadParameter(f"radius={radius} must be in (0, 180] degrees")
    query = select(Target).order_by(Target.name)
    if name:
        query = query.where(func.lower(Target.name).contains(name.strip().lower(), autoescape=True))
    if kind:
        query = query.where(Target.kind == kind)
    with db.session() as session:
        if ra is None:
            total = int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
            rows = [_target_dict(t) for t in session.scalars(query.limit(limit).offset(offset))]
            return Page(rows, total, limit, offset)
        # the dec band in SQL (index-friendly), the exact distance here
        query = query.where(Target.dec_deg.between(dec - radius, dec + radius), Target.ra_deg.is_not(None))
        cands = list(session.scalars(query))
    if not cands:
        return Page([], 0, limit, offset)
    sep = angular_separation_deg(ra, dec, [t.ra_deg for t in cands], [t.dec_deg for t in cands])
    hits = sorted(((float(s), t) for s, t in zip(sep, cands) if s <= radius), key=lambda p: p[0])
    rows = [dict(_target_dict(t), separation_deg=s) for s, t in hits]
    return Page(rows[offset:offset + limit], len(rows), limit, offset)


def get_target(db, target_id: int, *, published_only: bool = True) -> dict:
    """A target with the bands it has photometry in (and counts), and which products exist."""
    with db.session() as session:
        t = session.get(Target, target_id)
        if t is None:
            raise NotFound(f"no target with id {target_id}")
        bands = {b: int(n) for b, n in session.execute(
            select(PhotometryPoint.band, func.count()).where(PhotometryPoint.target_id == target_id)
            .group_by(PhotometryPoint.band).order_by(PhotometryPoint.band)).all()}
        planets = list(session.scalars(select(TransitTime.planet).where(TransitTime.target_id == target_id)
                                       .distinct().order_by(TransitTime.planet)))
        n_pgram = int(session.scalar(select(func.count()).select_from(Periodogram)
                                     .where(Periodogram.target_id == target_id)) or 0)
        stacks = [s.id for s in session.scalars(select(Stack).where(Stack.target_id == target_id,
                                                                    Stack.status == PUBLISHED_STATUS))]
        query = select(Campaign.id).where(Campaign.target_id == target_id)
        if published_only:
            query = query.where(Campaign.status == PUBLISHED_STATUS)
        campaigns = list(session.scalars(query.order_by(Campaign.id)))
        return dict(_target_dict(t), bands=bands, planets=planets, n_periodograms=n_pgram, stacks=stacks,
                    campaigns=campaigns)


def target_id_by_name(db, name: str) -> int:
    with db.session() as session:
        tid = session.scalar(select(Target.id).where(Target.name == name))
    if tid is None:
        raise NotFound(f"no target named {name!r}")
    return int(tid)


# --- light curves -----------------------------------------------------------------------------------------

def _fetch_tuples(session, stmt) -> list[tuple]:
    """The rows of ``stmt`` as the driver's plain tuples, read on this transaction's connection with bound
    parameters. For 100k-row light curves: unpacking SQLAlchemy ``Row`` objects into columns cost 3x the fetch
    itself (benchmarks/bench_portal.py); plain columns (numbers, strings) need no result processing."""
    conn = session.connection()
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    args = tuple(params[name] for name in compiled.positiontup) if compiled.positional else params
    cursor = conn.connection.cursor()
    try:
        cursor.execute(str(compiled), args)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def light_curve(db, target_id: int, band: str, *, limit: int, after_id: int | None = None,
                columns: list[str] | None = None) -> dict[str, Any]:
    """One band's points in time order (JD UTC, then id), as columns (numpy arrays / lists).

    Paging: ``limit`` rows after the point with id ``after_id`` (in the same order); ``next_after_id`` is set
    when more rows follow. Read with one index range scan of ``ix_phot_target_band_jd``. ``columns``: a subset
    of :data:`LC_COLUMNS` (``id`` is always included, for paging); default all."""
    if columns is not None:
        unknown = [c for c in columns if c not in LC_COLUMNS]
        if unknown or not columns:
            raise BadParameter(f"unknown light-curve column(s) {unknown or columns}: choose from {', '.join(LC_COLUMNS)}")
    names = [c for c in LC_COLUMNS if c != "id" and (columns is None or c in columns)] + ["id"]
    cols = [getattr(PhotometryPoint, c) for c in names]
    where = [PhotometryPoint.target_id == target_id, PhotometryPoint.band == band]
    with db.session() as session:
        if session.get(Target, target_id) is None:
            raise NotFound(f"no target with id {target_id}")
        if after_id is not None:
            anchor = session.execute(select(PhotometryPoint.jd_utc).where(PhotometryPoint.id == after_id,
                                                                          *where)).first()
            if anchor is None:
                raise BadParameter(f"after_id={after_id} is not a point of target {target_id} band {band!r}")
            jd0 = anchor[0]
            where.append((PhotometryPoint.jd_utc > jd0)
                         | and_(PhotometryPoint.jd_utc == jd0, PhotometryPoint.id > after_id))
        rows = _fetch_tuples(session, select(*cols).where(*where)
                             .order_by(PhotometryPoint.jd_utc, PhotometryPoint.id).limit(limit + 1))
        if not rows and after_id is None:
            have = list(session.scalars(select(PhotometryPoint.band).where(PhotometryPoint.target_id == target_id)
                                        .distinct()))
            raise NotFound(f"target {target_id} has no points in band {band!r} (bands: {sorted(have)})")
    more = len(rows) > limit
    rows = rows[:limit]
    values_by_column = list(zip(*rows)) if rows else [()] * len(names)
    data: dict[str, Any] = {}
    for name, values in zip(names, values_by_column):
        if name in LC_UNITS:
            data[name] = np.array(values, dtype=float)  # NULL -> NaN
        elif name == "is_upper_limit":
            data[name] = np.array(values, dtype=bool)
        else:
            data[name] = list(values)
    return {"target_id": target_id, "band": band, "n": len(rows), "columns": data,
            "next_after_id": int(rows[-1][-1]) if more else None}


def light_curve_version(db, target_id: int, band: str) -> tuple[int, int]:
    """(number of points, largest point id) of a target's band: changes whenever its light curve does (points are
    only inserted or deleted; see server/web/respcache.py). One index-only read of ``ix_phot_target_band_jd``."""
    with db.session() as session:
        n, top = session.execute(select(func.count(), func.max(PhotometryPoint.id)).where(
            PhotometryPoint.target_id == target_id, PhotometryPoint.band == band)).one()
    return int(n or 0), int(top or 0)


def _json_floats(a: np.ndarray) -> list:
    """Floats for JSON: NaN/inf (NULL in the database) become null."""
    finite = np.isfinite(a)
    if finite.all():
        return a.tolist()
    if not finite.any():
        return [None] * a.size
    return [v if ok else None for v, ok in zip(a.tolist(), finite.tolist())]


def light_curve_json(lc: dict) -> bytes:
    """The JSON body (bytes) of a light curve: columns as arrays, NULL/NaN as null. Encoded by orjson straight from
    the numpy arrays (shortest round-trip float repr): 100k points x 12 columns in tens of ms, not hundreds."""
    import orjson

    body = {"target_id": lc["target_id"], "band": lc["band"], "n": lc["n"], "next_after_id": lc["next_after_id"],
            "time_scale": "BJD_TDB", "units": {k: LC_UNITS.get(k, "") for k in lc["columns"]},
            "columns": lc["columns"]}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def light_curve_table(lc: dict, target_name: str):
    """An astropy Table with units and descriptions (FITS and VOTable downloads)."""
    import astropy.units as u
    from astropy.table import Table

    cols = lc["columns"]
    table = Table()
    for name in LC_COLUMNS:
        values = cols[name]
        if name in ("observation_id", "site_id", "id"):
            values = np.array([-1 if v is None else v for v in values], dtype=np.int64)
        elif name in ("observer_code", "source"):
            values = np.array(["" if v is None else str(v) for v in values], dtype=str)
        unit = {"d": u.day, "mag": u.mag}.get(LC_UNITS.get(name, ""))
        table[name] = values
        if unit is not None:
            table[name].unit = unit
        table[name].description = LC_DESCRIPTIONS[name]
    table.meta.update({"TARGET": target_name, "BAND": lc["band"], "TIMESYS": "TDB", "TIMEREF": "SOLARSYSTEM",
                       "TIMEUNIT": "d", "NPOINTS": lc["n"]})
    return table


def light_curve_csv(lc: dict, target_name: str) -> str:
    cols = lc["columns"]
    header = [f"# target: {target_name}", f"# band: {lc['band']}", "# time scale: BJD_TDB (days); jd_utc: JD UTC",
              "# units: " + ", ".join(f"{k} [{LC_UNITS[k] or 'normalised'}]" for k in LC_UNITS)]
    lines = header + [",".join(LC_COLUMNS)]
    floats = {k: cols[k] for k in LC_UNITS}
    for i in range(lc["n"]):
        row = []
        for k in LC_COLUMNS:
            v = floats[k][i] if k in floats else cols[k][i]
            if k in floats:
                row.append("" if not math.isfinite(v) else repr(float(v)))
            elif k == "is_upper_limit":
                row.append("1" if v else "0")
            else:
                row.append("" if v is None else str(v).replace(",", " "))
        lines.append(",".join(row))
    return "\n".join(lines) + "\n"


def table_bytes(table, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "fits":
        from astropy.io import fits

        hdu = fits.table_to_hdu(table)
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    elif fmt == "votable":
        from astropy.io.votable import from_table

        from_table(table).to_xml(buf)
    else:
        raise BadParameter(f"unknown table format {fmt!r}")
    return buf.getvalue()


# --- periodograms -----------------------------------------------------------------------------------------

def periodogram(db, store, target_id: int, band: str | None = None) -> dict:
    """The newest periodogram of a target (of ``band`` when given): best period, FAP and the power spectrum."""
    with db.session() as session:
        if session.get(Target, target_id) is None:
            raise NotFound(f"no target with id {target_id}")
        query = select(Periodogram).where(Periodogram.target_id == target_id)
        if band:
            query = query.where(Periodogram.band == band)
        row = session.scalars(query.order_by(Periodogram.id.desc())).first()
        if row is None:
            raise NotFound(f"target {target_id} has no periodogram" + (f" in band {band!r}" if band else "")
                           + ": compute one with `openastro results period TARGET --save`")
        out = {"id": row.id, "target_id": target_id, "band": row.band, "best_period_d": row.best_period,
               "best_period_err_d": row.best_period_err, "fap": row.fap, "fap_method": row.fap_method,
               "meta": row.meta or {}}
        key = row.storage_key
    freq = power = None
    if key:
        with store.open(key) as fh, np.load(io.BytesIO(fh.read()), allow_pickle=False) as npz:
            freq, power = np.asarray(npz["frequency"], float), np.asarray(npz["power"], float)
    out["frequency_per_d"] = [] if freq is None else _json_floats(freq)
    out["power"] = [] if power is None else _json_floats(power)
    return out


# --- transit times and O-C ------------------------------------------------------------------------------

def transit_times(db, target_id: int, planet: str | None = None) -> dict:
    """Transit times of one planet with a weighted linear ephemeris fit; O-C (observed minus that ephemeris)
    and, where the pipeline stored a model prediction ``t_pred``, the model's O-C."""
    from server.timeseries.transit_times import fit_linear_ephemeris

    with db.session() as session:
        if session.get(Target, target_id) is None:
            raise NotFound(f"no target with id {target_id}")
        planets = list(session.scalars(select(TransitTime.planet).where(TransitTime.target_id == target_id)
                                       .distinct().order_by(TransitTime.planet)))
        if not planets:
            raise NotFound(f"target {target_id} has no transit times")
        if planet is None:
            planet = planets[0]
        elif planet not in planets:
            raise NotFound(f"target {target_id} has no transit times of planet {planet!r} (planets: {planets})")
        rows = list(session.scalars(select(TransitTime).where(TransitTime.target_id == target_id,
                                                              TransitTime.planet == planet)
                                    .order_by(TransitTime.epoch, TransitTime.id)))
        items = [{"id": r.id, "epoch": r.epoch, "t_obs_bjd_tdb": r.t_obs, "sigma_d": r.sigma,
                  "t_pred_bjd_tdb": r.t_pred, "source": r.source} for r in rows]
    epoch = np.array([r["epoch"] for r in items], float)
    t = np.array([r["t_obs_bjd_tdb"] for r in items], float)
    sigma = np.array([r["sigma_d"] for r in items], float)
    ephem = None
    try:
        eph = fit_linear_ephemeris(epoch, t, sigma)
        ephem = eph.to_dict()
        linear = eph.t0 + eph.period * epoch
        for r, lin in zip(items, linear):
            r["o_minus_c_d"] = r["t_obs_bjd_tdb"] - lin
            r["o_minus_c_min"] = r["o_minus_c_d"] * 1440.0
            r["model_o_minus_c_min"] = (None if r["t_pred_bjd_tdb"] is None
                                        else (r["t_pred_bjd_tdb"] - lin) * 1440.0)
    except ValueError:
        for r in items:
            r["o_minus_c_d"] = r["o_minus_c_min"] = r["model_o_minus_c_min"] = None
    return {"target_id": target_id, "planet": planet, "planets": planets, "ephemeris": ephem,
            "time_scale": "BJD_TDB", "items": items}


def transit_times_csv(tt: dict) -> str:
    cols = ["epoch", "t_obs_bjd_tdb", "sigma_d", "t_pred_bjd_tdb", "o_minus_c_min", "model_o_minus_c_min", "source"]
    eph = tt["ephemeris"]
    lines = [f"# planet: {tt['planet']}", "# times: BJD_TDB (days); sigma in days; O-C in minutes against the "
             "weighted linear ephemeris" + (f" T0={eph['t0']!r} P={eph['period']!r} d" if eph else "")]
    lines.append(",".join(cols))
    for r in tt["items"]:
        lines.append(",".join("" if r.get(c) is None else (repr(r[c]) if isinstance(r[c], float) else str(r[c]))
                              for c in cols))
    return "\n".join(lines) + "\n"


# --- observations ---------------------------------------------------------------------------------------

def list_observations(db, *, target_id: int | None = None, site_id: int | None = None, status: str | None = None,
                      limit: int = 50, offset: int = 0) -> Page:
    query = select(Observation).order_by(Observation.id)
    if target_id is not None:
        query = query.where(Observation.target_id == target_id)
    if site_id is not None:
        query = query.where(Observation.site_id == site_id)
    if status:
        query = query.where(Observation.status == status)
    with db.session() as session:
        total = int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
        items = [{"id": o.id, "kind": o.kind, "source_format": o.source_format, "original_name": o.original_name,
                  "date_obs_utc": o.date_obs.isoformat() + "Z" if o.date_obs else None, "exptime_s": o.exptime,
                  "filter": o.filter, "site_id": o.site_id, "target_id": o.target_id, "status": o.status,
                  "size_bytes": o.size_bytes}
                 for o in session.scalars(query.limit(limit).offset(offset))]
    return Page(items, total, limit, offset)


# --- campaigns ------------------------------------------------------------------------------------------

def _campaign_row(c: Campaign) -> dict:
    return {"id": c.id, "name": c.name, "kind": c.kind, "executor": c.executor, "status": c.status,
            "target_id": c.target_id, "created_at": c.created_at.isoformat() + "Z" if c.created_at else None}


def list_campaigns(db, *, published_only: bool, status: str | None = None, kind: str | None = None,
                   limit: int = 50, offset: int = 0) -> Page:
    query = select(Campaign).order_by(Campaign.id.desc())
    if published_only:
        query = query.where(Campaign.status == PUBLISHED_STATUS)
    if status:
        query = query.where(Campaign.status == status)
    if kind:
        query = query.where(Campaign.kind == kind)
    with db.session() as session:
        total = int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
        items = [_campaign_row(c) for c in session.scalars(query.limit(limit).offset(offset))]
    return Page(items, total, limit, offset)


def campaign_detail(app, campaign_id: int, *, published_only: bool) -> dict:
    """Status, progress, bins with ln Z and P(bin), and the combined posterior's medians and 68% intervals."""
    from server.boinc.campaigns import CampaignError, campaign_status

    try:
        st = campaign_status(app, campaign_id)
    except CampaignError as exc:
        raise NotFound(str(exc)) from None
    if published_only and st.status != PUBLISHED_STATUS:
        raise NotFound(f"campaign {campaign_id} is not published (status {st.status}): log in to see it")
    with app.db.session() as session:
        c = session.get(Campaign, campaign_id)
        config_bins = {b["index"]: b for b in (c.config or {}).get("bins", [])}
        has_posterior = session.scalar(select(func.count()).select_from(Posterior).where(
            Posterior.campaign_id == campaign_id, Posterior.bin_index.is_(None),
            Posterior.storage_key.is_not(None))) or 0
        row = _campaign_row(c)
    bins = []
    for b in st.bins:
        cfg = config_bins.get(b.bin_index, {})
        bins.append({"index": b.bin_index, "period_min_d": cfg.get("period_min"), "period_max_d": cfg.get("period_max"),
                     "model": cfg.get("model"), "prior_mass": cfg.get("prior_mass"), "work_units": b.total,
                     "done": b.done, "error": b.error, "open": b.running,
                     "log_evidence": b.log_evidence, "probability": b.probability})
    post = st.summary.get("posterior") or {}
    return dict(row, counts=dict(st.counts), total=st.total, finished=st.finished,
                progress=(st.finished / st.total) if st.total else 0.0, bins=bins,
                errors=list(st.errors), invalid_results=st.invalid_results, has_posterior=bool(has_posterior),
                posterior={k: post.get(k) for k in ("param_names", "median", "q16", "q84") if k in post})


# --- stacks ---------------------------------------------------------------------------------------------

STACK_PRODUCTS = {"stacked": "stacked_key", "uncertainty": "uncertainty_key", "coverage": "coverage_key"}


def _stack_row(s: Stack) -> dict:
    return {"id": s.id, "target_id": s.target_id, "band": s.band, "campaign_id": s.campaign_id, "status": s.status,
            "n_frames": s.n_frames, "shape": (s.grid or {}).get("shape"),
            "products": [p for p, attr in STACK_PRODUCTS.items() if getattr(s, attr)]}


def list_stacks(db, *, published_only: bool, target_id: int | None = None, limit: int = 50, offset: int = 0) -> Page:
    query = select(Stack).order_by(Stack.id)
    if published_only:
        query = query.where(Stack.status == PUBLISHED_STATUS)
    if target_id is not None:
        query = query.where(Stack.target_id == target_id)
    with db.session() as session:
        total = int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
        items = [_stack_row(s) for s in session.scalars(query.limit(limit).offset(offset))]
    return Page(items, total, limit, offset)


def get_stack(db, stack_id: int, *, published_only: bool) -> dict:
    with db.session() as session:
        s = session.get(Stack, stack_id)
        if s is None or (published_only and s.status != PUBLISHED_STATUS):
            raise NotFound(f"no published stack with id {stack_id}" if published_only and s is not None
                           else f"no stack with id {stack_id}")
        row = _stack_row(s)
        row["keys"] = {p: getattr(s, attr) for p, attr in STACK_PRODUCTS.items()}
        row["grid_header"] = (s.grid or {}).get("header", {})
        return row


def json_dumps(obj) -> str:
    return json.dumps(obj, allow_nan=False, separators=(",", ":"))
