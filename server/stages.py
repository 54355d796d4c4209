"""The public stage facade: the seed's stage functions with the seed's signatures and return keys.

Each one is a thin wrapper over a pure stage function that returns a frozen dataclass (``PlateSolveResult``,
``CalibrationResult``, ...); the wrappers turn those into the seed's plain dicts. Code inside the project calls the
typed functions directly; notebooks and scripts can use these.

======================== ========================================================= ==========================
stage                    signature                                                 returns
======================== ========================================================= ==========================
plate_solve              (fits_path)                                               success, wcs_header,
                                                                                   solved_path, reason
calibrate_photometry     (fits_path, site_id)                                      zero_point, color_term,
                                                                                   scatter_mag, catalog_matches,
                                                                                   calibrated_sources
reproject_image          (fits_path, reference_wcs, output_shape)                  path of the reprojected FITS
co_add / coAdd           (reprojected_paths, weight_paths)                         stacked_path,
                                                                                   uncertainty_path,
                                                                                   coverage_path
lomb_scargle             (times, fluxes, errors)                                   best_period, fap,
                                                                                   power_spectrum, ...
extract_transit_times    (light_curve: DataFrame, transit_params: dict)            DataFrame [epoch, t_obs,
                                                                                   t_pred, O_minus_C, sigma]
run_ttv_inference        (ttv_data: DataFrame, prior_config: dict)                 posterior_samples,
                                                                                   log_evidence, best_fit,
                                                                                   credible_intervals, ...
find_transients          (fits_path, reference_path, zero_point)                   n_candidates, candidates,
                                                                                   rb, fwhm_new_px, ...
======================== ========================================================= ==========================
"""

from __future__ import annotations

from typing import Any

from server.image.coadd import co_add, coAdd
from server.timeseries.periodogram import lomb_scargle
from server.image.reproject import reproject_image
from server.timeseries.transit_times import extract_transit_times
from server.ttv.inference import run_ttv_inference

__all__ = [
    "plate_solve",
    "calibrate_photometry",
    "reproject_image",
    "co_add",
    "coAdd",
    "lomb_scargle",
    "extract_transit_times",
    "run_ttv_inference",
    "find_transients",
]


def plate_solve(fits_path: str, **options: Any) -> dict:
    """Solve ``fits_path`` with astrometry.net; see :func:`server.image.solve.plate_solve` for the options."""
    from server.image.solve import plate_solve as _plate_solve

    return _plate_solve(fits_path, **options).as_dict()


def calibrate_photometry(fits_path: str, site_id: str | int, *, app=None, catalog=None,
                         camera: str | None = None) -> dict:
    """Calibrate a plate-solved frame and add the result to the (site, camera) instrument registry.

    ``site_id`` is a site's database id or name; ``camera`` defaults to the frame's INSTRUME keyword. ``app``
    is an :class:`server.core.context.OpenAstro` (default: one built from the environment's settings).
    """
    from astropy.io import fits
    from sqlalchemy import select

    from server.image.calibrate import calibrate_frame, update_instrument_registry
    from server.core.context import OpenAstro
    from server.core.db.models import Site
    from server.pipeline.runner import catalog_provider

    app = app if app is not None else OpenAstro()
    catalog = catalog if catalog is not None else catalog_provider(app)
    result = calibrate_frame(fits_path, catalog)
    if camera is None:
        camera = str(fits.getheader(fits_path).get("INSTRUME", "")).strip() or "unknown camera"
    with app.db.session() as session:
        if isinstance(site_id, int) or str(site_id).isdigit():
            site = session.get(Site, int(site_id))
        else:
            site = session.scalars(select(Site).where(Site.name == str(site_id))).one_or_none()
        if site is None:
            raise ValueError(f"no site {site_id!r}: add it with `openastro site add`")
        update_instrument_registry(session, site.id, camera, result)
    return result.as_dict()


def find_transients(fits_path: str, reference_path: str, zero_point: float, *, exptime_s: float | None = None,
                    scorer=None, snr_threshold: float = 5.0) -> dict:
    """Difference a plate-solved, calibrated frame against a reference image (common flux unit) and list its
    >= 5-sigma candidates; see :func:`server.transients.stage.find_transients`. ``scorer`` maps (N, 63, 63, 3)
    triplets to real-bogus scores (default: the classifier's braai model when installed, else no scores)."""
    from server.image.fitsimage import open_image
    from server.transients.stage import default_scorer, find_transients as _find

    new, new_header = open_image(fits_path)
    ref, ref_header = open_image(reference_path)
    if exptime_s is None:
        if "EXPTIME" not in new_header:
            raise ValueError(f"{fits_path}: no EXPTIME in the header and no exptime_s given")
        exptime_s = float(new_header["EXPTIME"])
    if scorer is None:
        scorer, _ = default_scorer()
    return _find(new, new_header, ref, ref_header, zero_point=zero_point, exptime_s=exptime_s, scorer=scorer,
                 snr_threshold=snr_threshold).as_dict()
