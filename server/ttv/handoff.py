"""Hand-off from light curves to transit timing: database photometry -> mid-transit times -> database.

``transit_times_from_db`` assembles the target's light curve (BJD_TDB, relative flux) from the photometry in the
database, normalises it to the out-of-transit median, runs :func:`server.timeseries.transit_times.extract_transit_times`, and
stores the measured times as ``TransitTime`` rows (BJD_TDB days, sigma in days) that a TTV campaign reads with
``ttv_table_from_db``. Re-running replaces the rows of the same (target, planet, source): it is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import delete, select

from server.core.context import OpenAstro
from server.core.db.models import Target, TransitTime
from server.timeseries.lightcurve import lightcurve_from_db
from server.timeseries.transit_times import extract_transit_times
from server.ttv.store import store_transit_times


@dataclass(frozen=True)
class TransitHandoff:
    target: str
    planet: str
    times: pd.DataFrame  # extract_transit_times output (all windows, with flags)
    n_stored: int
    ephemeris: dict | None


def light_curve_for_timing(lc, transit_params: dict) -> pd.DataFrame:
    """``time``/``flux``/``flux_err`` normalised to the median flux outside the predicted transit windows, and
    ``instrument`` = ``site-<site id>``."""
    t = np.asarray(lc.bjd_tdb, dtype=float)
    f = np.asarray(lc.value, dtype=float)
    e = np.asarray(lc.error, dtype=float)
    period, t0 = float(transit_params["period"]), float(transit_params["t0"])
    # half a transit duration is at most ~0.1 P for any bound orbit of interest; exclude +-0.05 P around mid-transit
    phase = ((t - t0) / period + 0.5) % 1.0 - 0.5
    out = np.abs(phase) > 0.05
    if out.sum() < 10:
        raise ValueError(f"only {int(out.sum())} out-of-transit points: cannot normalise the light curve")
    norm = float(np.median(f[out]))
    # one instrument per site: each night of each site gets its own baseline in the timing fit
    site = np.asarray(lc.site_id)
    return pd.DataFrame({"time": t, "flux": f / norm, "flux_err": e / norm,
                         "instrument": [f"site-{s}" for s in site]})


def transit_times_from_db(app: OpenAstro, target_name: str, band: str, transit_params: dict, *,
                          planet: str = "b", source: str = "pipeline", **options) -> TransitHandoff:
    """``options`` go to ``extract_transit_times`` (``fit_shape``, ``keep_partial``, ...)."""
    with app.db.session() as s:
        lc = lightcurve_from_db(s, target_name, band, quantity="flux", reject_sigma=None)
    times = extract_transit_times(light_curve_for_timing(lc, transit_params), transit_params, **options)
    with app.db.session() as s:
        # replace, not merge: a window flagged on this run must not keep an older measurement
        target = s.scalars(select(Target).where(Target.name == target_name)).one()
        s.execute(delete(TransitTime).where(TransitTime.target_id == target.id, TransitTime.planet == planet,
                                            TransitTime.source == source))
        n_stored = store_transit_times(s, target_name, planet, times, source=source)
    return TransitHandoff(target_name, planet, times, n_stored, times.attrs.get("ephemeris"))


def ttv_table_from_db(app: OpenAstro, target_name: str) -> pd.DataFrame:
    """The stored transit times of a system in the ``run_ttv_inference`` layout: planet, epoch, t_obs, sigma."""
    with app.db.session() as s:
        target = s.scalars(select(Target).where(Target.name == target_name)).one_or_none()
        if target is None:
            raise ValueError(f"no target named {target_name!r} in the database")
        rows = s.scalars(select(TransitTime).where(TransitTime.target_id == target.id)
                         .order_by(TransitTime.planet, TransitTime.epoch)).all()
        if not rows:
            raise ValueError(f"target {target_name!r} has no stored transit times")
        return pd.DataFrame({"planet": [r.planet for r in rows], "epoch": [r.epoch for r in rows],
                             "t_obs": [r.t_obs for r in rows], "sigma": [r.sigma for r in rows]})
