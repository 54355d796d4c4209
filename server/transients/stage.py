"""The transient stage: a calibrated frame against its reference -> candidates -> vetting -> alerts.

``find_transients`` is the pure stage (arrays and paths in, a frozen ``TransientResult`` out): the reference is
reprojected onto the new frame's pixel grid with the project's reprojection kernel (``app.reproject_kernel``,
bilinear, flux-conserving), both PSFs are measured from the images, the pair is subtracted with ZOGY
(``server.transients.zogy``; flux scaling F_new = 1 / flux_scale(zero point, exposure), F_ref = 1 as the
reference is in the common flux unit; S_corr renormalised by its robust rms because the resampled reference has
correlated noise) and candidates are detected at ``snr_threshold`` with their cutout triplets, which the
injected ``scorer`` (``score_triplets`` of ``server.transients.classify``) turns into real-bogus scores.

``run_transients`` is the I/O around it for one observation: it reads the frame and the target's current
reference, cross-matches each candidate, stores candidates (triplets in the object store as one npz per frame),
and for every candidate with rb > ``transients_rb_threshold`` and no star or solar-system match writes an alert
(Avro + VOEvent in the store, a ``transient_alerts`` row) with the earlier detections within 1.5" (alerted or not,
vetoed ones excepted) as its history; alerted candidates within 1.5" share one ``transient_objects`` row.
All database work is one transaction.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from server.transients.detect import Candidate

Scorer = Callable[[np.ndarray], np.ndarray]
OBJECT_MATCH_ARCSEC = 1.5


@dataclass(frozen=True)
class TransientResult:
    candidates: tuple[Candidate, ...]
    triplets: np.ndarray  # (N, 63, 63, 3)
    rb: np.ndarray | None  # (N,) real-bogus scores, None without a scorer
    fwhm_new_px: float
    fwhm_ref_px: float
    score_rms: float  # robust rms of S_corr before renormalisation
    difference_noise_adu: float
    valid_fraction: float
    pixel_scale_arcsec: float

    def as_dict(self) -> dict:
        return {"n_candidates": len(self.candidates), "fwhm_new_px": self.fwhm_new_px,
                "fwhm_ref_px": self.fwhm_ref_px, "score_rms": self.score_rms,
                "difference_noise_adu": self.difference_noise_adu, "valid_fraction": self.valid_fraction,
                "candidates": [c.__dict__ for c in self.candidates],
                "rb": None if self.rb is None else [float(v) for v in self.rb]}


def _wcs_cards(header) -> dict:
    from server.image.fitsimage import is_wcs_keyword

    cards = {k: header[k] for k in header if k and is_wcs_keyword(k)}
    if not any(k.startswith("CTYPE") for k in cards):
        raise ValueError("the new frame has no celestial WCS (plate-solve it first)")
    return cards


def align_reference(ref_data: np.ndarray, ref_header, new_header, shape: tuple[int, int]) -> np.ndarray:
    """The reference resampled onto the new frame's grid (NaN outside its footprint)."""
    from app.reproject_kernel import reproject_tile

    out_cards = _wcs_cards(new_header)
    ny, nx = shape
    res = reproject_tile(np.asarray(ref_data, dtype=np.float32), None, _wcs_cards(ref_header), (0, 0), out_cards,
                         (0, ny, 0, nx), method="bilinear", conserve_flux=True)
    data = np.asarray(res.data, dtype=np.float32)
    return np.where(res.footprint & np.isfinite(data), data, np.float32(np.nan)).astype(np.float32)


def _background(data: np.ndarray) -> tuple[np.ndarray, float]:
    import sep

    d = np.ascontiguousarray(data, dtype=np.float32)
    bad = ~np.isfinite(d)
    filled = np.where(bad, np.float32(0), d).astype(np.float32)
    bkg = sep.Background(filled, mask=bad, bw=64, bh=64, fw=3, fh=3)
    sub = d - bkg.back()
    sub[bad] = np.nan
    return sub, float(bkg.globalrms)


