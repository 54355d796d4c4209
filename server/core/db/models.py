"""The domain schema (SQLAlchemy 2.x). One schema for SQLite (embedded default) and MariaDB/MySQL.

Conventions: times of observations are stored as UTC datetimes (``*_utc``) and, where science needs them,
as BJD_TDB days (``bjd_tdb``); magnitudes in mag, fluxes normalised or in the unit the column names; masses
of perturbers in Earth masses, periods in days. Strings that MySQL must index have explicit lengths.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.mysql import DATETIME as MYSQL_DATETIME
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# UTC timestamps with microseconds on every engine (MySQL's DATETIME defaults to whole seconds).
UTCDateTime = DateTime().with_variant(MYSQL_DATETIME(fsp=6), "mysql", "mariadb")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, str: String(255)}


# --- sites, keys, instruments -------------------------------------------------------------------------


class Site(Base):
    __tablename__ = "sites"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    latitude_deg: Mapped[Optional[float]] = mapped_column(Double)
    longitude_deg: Mapped[Optional[float]] = mapped_column(Double)
    height_m: Mapped[Optional[float]] = mapped_column(Double)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    api_keys: Mapped[list["ApiKey"]] = relationship(back_populates="site")
    instruments: Mapped[list["Instrument"]] = relationship(back_populates="site")


class ApiKey(Base):
    """An upload key for a site. Only a SHA-256 hash of the key is stored; ``prefix`` identifies it."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime)

    site: Mapped[Site] = relationship(back_populates="api_keys")


class Instrument(Base):
    """A camera at a site (the instrument registry key is site + camera)."""

    __tablename__ = "instruments"
    __table_args__ = (UniqueConstraint("site_id", "camera", name="uq_instrument_site_camera"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    camera: Mapped[str] = mapped_column(String(120))
    telescope: Mapped[Optional[str]] = mapped_column(String(120))
    pixel_scale_arcsec: Mapped[Optional[float]] = mapped_column(Double)
    gain_e_per_adu: Mapped[Optional[float]] = mapped_column(Double)
    # Latest registry values (the history is in instrument_calibrations).
    zero_point: Mapped[Optional[float]] = mapped_column(Double)
    zero_point_err: Mapped[Optional[float]] = mapped_column(Double)
    color_term: Mapped[Optional[float]] = mapped_column(Double)
    color_term_err: Mapped[Optional[float]] = mapped_column(Double)
    n_calibrations: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    site: Mapped[Site] = relationship(back_populates="instruments")
    history: Mapped[list["InstrumentCalibration"]] = relationship(back_populates="instrument")


class InstrumentCalibration(Base):
    """One entry of an instrument's zero-point / colour-term history."""

    __tablename__ = "instrument_calibrations"
    id: Mapped[int] = mapped_column(primary_key=True)
    instrument_id: Mapped[int] = mapped_column(ForeignKey("instruments.id"), index=True)
    observation_id: Mapped[Optional[int]] = mapped_column(ForeignKey("observations.id"))
    band: Mapped[Optional[str]] = mapped_column(String(16))
    zero_point: Mapped[float] = mapped_column(Double)
    zero_point_err: Mapped[Optional[float]] = mapped_column(Double)
    color_term: Mapped[Optional[float]] = mapped_column(Double)
    color_term_err: Mapped[Optional[float]] = mapped_column(Double)
    scatter_mag: Mapped[Optional[float]] = mapped_column(Double)
    n_stars: Mapped[Optional[int]] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    instrument: Mapped[Instrument] = relationship(back_populates="history")


# --- targets and observations -------------------------------------------------------------------------


class Target(Base):
    __tablename__ = "targets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    ra_deg: Mapped[Optional[float]] = mapped_column(Double)
    dec_deg: Mapped[Optional[float]] = mapped_column(Double)
    kind: Mapped[Optional[str]] = mapped_column(String(32))  # variable, transit, asteroid, field
    meta: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)


class Observation(Base):
    """One ingested file or upload. ``status`` follows the stage runner: ingested, solved, calibrated, failed."""

    __tablename__ = "observations"
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    storage_key: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))  # image, photometry, transit_times, astrometry
    source_format: Mapped[str] = mapped_column(String(32))  # fits, fits.fz, aavso-extended, aavso-csv, etd, mpc80
    original_name: Mapped[Optional[str]] = mapped_column(String(255))
    size_bytes: Mapped[Optional[int]] = mapped_column(BigInteger)
    date_obs: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime, index=True)  # UTC
    mjd: Mapped[Optional[float]] = mapped_column(Double)  # UTC MJD of the exposure start
    exptime: Mapped[Optional[float]] = mapped_column(Double)  # seconds
    filter: Mapped[Optional[str]] = mapped_column(String(32))
    binning: Mapped[Optional[int]] = mapped_column(Integer)
    gain: Mapped[Optional[float]] = mapped_column(Double)
    site_id: Mapped[Optional[int]] = mapped_column(ForeignKey("sites.id"), index=True)
    instrument_id: Mapped[Optional[int]] = mapped_column(ForeignKey("instruments.id"))
    target_id: Mapped[Optional[int]] = mapped_column(ForeignKey("targets.id"), index=True)
    status: Mapped[str] = mapped_column(String(32), default="ingested", index=True)
    wcs_failed: Mapped[bool] = mapped_column(Boolean, default=False)
    wcs_failed_reason: Mapped[Optional[str]] = mapped_column(Text)
    solved_storage_key: Mapped[Optional[str]] = mapped_column(String(255))
    meta: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    site: Mapped[Optional[Site]] = relationship()
    target: Mapped[Optional[Target]] = relationship()
    instrument: Mapped[Optional[Instrument]] = relationship()


