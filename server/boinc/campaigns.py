"""Campaigns: create, run, follow, cancel, export. The CLI (server/cli/campaign.py) calls these.

A TTV campaign is planned with the TTV stage's own planner (``server.ttv.inference.plan_tasks``: the same
priors and degeneracy-free period bins as a direct local run), for the models with one and/or two perturbers
(``models`` of the prior config without 0; default one). Its config holds per model the full-range likelihood,
the bins (globally numbered, each naming its model) with their prior masses, the sampler and the number of
replicas (BOINC quorum); the work generator turns it into work units. An image ("stack") campaign holds the
output grid and the frames' object-store keys.
"""

from __future__ import annotations

import io
import json
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from sqlalchemy import func, select

from app.ttv.summary import format_interval
from server.core.db.models import Campaign, Posterior, Result, Stack, WorkUnit, utcnow

PERTURBER = "pert"  # the name server.ttv.inference gives the perturbing planet


class CampaignError(ValueError):
    """A campaign cannot be created, found or exported as asked."""


def _new_entropy(seed: int | None) -> int:
    return int(seed) if seed is not None else int(np.random.SeedSequence().entropy)


def ttv_campaign_config(ttv_table, prior_config: Mapping[str, Any], *, replicas: int = 2,
                        bins: Sequence[Sequence[float]] | str = "auto") -> dict:
    """Plan a TTV campaign's config from a transit-time table and a TTV prior config.

    Models: the prior config's ``models`` without 0 (the no-perturber model is run locally by
    ``openastro ttv fit``), default ``[1]``. Each model gets the first perturber's period bins; bins are
    numbered across models (model 1's first, then model 2's) and carry their ``model``; ``likelihoods``
    holds each model's full-range likelihood and ``likelihood`` the first model's.
    """
    from server.ttv.inference import plan_tasks

    cfg = dict(prior_config)
    models = cfg.get("models", [1])
    if isinstance(models, (list, tuple)):  # anything else: plan_tasks refuses it with the reason
        cfg["models"] = [m for m in models if m != 0] or [1]
    if bins != "auto":
        cfg["perturber_period_bins"] = [list(map(float, b)) for b in bins]
    cfg, tasks, period_bins = plan_tasks(ttv_table, cfg)
    if replicas not in (1, 2):
        raise CampaignError(f"replicas must be 1 or 2 (BOINC quorum), got {replicas!r}")
    lo, hi = (float(v) for v in cfg["perturber_period"])
    likelihoods, bin_rows = {}, []
    models = sorted(cfg["models"])
    cfg["models"] = models
    for model in models:
        first = next(t for t in tasks if t["model"] == model)
        likelihood = json.loads(json.dumps(first["spec"]["likelihood"]))
        for planet in likelihood["prior"]["planets"]:
            if planet["name"] == PERTURBER:
                planet["period"] = {"dist": cfg["perturber_period_prior"], "min": lo, "max": hi}
        likelihoods[str(model)] = likelihood
        offset = len(bin_rows)
        bin_rows += [dict(b.to_dict(), index=offset + b.index, model=model,
                          prior_mass=b.prior_mass(cfg["perturber_period_prior"], lo, hi))
                     for b in period_bins]
    sampler = dict(tasks[0]["spec"]["sampler"])
    return {"kind": "ttv", "prior_config": {k: v for k, v in cfg.items() if k != "warm_start"},
            "likelihood": likelihoods[str(models[0])], "likelihoods": likelihoods,
            "perturber": PERTURBER, "sampler": sampler, "replicas": int(replicas), "bins": bin_rows}


def create_campaign(app, name: str | None, kind: str, config: dict, *, executor: str = "local",
                    seed: int | None = None) -> int:
    if executor not in ("local", "boinc"):
        raise CampaignError(f"executor must be local or boinc, got {executor!r}")
    with app.db.session() as session:
        name = name or f"{kind}-{utcnow():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
        if session.scalars(select(Campaign.id).where(Campaign.name == name)).first() is not None:
            raise CampaignError(f"a campaign named {name!r} already exists")
        campaign = Campaign(name=name, kind=kind, executor=executor, status="created", config=config,
                            seed_entropy=str(_new_entropy(seed)), summary={})
        session.add(campaign)
        session.flush()
        return campaign.id