def find_transients(new_data: np.ndarray, new_header, ref_data: np.ndarray, ref_header, *, zero_point: float,
                    exptime_s: float, scorer: Scorer | None = None, snr_threshold: float = 5.0,
                    psf_size: int = 25) -> TransientResult:
    """Difference ``new_data`` against the reference and return its candidates (see the module docstring)."""
    from astropy.wcs import WCS

    from server.image.normalise import flux_scale
    from server.transients.detect import detect
    from server.transients.psf import measure_psf
    from server.transients.zogy import zogy

    new = np.asarray(new_data, dtype=np.float32)
    if new.ndim != 2:
        raise ValueError(f"the new frame must be a 2-D image, got shape {new.shape}")
    ref = align_reference(ref_data, ref_header, new_header, new.shape)
    if np.isfinite(ref).mean() < 0.25:
        raise ValueError(f"the reference covers only {np.isfinite(ref).mean():.0%} of the frame")
    new_sub, new_rms = _background(new)
    ref_sub, ref_rms = _background(ref)
    sat = new_header.get("SATURATE")
    psf_new = measure_psf(new, size=psf_size, saturation_adu=float(sat) if sat else None)
    psf_ref = measure_psf(np.where(np.isfinite(ref), ref, 0.0), size=psf_size)
    gain = new_header.get("GAIN")
    res = zogy(new_sub, ref_sub, psf_new, psf_ref, f_new=1.0 / flux_scale(zero_point, exptime_s), f_ref=1.0,
               sigma_new=new_rms, sigma_ref=ref_rms, gain_new=float(gain) if gain else None, renormalise=True)
    wcs = WCS(_wcs_cards(new_header))
    det = detect(res, new, ref, threshold=snr_threshold, wcs=wcs)
    rb = None
    if scorer is not None and len(det.candidates):
        rb = np.asarray(scorer(det.triplets), dtype=float)
        if rb.shape != (len(det.candidates),) or not np.all((rb >= 0) & (rb <= 1)):
            raise ValueError(f"the scorer must return one score in [0, 1] per candidate, got shape {rb.shape}")
    elif scorer is not None:
        rb = np.zeros(0)
    from astropy.wcs.utils import proj_plane_pixel_scales

    scale = float(np.sqrt(np.prod(proj_plane_pixel_scales(wcs))) * 3600.0)
    return TransientResult(det.candidates, det.triplets, rb, psf_new.fwhm_px, psf_ref.fwhm_px, res.score_rms,
                           res.difference_noise_adu, float(res.valid.mean()), scale)


def default_scorer() -> tuple[Scorer | None, str]:
    """``score_triplets`` of the classifier with the braai model when the classifier is installed."""
    try:
        from server.transients.classify import score_triplets  # the classifier module (issue #16 item 4)
    except ImportError:
        return None, "none"
    return (lambda t: score_triplets(t, model="braai")), "braai"


def default_crossmatch(app) -> list:
    """The cross-match providers the settings ask for: the calibration catalog's stars, SkyBoT, NED, SDSS."""
    from server.image import catalogs
    from server.transients.crossmatch import default_providers

    st = app.settings
    catalog = (catalogs.CachedOnlineCatalog(cache_dir=st.resolved_catalog_cache_dir) if st.catalog == "online"
               else catalogs.default_catalog())
    return default_providers(catalog, cache_dir=st.resolved_crossmatch_cache_dir,
                             offline=st.transients_crossmatch_offline,
                             star_radius_arcsec=st.transients_star_match_arcsec)


@dataclass(frozen=True)
class TransientRun:
    status: str  # ok, skipped
    message: str
    n_candidates: int = 0
    n_alerts: int = 0
    alert_ids: tuple[int, ...] = ()


def _object_name(oid: int, jd: float) -> str:
    from astropy.time import Time

    yy = Time(jd, format="jd").datetime.year % 100
    letters, n = "", oid
    while True:
        n, r = divmod(n, 26)
        letters = chr(ord("a") + r) + letters
        if n == 0:
            break
    return f"OA{yy:02d}{letters.rjust(4, 'a')}"


