"""Injection-recovery on synthetic frames: completeness against S/N and false positives per frame.

One trial renders a reference (good seeing, deep) and a new frame (worse seeing, shallower) of the same random star
field with ``server.synth.frames``, the new frame carrying extra point sources (the injected transients) that the
reference lacks. Both PSFs are *measured* from the frames (``server.transients.psf``), the pair is subtracted
with ZOGY and candidates are detected at 5 sigma; an injected source counts as recovered when a positive
candidate lies within ``match_px`` of it, and every other candidate is a false positive.

S/N of an injected source: its optimal (PSF-fit) S/N in the new frame alone, background-limited,
``S/N = F sqrt(sum P^2) / sigma_sky`` with F its total counts and P the frame's pixel-integrated PSF. The
difference image is noisier than the new frame (the reference adds its own noise), so a 5-sigma threshold finds
half of the sources at an S/N somewhat above 5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from server.synth.frames import FrameSpec, render_frame
from server.transients.detect import detect
from server.transients.psf import gaussian_psf, measure_psf
from server.transients.zogy import zogy


@dataclass(frozen=True)
class TrialResult:
    snr: np.ndarray  # injected S/N
    recovered: np.ndarray  # bool per injected source
    n_false: int  # candidates matching no injected source
    n_candidates: int


@dataclass(frozen=True)
class CompletenessCurve:
    snr_bins: np.ndarray  # bin centres
    completeness: np.ndarray
    n_injected: np.ndarray
    false_per_frame: float
    n_frames: int

    def snr_at(self, level: float = 0.5) -> float:
        """S/N where the curve first reaches ``level`` (linear interpolation between bins)."""
        c, s = self.completeness, self.snr_bins
        above = np.flatnonzero(c >= level)
        if len(above) == 0:
            return float("inf")
        i = above[0]
        if i == 0:
            return float(s[0])
        return float(s[i - 1] + (level - c[i - 1]) * (s[i] - s[i - 1]) / (c[i] - c[i - 1]))

    def lines(self) -> list[str]:
        out = [f"{'S/N':>6} {'completeness':>12} {'n':>5}"]
        out += [f"{s:6.1f} {c:12.3f} {n:5d}" for s, c, n in zip(self.snr_bins, self.completeness, self.n_injected)]
        out.append(f"50% completeness at S/N {self.snr_at(0.5):.2f}; "
                   f"false positives {self.false_per_frame:.2f} per frame ({self.n_frames} frames)")
        return out


def _field(rng: np.random.Generator, spec: FrameSpec, n_stars: int) -> pd.DataFrame:
    """A random star field over the frame: magnitudes uniform in [15, spec.mag_limit]."""
    h, w = spec.field_deg
    ra = spec.ra_deg + (rng.random(n_stars) - 0.5) * w / np.cos(np.radians(spec.dec_deg))
    dec = spec.dec_deg + (rng.random(n_stars) - 0.5) * h
    return pd.DataFrame({"ra": ra, "dec": dec, "mag": rng.uniform(15.0, spec.mag_limit, n_stars),
                         "color": np.zeros(n_stars)})


def snr_to_mag(spec: FrameSpec, snr: np.ndarray) -> np.ndarray:
    """Catalog magnitude (colour 0) of a point source with background-limited PSF S/N ``snr`` in ``spec``."""
    p = gaussian_psf(spec.fwhm_px, 31).stamp
    sigma_adu = np.sqrt(spec.sky_adu / spec.gain_e_per_adu + (spec.read_noise_e / spec.gain_e_per_adu) ** 2)
    counts = np.asarray(snr, float) * sigma_adu / np.sqrt((p**2).sum())
    return spec.zero_point - 2.5 * np.log10(counts / spec.exptime_s)


def run_trial(rng: np.random.Generator, *, shape=(256, 256), fwhm_new: float = 3.2, fwhm_ref: float = 2.2,
              snr_values=(3, 4, 5, 6, 7, 8, 10), per_value: int = 3, n_stars: int = 60,
              threshold: float = 5.0, match_px: float = 2.0, psf_size: int = 21) -> TrialResult:
    from server.image.catalogs import DataFrameCatalog

    ref_spec = FrameSpec(ra_deg=150.0, dec_deg=20.0, shape=shape, fwhm_px=fwhm_ref, exptime_s=600.0,
                         sky_adu=4000.0, mag_limit=18.0, fill_from_mag=None)
    new_spec = ref_spec.with_(fwhm_px=fwhm_new, exptime_s=60.0, sky_adu=400.0, mag_limit=30.0,
                              date_obs="2025-04-01T03:00:00")
    stars = _field(rng, ref_spec, n_stars)  # the new frame's mag_limit is deeper: it renders the faint transients
    snr = np.repeat(np.asarray(snr_values, float), per_value)
    rng.shuffle(snr)
    margin = psf_size
    ny, nx = shape
    from server.synth.frames import make_wcs

    wcs = make_wcs(new_spec)
    tx = rng.uniform(margin, nx - 1 - margin, len(snr))
    ty = rng.uniform(margin, ny - 1 - margin, len(snr))
    tra, tdec = wcs.all_pix2world(tx, ty, 0)
    trans = pd.DataFrame({"ra": tra, "dec": tdec, "mag": snr_to_mag(new_spec, snr), "color": np.zeros(len(snr))})
    ref = render_frame(ref_spec, rng, catalog=DataFrameCatalog(stars))
    new = render_frame(new_spec, rng, catalog=DataFrameCatalog(pd.concat([stars, trans], ignore_index=True)))
    return evaluate_pair(new.data, ref.data, new_spec, ref_spec, tx, ty, snr, threshold=threshold,
                         match_px=match_px, psf_size=psf_size)


def _sky(data: np.ndarray) -> tuple[np.ndarray, float]:
    import sep

    d = np.ascontiguousarray(data, dtype=np.float32)
    bkg = sep.Background(d, bw=64, bh=64, fw=3, fh=3)
    return d - bkg.back(), float(bkg.globalrms)


def evaluate_pair(new_data, ref_data, new_spec: FrameSpec, ref_spec: FrameSpec, tx, ty, snr, *, threshold=5.0,
                  match_px=2.0, psf_size=21) -> TrialResult:
    from server.image.normalise import flux_scale

    n_sub, n_rms = _sky(new_data)
    r_sub, r_rms = _sky(ref_data)
    pn = measure_psf(new_data, size=psf_size, saturation_adu=new_spec.saturation_adu)
    pr = measure_psf(ref_data, size=psf_size, saturation_adu=ref_spec.saturation_adu)
    res = zogy(n_sub, r_sub, pn, pr, f_new=1.0 / flux_scale(new_spec.zero_point, new_spec.exptime_s),
               f_ref=1.0 / flux_scale(ref_spec.zero_point, ref_spec.exptime_s), sigma_new=n_rms, sigma_ref=r_rms,
               gain_new=new_spec.gain_e_per_adu, gain_ref=ref_spec.gain_e_per_adu)
    det = detect(res, new_data, ref_data, threshold=threshold)
    cx = np.array([c.x for c in det.candidates])
    cy = np.array([c.y for c in det.candidates])
    sign = np.array([c.sign for c in det.candidates])
    recovered = np.zeros(len(snr), dtype=bool)
    used = np.zeros(len(cx), dtype=bool)
    for i, (x, y) in enumerate(zip(tx, ty)):
        if len(cx) == 0:
            break
        d = np.hypot(cx - x, cy - y)
        d[(sign < 0)] = np.inf
        j = int(np.argmin(d))
        if d[j] <= match_px:
            recovered[i] = True
            used[j] = True
    # a candidate near an injected source (matched or not: e.g. its negative ring) is not a false positive
    near = np.zeros(len(cx), dtype=bool)
    for x, y in zip(tx, ty):
        near |= np.hypot(cx - x, cy - y) <= 2 * match_px
    return TrialResult(np.asarray(snr, float), recovered, int((~used & ~near).sum()), len(cx))


def completeness_curve(seed: int, n_frames: int = 6, **trial_options) -> CompletenessCurve:
    """Run ``n_frames`` trials from ``SeedSequence(seed)`` and bin recovery by injected S/N."""
    children = np.random.SeedSequence(seed).spawn(n_frames)
    results = [run_trial(np.random.default_rng(c), **trial_options) for c in children]
    snr = np.concatenate([r.snr for r in results])
    rec = np.concatenate([r.recovered for r in results])
    bins = np.unique(snr)
    comp = np.array([rec[snr == b].mean() for b in bins])
    n = np.array([(snr == b).sum() for b in bins])
    fp = float(np.mean([r.n_false for r in results]))
    return CompletenessCurve(bins, comp, n, fp, n_frames)
