"""Ingest one file: detect its format by content, validate it, store the raw bytes, record it in the database.

``ingest_path(app, path)`` is the one entry point (the CLI and the upload API both use it):

1. hash the file; if an observation with that SHA-256 exists, return it (``created=False``): the same file
   twice gives the first record back, never a copy;
2. detect the format by content and validate it completely *before* anything is stored (FITS structure and
   metadata, or every row of a table); a file that fails leaves nothing behind;
3. put the raw bytes in the content-addressed object store (integer FITS frames RICE-compressed, losslessly and
   reproducibly: see ``server.ingest.compress``; the observation keeps the original's sha256 and size);
4. write the Observation (plus PhotometryPoint rows for AAVSO photometry, TransitTime rows for ETD tables,
   and get-or-create its Target and Instrument) in ONE transaction.

Concurrency: two ingests of the same content race on the unique ``observations.sha256``; the loser catches
the IntegrityError and returns the winner's row. A race on a new Target/Instrument name retries the whole
transaction (the other side's row is then found). If the transaction fails for any other reason, a stored
object that this call created and no observation references is removed again.

Times: archival rows keep ``jd_utc`` (JD, UTC, mid-exposure); ``bjd_tdb`` is filled when the target's
coordinates are known (from the Target row or the file), computed at the geocentre (error <= 21 ms) because
archives do not give the observer's site. AAVSO rows given as HJD need those coordinates to recover JD_UTC;
without them the rows are reported as errors. ETD HJD mid-times are converted to BJD_TDB the same way.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from server.core.db.models import Instrument, Observation, PhotometryPoint, Target, TransitTime
from server.ingest.etd import split_planet_name
from server.ingest.fitsmeta import (
    DEFAULT_MAX_DATA_BYTES,
    DEFAULT_MAX_TILE_BYTES,
    FitsError,
    FitsMetadata,
    parse_sexagesimal,
    read_fits_metadata,
)
from server.ingest.formats import SNIFF_BYTES, detect_format, parse_table
from server.ingest.tabular import FormatError, ParsedTable, RowError, clip, jd_to_datetime
from server.core.storage import StorageError, StoredObject, sha256_file
from server.core.storecheck import OBJECT_MISSING
from server.ingest.compress import store_raw

MAX_REPORTED_ERRORS = 200
CLIENT_META_KEYS = {
    "target": str, "filter": str, "exptime": (int, float), "instrument": str, "telescope": str,
    "observer": str, "client_ref": str, "notes": str,
}
_KIND = {"fits": "image", "fits.fz": "image", "aavso-extended": "photometry", "aavso-csv": "photometry",
         "etd": "transit_times", "mpc80": "astrometry"}


class IngestError(ValueError):
    """The file cannot be ingested; the message says why. Nothing was stored or recorded."""


@dataclass(frozen=True)
class IngestOptions:
    site_id: int | None = None  # the uploading site (API key) or --site
    target: str | None = None  # target name when the file does not give one
    planet: str | None = None  # ETD: planet name when the file does not give one ('WASP-12 b')
    original_name: str | None = None  # client-side name, metadata only: never used as a path
    client_meta: Mapping[str, Any] | None = None  # validated upload metadata (fills gaps in the header)
    formats: tuple[str, ...] | None = None  # accepted formats (None: all)
    max_data_bytes: int = DEFAULT_MAX_DATA_BYTES
    max_tile_bytes: int = DEFAULT_MAX_TILE_BYTES


@dataclass(frozen=True)
class IngestResult:
    observation_id: int
    created: bool  # False: the content was already ingested, this is the first record
    sha256: str
    storage_key: str
    kind: str
    source_format: str
    size_bytes: int
    n_rows: int = 0  # photometry points / transit times / astrometric records written
    row_errors: tuple[RowError, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Prepared:
    fmt: str
    fits: FitsMetadata | None = None
    table: ParsedTable | None = None
    extra_warnings: tuple[str, ...] = field(default=())


METADATA_MAX_DEPTH = 2  # a flat object of scalars; deeper input is refused before json.loads recurses


def json_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in JSON text (brackets inside strings do not count); linear, no recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"metadata contains {name}, which is not JSON")


def parse_client_meta(raw: bytes) -> dict[str, Any]:
    """The upload's ``metadata`` part (UTF-8 JSON bytes) -> validated dict; ValueError saying what is wrong.

    Never raises anything else: deep nesting is refused before parsing (no RecursionError), NaN/Infinity are
    refused, and so are strings that cannot be stored (lone surrogates, control characters)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"metadata is not UTF-8 (byte {raw[exc.start]:#04x} at offset {exc.start})") from None
    if not text.strip():
        return {}
    depth = json_depth(text)
    if depth > METADATA_MAX_DEPTH:
        raise ValueError(f"metadata nests {depth} levels deep: send one flat JSON object of strings and numbers")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"metadata is not valid JSON: {exc}") from None
    return validate_client_meta(value)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def validate_client_meta(raw: Any) -> dict[str, Any]:
    """Upload metadata JSON -> dict; ValueError naming the offending key or value."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"metadata must be a JSON object, got {type(raw).__name__}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        expected = CLIENT_META_KEYS.get(key)
        if expected is None:
            raise ValueError(f"unknown metadata key {clip(str(key), 80)!r}; allowed: {', '.join(sorted(CLIENT_META_KEYS))}")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, expected):
            raise ValueError(f"metadata {key!r} has the wrong type: {clip(repr(value), 80)}")
        if isinstance(value, str):
            value = value.strip()
            if len(value) > 255:
                raise ValueError(f"metadata {key!r} is longer than 255 characters")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"metadata {key!r} contains a lone surrogate (\\ud800-\\udfff): not text") from None
            if _CONTROL.search(value):
                raise ValueError(f"metadata {key!r} contains control characters: {clip(repr(value), 80)}")
        else:
            try:
                number = float(value)
            except OverflowError:
                number = float("inf")
            if not (math.isfinite(number) and 0 <= number <= 1e9):
                raise ValueError(f"metadata {key!r} must be a finite number in [0, 1e9], got {clip(repr(value), 80)}")
            value = number if isinstance(value, float) else int(value)
        out[key] = value
    return out


def display_name(name: str | None) -> tuple[str | None, tuple[str, ...]]:
    """A file name made storable: names that are not valid UTF-8 (undecodable bytes arrive as lone surrogates,
    Python's surrogateescape) get U+FFFD in their place and a warning saying so. Never refused: the name is a
    label only."""
    if name is None:
        return None, ()
    try:
        name.encode("utf-8")
        return name, ()
    except UnicodeEncodeError:
        fixed = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        fixed = fixed.encode("utf-8", "replace").decode("utf-8")  # any surrogate left (not from bytes)
        return fixed, (f"the file name is not valid UTF-8; recorded as {fixed!r} (U+FFFD marks the bad bytes)",)


# --------------------------------------------------------------------------- preparation (pure, no I/O beyond reading)


def prepare(path: Path, options: IngestOptions) -> _Prepared:
    """Detect and fully validate ``path``; IngestError with the reason when it cannot be ingested."""
    name = options.original_name or path.name
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
        fmt = detect_format(head, name)
        if options.formats is not None and fmt not in options.formats:
            raise IngestError(f"{name}: {fmt} files are not accepted here (accepted: {', '.join(options.formats)})")
        if fmt == "fits":
            meta = read_fits_metadata(path, options.max_data_bytes, options.max_tile_bytes)
            return _Prepared("fits.fz" if meta.compressed else "fits", fits=meta)
        data = path.read_bytes()
        table = parse_table(fmt, data, name)
    except (FitsError, FormatError) as exc:
        message = str(exc)
        raise IngestError(message if message.startswith(f"{name}:") else f"{name}: {message}") from None
    except OSError as exc:
        raise IngestError(f"{name}: cannot read the file: {exc.strerror or exc}") from None
    if table.n_good == 0:
        detail = table.error_report(5) or "no data rows"
        raise IngestError(f"{name}: no valid {fmt} rows ({table.n_bad} bad):\n{detail}")
    return _Prepared(fmt, table=table)


# --------------------------------------------------------------------------- database helpers


def _existing(session, sha: str) -> Observation | None:
    return session.scalars(select(Observation).where(Observation.sha256 == sha)).first()


def _result_for(obs: Observation, created: bool, n_rows: int = 0, errors=(), warnings=()) -> IngestResult:
    return IngestResult(obs.id, created, obs.sha256, obs.storage_key, obs.kind, obs.source_format,
                        int(obs.size_bytes or 0), n_rows, tuple(errors), tuple(warnings))


def find_observation(app, sha: str) -> IngestResult | None:
    with app.db.session() as s:
        obs = _existing(s, sha)
        if obs is None:
            return None
        meta = obs.meta or {}
        return _result_for(obs, False, int(meta.get("n_rows", 0)))


def _target(session, name: str | None, *, kind: str | None, ra: float | None = None,
            dec: float | None = None) -> Target | None:
    """Get-or-create a Target by case-insensitive name; fill missing coordinates."""
    if not name:
        return None
    name = name.strip()[:120]
    target = session.scalars(select(Target).where(func.lower(Target.name) == name.lower())).first()
    if target is None:
        target = Target(name=name, ra_deg=ra, dec_deg=dec, kind=kind)
        session.add(target)
        session.flush()
    elif target.ra_deg is None and ra is not None and dec is not None:
        target.ra_deg, target.dec_deg = ra, dec
    return target


def _instrument(session, site_id: int | None, meta: FitsMetadata) -> Instrument | None:
    if site_id is None or not meta.instrument:
        return None
    camera = meta.instrument[:120]
    inst = session.scalars(
        select(Instrument).where(Instrument.site_id == site_id, Instrument.camera == camera)
    ).first()
    if inst is None:
        scale = None
        if meta.focal_length_mm and meta.pixel_size_um and meta.focal_length_mm > 0:
            # pixel scale of an unbinned pixel, arcsec: 206.265 * pixel [um] / focal length [mm]
            scale = 206.264806 * meta.pixel_size_um / meta.focal_length_mm
        inst = Instrument(site_id=site_id, camera=camera, telescope=(meta.telescope or None),
                          pixel_scale_arcsec=scale, gain_e_per_adu=meta.gain)
        session.add(inst)
        session.flush()
    return inst


# --------------------------------------------------------------------------- rows per format


MJD_ZERO_JD = 2400000.5


def _jd_to_datetimes(jd: np.ndarray) -> list:
    """JD (UTC) -> naive UTC datetimes, vectorised (microsecond resolution)."""
    micro = np.round((jd - MJD_ZERO_JD) * 86400e6).astype("int64")
    base = np.datetime64("1858-11-17T00:00:00", "us")
    return (base + micro.astype("timedelta64[us]")).astype(object).tolist()


def _undo_heliocentric(hjd: np.ndarray, ra: float, dec: float) -> np.ndarray:
    """HJD_UTC -> JD_UTC at the geocentre (fixed point: the correction changes < 1e-4 s per s)."""
    from server.core.timeconv import utc_to_hjd_utc

    jd = hjd.copy()
    for _ in range(3):
        jd = hjd - (utc_to_hjd_utc(jd, ra_deg=ra, dec_deg=dec, site=None, time_format="jd", geocenter=True) - jd)
    return jd


def _photometry_rows(session, obs: Observation, table: ParsedTable, options: IngestOptions) -> tuple[list, list]:
    from server.core.timeconv import utc_to_bjd_tdb

    rows = table.rows
    star_col = "star_id" if table.format == "aavso-extended" else "star_name"
    names = rows[star_col].where(rows[star_col].notna(), options.target)
    if names.isna().any():
        raise IngestError("the file does not name the star (no Star Name column): pass a target name")
    points: list[dict[str, Any]] = []  # rows for one bulk INSERT
    errors: list[RowError] = []
    observer_col = "obscode" if table.format == "aavso-extended" else "observer_code"
    for name, group in rows.groupby(names, sort=False):
        target = _target(session, str(name), kind="variable")
        jd = group["jd"].to_numpy(dtype=float)
        hjd = group["hjd"].to_numpy(dtype=float)
        known = target.ra_deg is not None and target.dec_deg is not None
        need_jd = np.isnan(jd)
        if need_jd.any():
            if known:
                jd = jd.copy()
                jd[need_jd] = _undo_heliocentric(hjd[need_jd], target.ra_deg, target.dec_deg)
            else:
                for line in group["line"][need_jd]:
                    errors.append(RowError(int(line), f"HJD date but no coordinates are known for {name!r}: "
                                                      f"set them (openastro target set-coords {str(name)!r} RA DEC) "
                                                      "and ingest the file again", ""))
        ok = ~np.isnan(jd)
        bjd = np.full(jd.shape, np.nan)
        if known and ok.any():
            bjd[ok] = utc_to_bjd_tdb(jd[ok], ra_deg=target.ra_deg, dec_deg=target.dec_deg, site=None,
                                     time_format="jd", geocenter=True).bjd_tdb
        band_col = "filter" if table.format == "aavso-extended" else "band"
        stamps = _jd_to_datetimes(np.where(ok, jd, MJD_ZERO_JD))
        mag = group["mag"].to_numpy(dtype=float)
        err = group["mag_err"].to_numpy(dtype=float)
        columns = zip(ok, jd, bjd, stamps, group[band_col].astype(str).str.slice(0, 16), mag, err,
                      group[observer_col], group["fainter_than"].to_numpy(dtype=bool))
        points.extend(
            dict(observation_id=obs.id, target_id=target.id, site_id=options.site_id, observer_code=code or None,
                 time_utc=stamp, jd_utc=float(t), bjd_tdb=None if b != b else float(b), band=band, mag=float(m),
                 mag_err=None if e != e else float(e), flux=None, flux_err=None, is_upper_limit=bool(upper),
                 source=table.format)
            for good, t, b, stamp, band, m, e, code, upper in columns if good
        )
    return points, errors


def _coordinate(params: Mapping[str, str], key: str, hours: bool) -> float | None:
    text = params.get(key)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        try:
            value = parse_sexagesimal(text) * (15.0 if hours else 1.0)
        except ValueError:
            raise IngestError(f"#{key}={text!r} is not an angle") from None
    return value


def _transit_rows(session, obs: Observation, table: ParsedTable, options: IngestOptions) -> tuple[list, list]:
    from server.core.timeconv import to_bjd_tdb

    rows = table.rows
    default = table.params.get("planet") or options.planet
    names = rows["planet"].where(rows["planet"].notna(), default)
    if names.isna().any():
        raise IngestError("the ETD table does not name the planet: add a '#planet=WASP-12 b' line or pass a planet")
    ra, dec = _coordinate(table.params, "ra", True), _coordinate(table.params, "dec", False)
    times: list[dict[str, Any]] = []  # rows for one bulk INSERT
    errors: list[RowError] = []
    for full_name, group in rows.groupby(names, sort=False):
        try:
            star, letter = split_planet_name(str(full_name))
        except FormatError as exc:
            raise IngestError(str(exc)) from None
        target = _target(session, star, kind="transit", ra=ra, dec=dec)
        system = table.params["time_system"]
        if system != "BJD_TDB" and (target.ra_deg is None or target.dec_deg is None):
            raise IngestError(f"{system} mid-times of {star} need the star's coordinates to convert to BJD_TDB: "
                              "add '#ra=' and '#dec=' lines or create the target with coordinates")
        values = group["time"].to_numpy(dtype=float)
        bjd = to_bjd_tdb(values, system, ra_deg=target.ra_deg if target.ra_deg is not None else 0.0,
                         dec_deg=target.dec_deg if target.dec_deg is not None else 0.0).bjd_tdb
        existing = {
            (t.epoch, t.source): t.id
            for t in session.scalars(select(TransitTime).where(TransitTime.target_id == target.id,
                                                               TransitTime.planet == letter))
        }
        for i, rec in enumerate(group.itertuples(index=False)):
            source = ("etd:" + rec.observer if rec.observer else "etd")[:64]
            if (rec.epoch, source) in existing:
                errors.append(RowError(int(rec.line), f"epoch {rec.epoch} from {source!r} is already stored "
                                                      f"(transit time id {existing[(rec.epoch, source)]})", ""))
                continue
            t_obs = float(bjd[i])
            times.append(dict(
                target_id=target.id, planet=letter, epoch=int(rec.epoch), t_obs=t_obs, sigma=float(rec.sigma),
                t_pred=None if pd.isna(rec.o_c) else t_obs - float(rec.o_c),
                flag=None if pd.isna(rec.dq) else f"DQ{int(rec.dq)}", source=source, observation_id=obs.id,
            ))
            existing[(rec.epoch, source)] = -1
    return times, errors


def _astrometry_summary(app, table: ParsedTable) -> tuple[dict[str, Any], StoredObject]:
    """MPC records have no table of their own: the normalised records go to the store as CSV (plain data)."""
    buf = io.StringIO()
    table.rows.to_csv(buf, index=False, date_format="%Y-%m-%dT%H:%M:%S.%f")
    stored = app.store.put_bytes(buf.getvalue().encode("utf-8"))
    designations = sorted(set(table.rows["designation"].astype(str)))
    summary = {
        "records_key": stored.key, "objects": designations[:100], "n_objects": len(designations),
        "observatories": sorted(set(table.rows["observatory"])),
    }
    return summary, stored


# --------------------------------------------------------------------------- the transaction


def _fits_observation(prepared: _Prepared, options: IngestOptions, session) -> tuple[Observation, list[str]]:
    meta = prepared.fits
    client = dict(options.client_meta or {})
    notes: list[str] = []

    def pick(header_value, key):
        value = client.get(key)
        if value is not None and header_value not in (None, "") and value != header_value:
            notes.append(f"metadata {key}={value!r} differs from the header's {header_value!r}: header kept")
        return header_value if header_value not in (None, "") else value

    target_name = pick(meta.object, "target") or options.target
    target = _target(session, target_name, kind=None, ra=meta.ra_deg, dec=meta.dec_deg)
    filt = pick(meta.filter, "filter")
    exptime = pick(meta.exptime, "exptime")
    instrument_name = pick(meta.instrument, "instrument")
    if instrument_name != meta.instrument:
        meta = dataclasses.replace(meta, instrument=instrument_name)
    inst = _instrument(session, options.site_id, meta)
    binning = meta.xbinning if meta.ybinning in (None, meta.xbinning) else None
    if binning is None and meta.xbinning is not None:
        notes.append(f"unequal binning {meta.xbinning}x{meta.ybinning}: see meta")
    obs = Observation(
        kind="image", source_format=prepared.fmt, date_obs=meta.date_obs.replace(tzinfo=None), mjd=meta.mjd,
        exptime=float(exptime) if exptime is not None else None, filter=(str(filt)[:32] if filt else None),
        binning=binning, gain=meta.gain, site_id=options.site_id,
        instrument_id=inst.id if inst is not None else None, target_id=target.id if target is not None else None,
        status="ingested",
    )
    meta_json = {"fits": meta.to_json()}
    if client:
        meta_json["client"] = client
    obs.meta = meta_json
    return obs, notes


def _write(app, prepared: _Prepared, stored: StoredObject, options: IngestOptions,
           astrometry: dict[str, Any] | None) -> IngestResult:
    name = (options.original_name or "")[:255] or None
    with app.db.session() as s:
        n_rows, row_errors, notes = 0, [], list(prepared.extra_warnings)
        if prepared.fits is not None:
            obs, more = _fits_observation(prepared, options, s)
            notes.extend(more)
            notes.extend(prepared.fits.warnings)
        else:
            table = prepared.table
            times = _table_times(table)
            obs = Observation(kind=_KIND[prepared.fmt], source_format=prepared.fmt, site_id=options.site_id,
                              date_obs=jd_to_datetime(min(times)) if times else None,
                              mjd=(min(times) - 2400000.5) if times else None, status="ingested")
            if prepared.fmt == "mpc80" and table.rows["designation"].nunique() == 1:
                kind = "comet" if table.rows["object_type"].iloc[0] == "comet" else "asteroid"
                target = _target(s, str(table.rows["designation"].iloc[0]), kind=kind)
                obs.target_id = target.id
        obs.sha256, obs.storage_key, obs.size_bytes, obs.original_name = stored.sha256, stored.key, stored.size, name
        s.add(obs)
        s.flush()  # the sha256 race is decided here
        if prepared.table is not None:
            table = prepared.table
            if prepared.fmt in ("aavso-extended", "aavso-csv"):
                model, (children, extra) = PhotometryPoint, _photometry_rows(s, obs, table, options)
            elif prepared.fmt == "etd":
                model, (children, extra) = TransitTime, _transit_rows(s, obs, table, options)
            else:
                model, children, extra = None, [], []
            row_errors = list(table.errors) + extra
            if prepared.fmt != "mpc80" and not children:
                raise IngestError(
                    f"no rows could be stored ({len(extra)} refused when recording, {table.n_bad} malformed):\n"
                    + "\n".join(f"line {e.line}: {e.message}" for e in (extra + list(table.errors))[:5]))
            if children:
                s.execute(model.__table__.insert(), children)  # Core executemany: no per-row ORM work
            n_rows = len(children) if prepared.fmt != "mpc80" else table.n_good
            meta = {"format": prepared.fmt, "params": dict(table.params), "n_rows": n_rows,
                    "n_errors": len(row_errors), "errors": [e.to_json() for e in row_errors[:MAX_REPORTED_ERRORS]]}
            if astrometry is not None:
                meta["astrometry"] = astrometry
            obs.meta = meta
        elif notes:
            obs.meta = {**(obs.meta or {}), "warnings": notes}
        s.flush()
        return _result_for(obs, True, n_rows, row_errors, notes)


def _table_times(table: ParsedTable) -> list[float]:
    rows = table.rows
    for column in ("jd", "jd_utc", "hjd", "time"):
        if column in rows.columns:
            values = rows[column].dropna()
            if len(values):
                return [float(v) for v in values]
    return []


def _discard(app, stored: StoredObject, extras: list[StoredObject] = ()) -> None:
    """Remove objects this call created when no observation references them (failed transaction)."""
    with app.db.session() as s:
        referenced = _existing(s, stored.sha256) is not None
    if referenced:
        return
    for obj in (stored, *extras):
        if obj.created:
            try:
                app.store.delete(obj.key)
            except StorageError:
                pass  # left as an orphan: `openastro store check --repair` removes it


def _announce(app, result: IngestResult) -> IngestResult:
    """Tell the application's ingest listeners (the reactive pipeline) about a newly created observation."""
    if result.created and hasattr(app, "notify_ingested"):
        app.notify_ingested(result)
    return result


def ingest_path(app, path: str | os.PathLike[str], options: IngestOptions | None = None, *,
                sha256: str | None = None) -> IngestResult:
    """Ingest one file (see the module docstring). IngestError (a ValueError) when it cannot be ingested.

    ``sha256`` may be given when the caller already hashed the file while receiving it.
    """
    options = options or IngestOptions()
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{display_name(str(path))[0]}: not a file")
    name, name_notes = display_name(options.original_name if options.original_name is not None else path.name)
    options = dataclasses.replace(options, original_name=name)
    result = _ingest(app, path, options, sha256)
    if name_notes:
        result = dataclasses.replace(result, warnings=result.warnings + name_notes)
    return result


MAX_SUBMISSIONS = 50  # further submissions of one content are refused in `warnings`, not recorded


def _submission(options: IngestOptions) -> dict[str, Any]:
    return {"site_id": options.site_id, "original_name": options.original_name,
            "client": dict(options.client_meta or {})}


def _revisit(app, path: Path, found: IngestResult, options: IngestOptions) -> IngestResult:
    """The content is already stored. Restore its object if ``store check --repair`` marked it missing, and keep
    a different site's (or different metadata's) submission in ``meta["submissions"]`` rather than dropping it:
    the observation stays the first sender's; later senders are listed with what they sent."""
    notes: list[str] = []
    if not app.store.exists(found.storage_key):
        app.store.put_file(path)
        notes.append("the stored copy of this content was missing; restored from this upload")
    new = _submission(options)
    with app.db.session() as s:
        obs = s.get(Observation, found.observation_id)
        if obs.status == OBJECT_MISSING:
            obs.status = "ingested"
        meta = dict(obs.meta or {})
        first = {"site_id": obs.site_id, "original_name": obs.original_name, "client": meta.get("client", {})}
        seen = [first, *meta.get("submissions", [])]
        if new["site_id"] != first["site_id"] or (new["client"] and new not in seen):
            if new in seen:
                notes.append(f"this content was first sent by site {first['site_id']} as observation "
                             f"#{obs.id}; your earlier submission of it is already recorded")
            elif len(seen) - 1 >= MAX_SUBMISSIONS:
                notes.append(f"this content was first sent by site {first['site_id']} as observation #{obs.id}; "
                             f"it already lists {MAX_SUBMISSIONS} further submissions, so yours is not recorded")
            else:
                meta["submissions"] = [*meta.get("submissions", []), new]
                obs.meta = meta
                notes.append(f"this content was first sent by site {first['site_id']} as observation #{obs.id} "
                             f"(its metadata kept); your file name and metadata are recorded with it as "
                             f"submission {len(seen) + 1}")
    return dataclasses.replace(found, warnings=found.warnings + tuple(notes)) if notes else found


def _ingest(app, path: Path, options: IngestOptions, sha256: str | None) -> IngestResult:
    sha = sha256 or sha256_file(path)
    found = find_observation(app, sha)
    if found is not None:
        return _revisit(app, path, found, options)
    prepared = prepare(path, options)
    stored = store_raw(app.store, path, prepared.fmt, compress=app.settings.rice_compress)  # RICE: compress.py
    if stored.sha256 != sha:
        _discard(app, stored)
        raise IngestError(f"{path}: the file changed while it was being ingested")
    extras: list[StoredObject] = []
    try:
        astrometry = None
        if prepared.fmt == "mpc80":
            astrometry, records = _astrometry_summary(app, prepared.table)
            extras.append(records)
        for attempt in range(3):
            try:
                return _announce(app, _write(app, prepared, stored, options, astrometry))
            except IntegrityError:
                found = find_observation(app, sha)
                if found is not None:
                    return found  # a concurrent ingest of the same content won
        raise IngestError(f"{path}: a database constraint kept failing while recording the file")
    except BaseException:
        _discard(app, stored, extras)
        raise


def result_json(result: IngestResult) -> dict[str, Any]:
    return {
        "id": result.observation_id, "created": result.created, "sha256": result.sha256,
        "storage_key": result.storage_key, "kind": result.kind, "source_format": result.source_format,
        "size_bytes": result.size_bytes, "n_rows": result.n_rows,
        "row_errors": [e.to_json() for e in result.row_errors[:MAX_REPORTED_ERRORS]],
        "warnings": list(result.warnings),
    }


def observation_json(app, observation_id: int) -> dict[str, Any] | None:
    with app.db.session() as s:
        obs = s.get(Observation, observation_id)
        if obs is None:
            return None
        return {
            "id": obs.id, "sha256": obs.sha256, "kind": obs.kind, "source_format": obs.source_format,
            "original_name": obs.original_name, "size_bytes": obs.size_bytes,
            "date_obs": obs.date_obs.isoformat() + "Z" if obs.date_obs else None, "mjd": obs.mjd,
            "exptime": obs.exptime, "filter": obs.filter, "binning": obs.binning, "gain": obs.gain,
            "site_id": obs.site_id, "instrument_id": obs.instrument_id, "target_id": obs.target_id,
            "target": obs.target.name if obs.target is not None else None, "status": obs.status,
            "wcs_failed": obs.wcs_failed, "created_at": obs.created_at.isoformat() + "Z" if obs.created_at else None,
            "submissions": list((obs.meta or {}).get("submissions", [])),
        }


__all__ = ["IngestError", "IngestOptions", "IngestResult", "ingest_path", "validate_client_meta", "prepare",
           "find_observation", "result_json", "observation_json"]