def _find_object(session, ra: float, dec: float):
    from sqlalchemy import select

    from server.core.db.models import TransientObject
    from server.transients.crossmatch import _sep_arcsec

    win = OBJECT_MATCH_ARCSEC / 3600.0
    rows = session.scalars(select(TransientObject).where(TransientObject.dec_deg.between(dec - win, dec + win))).all()
    best = None
    for o in rows:
        s = float(_sep_arcsec(ra, dec, o.ra_deg, o.dec_deg))
        if s <= OBJECT_MATCH_ARCSEC and (best is None or s < best[0]):
            best = (s, o)
    return None if best is None else best[1]


def _previous_detections(session, cand) -> list:
    """Earlier candidates within ``OBJECT_MATCH_ARCSEC`` of ``cand`` (any status but vetoed ones), oldest first:
    the alert history of the position."""
    from sqlalchemy import select

    from server.core.db.models import TransientCandidate
    from server.transients.crossmatch import _sep_arcsec

    win = OBJECT_MATCH_ARCSEC / 3600.0
    rows = session.scalars(select(TransientCandidate).where(
        TransientCandidate.dec_deg.between(cand.dec_deg - win, cand.dec_deg + win),
        TransientCandidate.id != cand.id, TransientCandidate.jd < cand.jd,
        TransientCandidate.status.not_in(("star", "solar_system")))).all()
    near = [c for c in rows if float(_sep_arcsec(cand.ra_deg, cand.dec_deg, c.ra_deg, c.dec_deg)) <= OBJECT_MATCH_ARCSEC]
    return sorted(near, key=lambda c: (c.jd, c.id))


