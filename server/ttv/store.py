"""Database storage of transit times and TTV posteriors (ORM only; one session = one transaction)."""
from __future__ import annotations

import datetime as dt
import io
import json

import numpy as np
import pandas as pd
from sqlalchemy import select

from server.core.db.models import Campaign, Posterior, Target, TransitTime


def _target(session, name: str) -> Target:
    target = session.scalars(select(Target).where(Target.name == name)).one_or_none()
    if target is None:
        target = Target(name=name, kind="transit")
        session.add(target)
        session.flush()
    return target


def store_transit_times(session, target_name: str, planet: str, times: pd.DataFrame,
                        source: str = "pipeline") -> int:
    """Insert or update the rows of an extract_transit_times table; returns rows written."""
    target = _target(session, target_name)
    n = 0
    for row in times.itertuples(index=False):
        flag = getattr(row, "flag", "ok")
        if flag != "ok":
            continue  # flagged windows are reported by the CLI, not stored as measurements
        existing = session.scalars(select(TransitTime).where(
            TransitTime.target_id == target.id, TransitTime.planet == planet,
            TransitTime.epoch == int(row.epoch), TransitTime.source == source)).one_or_none()
        values = {"t_obs": float(row.t_obs), "sigma": float(row.sigma),
                  "t_pred": float(row.t_pred), "flag": flag}
        if existing is None:
            session.add(TransitTime(target_id=target.id, planet=planet, epoch=int(row.epoch),
                                    source=source, **values))
        else:
            for k, v in values.items():
                setattr(existing, k, v)
        n += 1
    return n


def store_ttv_result(session, store, target_name: str | None, name: str, result: dict,
                     summary: dict) -> int:
    """A local TTV campaign with its combined and per-bin posteriors; returns the campaign id."""
    target_id = _target(session, target_name).id if target_name else None
    cfg = {k: v for k, v in result["config"].items() if k != "warm_start"}
    campaign = Campaign(name=name, kind="ttv", executor="local", status="done",
                        target_id=target_id, config=json.loads(json.dumps(cfg, default=float)),
                        seed_entropy=str(cfg.get("seed")), summary=summary)
    session.add(campaign)
    session.flush()
    from server.ttv.inference import MODEL_NAMES as model_names
    for m, v in result["models"].items():
        buf = io.BytesIO()
        df = v["posterior_samples"]
        np.savez(buf, names=np.array(list(df.columns)), samples=df.to_numpy(float))
        key = store.put_bytes(buf.getvalue()).key
        session.add(Posterior(campaign_id=campaign.id, bin_index=None, model=model_names[m],
                              n_runs=sum(1 for t, _ in result["task_results"] if t["model"] == m),
                              log_evidence=v["log_evidence"],
                              log_evidence_err=v["log_evidence_err"], storage_key=key,
                              summary=json.loads(json.dumps(
                                  {"credible_intervals": v["credible_intervals"],
                                   "best_fit": v["best_fit"]}, default=float)),
                              updated_at=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)))
        for b in v["bins"]:
            session.add(Posterior(campaign_id=campaign.id, bin_index=b["index"],
                                  model=model_names[m], n_runs=b["n_runs"],
                                  log_evidence=b["log_z"], log_evidence_err=b["log_z_err"],
                                  summary=json.loads(json.dumps(b, default=float))))
    return campaign.id