def create_stack_campaign(app, frame_keys: Sequence[Mapping[str, str]], grid_header: Mapping[str, Any],
                          grid_shape: Sequence[int], *, name: str | None = None, executor: str = "local",
                          tile: int = 512, method: str = "bilinear", replicas: int = 2,
                          seed: int | None = None) -> int:
    """An image campaign: ``frame_keys`` = [{"key": FITS object key, "weight_key": optional,
    "zero_point": mag of 1 ADU/s, "exptime_s": seconds}, ...]. With zero points (all frames or none) the
    assembled frames are normalised to the common flux unit (server.image.normalise) before co-addition."""
    calibrated = [f.get("zero_point") is not None and f.get("exptime_s") is not None for f in frame_keys]
    if any(calibrated) and not all(calibrated):
        raise CampaignError("give zero_point and exptime_s for every frame or for none: normalised and raw "
                            "frames cannot be co-added together")
    cards = {k: v for k, v in dict(grid_header).items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
    config = {"kind": "stack", "grid": {"header": cards, "shape": [int(grid_shape[0]), int(grid_shape[1])]},
              "frames": [dict(f, index=i) for i, f in enumerate(frame_keys)], "tile": int(tile), "method": method,
              "replicas": int(replicas)}
    cid = create_campaign(app, name, "stack", config, executor=executor, seed=seed)
    with app.db.session() as session:
        stack = Stack(campaign_id=cid, status="pending", n_frames=0, grid=config["grid"], meta={})
        session.add(stack)
        session.flush()
        campaign = session.get(Campaign, cid)
        campaign.config = {**campaign.config, "stack_id": stack.id}
    return cid


def run_campaign(app, campaign_id: int, *, executor=None, echo: Callable[[str], None] | None = None,
                 on_progress=None, estimate=None):
    """Generate the campaign's work units and run them with its executor (local: to completion)."""
    from server.boinc.executors import make_executor
    from work_generator.generate import materialise

    with app.db.session() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise CampaignError(f"no campaign with id {campaign_id}")
        status = campaign.status
    if status == "cancelled":
        raise CampaignError(f"campaign {campaign_id} was cancelled; launch a new one")
    if status == "created":
        materialise(app, campaign_id, estimate=estimate)
    with app.db.session() as session:
        campaign = session.get(Campaign, campaign_id)
        names = list(session.scalars(select(WorkUnit.name).where(WorkUnit.campaign_id == campaign_id,
                                                                 WorkUnit.state.in_(("created", "sent")))))
        kind_of_executor = campaign.executor
    if executor is None:
        executor = make_executor(app, kind_of_executor, **({"echo": echo} if kind_of_executor == "local" else {}))
    executor.submit(names)
    if kind_of_executor != "local":
        return executor.collect()
    progress = executor.collect(on_progress=on_progress)
    # Missed-peak reruns the assimilator planned (config["reruns"]): materialise and run them, as the BOINC work
    # generator's next pass does; bounded by missed_peak_reruns per model.
    while True:
        report, _ = materialise(app, campaign_id, estimate=estimate)
        if not report.inserted:
            return progress
        with app.db.session() as session:
            names = list(session.scalars(select(WorkUnit.name).where(WorkUnit.campaign_id == campaign_id,
                                                                     WorkUnit.state == "created")))
        if echo:
            echo(f"campaign {campaign_id}: the best fit was flagged (chi2/N > chi2_flag): running {len(names)} "
                 f"rerun(s) of its bin with new seeds")
        executor.submit(names)
        progress = executor.collect(on_progress=on_progress)


@dataclass(frozen=True)
class BinProgress:
    bin_index: int
    total: int
    done: int
    error: int
    running: int
    log_evidence: float | None
    probability: float | None


@dataclass(frozen=True)
class CampaignStatus:
    id: int
    name: str
    kind: str
    executor: str
    status: str
    counts: Mapping[str, int]
    bins: tuple[BinProgress, ...]
    errors: tuple[Mapping[str, Any], ...]
    invalid_results: int
    summary: Mapping[str, Any]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        return sum(self.counts.get(s, 0) for s in ("done", "error", "cancelled"))


def campaign_status(app, campaign_id: int) -> CampaignStatus:
    with app.db.session() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise CampaignError(f"no campaign with id {campaign_id}")
        counts = {s: int(n) for s, n in session.execute(
            select(WorkUnit.state, func.count()).where(WorkUnit.campaign_id == campaign_id)
            .group_by(WorkUnit.state)).all()}
        per_bin: dict[int, dict[str, int]] = {}
        for b, state, n in session.execute(select(WorkUnit.bin_index, WorkUnit.state, func.count())
                                           .where(WorkUnit.campaign_id == campaign_id)
                                           .group_by(WorkUnit.bin_index, WorkUnit.state)).all():
            per_bin.setdefault(int(b) if b is not None else -1, {})[state] = int(n)
        posts = {p.bin_index: p for p in session.scalars(select(Posterior).where(Posterior.campaign_id == campaign_id))}
        probs = {}
        for combined in session.scalars(select(Posterior).where(Posterior.campaign_id == campaign_id,
                                                                Posterior.bin_index.is_(None))):
            # one combined posterior per model; bin indices are unique across models
            probs.update({b["index"]: b["probability"] for b in (combined.summary or {}).get("bins", [])})
        invalid = int(session.scalar(select(func.count()).select_from(Result).join(WorkUnit)
                                     .where(WorkUnit.campaign_id == campaign_id,
                                            Result.validate_state == "invalid")) or 0)
        bins = tuple(BinProgress(b, sum(c.values()), c.get("done", 0), c.get("error", 0), c.get("sent", 0)
                                 + c.get("created", 0),
                                 posts[b].log_evidence if b in posts else None, probs.get(b))
                     for b, c in sorted(per_bin.items()))
        summary = dict(campaign.summary or {})
        return CampaignStatus(campaign.id, campaign.name, campaign.kind, campaign.executor, campaign.status,
                              counts, bins, tuple(summary.get("errors", [])), invalid, summary)


def work_unit_table(app, campaign_id: int | None = None) -> list[dict]:
    """Per campaign: id, name, kind, executor, status and work-unit counts by state."""
    with app.db.session() as session:
        query = select(Campaign).order_by(Campaign.id)
        if campaign_id is not None:
            query = query.where(Campaign.id == campaign_id)
        rows = []
        for c in session.scalars(query):
            counts = {s: int(n) for s, n in session.execute(
                select(WorkUnit.state, func.count()).where(WorkUnit.campaign_id == c.id)
                .group_by(WorkUnit.state)).all()}
            rows.append({"id": c.id, "name": c.name, "kind": c.kind, "executor": c.executor, "status": c.status,
                         "counts": counts})
        return rows


def cancel_campaign(app, campaign_id: int, *, project=None) -> int:
    """Mark the campaign and its unfinished work units cancelled; returns how many work units changed.

    A BOINC campaign's jobs are cancelled in BOINC first (``bin/cancel_jobs`` over id ranges holding only this
    campaign's work units; BOINC then reports them to the assimilator as ``--error 16``, recorded as cancelled).
    ``project``: the BoincProject (default: the ``boinc_project_dir`` setting, when set)."""
    with app.db.session() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise CampaignError(f"no campaign with id {campaign_id}")
        executor = campaign.executor
        open_names = list(session.scalars(select(WorkUnit.name).where(WorkUnit.campaign_id == campaign_id,
                                                                      WorkUnit.state.in_(("created", "sent")))))
    if executor == "boinc" and open_names:
        if project is None and app.settings.boinc_project_dir:
            from work_generator.boinc_project import BoincProject

            project = BoincProject(app.settings.boinc_project_dir)
        if project is None:
            raise CampaignError(f"campaign {campaign_id} runs on BOINC but no BOINC project is configured: set "
                                "OPENASTRO_BOINC_PROJECT_DIR so its jobs can be cancelled there too")
        from work_generator.boinc_project import BoincProjectError

        try:
            project.cancel_workunits(open_names)
        except BoincProjectError as exc:
            raise CampaignError(f"cancelling campaign {campaign_id}'s jobs in BOINC failed: {exc}") from None
    with app.db.session() as session:
        campaign = session.get(Campaign, campaign_id)
        rows = list(session.scalars(select(WorkUnit).where(WorkUnit.campaign_id == campaign_id,
                                                           WorkUnit.state.in_(("created", "sent")))))
        for wu in rows:
            wu.state = "cancelled"
        campaign.status = "cancelled"
        return len(rows)


# --- posterior export ----------------------------------------------------------------------------------

def load_posterior(app, campaign_id: int) -> tuple[list[str], np.ndarray, dict]:
    """(parameter names, equal-weight samples, summary) of the campaign's combined posterior (of its model
    with the most perturbers when it ran several)."""
    from server.ttv.inference import MODEL_NAMES

    rank = {name: n for n, name in MODEL_NAMES.items()}
    with app.db.session() as session:
        if session.get(Campaign, campaign_id) is None:
            raise CampaignError(f"no campaign with id {campaign_id}")
        rows = session.scalars(select(Posterior).where(Posterior.campaign_id == campaign_id,
                                                       Posterior.bin_index.is_(None))).all()
        row = max(rows, key=lambda r: rank.get(r.model, -1), default=None)
        if row is None or not row.storage_key:
            raise CampaignError(f"campaign {campaign_id} has no combined posterior yet "
                                "(no TTV run has been assimilated)")
        key, summary = row.storage_key, dict(row.summary or {})
        summary.update(log_evidence=row.log_evidence, log_evidence_err=row.log_evidence_err, n_runs=row.n_runs)
    with app.store.open(key) as fh:
        with np.load(io.BytesIO(fh.read()), allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            samples = np.array(npz["samples"])
    names = list(meta["param_names"])
    _check_posterior_samples(campaign_id, names, samples)
    return names, samples, summary


def _check_posterior_samples(campaign_id: int, names: list[str], samples: np.ndarray) -> None:
    """A stored posterior that cannot be a posterior (wrong shape, no samples, non-finite values) is an error
    to report, never something to export or plot."""
    if samples.ndim != 2 or samples.shape[1] != len(names) or samples.shape[0] == 0:
        raise CampaignError(f"campaign {campaign_id}'s combined posterior is degenerate: samples of shape "
                            f"{samples.shape} for {len(names)} parameters {names}; rebuild it from its runs")
    bad = ~np.isfinite(samples)
    if bad.any():
        columns = [names[i] for i in np.flatnonzero(bad.any(axis=0))]
        raise CampaignError(f"campaign {campaign_id}'s combined posterior has {int(bad.sum())} non-finite "
                            f"values (in {columns}); rebuild it from its runs")


def export_posterior(app, campaign_id: int, fmt: str, path) -> None:
    from server.core.storage import atomic_write_bytes

    names, samples, summary = load_posterior(app, campaign_id)
    if fmt == "csv":
        lines = [",".join(names)] + [",".join(repr(float(v)) for v in row) for row in samples]
        atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    elif fmt == "npz":
        buffer = io.BytesIO()
        np.savez_compressed(buffer, samples=samples, param_names=np.asarray(names),
                            summary=np.asarray(json.dumps(summary, default=float)))
        atomic_write_bytes(path, buffer.getvalue())
    elif fmt == "fits":
        from astropy.io import fits
        from astropy.table import Table

        table = Table(samples, names=names)
        table.meta["CAMPAIGN"] = campaign_id
        if summary.get("log_evidence") is not None:
            table.meta["LOGZ"] = float(summary["log_evidence"])
            table.meta["LOGZERR"] = float(summary["log_evidence_err"])
        buffer = io.BytesIO()
        fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(table)]).writeto(buffer)
        atomic_write_bytes(path, buffer.getvalue())
    else:
        raise CampaignError(f"unknown format {fmt!r}: csv, npz or fits")


