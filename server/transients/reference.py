"""Reference images per target (field) and band, and the staleness policy (docs/transients.md).

Build: the target's calibrated, plate-solved frames in the band are ranked by seeing (FWHM in arcsec: the
calibration's FWHM times the frame's pixel scale; measured from the frame when the calibration has none) and the
best ``transients_reference_max_frames`` are stacked with the project's stack pipeline pieces, run in-process:
``server.image.reproject.output_grid`` / ``reproject_image`` onto one grid at the finest pixel scale, then
``server.image.normalise.normalise_image`` with each frame's zero point (common flux unit, mag = 25 - 2.5 log F),
then ``server.image.coadd.co_add`` (median/MAD-clipped SNR^2-weighted mean). The stack, its uncertainty and its
coverage go to the object store; the row in ``transient_references`` keeps the frames used (provenance), its
seeing, its 5-sigma point-source depth and the instruments. A new build supersedes the previous reference.

Staleness (``reference_status``), each a setting:

* age: built more than ``transients_reference_max_age_days`` ago;
* seeing: at least ``transients_reference_min_frames`` eligible frames now have FWHM below
  ``transients_reference_seeing_gain`` times the reference's own;
* depth: ``transients_reference_depth_gain`` times as many eligible frames exist as the reference used;
* new instrument: an eligible frame comes from an instrument that no frame of the reference came from.

A stale reference is still used for subtraction (a stale reference is better than none); the status command
reports why it is stale and ``openastro transients reference build`` replaces it.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from server.core.context import OpenAstro
from server.core.db.models import Calibration, Observation, Target, TransientReference, utcnow


@dataclass(frozen=True)
class EligibleFrame:
    observation_id: int
    path: str
    zero_point: float
    exptime_s: float
    fwhm_arcsec: float
    instrument_id: int | None
    mjd: float | None


@dataclass(frozen=True)
class ReferenceBuild:
    reference_id: int
    n_frames: int
    fwhm_arcsec: float
    depth_mag: float
    observation_ids: tuple[int, ...]


@dataclass(frozen=True)
class ReferenceStatus:
    target: str
    band: str
    reference_id: int | None
    n_frames: int
    n_eligible: int
    stale: bool
    reasons: tuple[str, ...]
    fwhm_arcsec: float | None = None
    depth_mag: float | None = None
    built_at: dt.datetime | None = None


def _target(session, name: str) -> Target:
    tgt = session.scalars(select(Target).where(Target.name == name)).one_or_none()
    if tgt is None:
        raise ValueError(f"no target named {name!r}")
    return tgt


def eligible_frames(app: OpenAstro, target: str, band: str) -> list[EligibleFrame]:
    """Calibrated, plate-solved image frames of ``target`` in ``band``, best seeing first."""
    from server.image.reproject import frame_info

    with app.db.session() as s:
        tgt = _target(s, target)
        rows = s.execute(
            select(Observation, Calibration).join(Calibration, Calibration.observation_id == Observation.id)
            .where(Observation.target_id == tgt.id, Observation.kind == "image",
                   Observation.solved_storage_key.is_not(None)).order_by(Observation.id)).all()
        items = [(o.id, o.solved_storage_key, c.zero_point, o.exptime, c.fwhm_px, o.instrument_id, o.mjd)
                 for o, c in rows if ((c.band or o.filter) == band) and o.exptime]
    frames = []
    for oid, key, zp, exptime, fwhm_px, inst, mjd in items:
        path = str(app.store.path(key))
        scale = frame_info(path).pixel_scale_arcsec
        if fwhm_px is None or not np.isfinite(fwhm_px):
            from server.image.fitsimage import open_image
            from server.transients.psf import PSFError, measure_psf

            try:
                fwhm_px = measure_psf(open_image(path)[0], size=25).fwhm_px
            except PSFError:
                continue
        frames.append(EligibleFrame(oid, path, float(zp), float(exptime), float(fwhm_px) * scale, inst, mjd))
    frames.sort(key=lambda f: (f.fwhm_arcsec, f.observation_id))
    return frames


def point_source_depth(sky_noise: float, psf_stamp: np.ndarray, nsigma: float = 5.0) -> float:
    """``nsigma`` point-source depth (common-system mag) for per-pixel noise ``sky_noise`` [F] and a PSF."""
    flux = nsigma * sky_noise / np.sqrt(np.sum(psf_stamp**2))
    return float(25.0 - 2.5 * np.log10(flux))


def build_reference(app: OpenAstro, target: str, band: str) -> ReferenceBuild:
    """Stack the best-seeing frames of ``target`` in ``band`` into a new reference (see the module docstring)."""
    from server.image.coadd import co_add
    from server.image.fitsimage import open_image
    from server.image.normalise import normalise_image
    from server.image.reproject import frame_info, output_grid, reproject_image
    from server.transients.psf import measure_psf

    st = app.settings
    frames = eligible_frames(app, target, band)
    if len(frames) < st.transients_reference_min_frames:
        raise ValueError(f"{target!r} has {len(frames)} calibrated {band} frame(s); a reference needs at least "
                         f"{st.transients_reference_min_frames} (transients_reference_min_frames)")
    chosen = frames[: st.transients_reference_max_frames]
    infos = [frame_info(f.path, fwhm_arcsec=f.fwhm_arcsec) for f in chosen]
    grid, shape = output_grid(infos)
    with tempfile.TemporaryDirectory(dir=app.work_dir("transients-reference")) as tmp:
        norm, wts = [], []
        for i, f in enumerate(chosen):
            # a short name for the store object (reproject_image records the source name in a header card)
            link = Path(tmp) / f"obs{f.observation_id}.fits"
            link.symlink_to(f.path)
            rp = reproject_image(str(link), grid, shape, out_path=Path(tmp) / f"{i:04d}_reproj.fits")
            out = normalise_image(rp, zero_point=f.zero_point, exptime_s=f.exptime_s,
                                  weight_path=str(Path(rp).with_name(Path(rp).stem + "_weight.fits")),
                                  out_path=Path(tmp) / f"{i:04d}_norm.fits")
            norm.append(out["path"])
            wts.append(out["weight_path"])
        res = co_add(norm, wts, out_dir=tmp, name="reference")
        stack, hdr = open_image(res["stacked_path"])
        unc, _ = open_image(res["uncertainty_path"])
        psf = measure_psf(stack, size=25)
        scale = frame_info(res["stacked_path"]).pixel_scale_arcsec
        depth = point_source_depth(float(np.nanmedian(unc[np.isfinite(unc) & (unc > 0)])), psf.stamp)
        keys = {k: app.store.put_file(res[p]).key
                for k, p in (("image", "stacked_path"), ("uncertainty", "uncertainty_path"),
                             ("coverage", "coverage_path"))}
    mjds = [f.mjd for f in chosen if f.mjd is not None]
    provenance = {
        "frames": [{"observation_id": f.observation_id, "fwhm_arcsec": round(f.fwhm_arcsec, 3),
                    "zero_point": f.zero_point, "exptime_s": f.exptime_s, "instrument_id": f.instrument_id,
                    "mjd": f.mjd} for f in chosen],
        "n_eligible": len(frames), "grid_shape": list(shape), "method": "reproject bilinear + normalise + co_add",
        "settings": {k: st.values[k] for k in ("transients_reference_max_frames", "transients_reference_min_frames")},
    }
    with app.db.session() as s:
        tgt = _target(s, target)
        for old in s.scalars(select(TransientReference).where(
                TransientReference.target_id == tgt.id, TransientReference.band == band,
                TransientReference.status == "ready")):
            old.status = "superseded"
        ref = TransientReference(
            target_id=tgt.id, band=band, status="ready", image_key=keys["image"],
            uncertainty_key=keys["uncertainty"], coverage_key=keys["coverage"], n_frames=len(chosen),
            fwhm_arcsec=psf.fwhm_px * scale, depth_mag=depth, mjd_start=min(mjds) if mjds else None,
            mjd_end=max(mjds) if mjds else None,
            instruments=sorted({f.instrument_id for f in chosen if f.instrument_id is not None}),
            provenance=provenance)
        s.add(ref)
        s.flush()
        rid = ref.id
    return ReferenceBuild(rid, len(chosen), psf.fwhm_px * scale, depth, tuple(f.observation_id for f in chosen))


def current_reference(session, target_id: int, band: str) -> TransientReference | None:
    return session.scalars(select(TransientReference).where(
        TransientReference.target_id == target_id, TransientReference.band == band,
        TransientReference.status == "ready", TransientReference.image_key.is_not(None))
        .order_by(TransientReference.id.desc())).first()


def staleness(ref_built_at: dt.datetime, ref_fwhm: float | None, ref_n: int, ref_instruments: list[int],
              frames: list[EligibleFrame], settings, now: dt.datetime | None = None) -> list[str]:
    """The policy's reasons (empty: fresh) for a reference against the frames eligible now."""
    now = now or utcnow()
    reasons = []
    age = (now - ref_built_at).total_seconds() / 86400.0
    if age > settings.transients_reference_max_age_days:
        reasons.append(f"age {age:.0f} d > {settings.transients_reference_max_age_days:g} d")
    if ref_fwhm:
        better = [f for f in frames if f.fwhm_arcsec < settings.transients_reference_seeing_gain * ref_fwhm]
        if len(better) >= settings.transients_reference_min_frames:
            reasons.append(f"seeing: {len(better)} frames sharper than "
                           f"{settings.transients_reference_seeing_gain:g} x {ref_fwhm:.2f}\"")
    if len(frames) >= settings.transients_reference_depth_gain * ref_n and len(frames) > ref_n:
        reasons.append(f"depth: {len(frames)} eligible frames vs {ref_n} stacked")
    new_inst = sorted({f.instrument_id for f in frames if f.instrument_id is not None} - set(ref_instruments or []))
    if new_inst:
        reasons.append(f"new instrument(s) {new_inst}")
    return reasons


def reference_status(app: OpenAstro, target: str, band: str) -> ReferenceStatus:
    frames = eligible_frames(app, target, band)
    with app.db.session() as s:
        tgt = _target(s, target)
        ref = current_reference(s, tgt.id, band)
        if ref is None:
            return ReferenceStatus(target, band, None, 0, len(frames), True, ("no reference built",))
        reasons = staleness(ref.built_at, ref.fwhm_arcsec, ref.n_frames, ref.instruments or [], frames,
                            app.settings)
        return ReferenceStatus(target, band, ref.id, ref.n_frames, len(frames), bool(reasons), tuple(reasons),
                               ref.fwhm_arcsec, ref.depth_mag, ref.built_at)
