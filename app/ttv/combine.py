"""Combine TTV runs: runs of one bin with dynesty.utils.merge_runs, bins by evidence.

Bin k's posterior probability is  p_k = Z_k pi_k / sum_j Z_j pi_j, where Z_k is the
evidence of the run whose period prior is normalised inside bin k and pi_k is the bin's
share of the full period prior; the combined evidence is ln sum_k Z_k pi_k.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .results import TTVRunResult, from_dynesty_results, to_dynesty_results


def merge_bin_runs(runs: list[TTVRunResult]) -> TTVRunResult:
    """Merge independent nested runs of the same bin (same likelihood and prior)."""
    if not runs:
        raise ValueError("no runs to merge")
    names = {tuple(r.param_names) for r in runs}
    if len(names) != 1 or any(r.kind != "ttv-nested" for r in runs):
        raise ValueError(f"can only merge nested runs with the same parameters, got {names}")
    if len(runs) == 1:
        return runs[0]
    from dynesty.utils import merge_runs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        merged = merge_runs([to_dynesty_results(r) for r in runs], print_progress=False)
    meta = dict(runs[0].meta, merged_runs=len(runs),
                seeds=[r.meta.get("seed") for r in runs])
    return from_dynesty_results(_with_scalars(merged, runs), meta)


def _with_scalars(merged, runs):
    """merge_runs results carry per-sample live counts; keep scalar niter/nlive/eff."""
    class _View:
        pass

    v = _View()
    for key in ("samples", "samples_u", "samples_id", "samples_it", "logl", "logvol", "logwt",
                "logz", "logzerr", "information"):
        setattr(v, key, np.asarray(merged[key]))
    v.ncall = np.asarray(merged["ncall"]) if np.ndim(merged["ncall"]) else np.ones(
        len(v.logl), dtype=np.int64)
    v.niter = int(len(v.logl))
    v.nlive = int(sum(int(r.arrays["nlive"]) for r in runs))
    v.eff = float(np.mean([float(r.arrays["eff"]) for r in runs]))
    return v


@dataclass(frozen=True)
class BinSummary:
    index: int
    period_min: float
    period_max: float
    log_z: float
    log_z_err: float
    prior_mass: float
    probability: float
    n_runs: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Combined:
    log_z: float            # ln of sum_k Z_k pi_k
    log_z_err: float
    bins: tuple[BinSummary, ...]
    samples: np.ndarray     # equal-weight posterior over all bins
    param_names: tuple[str, ...]

    def report(self) -> str:
        lines = [f"ln Z (all bins) = {self.log_z:.3f} +- {self.log_z_err:.3f}",
                 "bin  period range (d)       ln Z          prior  P(bin)"]
        for b in self.bins:
            lines.append(f"{b.index:3d}  [{b.period_min:8.3f}, {b.period_max:8.3f}]  "
                         f"{b.log_z:12.3f}  {b.prior_mass:5.3f}  {b.probability:.4g}")
        return "\n".join(lines)


def combine_bins(bins: list[dict], runs_by_bin: dict[int, list[TTVRunResult]],
                 rng: np.random.Generator, n_samples: int = 4000) -> Combined:
    """``bins``: dicts with index, period_min, period_max, prior_mass (summing to <= 1)."""
    if not bins:
        raise ValueError("no bins to combine")
    merged, summaries_in = {}, []
    for b in bins:
        runs = runs_by_bin.get(b["index"], [])
        if not runs:
            raise ValueError(f"bin {b['index']} has no finished runs")
        merged[b["index"]] = merge_bin_runs(runs)
        if not b["prior_mass"] > 0:
            raise ValueError(f"bin {b['index']} prior mass must be > 0, got {b['prior_mass']}")
    names = {tuple(m.param_names) for m in merged.values()}
    if len(names) != 1:
        raise ValueError(f"bins have different parameters: {names}")
    logs = np.array([merged[b["index"]].log_evidence[0] + np.log(b["prior_mass"]) for b in bins])
    errs = np.array([merged[b["index"]].log_evidence[1] for b in bins])
    top = logs.max()
    w = np.exp(logs - top)
    total = top + np.log(w.sum())
    prob = w / w.sum()
    log_z_err = float(np.sqrt(np.sum((prob * errs) ** 2)))
    for b, p in zip(bins, prob):
        m = merged[b["index"]]
        summaries_in.append(BinSummary(int(b["index"]), float(b["period_min"]),
                                       float(b["period_max"]), m.log_evidence[0],
                                       m.log_evidence[1], float(b["prior_mass"]), float(p),
                                       len(runs_by_bin[b["index"]])))
    counts = rng.multinomial(n_samples, prob)
    parts = [merged[b["index"]].posterior(rng, n=int(c)) for b, c in zip(bins, counts) if c > 0]
    samples = np.concatenate(parts) if parts else np.empty((0, len(next(iter(names)))))
    return Combined(float(total), log_z_err, tuple(summaries_in), samples, next(iter(names)))
