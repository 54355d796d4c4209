"""Assimilating TTV runs: merge the runs of a bin, recombine the bins, update the campaign posterior.

After every run that arrives (and after every failed work unit) the campaign's posteriors are rebuilt
from the stored canonical runs, so the result never depends on arrival order and a repeated call changes
nothing:

* bin ``b``: its finished runs merged with ``dynesty.utils.merge_runs`` (``app.ttv.combine.merge_bin_runs``)
  -> ``Posterior(bin_index=b)`` with ln Z, the merged run in the object store and a summary;
* campaign: bins combined by evidence x bin prior mass (``app.ttv.combine.combine_bins``) ->
  ``Posterior(bin_index=NULL)`` with equal-weight samples in the object store, and ``Campaign.summary``.
  Bins with no finished run yet are left out and listed as missing.

A campaign comparing models (bins naming their ``model``: 1 or 2 perturbers) gets these rows per model
(``Posterior.model`` "one-perturber"/"two-perturber"); ``Campaign.summary`` then holds the largest model's
posterior at the top level as for one model, ``models`` (ln Z per model) and, once every model has runs,
``model_comparison`` (``server.ttv.inference.compare_models``).
"""

from __future__ import annotations

import io
import json

import numpy as np
from sqlalchemy import select

from server.core.db.models import Campaign, Posterior, Result, WorkUnit

MODEL = "one-perturber"  # bins without a ``model`` key (single-model campaigns)


def _load_run(app, key: str):
    from app.spec import read_result
    from app.tasks._ttv import ttv_result_from_envelope

    with app.store.open(key) as fh:
        envelope = read_result(io.BytesIO(fh.read()))
    return ttv_result_from_envelope(envelope)


def _npz_bytes(arrays: dict, meta: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, meta=np.asarray(json.dumps(meta, sort_keys=True)), **arrays)
    return buffer.getvalue()


def _summary_of(samples: np.ndarray, names) -> dict:
    if len(samples) == 0:
        return {"param_names": list(names), "n_samples": 0}
    from app.ttv.summary import summary_arrays  # circular statistics for angles

    return summary_arrays(samples, names)


def _model_name(bin_row: dict) -> str:
    from server.ttv.inference import MODEL_NAMES

    return MODEL if bin_row.get("model") is None else MODEL_NAMES[int(bin_row["model"])]


def _upsert_posterior(session, campaign_id: int, bin_index: int | None, model: str = MODEL) -> Posterior:
    query = select(Posterior).where(Posterior.campaign_id == campaign_id, Posterior.model == model)
    query = query.where(Posterior.bin_index.is_(None) if bin_index is None else Posterior.bin_index == bin_index)
    row = session.scalars(query).first()
    if row is None:
        row = Posterior(campaign_id=campaign_id, bin_index=bin_index, model=model)
        session.add(row)
    return row


def _load_merged(app, key: str):
    from app.ttv.results import make_result

    with app.store.open(key) as fh:
        with np.load(io.BytesIO(fh.read()), allow_pickle=False) as npz:
            arrays = {k: np.array(npz[k]) for k in npz.files}
    meta = json.loads(str(arrays.pop("meta")))
    return make_result("ttv-nested", meta, arrays)


