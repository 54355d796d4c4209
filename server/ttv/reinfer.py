"""TTV re-inference when new transit times arrive, warm-started from the stored posterior.

Policy (setting ``ttv_reinference``): ``on_new_transit`` (the default) re-runs a target's inference whenever an
ingest adds transit times to a target that already has a stored posterior; ``off`` leaves it to the operator. Why
not a nightly batch or an information-gain rule: a target gains a transit at most every few nights (one transit per
clear night per site), a warm start costs a fraction of a cold run, and a re-run for data already used is skipped by
the data hash, so a burst of uploads coalesces by itself; a nightly batch would only delay the answer, and an
expected-information-gain rule needs a forecast the pipeline does not have.

Warm start: the new run keeps the stored campaign's prior configuration, switches to emcee and starts its walkers
from the stored posterior samples (``warm_start``), so it skips the optimiser and most of the burn-in:
``warm_steps_fraction`` of the cold run's steps. Each stored posterior records the SHA-256 of the transit-time
table it used, the transit-time ids, and the posterior it was warm-started from.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json

import numpy as np
import pandas as pd
from sqlalchemy import select

from server.core.db.models import Campaign, Posterior, Target, TransitTime

WARM_STEPS_FRACTION = 0.4


def targets_of_observation(app, observation_id: int) -> list[str]:
    """Names of the targets an ingested transit-time table added rows to."""
    with app.db.session() as s:
        return sorted(set(s.scalars(select(Target.name).join(TransitTime, TransitTime.target_id == Target.id)
                                    .where(TransitTime.observation_id == observation_id))))


def transit_table(app, target_name: str) -> tuple[pd.DataFrame, list[int], str]:
    """(ttv table: planet, epoch, t_obs, sigma; the rows' ids; SHA-256 of the table) for ``target_name``."""
    with app.db.session() as s:
        target = s.scalars(select(Target).where(Target.name == target_name)).one_or_none()
        if target is None:
            raise ValueError(f"no target named {target_name!r} in the database")
        rows = s.scalars(select(TransitTime).where(TransitTime.target_id == target.id)
                         .order_by(TransitTime.planet, TransitTime.epoch, TransitTime.id)).all()
        if not rows:
            raise ValueError(f"target {target_name!r} has no stored transit times")
        table = pd.DataFrame({"planet": [r.planet for r in rows], "epoch": [int(r.epoch) for r in rows],
                              "t_obs": [float(r.t_obs) for r in rows], "sigma": [float(r.sigma) for r in rows]})
        ids = [int(r.id) for r in rows]
    return table, ids, table_sha256(table)


def table_sha256(table: pd.DataFrame) -> str:
    canon = json.dumps([[str(p), int(e), repr(float(t)), repr(float(s))] for p, e, t, s in
                        table[["planet", "epoch", "t_obs", "sigma"]].itertuples(index=False)])
    return hashlib.sha256(canon.encode()).hexdigest()


def latest_posterior(app, target_name: str):
    """The newest combined posterior (bin_index NULL) of the target's TTV campaigns, with its campaign; or None."""
    with app.db.session() as s:
        row = s.execute(
            select(Posterior, Campaign).join(Campaign, Posterior.campaign_id == Campaign.id)
            .join(Target, Campaign.target_id == Target.id)
            .where(Target.name == target_name, Campaign.kind == "ttv", Posterior.bin_index.is_(None),
                   Posterior.storage_key.is_not(None))
            .order_by(Posterior.id.desc())).first()
        if row is None:
            return None
        post, camp = row
        s.expunge(post)
        s.expunge(camp)
        return post, camp


def _stored_samples(app, posterior) -> tuple[list[str], np.ndarray]:
    with np.load(app.store.path(posterior.storage_key), allow_pickle=False) as z:
        return [str(n) for n in z["names"]], np.asarray(z["samples"], float)


def sampled_names(ttv_table: pd.DataFrame, prior_config: dict) -> list[str]:
    """The sampled parameter names of the largest model (the columns a warm start must supply, in order)."""
    from app.ttv.priors import PriorTransform
    from server.ttv.inference import plan_tasks

    cfg = dict(prior_config, warm_start=None)
    _, tasks, _ = plan_tasks(ttv_table, cfg)
    return list(PriorTransform(tasks[-1]["spec"]["likelihood"]["prior"]).names)


def warm_config(prior_config: dict, ttv_table: pd.DataFrame, names: list[str], samples: np.ndarray,
                steps_fraction: float = WARM_STEPS_FRACTION) -> dict:
    """The stored configuration as an emcee run started from ``samples`` with ``steps_fraction`` of its steps."""
    if not 0 < steps_fraction <= 1:
        raise ValueError(f"steps_fraction must be in (0, 1], got {steps_fraction}")
    cfg = dict(prior_config)
    if cfg.get("sampler", "dynesty") != "emcee":
        cfg["sampler"] = "emcee"
    want = sampled_names(ttv_table, cfg)
    missing = [n for n in want if n not in names]
    if missing:
        raise ValueError(f"the stored posterior lacks {missing}: cannot warm-start from it")
    cols = [names.index(n) for n in want]
    cfg["warm_start"] = {"param_names": want, "samples": samples[:, cols].tolist()}
    cfg["emcee_nsteps"] = max(10, int(round(int(cfg.get("emcee_nsteps", 2000)) * steps_fraction)))
    return cfg


def run_and_store(app, target_name: str, prior_config: dict, *, name: str, warm_from: int | None = None,
                  data=None) -> dict:
    """Run the inference on the target's stored transit times and store it with the data it used."""
    from server.ttv.inference import run_ttv_inference, summary_dict
    from server.ttv.store import store_ttv_result

    table, ids, sha = data if data is not None else transit_table(app, target_name)
    result = run_ttv_inference(table, prior_config)
    with app.db.session() as s:
        campaign_id = store_ttv_result(s, app.store, target_name, name, result, summary_dict(result))
        for post in s.scalars(select(Posterior).where(Posterior.campaign_id == campaign_id)):
            post.data_sha256, post.transit_time_ids, post.warm_started_from = sha, ids, warm_from
    calls = sum(int(np.size(r.arrays["chain"][..., 0])) if r.kind != "ttv-nested" else int(np.sum(r.arrays["ncall"]))
                for _, r in result["task_results"])
    return {"campaign_id": campaign_id, "data_sha256": sha, "n_transits": len(ids), "warm_started_from": warm_from,
            "likelihood_calls": calls, "result": result}


def reinfer(app, target_name: str, *, steps_fraction: float = WARM_STEPS_FRACTION) -> dict | None:
    """Re-run the target's inference on its current transit times, warm-started from its newest posterior.

    None when there is nothing to do: no stored posterior to start from, or the newest one already used exactly
    these data (so duplicate triggers cost nothing).
    """
    stored = latest_posterior(app, target_name)
    if stored is None:
        return None
    posterior, campaign = stored
    table, ids, sha = transit_table(app, target_name)
    if posterior.data_sha256 == sha:
        return None
    names, samples = _stored_samples(app, posterior)
    prior_config = dict(campaign.config or {})  # store_ttv_result keeps the validated prior configuration
    cfg = warm_config(prior_config, table, names, samples, steps_fraction)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return run_and_store(app, target_name, cfg, name=f"{target_name}-reinfer-{sha[:10]}-{stamp}",
                         warm_from=posterior.id, data=(table, ids, sha))