def run_transients(app, observation_id: int, *, scorer: Scorer | None = None, rb_version: str | None = None,
                   providers: Sequence | None = None) -> TransientRun:
    """Run the transient stage for one calibrated observation (see the module docstring)."""
    from sqlalchemy import select

    from server.core.db.models import (
        Calibration,
        Observation,
        TransientAlert,
        TransientCandidate,
        TransientObject,
    )
    from server.image.fitsimage import open_image
    from server.transients import alerts
    from server.transients.crossmatch import cross_match, default_providers
    from server.transients.reference import current_reference

    st = app.settings
    with app.db.session() as s:
        obs = s.get(Observation, observation_id)
        if obs is None:
            raise ValueError(f"no observation with id {observation_id}")
        cal = s.scalars(select(Calibration).where(Calibration.observation_id == observation_id)).one_or_none()
        if obs.solved_storage_key is None or cal is None:
            raise ValueError(f"observation {observation_id} is not calibrated (status {obs.status}): "
                             "solve and calibrate it first")
        band = cal.band or obs.filter
        ref = current_reference(s, obs.target_id, band) if obs.target_id is not None else None
        if ref is None:
            return TransientRun("skipped", f"no reference for target #{obs.target_id} in band {band}")
        if not obs.exptime or obs.mjd is None:
            raise ValueError(f"observation {observation_id} lacks EXPTIME or DATE-OBS")
        new_key, ref_key, ref_id = obs.solved_storage_key, ref.image_key, ref.id
        ref_jd = ((ref.mjd_start or 0.0) + 2400000.5, (ref.mjd_end or 0.0) + 2400000.5, ref.n_frames)
        zp, exptime, jd = cal.zero_point, float(obs.exptime), obs.mjd + 2400000.5 + obs.exptime / 2.0 / 86400.0
    if scorer is None:
        scorer, default_version = default_scorer()
        rb_version = rb_version or default_version
    new_data, new_header = open_image(str(app.store.path(new_key)))
    ref_data, ref_header = open_image(str(app.store.path(ref_key)))
    result = find_transients(new_data, new_header, ref_data, ref_header, zero_point=zp, exptime_s=exptime,
                             scorer=scorer, snr_threshold=st.transients_snr_threshold)
    if providers is None:
        providers = default_crossmatch(app)
    buf = io.BytesIO()
    np.savez_compressed(buf, triplets=result.triplets)
    trip_key = app.store.put_bytes(buf.getvalue()).key if len(result.candidates) else None
    alert_ids = []
    with app.db.session() as s:
        for i, c in enumerate(result.candidates):
            rb = None if result.rb is None else float(result.rb[i])
            report = cross_match(providers, c.ra_deg, c.dec_deg, jd)
            if rb is None:
                status = "unscored"
            elif rb <= st.transients_rb_threshold:
                status = "bogus"
            elif report.vetoed:
                status = next(m.kind for r in report.results for m in r.matches if m.kind in ("star", "solar_system"))
            else:
                status = "alerted"
            cand = TransientCandidate(
                observation_id=observation_id, reference_id=ref_id, jd=jd, band=band, x=c.x, y=c.y,
                ra_deg=c.ra_deg, dec_deg=c.dec_deg, sign=c.sign, snr=c.snr, flux=c.flux, flux_err=c.flux_err,
                mag=c.mag, mag_err=c.mag_err, fwhm_px=_finite(c.fwhm_px), elongation=_finite(c.elongation), rb=rb,
                status=status, crossmatch=report.as_dict(), triplet_key=trip_key, triplet_index=i)
            s.add(cand)
            s.flush()
            if status != "alerted":
                continue
            obj = _find_object(s, c.ra_deg, c.dec_deg)
            if obj is None:
                obj = TransientObject(name=f"tmp{cand.id}", ra_deg=c.ra_deg, dec_deg=c.dec_deg, first_jd=jd,
                                      last_jd=jd, n_detections=0)
                s.add(obj)
                s.flush()
                obj.name = _object_name(obj.id, jd)
            previous = _previous_detections(s, cand)
            cand.object_id = obj.id
            obj.n_detections += 1
            obj.first_jd, obj.last_jd = min(obj.first_jd, jd), max(obj.last_jd, jd)
            det = _detection(cand, observation_id, c, result.pixel_scale_arcsec, result.fwhm_new_px)
            packet = alerts.AlertPacket(
                object_id=obj.name, detection=det, previous=tuple(_detection(p, p.observation_id) for p in previous),
                reference_id=ref_id, reference_jd_start=ref_jd[0], reference_jd_end=ref_jd[1],
                reference_n_frames=ref_jd[2], cutouts=result.triplets[i], crossmatch=report.as_dict(),
                rb_version=rb_version or "none")
            xml = alerts.voevent_xml(packet)
            alerts.validate_voevent(xml)
            row = TransientAlert(candidate_id=cand.id, object_id=obj.id, ra_deg=c.ra_deg, dec_deg=c.dec_deg, jd=jd,
                                 mag=c.mag, rb=rb, n_previous=len(previous),
                                 avro_key=app.store.put_bytes(alerts.write_avro(packet)).key,
                                 voevent_key=app.store.put_bytes(xml).key)
            s.add(row)
            s.flush()
            alert_ids.append(row.id)
    n = len(result.candidates)
    return TransientRun("ok", f"{n} candidate(s), {len(alert_ids)} alert(s); FWHM new {result.fwhm_new_px:.2f} px, "
                        f"reference {result.fwhm_ref_px:.2f} px", n, len(alert_ids), tuple(alert_ids))


def _finite(v):
    return float(v) if v is not None and np.isfinite(v) else None


def _detection(cand, pid: int, c: Candidate | None = None, scale: float | None = None,
               fwhm_fallback_px: float | None = None):
    """The alert-format view of a stored candidate; position error FWHM / S/N (the frame's PSF FWHM when the
    candidate's own did not converge)."""
    from server.transients.alerts import AlertDetection

    pos_err = None
    if c is not None and scale is not None and c.snr > 0:
        fwhm = c.fwhm_px if np.isfinite(c.fwhm_px) else fwhm_fallback_px
        pos_err = None if fwhm is None else float(fwhm * scale / c.snr)
    return AlertDetection(candid=int(cand.id), jd=float(cand.jd), band=cand.band or "?", ra_deg=cand.ra_deg,
                          dec_deg=cand.dec_deg, isdiffpos=cand.sign > 0, mag=cand.mag, mag_err=cand.mag_err,
                          snr=float(cand.snr), pid=int(pid), x=cand.x, y=cand.y, fwhm_px=cand.fwhm_px,
                          elongation=cand.elongation, rb=cand.rb, pos_err_arcsec=pos_err)
