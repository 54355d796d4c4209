"""Resource estimates of a work unit for ``create_work``, from the volunteer app's measured cost model.

``app/costmodel.py`` (measured by the app's benchmark) turns a task kind and its params into seconds on a
reference core and peak memory/disk. Here they become BOINC's numbers:

* ``rsc_fpops_est`` = seconds on the reference core x its FLOPS (3e9: the seed's "average 3 GHz core",
  one floating-point op per cycle as BOINC's Whetstone-based host speeds count it);
* ``rsc_fpops_bound`` = ``BOUND_FACTOR`` x the estimate: the client aborts a task (exit 197) whose elapsed
  time exceeds bound / host speed, so the bound must cover slow hosts and the model's error;
* ``rsc_memory_bound`` / ``rsc_disk_bound`` = the model's peak with a safety factor.

Work units are created in bulk, one ``create_work`` call per *cost class*: the estimates are rounded up to
two significant digits so that work units of one campaign share a handful of classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

REFERENCE_FLOPS = 3e9     # one op per cycle on the 3 GHz reference core
BOUND_FACTOR = 10.0       # hosts 10x slower than the reference (or a model off by 10x) still finish
MEMORY_FACTOR = 1.5
DISK_FACTOR = 2.0
MIN_MEMORY = 256e6        # Python + numpy + astropy, frozen, before any data
MIN_DISK = 200e6          # the unpacked onedir bundle lives in the slot


@dataclass(frozen=True)
class Resources:
    seconds_ref: float        # wall seconds on the reference core
    fpops_est: float
    fpops_bound: float
    memory_bytes: float
    disk_bytes: float

    def cost_class(self) -> tuple[float, float, float, float]:
        return (round_up_2sig(self.fpops_est), round_up_2sig(self.fpops_bound),
                round_up_2sig(self.memory_bytes), round_up_2sig(self.disk_bytes))


def round_up_2sig(x: float) -> float:
    if not (x > 0 and math.isfinite(x)):
        raise ValueError(f"a resource estimate must be positive and finite, got {x!r}")
    scale = 10.0 ** (math.floor(math.log10(x)) - 1)
    return math.ceil(x / scale - 1e-9) * scale


def resources_from_model(seconds_ref: float, memory_bytes: float, disk_bytes: float) -> Resources:
    if not (seconds_ref > 0 and math.isfinite(seconds_ref)):
        raise ValueError(f"cost model gave a non-positive run time {seconds_ref!r} s")
    fpops = seconds_ref * REFERENCE_FLOPS
    return Resources(seconds_ref=float(seconds_ref), fpops_est=fpops, fpops_bound=fpops * BOUND_FACTOR,
                     memory_bytes=max(MIN_MEMORY, memory_bytes * MEMORY_FACTOR),
                     disk_bytes=max(MIN_DISK, disk_bytes * DISK_FACTOR))


def estimate(kind: str, params: dict) -> Resources:
    """Resources of one work unit from ``app.costmodel`` (the app's measured model)."""
    from app import costmodel

    cost = costmodel.estimate(kind, params)
    return resources_from_model(cost.seconds_ref, cost.memory_bytes, cost.disk_bytes)
