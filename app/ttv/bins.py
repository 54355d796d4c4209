"""Perturber-period bins that hold no period-ratio degeneracy.

Near a j:k mean-motion resonance with the known planet, TTVs of the same super-period
come from a perturber just inside and just outside the resonance (and from other
resonances), so one run over a wide period prior locks onto one of these modes.  We cut
the period prior at every resonance ratio (up to ``max_order``, default 4, with ``j <= max_j``, default 6; order 4 is needed to
separate the 7:3 mode the anchors' wide-prior run locked onto from the 2:1 truth)
and half-way (geometrically) between neighbouring resonances: each bin then touches
exactly one resonance, on one side of it.  Each bin is an independent run; runs are
combined by evidence x prior mass (app.ttv.combine).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class PeriodBin:
    index: int
    period_min: float   # days
    period_max: float   # days
    resonance: str      # nearest resonance, e.g. "2:1" (outer:inner periods)
    side: str           # "wide" (ratio above the resonance) or "narrow" (below)

    def prior_mass(self, prior_kind: str, period_min: float, period_max: float) -> float:
        """Fraction of the full period prior (uniform or loguniform) inside this bin."""
        if prior_kind == "loguniform":
            return math.log(self.period_max / self.period_min) / math.log(period_max / period_min)
        if prior_kind == "uniform":
            return (self.period_max - self.period_min) / (period_max - period_min)
        raise ValueError(f"bin prior mass needs a uniform or loguniform prior, got {prior_kind!r}")

    def to_dict(self) -> dict:
        return {"index": self.index, "period_min": self.period_min,
                "period_max": self.period_max, "resonance": self.resonance, "side": self.side}


def resonance_ratios(max_order: int = 4, max_j: int = 6, max_ratio: float = 6.0) -> list[Fraction]:
    """Period ratios (j+q)/j > 1 with 1 <= q <= max_order, 1 <= j <= max_j, sorted."""
    if max_order < 1 or max_j < 1:
        raise ValueError(f"max_order and max_j must be >= 1, got {max_order}, {max_j}")
    out = set()
    for j in range(1, max_j + 1):
        for q in range(1, max_order + 1):
            r = Fraction(j + q, j)
            if r <= max_ratio:
                out.add(r)
    return sorted(out)


def period_bins(known_period: float, period_min: float, period_max: float, *,
                max_order: int = 4, max_j: int = 6) -> list[PeriodBin]:
    """Split [period_min, period_max] (days) into degeneracy-free bins around the
    resonances with a planet of period ``known_period`` (days).

    The range must lie entirely inside or entirely outside the known orbit.
    """
    if not 0 < period_min < period_max:
        raise ValueError(f"empty or non-positive period range [{period_min}, {period_max}]")
    if not known_period > 0:
        raise ValueError(f"known_period must be > 0 days, got {known_period}")
    if period_min < known_period < period_max or known_period in (period_min, period_max):
        raise ValueError(f"the perturber period range [{period_min}, {period_max}] d straddles "
                         f"the known planet's period {known_period} d; split it at that period")
    outer = period_min > known_period
    ratios = resonance_ratios(max_order, max_j, max_ratio=max(
        6.0, (period_max / known_period) if outer else (known_period / period_min)))
    # resonance periods of the perturber, ascending
    res_periods = sorted(float(r) * known_period if outer else known_period / float(r)
                         for r in ratios)
    res_labels = {}
    for r in ratios:
        p = float(r) * known_period if outer else known_period / float(r)
        res_labels[p] = f"{r.numerator}:{r.denominator}"
    edges = set()
    for a, b in zip(res_periods, res_periods[1:]):
        edges.add(a)
        edges.add(math.sqrt(a * b))
    edges.add(res_periods[-1])
    cuts = sorted(e for e in edges if period_min < e < period_max)
    bounds = [period_min] + cuts + [period_max]
    bins = []
    for i, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        mid = math.sqrt(lo * hi)
        nearest = min(res_periods, key=lambda p: abs(math.log(p / mid)))
        ratio_side = (mid > nearest) if outer else (mid < nearest)
        bins.append(PeriodBin(i, lo, hi, res_labels[nearest], "wide" if ratio_side else "narrow"))
    return bins
