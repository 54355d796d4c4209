"""Posterior summaries that respect what a parameter is: circular statistics for angles, full precision for
times.

Angles (degrees, period 360; :func:`is_angle`): a percentile of the raw values of a posterior that straddles
0/360 spans the whole circle (an argument of periapse near 0 gives a "0 .. 360" interval). Here the samples are
unwrapped around their circular mean first, so the median lies in [0, 360) and the interval bounds are
``median + offset``: they may fall below 0 or above 360 (``-15 .. 30`` is a 45-degree interval through 0), and
``hi - lo`` is always the interval's width. The mean is the circular mean, the sd the spread about it.

Times (BJD_TDB days, e.g. ``<planet>.tconj``) are printed with six decimals (0.09 s), never in ``%g`` form
(``2.45495e+06`` hides everything that matters).
"""

from __future__ import annotations

import numpy as np

ANGLE_SUFFIXES = ("omega_deg", "mean_anomaly_deg", "argp_deg", "w_deg", "node_deg")
TIME_SUFFIXES = ("tconj", "t0", "tc", "tperi")
QUANTILES = (2.5, 16.0, 50.0, 84.0, 97.5)


def is_angle(name: str) -> bool:
    """True for parameters in degrees on a circle (``<planet>.omega_deg`` and the like)."""
    return str(name).rsplit(".", 1)[-1] in ANGLE_SUFFIXES


def is_time(name: str) -> bool:
    return str(name).rsplit(".", 1)[-1] in TIME_SUFFIXES


def circular_mean_deg(values: np.ndarray) -> float:
    """Circular mean in [0, 360); NaN when the samples are spread evenly round the circle."""
    rad = np.radians(np.asarray(values, float))
    s, c = np.sin(rad).mean(), np.cos(rad).mean()
    if np.hypot(s, c) < 1e-12:
        return float("nan")
    return float(np.degrees(np.arctan2(s, c)) % 360.0)


def unwrap_about_mean(values: np.ndarray) -> tuple[np.ndarray, float]:
    """(values shifted by multiples of 360 into [mean - 180, mean + 180), circular mean)."""
    values = np.asarray(values, float)
    mean = circular_mean_deg(values)
    if not np.isfinite(mean):
        mean = 180.0  # no preferred direction: keep the plain 0..360 picture
    return (values - mean + 180.0) % 360.0 - 180.0 + mean, mean


def column_quantiles(values: np.ndarray, name: str) -> tuple[np.ndarray, float, float]:
    """(quantiles at ``QUANTILES``, mean, sd) of one parameter's samples, circular when it is an angle.

    For an angle the median is wrapped into [0, 360) and the other quantiles keep their offsets from it.
    """
    values = np.asarray(values, float)
    if not is_angle(name):
        return np.percentile(values, QUANTILES), float(values.mean()), float(values.std())
    unwrapped, mean = unwrap_about_mean(values)
    q = np.percentile(unwrapped, QUANTILES)
    shift = q[2] - q[2] % 360.0
    return q - shift, mean, float(unwrapped.std())


def intervals(samples: np.ndarray, names) -> dict:
    """{name: {"median", "68": [lo, hi], "95": [lo, hi], "circular"}} for every column of ``samples``."""
    out = {}
    for k, name in enumerate(names):
        q, _mean, _sd = column_quantiles(samples[:, k], name)
        out[name] = {"median": float(q[2]), "68": [float(q[1]), float(q[3])], "95": [float(q[0]), float(q[4])],
                     "circular": is_angle(name)}
    return out


def summary_arrays(samples: np.ndarray, names) -> dict:
    """The per-parameter lists a campaign summary stores (mean, sd, q025, q16, median, q84, q975)."""
    names = list(names)
    rows = [column_quantiles(samples[:, k], n) for k, n in enumerate(names)]
    q = np.array([r[0] for r in rows]).T if rows else np.zeros((5, 0))
    return {"param_names": names, "n_samples": int(len(samples)),
            "mean": [r[1] for r in rows], "sd": [r[2] for r in rows],
            "q025": q[0].tolist(), "q16": q[1].tolist(), "median": q[2].tolist(), "q84": q[3].tolist(),
            "q975": q[4].tolist(), "circular": [n for n in names if is_angle(n)]}


def format_value(name: str, value: float) -> str:
    """A parameter value for people: times (and anything >= 1e5) with six decimals, the rest to 6 digits."""
    value = float(value)
    if is_time(name) or (np.isfinite(value) and abs(value) >= 1e5):
        return f"{value:.6f}"
    return f"{value:.6g}"


def format_interval(name: str, median: float, lo: float, hi: float) -> str:
    """``median  (68%: lo .. hi)`` with :func:`format_value` precision; angles say they are circular."""
    text = f"{format_value(name, median)}  (68%: {format_value(name, lo)} .. {format_value(name, hi)})"
    return text + (" deg, circular" if is_angle(name) else "")