class StageRun(Base):
    """The outcome of one pipeline stage for one observation (re-runs update the same row)."""

    __tablename__ = "stage_runs"
    __table_args__ = (UniqueConstraint("observation_id", "stage", name="uq_stage_run"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    observation_id: Mapped[int] = mapped_column(ForeignKey("observations.id"))
    stage: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # ok, failed
    message: Mapped[Optional[str]] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime)


class Calibration(Base):
    __tablename__ = "calibrations"
    id: Mapped[int] = mapped_column(primary_key=True)
    observation_id: Mapped[int] = mapped_column(ForeignKey("observations.id"), unique=True)
    catalog: Mapped[str] = mapped_column(String(64))
    band: Mapped[Optional[str]] = mapped_column(String(16))
    zero_point: Mapped[float] = mapped_column(Double)
    zero_point_err: Mapped[Optional[float]] = mapped_column(Double)
    color_term: Mapped[Optional[float]] = mapped_column(Double)
    color_term_err: Mapped[Optional[float]] = mapped_column(Double)
    scatter_mag: Mapped[Optional[float]] = mapped_column(Double)
    n_matches: Mapped[int] = mapped_column(Integer)
    fwhm_px: Mapped[Optional[float]] = mapped_column(Double)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class PhotometryPoint(Base):
    """One brightness measurement of a target (from calibrated frames or archival photometry)."""

    __tablename__ = "photometry_points"
    # (target, band, time): a light curve is read in time order straight from the index (portal latency, 0004)
    __table_args__ = (Index("ix_phot_target_band", "target_id", "band"),
                      Index("ix_phot_target_band_jd", "target_id", "band", "jd_utc"))
    id: Mapped[int] = mapped_column(primary_key=True)
    observation_id: Mapped[Optional[int]] = mapped_column(ForeignKey("observations.id"), index=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id"))
    site_id: Mapped[Optional[int]] = mapped_column(ForeignKey("sites.id"))
    observer_code: Mapped[Optional[str]] = mapped_column(String(32))
    time_utc: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime)
    jd_utc: Mapped[float] = mapped_column(Double)  # JD (UTC) of mid-exposure
    bjd_tdb: Mapped[Optional[float]] = mapped_column(Double)
    band: Mapped[str] = mapped_column(String(16))
    mag: Mapped[Optional[float]] = mapped_column(Double)
    mag_err: Mapped[Optional[float]] = mapped_column(Double)
    flux: Mapped[Optional[float]] = mapped_column(Double)
    flux_err: Mapped[Optional[float]] = mapped_column(Double)
    is_upper_limit: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(32), default="pipeline")


