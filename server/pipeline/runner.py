"""The per-observation stage runner: ingest -> solve -> calibrate (-> transients).

The transient stage (``server.transients.stage``) follows a successful calibration automatically in the whole
pipeline (the default ``stages``) for frames whose target and band have a reference image, and runs for any
calibrated frame when named in ``stages``. A single named stage runs alone (the queue's per-stage tasks).

Each stage is a pure function (``server.image.solve.plate_solve``, ``server.image.calibrate.calibrate_frame``) wrapped here
with the I/O: files come out of the object store, results go back into it and into the database, and every
stage's outcome is recorded in ``stage_runs`` (one row per observation and stage, updated on re-runs). A stage
that already succeeded is skipped unless forced, so re-running the pipeline is idempotent. Each stage's database
work is one transaction: a failure leaves the observation as it was, with the failure recorded.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from sqlalchemy import select

from server.core.context import OpenAstro
from server.core.db.models import (
    Calibration,
    Observation,
    PhotometryPoint,
    StageRun,
    utcnow,
)

STAGES = ("solve", "calibrate")
#: runs after a successful calibration when the frame's target and band have a reference image (or when named)
TRANSIENT_STAGE = "transients"


@dataclass(frozen=True)
class StageOutcome:
    observation_id: int
    stage: str
    status: str  # ok, failed, skipped
    message: str = ""


class StageError(RuntimeError):
    """A stage cannot run for this observation (wrong kind, missing prerequisite)."""


def _record(session, observation_id: int, stage: str, status: str, message: str,
            started: dt.datetime) -> None:
    row = session.scalars(
        select(StageRun).where(StageRun.observation_id == observation_id, StageRun.stage == stage)
    ).one_or_none()
    if row is None:
        row = StageRun(observation_id=observation_id, stage=stage, attempts=0)
        session.add(row)
    row.status = status
    row.message = message[:4000]
    row.attempts = (row.attempts or 0) + 1
    row.started_at = started
    row.finished_at = utcnow()


def _stage_done(app: OpenAstro, observation_id: int, stage: str) -> bool:
    with app.db.session() as s:
        row = s.scalars(
            select(StageRun).where(StageRun.observation_id == observation_id, StageRun.stage == stage)
        ).one_or_none()
        return row is not None and row.status == "ok"


# --- solve ------------------------------------------------------------------------------------------


def _scale_hint(obs: Observation) -> tuple[float, float] | None:
    inst = obs.instrument
    if inst is not None and inst.pixel_scale_arcsec:
        return (inst.pixel_scale_arcsec * 0.9, inst.pixel_scale_arcsec * 1.1)
    return None


def run_solve(app: OpenAstro, observation_id: int) -> StageOutcome:
    from server.image.solve import plate_solve

    started = utcnow()
    with app.db.session() as s:
        obs = s.get(Observation, observation_id)
        if obs is None:
            raise StageError(f"no observation with id {observation_id}")
        if obs.kind != "image":
            raise StageError(f"observation {observation_id} is {obs.kind!r}, not an image: nothing to solve")
        raw_key, hint = obs.storage_key, _scale_hint(obs)

    with tempfile.TemporaryDirectory(dir=app.work_dir("solve")) as tmp:
        result = plate_solve(
            str(app.store.path(raw_key)),
            scale_hint=hint,
            timeout_s=app.settings.solve_timeout_s,
            index_dir=app.settings.astrometry_index_dir,
            workdir=tmp,
            catalog=catalog_provider(app),
            use_header_pointing=True,
        )
        solved_key = app.store.put_file(result.solved_path).key if result.success else None

    with app.db.session() as s:
        obs = s.get(Observation, observation_id)
        if result.success:
            obs.solved_storage_key = solved_key
            obs.wcs_failed, obs.wcs_failed_reason = False, None
            obs.status = "solved"
            message = f"solved: {solved_key}"
        else:
            obs.wcs_failed, obs.wcs_failed_reason = True, result.reason
            obs.status = "wcs_failed"
            message = result.reason or "no solution"
        _record(s, observation_id, "solve", "ok" if result.success else "failed", message, started)
    return StageOutcome(observation_id, "solve", "ok" if result.success else "failed", message)


# --- calibrate ----------------------------------------------------------------------------------------


def catalog_provider(app: OpenAstro):
    """The reference catalog chosen by the ``catalog`` setting."""
    from server.image import catalogs

    if app.settings.catalog == "online":
        return catalogs.CachedOnlineCatalog(cache_dir=app.settings.resolved_catalog_cache_dir)
    return catalogs.default_catalog()


def _pixel_scale_arcsec(fits_path: str) -> float:
    from astropy.io import fits
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales
    import numpy as np

    with fits.open(fits_path) as hdul:
        header = next(h.header for h in hdul if h.header.get("NAXIS", 0) == 2)
    return float(np.mean(proj_plane_pixel_scales(WCS(header)))) * 3600.0


def _target_photometry(obs: Observation, cal, match_radius_arcsec: float):
    """The calibrated magnitude of the observation's target, if it is among the measured sources.

    The target matches the nearest source within ``match_radius_arcsec`` (the caller uses max(3", 1.5 px)).
    """
    import numpy as np

    target = obs.target
    table = cal.calibrated_sources
    if target is None or target.ra_deg is None or table is None or len(table) == 0:
        return None
    cosd = np.cos(np.radians(target.dec_deg))
    d = np.hypot((table["ra"].to_numpy() - target.ra_deg) * cosd, table["dec"].to_numpy() - target.dec_deg)
    i = int(np.argmin(d))
    if d[i] * 3600.0 > match_radius_arcsec:
        return None
    return table.iloc[i]


def run_calibrate(app: OpenAstro, observation_id: int, catalog=None) -> StageOutcome:
    from server.image.calibrate import calibrate_frame, update_instrument_registry

    started = utcnow()
    with app.db.session() as s:
        obs = s.get(Observation, observation_id)
        if obs is None:
            raise StageError(f"no observation with id {observation_id}")
        if obs.solved_storage_key is None:
            raise StageError(f"observation {observation_id} has no WCS yet (status {obs.status}): solve it first")
        solved_key = obs.solved_storage_key

    catalog = catalog if catalog is not None else catalog_provider(app)
    try:
        cal = calibrate_frame(str(app.store.path(solved_key)), catalog)
    except ValueError as exc:
        with app.db.session() as s:
            s.get(Observation, observation_id).status = "calibration_failed"
            _record(s, observation_id, "calibrate", "failed", str(exc), started)
        return StageOutcome(observation_id, "calibrate", "failed", str(exc))

    with app.db.session() as s:
        obs = s.get(Observation, observation_id)
        existing = s.scalars(select(Calibration).where(Calibration.observation_id == observation_id)).one_or_none()
        if existing is not None:
            s.delete(existing)
            s.flush()
        s.add(Calibration(
            observation_id=observation_id, catalog=getattr(catalog, "name", type(catalog).__name__),
            band=cal.band, zero_point=cal.zero_point, zero_point_err=cal.zero_point_err,
            color_term=cal.color_term, color_term_err=cal.color_term_err, scatter_mag=cal.scatter_mag,
            n_matches=cal.catalog_matches, fwhm_px=getattr(cal, "fwhm_px", None),
        ))
        if obs.instrument is not None and obs.site_id is not None:
            update_instrument_registry(s, obs.site_id, obs.instrument.camera, cal, observation_id=observation_id)
        radius = max(3.0, 1.5 * _pixel_scale_arcsec(str(app.store.path(solved_key))))
        star = _target_photometry(obs, cal, radius)
        if star is not None and obs.mjd is not None:
            s.query(PhotometryPoint).filter(PhotometryPoint.observation_id == observation_id).delete()
            mid_jd = obs.mjd + 2400000.5 + (obs.exptime or 0.0) / 2.0 / 86400.0
            s.add(PhotometryPoint(
                observation_id=observation_id, target_id=obs.target_id, site_id=obs.site_id,
                time_utc=obs.date_obs, jd_utc=mid_jd, band=cal.band or (obs.filter or "?"),
                mag=float(star["mag"]), mag_err=float(star["mag_err"]), source="pipeline",
            ))
        obs.status = "calibrated"
        message = (f"zero point {cal.zero_point:.3f} +- {cal.zero_point_err:.3f} from "
                   f"{cal.catalog_matches} stars")
        _record(s, observation_id, "calibrate", "ok", message, started)
    return StageOutcome(observation_id, "calibrate", "ok", message)


# --- transients -------------------------------------------------------------------------------------


def has_reference(app: OpenAstro, observation_id: int) -> bool:
    """Whether the observation's target has a reference image in the band of its calibration."""
    from server.core.db.models import TransientReference

    with app.db.session() as s:
        obs = s.get(Observation, observation_id)
        cal = s.scalars(select(Calibration).where(Calibration.observation_id == observation_id)).one_or_none()
        if obs is None or cal is None or obs.target_id is None:
            return False
        return s.scalars(select(TransientReference.id).where(
            TransientReference.target_id == obs.target_id, TransientReference.band == (cal.band or obs.filter),
            TransientReference.status == "ready", TransientReference.image_key.is_not(None))).first() is not None


def run_transients_stage(app: OpenAstro, observation_id: int, scorer=None, providers=None) -> StageOutcome:
    """Difference imaging, candidates and alerts (server.transients.stage.run_transients), recorded."""
    from server.transients.psf import PSFError
    from server.transients.stage import run_transients

    started = utcnow()
    try:
        run = run_transients(app, observation_id, scorer=scorer, providers=providers)
        status, message = ("ok" if run.status == "ok" else "skipped"), run.message
    except (ValueError, PSFError) as exc:
        status, message = "failed", str(exc)
    with app.db.session() as s:
        if s.get(Observation, observation_id) is None:
            raise StageError(f"no observation with id {observation_id}")
        _record(s, observation_id, TRANSIENT_STAGE, status, message, started)
    return StageOutcome(observation_id, TRANSIENT_STAGE, status, message)


STAGE_FUNCTIONS: dict[str, Callable[[OpenAstro, int], StageOutcome]] = {
    "solve": run_solve,
    "calibrate": run_calibrate,
    TRANSIENT_STAGE: run_transients_stage,
}


def run_pipeline(app: OpenAstro, observation_ids: Iterable[int], stages: Sequence[str] = STAGES, *,
                 force: bool = False, on_outcome: Callable[[StageOutcome], None] | None = None
                 ) -> list[StageOutcome]:
    """Run ``stages`` in order for each observation; a failed stage stops that observation's chain."""
    unknown = [s for s in stages if s not in STAGE_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGE_FUNCTIONS)}")
    outcomes: list[StageOutcome] = []
    for oid in observation_ids:
        chain = list(stages)
        if tuple(stages) == STAGES:  # the whole per-observation pipeline; a single named stage runs alone
            chain.append(TRANSIENT_STAGE)  # run only if the frame has a reference, checked below
        for stage in chain:
            if stage == TRANSIENT_STAGE and stage not in stages and not has_reference(app, oid):
                continue
            if not force and _stage_done(app, oid, stage):
                outcome = StageOutcome(oid, stage, "skipped", "already done")
            else:
                try:
                    outcome = STAGE_FUNCTIONS[stage](app, oid)
                except StageError as exc:
                    outcome = StageOutcome(oid, stage, "failed", str(exc))
            outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
            if outcome.status == "failed":
                break
    return outcomes


def pending_images(app: OpenAstro) -> list[int]:
    """Image observations that have not finished calibration."""
    with app.db.session() as s:
        return list(s.scalars(
            select(Observation.id).where(Observation.kind == "image", Observation.status != "calibrated")
            .order_by(Observation.id)
        ))
