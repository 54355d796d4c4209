"""Static figures the portal serves as PNG: a corner plot of a posterior and a stack's preview.

Corner plot: 1-D histograms on the diagonal with the median (solid) and the 68% central interval (16th and 84th
percentiles, dashed) marked and written above each panel as ``median +upper -lower``; 2-D panels show the samples
with the medians crossed. Stack preview: ZScale limits, then an arcsinh stretch, north up as stored, in greyscale.
"""

from __future__ import annotations

import io

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def axis_label(name: str, offset: float = 0.0) -> str:
    """An axis label with the parameter's unit (docs/ttv.md) and any offset subtracted, written out."""
    from app.ttv.summary import is_angle, is_time

    leaf = name.rsplit(".", 1)[-1]
    if is_time(name):
        unit = "d, BJD_TDB"
    elif is_angle(name):
        unit = "deg"
    elif leaf == "mass":
        unit = "M_Earth"
    elif leaf == "mass_mjup":
        unit = "M_Jup"
    elif leaf in ("period", "sigma", "jitter") or leaf.endswith("_d"):
        unit = "d"
    else:
        unit = "dimensionless"
    shown = f"{name} − {offset:.0f}" if offset else name
    return f"{shown} [{unit}]"


def _offset(name: str, values: np.ndarray) -> float:
    """Full Julian dates are plotted minus a whole-day offset (named in the label), never in matplotlib's
    ``1e6+...`` offset notation."""
    from app.ttv.summary import is_time

    lo = float(np.min(values))
    return float(np.floor(lo)) if is_time(name) and abs(lo) > 1000 else 0.0


def corner_png(names: list[str], samples: np.ndarray, *, max_params: int = 6) -> bytes:
    """A corner plot (PNG bytes) of ``samples`` (n, k) named ``names``; the perturber's parameters first when
    there are more than ``max_params``."""
    from app.ttv.summary import format_interval

    samples = np.asarray(samples, float)
    if samples.ndim != 2 or samples.shape[1] != len(names) or samples.shape[0] < 2:
        raise ValueError(f"samples of shape {samples.shape} cannot be plotted for parameters {names}")
    cols = [i for i, n in enumerate(names) if n.startswith("pert.")] or list(range(len(names)))
    cols = cols[:max_params]
    k = len(cols)
    plt = _pyplot()
    fig, axes = plt.subplots(k, k, figsize=(2.4 * k + 0.6, 2.4 * k + 0.6), squeeze=False)
    offsets = {i: _offset(names[i], samples[:, i]) for i in cols}
    samples = samples.copy()
    for i in cols:
        samples[:, i] -= offsets[i]
    q = {i: np.percentile(samples[:, i], [16, 50, 84]) for i in cols}
    for r, ci in enumerate(cols):
        for c, cj in enumerate(cols):
            ax = axes[r][c]
            if c > r:
                ax.axis("off")
                continue
            if r == c:
                ax.hist(samples[:, ci], bins=40, color="0.35", histtype="step")
                ax.set_ylabel("samples" if c == 0 else "", fontsize=7)
                lo, med, hi = q[ci]
                ax.axvline(med, color="tab:blue", lw=1.2)
                for v in (lo, hi):
                    ax.axvline(v, color="tab:blue", lw=1.0, ls="--")
                off = offsets[ci]
                ax.set_title(f"{names[ci]} =\n{format_interval(names[ci], med + off, lo + off, hi + off)}", fontsize=6)
                ax.set_yticks([])
            else:
                ax.plot(samples[:, cj], samples[:, ci], ".", ms=1.5, alpha=0.3, color="k", rasterized=True)
                ax.axvline(q[cj][1], color="tab:blue", lw=0.8)
                ax.axhline(q[ci][1], color="tab:blue", lw=0.8)
            ax.ticklabel_format(useOffset=False, style="plain", axis="x" if r == c else "both")
            if r == k - 1:
                ax.set_xlabel(axis_label(names[cj], offsets[cj]), fontsize=7)
            else:
                ax.set_xticklabels([])
            if c == 0 and r > 0:
                ax.set_ylabel(axis_label(names[ci], offsets[ci]), fontsize=7)
            elif c > 0:
                ax.set_yticklabels([])
            ax.tick_params(labelsize=6)
    fig.suptitle("median (solid) and 68% interval (dashed)", fontsize=8)
    fig.tight_layout()
    fig.subplots_adjust(right=min(fig.subplotpars.right, 0.93))  # room for the last panel's title
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def stretch_image(data: np.ndarray) -> np.ndarray:
    """Data scaled to [0, 1]: ZScale limits, then arcsinh (astropy.visualization); NaN (no coverage) -> 0."""
    from astropy.visualization import AsinhStretch, ImageNormalize, ZScaleInterval

    data = np.asarray(data, float)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros_like(data)
    norm = ImageNormalize(data[finite], interval=ZScaleInterval(), stretch=AsinhStretch(0.1), clip=True)
    out = np.asarray(norm(np.where(finite, data, np.nanmin(data[finite]))), float)
    out[~finite] = 0.0
    return out


def preview_png(data: np.ndarray, *, max_side: int = 1600) -> bytes:
    """A greyscale PNG of a stacked image (FITS orientation: row 0 at the bottom), at most ``max_side`` pixels."""
    plt = _pyplot()
    data = np.asarray(data, float)
    step = max(1, int(np.ceil(max(data.shape) / max_side)))
    img = stretch_image(data[::step, ::step])
    buf = io.BytesIO()
    plt.imsave(buf, img, cmap="gray", origin="lower", vmin=0, vmax=1, format="png")
    return buf.getvalue()
