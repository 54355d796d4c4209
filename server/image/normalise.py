"""Flux normalisation of frames before co-addition: background, common flux unit, SNR^2 weight.

Common flux unit
----------------
Every frame is brought to one unit ``F`` defined by ``mag = 25 - 2.5 log10(F)`` (zero point 25,
per second). A frame's calibrated zero point ``ZP`` is the catalog magnitude of a colour-0 star
giving 1 ADU/s (the convention of ``server.synth`` and the photometric calibration), i.e.
``mag = ZP - 2.5 log10(C / t)`` for C ADU in t seconds, so

    F = C / t * 10**(0.4 * (25 - ZP))        scale [F per ADU] = 10**(0.4 * (25 - ZP)) / t

The colour term cannot be applied per pixel: the stack is calibrated for colour-0 sources, and a
source of colour c carries the frames' (common) colour term ``color_term * c`` in its magnitude.

Background
----------
``sep.Background`` (mesh ``box_size`` px, 3x3 median filter) with NaN, masked and saturated pixels
masked, subtracted before scaling; ``background`` reports its global level. ``background_rms``
is the 4-sigma-clipped standard deviation of the subtracted sky pixels (ADU).

SNR^2 weight
------------
SNR here is per pixel and per unit flux: ``snr_weight = 1 / sigma_sky^2`` with ``sigma_sky`` the
sky noise of one pixel *in the common unit* (``background_rms * scale``). For faint sources
(background-limited, the regime stacks are for) this is the inverse-variance weight, so the
weighted mean is the minimum-variance combination and ``1/sqrt(sum w)`` its 1-sigma uncertainty.
Normalise *reprojected* frames to measure the noise of the pixels actually combined (bilinear
resampling smooths the noise); the output weight map is ``snr_weight`` times the relative weight
map (0 where masked).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from server.image.fitsimage import open_image, write_fits_atomic

__all__ = ["COMMON_ZERO_POINT", "NormalisedFrame", "flux_scale", "input_weight", "normalise_frame", "normalise_image"]

COMMON_ZERO_POINT = 25.0


@dataclass(frozen=True)
class NormalisedFrame:
    data: np.ndarray  # float32, background-subtracted, common flux unit per pixel; NaN where masked
    weight: np.ndarray  # float32, snr_weight x relative weight; 0 where masked
    scale: float  # common flux unit per ADU
    background: float  # global background level [ADU]
    background_rms: float  # sky noise per pixel [ADU]
    sky_noise: float  # sky noise per pixel in the common unit
    snr_weight: float  # 1 / sky_noise**2
    n_masked: int  # pixels with weight 0


def flux_scale(zero_point: float, exptime_s: float) -> float:
    """Common-unit flux per ADU for a frame with zero point ``zero_point`` (1 ADU/s) and ``exptime_s``."""
    if not (np.isfinite(zero_point) and 0 < zero_point < 50):
        raise ValueError(f"zero_point must be a finite magnitude in (0, 50), got {zero_point!r}")
    if not (np.isfinite(exptime_s) and exptime_s > 0):
        raise ValueError(f"exptime_s must be > 0 seconds, got {exptime_s!r}")
    return float(10.0 ** (0.4 * (COMMON_ZERO_POINT - zero_point)) / exptime_s)


def input_weight(data, *, weight=None, saturation_adu: float | None = None, grow_px: int = 1,
                 mask=None) -> np.ndarray:
    """Relative weight map of a raw frame: 0 at NaN, masked and saturated pixels (grown by ``grow_px``)."""
    data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"data must be 2-D, got shape {data.shape}")
    w = np.ones(data.shape, np.float32) if weight is None else np.array(weight, dtype=np.float32)
    if w.shape != data.shape:
        raise ValueError(f"weight shape {w.shape} != data shape {data.shape}")
    bad = ~np.isfinite(data) | ~np.isfinite(w) | (w <= 0)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != data.shape:
            raise ValueError(f"mask shape {mask.shape} != data shape {data.shape}")
        bad |= mask
    if saturation_adu is not None:
        with np.errstate(invalid="ignore"):
            sat = data >= saturation_adu
        if grow_px > 0 and sat.any():
            from scipy import ndimage

            sat = ndimage.binary_dilation(sat, structure=np.ones((3, 3), bool), iterations=int(grow_px))
        bad |= sat
    w[bad] = 0.0
    return w


def _sky_rms(sub: np.ndarray, bad: np.ndarray) -> float:
    """rms of background-subtracted sky pixels: 4-sigma clipped std, 5 rounds from a MAD start.

    Not sep's globalrms: that is a clipped-mesh estimate ~3 % low on resampled frames, whose
    noise varies with the sub-pixel phase (a scale mixture, heavier-tailed than a Gaussian).
    """
    v = sub[~bad].astype(np.float64)
    med = np.median(v)
    s = 1.4826 * np.median(np.abs(v - med))
    for _ in range(5):
        kept = v[np.abs(v - med) < 4.0 * s]
        med, s_new = np.median(kept), kept.std()
        if s_new == s:
            break
        s = s_new
    return float(s)


def normalise_frame(data, weight=None, *, zero_point: float, exptime_s: float, box_size: int = 64,
                    filter_size: int = 3) -> NormalisedFrame:
    """Subtract the background, scale to the common unit and attach the SNR^2 weight."""
    import sep

    scale = flux_scale(zero_point, exptime_s)
    d = np.ascontiguousarray(data, dtype=np.float32)
    w = input_weight(d, weight=weight)
    bad = w <= 0
    if bad.all():
        raise ValueError("frame has no valid pixel (all NaN, masked or weight 0)")
    if box_size < 8 or box_size > min(d.shape):
        box_size = max(8, min(box_size, min(d.shape)))
    filled = np.where(bad, 0.0, d).astype(np.float32)
    bkg = sep.Background(filled, mask=bad, bw=box_size, bh=box_size, fw=filter_size, fh=filter_size)
    back = bkg.back()
    rms = _sky_rms(d - back, bad)
    if not (np.isfinite(rms) and rms > 0):
        raise ValueError(f"background rms is not positive ({rms!r}); cannot weight this frame")
    sub = (d - back) * np.float32(scale)
    sub[bad] = np.nan
    sky_noise = rms * scale
    snr_weight = 1.0 / sky_noise**2
    return NormalisedFrame(data=sub.astype(np.float32), weight=(w * np.float32(snr_weight)).astype(np.float32),
                           scale=scale, background=float(bkg.globalback), background_rms=rms,
                           sky_noise=float(sky_noise), snr_weight=float(snr_weight), n_masked=int(bad.sum()))


def normalise_image(path, *, zero_point: float, weight_path=None, exptime_s: float | None = None,
                    out_path=None, weight_out_path=None, box_size: int = 64) -> dict:
    """File form of :func:`normalise_frame`: writes the normalised frame and its weight map (FITS).

    ``exptime_s`` defaults to the header's EXPTIME. Returns the two paths and the frame's numbers.
    """
    data, header = open_image(path)
    weight = None
    if weight_path is not None:
        weight, _ = open_image(weight_path)
    if exptime_s is None:
        if "EXPTIME" not in header:
            raise ValueError(f"{path}: no EXPTIME in the header and no exptime_s given")
        exptime_s = float(header["EXPTIME"])
    res = normalise_frame(data, weight, zero_point=zero_point, exptime_s=exptime_s, box_size=box_size)
    p = Path(path)
    out = Path(out_path) if out_path else p.with_name(p.stem + "_norm.fits")
    wout = Path(weight_out_path) if weight_out_path else out.with_name(out.stem + "_weight.fits")
    hdr = header.copy()
    hdr["BUNIT"] = ("F25", "flux unit: mag = 25 - 2.5 log10(F)")
    hdr["FLXSCALE"] = (res.scale, "F per ADU = 10**(0.4*(25-ZP))/EXPTIME")
    hdr["MAGZP"] = (float(zero_point), "input zero point: mag of 1 ADU/s, colour 0")
    hdr["BKGLEVEL"] = (res.background, "subtracted background level [ADU]")
    hdr["BKGRMS"] = (res.background_rms, "sky noise per pixel [ADU]")
    hdr["SKYNOISE"] = (res.sky_noise, "sky noise per pixel [F]")
    hdr["SNRWGT"] = (res.snr_weight, "SNR^2 weight = 1/SKYNOISE^2")
    hdr.add_history(f"openastro normalise: from {os.path.basename(str(path))}")
    write_fits_atomic(out, res.data, hdr)
    whdr = hdr.copy()
    whdr["BUNIT"] = ("1/F^2", "weight = SNR^2 per pixel")
    write_fits_atomic(wout, res.weight, whdr)
    return {"path": str(out), "weight_path": str(wout), "scale": res.scale, "background": res.background,
            "background_rms": res.background_rms, "sky_noise": res.sky_noise, "snr_weight": res.snr_weight,
            "n_masked": res.n_masked}