def rebuild_campaign_posterior(app, session, campaign: Campaign, changed_bins: set[int] | None = None) -> dict:
    """Recompute the merged run of the changed bins (all bins when ``changed_bins`` is None) from their stored
    canonical runs, and the combined posterior from every bin's merged run.

    A bin's merged run is always rebuilt from all its runs (never incrementally), so it does not depend on
    the order in which runs arrived; other bins' merged runs are read back from the store.
    """
    from app.ttv.combine import combine_bins, merge_bin_runs

    rows = session.execute(
        select(WorkUnit.bin_index, WorkUnit.run_index, Result.storage_key)
        .join(Result, Result.id == WorkUnit.canonical_result_id)
        .where(WorkUnit.campaign_id == campaign.id, WorkUnit.state == "done")
        .order_by(WorkUnit.bin_index, WorkUnit.run_index)).all()
    keys_by_bin: dict[int, list[str]] = {}
    for bin_index, _run, key in rows:
        keys_by_bin.setdefault(int(bin_index), []).append(key)
    bins = [dict(b) for b in campaign.config["bins"]]
    present = [b for b in bins if b["index"] in keys_by_bin]
    missing = [b["index"] for b in bins if b["index"] not in keys_by_bin]
    expected_runs = _expected_runs(session, campaign.id)
    nested = campaign.config.get("sampler", {}).get("name", "dynesty") == "dynesty"
    missed = missed_peak_config(campaign.config)
    best_by_bin: dict[int, float] = {}
    merged_by_bin: dict[int, object] = {}
    for b in present:
        index = b["index"]
        row = _upsert_posterior(session, campaign.id, index, _model_name(b))
        stale = changed_bins is None or index in changed_bins or row.storage_key is None \
            or row.n_runs != len(keys_by_bin[index])
        if nested and not stale:
            merged_by_bin[index] = _load_merged(app, row.storage_key)
            best_by_bin[index] = best_log_likelihood(merged_by_bin[index])
            continue
        runs = [_load_run(app, key) for key in keys_by_bin[index]]
        row.n_runs = len(runs)
        runs, dropped = peak_finders(runs, float(missed["lnl"]))
        if nested:
            merged = merge_bin_runs(runs)
            merged_by_bin[index] = merged
            lz, lze = merged.log_evidence
            row.log_evidence, row.log_evidence_err = float(lz), float(lze)
            row.storage_key = app.store.put_bytes(_npz_bytes(merged.arrays, merged.meta)).key
            samples = merged.posterior(np.random.default_rng(int(campaign.seed_entropy)))
        else:
            samples = np.concatenate([r.posterior(np.random.default_rng(0)) for r in runs])
            row.storage_key = app.store.put_bytes(_npz_bytes({"samples": samples}, {"param_names": runs[0].param_names})).key
        best_by_bin[index] = max(best_log_likelihood(r) for r in runs)
        row.summary = {**_summary_of(samples, runs[0].param_names), "period_min": b["period_min"],
                       "period_max": b["period_max"], "runs_expected": expected_runs.get(index, 0),
                       "runs_merged": len(runs), "runs_missed_peak": dropped,
                       "best_log_likelihood": max(best_log_likelihood(r) for r in runs)}
    summary: dict = {"bins_total": len(bins), "bins_with_runs": len(present), "bins_missing": missing}
    models = sorted({b.get("model") for b in bins}, key=lambda m: -1 if m is None else int(m))
    per_model = {}
    for model in models:
        mine = [b for b in present if b.get("model") == model]
        if not (mine and nested):
            continue
        combined = combine_bins(mine, {b["index"]: [merged_by_bin[b["index"]]] for b in mine},
                                np.random.default_rng(int(campaign.seed_entropy)), n_samples=4000)
        row = _upsert_posterior(session, campaign.id, None, _model_name(mine[0]))
        row.n_runs = sum(len(keys_by_bin[b["index"]]) for b in mine)
        row.log_evidence, row.log_evidence_err = combined.log_z, combined.log_z_err
        names = list(combined.param_names)
        row.storage_key = app.store.put_bytes(_npz_bytes({"samples": combined.samples},
                                                          {"param_names": names, "kind": "equal-weight"})).key
        bin_rows = [dict(b.to_dict(), n_runs=len(keys_by_bin[b.index])) for b in combined.bins]
        row.summary = {**_summary_of(combined.samples, names), "bins": bin_rows}
        best_bin = max(combined.bins, key=lambda b: b.probability).index
        per_model[model] = {"log_evidence": combined.log_z, "log_evidence_err": combined.log_z_err,
                            "posterior": row.summary, "best_bin": best_bin}
        likelihood = campaign.config.get("likelihoods", {}).get(str(model)) or campaign.config["likelihood"]
        summary.setdefault("best_fit", {})[_model_name(mine[0])] = {
            "bin": best_bin, "chi2_per_obs": chi2_per_obs(likelihood, best_by_bin[best_bin])}
    if per_model:
        summary.update(per_model[models[-1] if models[-1] in per_model else max(per_model)])
    if None not in models:
        from server.ttv.inference import compare_models

        summary["models"] = {str(m): {k: v[k] for k in ("log_evidence", "log_evidence_err", "best_bin")}
                             for m, v in per_model.items()}
        if len(per_model) == len(models) > 1:
            summary["model_comparison"] = compare_models({int(m): v["log_evidence"] for m, v in per_model.items()})
    return summary