def corner_plot(app, campaign_id: int, path) -> None:
    """Corner plot of the campaign's perturber parameters, in the format of ``path``'s suffix (.png, .pdf, ...)."""
    import matplotlib

    from server.core.plotformat import plot_format

    try:
        fmt = plot_format(path)
    except ValueError as exc:
        raise CampaignError(str(exc)) from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, samples, _ = load_posterior(app, campaign_id)
    cols = [i for i, n in enumerate(names) if n.startswith(f"{PERTURBER}.")] or list(range(len(names)))
    k = len(cols)
    fig, axes = plt.subplots(k, k, figsize=(2.2 * k, 2.2 * k), squeeze=False)
    for i, ci in enumerate(cols):
        for j, cj in enumerate(cols):
            ax = axes[i][j]
            if j > i:
                ax.axis("off")
            elif i == j:
                ax.hist(samples[:, ci], bins=40, color="0.3", histtype="step")
            else:
                ax.plot(samples[:, cj], samples[:, ci], ",", alpha=0.3, color="k")
            if i == k - 1:
                ax.set_xlabel(names[cj], fontsize=8)
            if j == 0 and i > 0:
                ax.set_ylabel(names[ci], fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=90)
    plt.close(fig)
    from server.core.storage import atomic_write_bytes

    atomic_write_bytes(path, buffer.getvalue())