class LightCurve(Base):
    __tablename__ = "light_curves"
    id: Mapped[int] = mapped_column(primary_key=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id"), index=True)
    band: Mapped[str] = mapped_column(String(16))
    n_points: Mapped[int] = mapped_column(Integer)
    n_rejected: Mapped[int] = mapped_column(Integer, default=0)
    storage_key: Mapped[Optional[str]] = mapped_column(String(255))
    meta: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Periodogram(Base):
    __tablename__ = "periodograms"
    id: Mapped[int] = mapped_column(primary_key=True)
    light_curve_id: Mapped[Optional[int]] = mapped_column(ForeignKey("light_curves.id"))
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id"), index=True)
    band: Mapped[Optional[str]] = mapped_column(String(16))
    best_period: Mapped[float] = mapped_column(Double)  # days
    best_period_err: Mapped[Optional[float]] = mapped_column(Double)
    fap: Mapped[Optional[float]] = mapped_column(Double)
    fap_method: Mapped[Optional[str]] = mapped_column(String(16))
    storage_key: Mapped[Optional[str]] = mapped_column(String(255))
    meta: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class TransitTime(Base):
    """A measured mid-transit time (BJD_TDB days) of one planet at one epoch."""

    __tablename__ = "transit_times"
    __table_args__ = (UniqueConstraint("target_id", "planet", "epoch", "source", name="uq_transit_time"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id"), index=True)
    planet: Mapped[str] = mapped_column(String(32))
    epoch: Mapped[int] = mapped_column(Integer)
    t_obs: Mapped[float] = mapped_column(Double)  # BJD_TDB
    sigma: Mapped[float] = mapped_column(Double)  # days
    t_pred: Mapped[Optional[float]] = mapped_column(Double)
    flag: Mapped[Optional[str]] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(64), default="pipeline")
    observation_id: Mapped[Optional[int]] = mapped_column(ForeignKey("observations.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Stack(Base):
    __tablename__ = "stacks"
    id: Mapped[int] = mapped_column(primary_key=True)
    target_id: Mapped[Optional[int]] = mapped_column(ForeignKey("targets.id"))
    band: Mapped[Optional[str]] = mapped_column(String(16))
    campaign_id: Mapped[Optional[int]] = mapped_column(ForeignKey("campaigns.id"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    n_frames: Mapped[int] = mapped_column(Integer, default=0)
    grid: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)  # reference WCS header + shape
    stacked_key: Mapped[Optional[str]] = mapped_column(String(255))
    uncertainty_key: Mapped[Optional[str]] = mapped_column(String(255))
    coverage_key: Mapped[Optional[str]] = mapped_column(String(255))
    meta: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


# --- campaigns, work units, results, posteriors ---------------------------------------------------------


class Campaign(Base):
    """A batch of work: a TTV inference (kind 'ttv') or a stack's reprojection (kind 'stack')."""

    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    executor: Mapped[str] = mapped_column(String(16), default="local")
    status: Mapped[str] = mapped_column(String(16), default="created", index=True)
    target_id: Mapped[Optional[int]] = mapped_column(ForeignKey("targets.id"))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed_entropy: Mapped[Optional[str]] = mapped_column(String(80))  # decimal string of the root entropy
    summary: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    work_units: Mapped[list["WorkUnit"]] = relationship(back_populates="campaign")


class WorkUnit(Base):
    __tablename__ = "work_units"
    __table_args__ = (Index("ix_wu_campaign_state", "campaign_id", "state"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    name: Mapped[str] = mapped_column(String(190), unique=True)
    kind: Mapped[str] = mapped_column(String(32))  # ttv-nested, ttv-emcee, reproject-tile
    bin_index: Mapped[Optional[int]] = mapped_column(Integer)
    run_index: Mapped[Optional[int]] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    input_files: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)  # logical name -> physical name
    state: Mapped[str] = mapped_column(String(16), default="created")  # created, sent, done, error, cancelled
    error_mask: Mapped[int] = mapped_column(Integer, default=0)
    boinc_wu_id: Mapped[Optional[int]] = mapped_column(BigInteger)
    canonical_result_id: Mapped[Optional[int]] = mapped_column(Integer)
    rsc_fpops_est: Mapped[Optional[float]] = mapped_column(Double)
    assimilated_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    campaign: Mapped[Campaign] = relationship(back_populates="work_units")
    results: Mapped[list["Result"]] = relationship(back_populates="work_unit")


class Result(Base):
    """A returned (or locally produced) result file for a work unit, with its validation outcome."""

    __tablename__ = "results"
    id: Mapped[int] = mapped_column(primary_key=True)
    work_unit_id: Mapped[int] = mapped_column(ForeignKey("work_units.id"), index=True)
    name: Mapped[str] = mapped_column(String(190), unique=True)
    storage_key: Mapped[Optional[str]] = mapped_column(String(255))
    sha256: Mapped[Optional[str]] = mapped_column(String(64))
    validate_state: Mapped[str] = mapped_column(String(16), default="pending")  # pending, valid, invalid
    invalid_reason: Mapped[Optional[str]] = mapped_column(Text)
    runtime_s: Mapped[Optional[float]] = mapped_column(Double)
    summary: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    work_unit: Mapped[WorkUnit] = relationship(back_populates="results")


class Posterior(Base):
    """A merged posterior: per bin (bin_index set) or the campaign's combined one (bin_index NULL)."""

    __tablename__ = "posteriors"
    __table_args__ = (UniqueConstraint("campaign_id", "bin_index", "model", name="uq_posterior"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    bin_index: Mapped[Optional[int]] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(32), default="one-perturber")
    n_runs: Mapped[int] = mapped_column(Integer, default=0)
    log_evidence: Mapped[Optional[float]] = mapped_column(Double)
    log_evidence_err: Mapped[Optional[float]] = mapped_column(Double)
    storage_key: Mapped[Optional[str]] = mapped_column(String(255))
    summary: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # which data the posterior used (server/ttv/reinfer.py): SHA-256 of its transit-time table, the rows' ids,
    # and the posterior it was warm-started from (NULL: a cold run)
    data_sha256: Mapped[Optional[str]] = mapped_column(String(64), index=True)
    transit_time_ids: Mapped[Optional[list[int]]] = mapped_column(JSON)
    warm_started_from: Mapped[Optional[int]] = mapped_column(Integer)


# --- transients (server/transients, docs/transients.md) --------------------------------------------------


class TransientReference(Base):
    """A reference image of one target (field) and band: a stack of best-seeing calibrated frames.

    Pixels in the common flux unit (mag = 25 - 2.5 log10 F, server/image/normalise.py). ``provenance`` lists the
    frames used (observation ids, seeing, zero points, instruments) and the build settings; ``status`` is
    ``ready`` or ``superseded`` (a newer reference of the same target and band replaced it).
    """

    __tablename__ = "transient_references"
    id: Mapped[int] = mapped_column(primary_key=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id"), index=True)
    band: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="ready")
    image_key: Mapped[Optional[str]] = mapped_column(String(255))  # NULL: the object was lost (store check)
    uncertainty_key: Mapped[Optional[str]] = mapped_column(String(255))
    coverage_key: Mapped[Optional[str]] = mapped_column(String(255))
    n_frames: Mapped[int] = mapped_column(Integer)
    fwhm_arcsec: Mapped[Optional[float]] = mapped_column(Double)  # measured on the stack
    depth_mag: Mapped[Optional[float]] = mapped_column(Double)  # 5-sigma point-source depth (common system)
    mjd_start: Mapped[Optional[float]] = mapped_column(Double)
    mjd_end: Mapped[Optional[float]] = mapped_column(Double)
    instruments: Mapped[Optional[list[int]]] = mapped_column(JSON)
    provenance: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    built_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class TransientObject(Base):
    """A position on the sky with one or more candidates (the alert history groups by object)."""

    __tablename__ = "transient_objects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    ra_deg: Mapped[float] = mapped_column(Double)
    dec_deg: Mapped[float] = mapped_column(Double, index=True)
    first_jd: Mapped[float] = mapped_column(Double)
    last_jd: Mapped[float] = mapped_column(Double)
    n_detections: Mapped[int] = mapped_column(Integer, default=0)


class TransientCandidate(Base):
    """One >= 5-sigma detection in a difference image, with its measurements and its vetting."""

    __tablename__ = "transient_candidates"
    id: Mapped[int] = mapped_column(primary_key=True)
    observation_id: Mapped[int] = mapped_column(ForeignKey("observations.id"), index=True)
    reference_id: Mapped[int] = mapped_column(ForeignKey("transient_references.id"))
    object_id: Mapped[Optional[int]] = mapped_column(ForeignKey("transient_objects.id"), index=True)
    jd: Mapped[float] = mapped_column(Double)  # exposure mid-time, JD UTC
    band: Mapped[Optional[str]] = mapped_column(String(16))
    x: Mapped[float] = mapped_column(Double)
    y: Mapped[float] = mapped_column(Double)
    ra_deg: Mapped[float] = mapped_column(Double)
    dec_deg: Mapped[float] = mapped_column(Double)
    sign: Mapped[int] = mapped_column(Integer)
    snr: Mapped[float] = mapped_column(Double)
    flux: Mapped[float] = mapped_column(Double)  # common flux unit
    flux_err: Mapped[float] = mapped_column(Double)
    mag: Mapped[Optional[float]] = mapped_column(Double)
    mag_err: Mapped[Optional[float]] = mapped_column(Double)
    fwhm_px: Mapped[Optional[float]] = mapped_column(Double)
    elongation: Mapped[Optional[float]] = mapped_column(Double)
    rb: Mapped[Optional[float]] = mapped_column(Double)
    status: Mapped[str] = mapped_column(String(16))  # alerted, bogus, star, solar_system, unscored, negative
    crossmatch: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    triplet_key: Mapped[Optional[str]] = mapped_column(String(255))  # npz of the frame's triplets
    triplet_index: Mapped[Optional[int]] = mapped_column(Integer)  # this candidate's row in it
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class TransientAlert(Base):
    """An alert issued for a candidate: its Avro and VOEvent packets in the object store."""

    __tablename__ = "transient_alerts"
    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("transient_candidates.id"), unique=True)
    object_id: Mapped[int] = mapped_column(ForeignKey("transient_objects.id"), index=True)
    ra_deg: Mapped[float] = mapped_column(Double)
    dec_deg: Mapped[float] = mapped_column(Double)
    jd: Mapped[float] = mapped_column(Double)
    mag: Mapped[Optional[float]] = mapped_column(Double)
    rb: Mapped[float] = mapped_column(Double)
    n_previous: Mapped[int] = mapped_column(Integer, default=0)
    avro_key: Mapped[Optional[str]] = mapped_column(String(255))  # NULL: the object was lost (store check)
    voevent_key: Mapped[Optional[str]] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


# --- portal users and their browser sessions (issue 17) ------------------------------------------------------


class User(Base):
    """A portal account. ``role``: 'admin' (manages sites, keys, campaigns) or 'scientist' (reads everything).
    ``password_hash`` is scrypt (server/web/auth.py); the password itself is never stored."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    disabled_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime)


class UserSession(Base):
    """A logged-in browser: only the SHA-256 of the session cookie is stored; ``csrf_token`` is the value every
    state-changing form of that session must send back."""

    __tablename__ = "user_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
