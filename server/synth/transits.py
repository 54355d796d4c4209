"""Synthetic transit photometry with injected transit-timing variations (known answer for stage 7b).

Times are generated on a UTC JD grid at a site, converted to BJD_TDB (``server.core.timeconv``), and the flux is a
batman quadratic-limb-darkening model whose mid-times (BJD_TDB) are shifted by a sinusoidal TTV. The output is what
a site would report: JD_UTC and magnitudes, so the pipeline's own BJD conversion is part of what is checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from server.core.timeconv import SiteLocation, utc_to_bjd_tdb


@dataclass(frozen=True)
class TransitTruth:
    mid_times: dict[int, float]  # epoch -> true mid-transit time, BJD_TDB
    photometry: pd.DataFrame  # jd_utc, mag, mag_err (one row per exposure)


def transit_photometry(params: dict, epochs: Sequence[int], rng: np.random.Generator, *, site: SiteLocation,
                       ra_deg: float, dec_deg: float, ttv_amp_d: float = 3.0 / 1440.0, ttv_period_epochs: float = 7.0,
                       cadence_s: float = 90.0, half_window_d: float = 0.15, noise: float = 2e-3,
                       mag0: float = 10.0) -> TransitTruth:
    """``params``: period, t0 (BJD_TDB), rp_rs, a_rs, inc (deg), u (quadratic pair), as extract_transit_times."""
    import batman

    truth: dict[int, float] = {}
    frames = []
    for n in epochs:
        tc = params["t0"] + n * params["period"] + ttv_amp_d * math.sin(2 * math.pi * n / ttv_period_epochs)
        truth[int(n)] = tc
        jd = np.arange(tc - half_window_d, tc + half_window_d, cadence_s / 86400.0)
        bjd = utc_to_bjd_tdb(jd, ra_deg=ra_deg, dec_deg=dec_deg, site=site, time_format="jd").bjd_tdb
        bp = batman.TransitParams()
        bp.t0, bp.per, bp.rp, bp.a, bp.inc = tc, params["period"], params["rp_rs"], params["a_rs"], params["inc"]
        bp.ecc, bp.w, bp.limb_dark, bp.u = 0.0, 90.0, "quadratic", list(params["u"])
        flux = batman.TransitModel(bp, bjd).light_curve(bp) * (1.0 + noise * rng.standard_normal(bjd.size))
        frames.append(pd.DataFrame({"jd_utc": jd, "mag": mag0 - 2.5 * np.log10(flux),
                                    "mag_err": np.full(jd.size, 2.5 / math.log(10) * noise)}))
    return TransitTruth(truth, pd.concat(frames, ignore_index=True))


def store_transit_photometry(app, truth: TransitTruth, *, target: str, site_name: str, site: SiteLocation,
                             ra_deg: float, dec_deg: float, band: str = "V") -> None:
    """Write the photometry as PhotometryPoint rows of ``target`` (created with its coordinates) at a site."""
    from sqlalchemy import select

    from server.core.db.models import PhotometryPoint, Site, Target

    with app.db.session() as s:
        site_row = s.scalars(select(Site).where(Site.name == site_name)).one_or_none()
        if site_row is None:
            site_row = Site(name=site_name, latitude_deg=site.lat_deg, longitude_deg=site.lon_deg,
                            height_m=site.height_m)
            s.add(site_row)
        target_row = s.scalars(select(Target).where(Target.name == target)).one_or_none()
        if target_row is None:
            target_row = Target(name=target, ra_deg=ra_deg, dec_deg=dec_deg, kind="transit")
            s.add(target_row)
        s.flush()
        s.add_all([PhotometryPoint(target_id=target_row.id, site_id=site_row.id, jd_utc=float(r.jd_utc), band=band,
                                   mag=float(r.mag), mag_err=float(r.mag_err), source="synthetic")
                   for r in truth.photometry.itertuples()])