# --- demo -----------------------------------------------------------------------------------------------

def demo_ttv_config(seed: int = 7, n_transits: int = 30, nlive: int = 30) -> dict:
    """A small TTV campaign on the synthetic Kepler-88-like system (app.ttv.synthetic): transit times of b,
    perturber c's mass, period and conjunction time free (the rest at the truth: 206.6 Earth masses,
    22.3 d), two period bins, the true one and a wrong one. ~20 s per nested run with nlive 30."""
    from app.ttv.synthetic import kepler88_like

    system = kepler88_like(np.random.default_rng(seed), n_transits=n_transits)
    prior = json.loads(json.dumps(system.truth_spec))
    c = prior["planets"][1]
    c["mass"] = {"dist": "loguniform", "min": 150.0, "max": 260.0}
    c["period"] = {"dist": "uniform", "min": 22.25, "max": 22.45}
    c["tconj"] = {"dist": "uniform", "min": 11.9, "max": 12.1}
    observed = {"b": {"epoch": system.epochs.tolist(), "time": system.times.tolist(), "sigma": system.sigma.tolist()}}
    return {"kind": "ttv", "likelihood": {"prior": prior, "observed": observed}, "perturber": "c", "replicas": 2,
            "sampler": {"name": "dynesty", "nlive": int(nlive), "sample": "rwalk", "dlogz": 0.5},
            "bins": [{"index": 0, "period_min": 22.25, "period_max": 22.35, "prior_mass": 0.5},
                     {"index": 1, "period_min": 22.35, "period_max": 22.45, "prior_mass": 0.5}]}


def run_demo_campaign(app, *, echo: Callable[[str], None] = print) -> CampaignStatus:
    """The demo's TTV campaign through the local executor (bins x 2 replicas, validated, assimilated)."""
    from server.boinc.executors import LocalExecutor

    cid = create_campaign(app, None, "ttv", demo_ttv_config(), executor="local", seed=20261125)
    progress = run_campaign(app, cid, executor=LocalExecutor(app, echo=lambda _m: None))
    status = campaign_status(app, cid)
    echo(f"    campaign {cid}: {progress.done} work units done, {progress.error} failed, "
         f"{progress.replicas_run} replicas run and validated")
    post = status.summary.get("posterior") or {}
    for name, med, lo, hi in zip(post.get("param_names", []), post.get("median", []), post.get("q16", []),
                                 post.get("q84", [])):
        echo(f"    {name:<10} {format_interval(name, med, lo, hi)}")
    return status