def missed_peak_config(config: dict) -> dict:
    """The campaign's missed-peak settings (its prior config's, else server.ttv.inference's defaults)."""
    from server.ttv.inference import CONFIG_DEFAULTS

    prior = dict(CONFIG_DEFAULTS, **(config.get("prior_config") or {}))
    return {"lnl": float(prior["missed_peak_lnl"]), "reruns": int(prior["missed_peak_reruns"]),
            "chi2_flag": float(prior["chi2_flag"])}


def best_log_likelihood(result) -> float:
    from server.ttv.inference import best_log_likelihood as best

    return best(result)


def peak_finders(runs: list, tolerance: float) -> tuple[list, int]:
    """The runs of one bin to merge: those whose best ln L is within ``tolerance`` of the bin's best run (a run
    further below sampled another, lower mode; merging it would weight that mode). Returns (kept, n dropped)."""
    best = [best_log_likelihood(r) for r in runs]
    top = max(best)
    kept = [r for r, b in zip(runs, best) if b >= top - tolerance]
    return kept, len(runs) - len(kept)


def chi2_per_obs(likelihood: dict, best_logl: float) -> float:
    """chi^2/N of the best fit from its ln L (a Gaussian likelihood: ln L = -(chi^2 + sum ln 2 pi sigma^2) / 2)."""
    sigma = np.concatenate([np.asarray(o["sigma"], float) for o in likelihood["observed"].values()])
    norm = float(np.sum(np.log(2 * np.pi * sigma ** 2)))
    return float((-2.0 * best_logl - norm) / max(len(sigma), 1))


def plan_reruns(campaign: Campaign, summary: dict) -> list[int]:
    """Bins to run again when the campaign has finished its work units: for each model whose best fit has
    chi^2/N above ``chi2_flag`` (the sampler may have settled on a secondary mode), its winning bin, while it has
    had fewer than ``missed_peak_reruns`` reruns. The work generator plans them from ``config["reruns"]`` (BOINC
    and local alike); the campaign stays running until they are merged. Returns the bins it added."""
    missed = missed_peak_config(campaign.config)
    if campaign.config.get("sampler", {}).get("name", "dynesty") != "dynesty" or missed["reruns"] <= 0:
        return []
    reruns = dict(campaign.config.get("reruns") or {})
    added = []
    for fit in (summary.get("best_fit") or {}).values():
        b = str(int(fit["bin"]))
        if fit["chi2_per_obs"] > missed["chi2_flag"] and int(reruns.get(b, 0)) < missed["reruns"]:
            reruns[b] = int(reruns.get(b, 0)) + 1
            added.append(int(b))
    if added:
        campaign.config = {**campaign.config, "reruns": reruns}  # a new dict: the JSON column sees the change
    return added


def _expected_runs(session, campaign_id: int) -> dict[int, int]:
    counts: dict[int, int] = {}
    for (bin_index,) in session.execute(select(WorkUnit.bin_index).where(WorkUnit.campaign_id == campaign_id)):
        counts[int(bin_index)] = counts.get(int(bin_index), 0) + 1
    return counts
