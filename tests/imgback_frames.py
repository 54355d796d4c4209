"""Synthetic heterogeneous frames for the image-back tests (reprojection, normalisation, co-add).

Frames come from ``server.synth.render_frame`` over a small fixed star table (a
``DataFrameCatalog``: fast, and every star's truth is known), with different pixel scales,
rotations, pointings, zero points, exposure times, sky levels and seeing in pixels (similar
seeing in arcsec, as for frames of one night).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from server.image.catalogs import DataFrameCatalog
from server.synth import FrameSpec, render_frame

RA0, DEC0 = 150.0, 20.0
GRID_SCALE = 2.0  # arcsec/px of the output grid
GRID_SHAPE = (240, 240)
SEEING_ARCSEC = 5.2
COMMON_ZP = 25.0


def star_table(rng: np.random.Generator) -> pd.DataFrame:
    """Bright stars on a jittered lattice (isolated) plus random fainter stars, colour 0."""
    half = 0.5 * GRID_SHAPE[0] * GRID_SCALE / 3600.0
    g = np.linspace(-0.7 * half, 0.7 * half, 4)
    gx, gy = np.meshgrid(g, g)
    dra = gx.ravel() + rng.uniform(-0.02, 0.02, gx.size) * half
    ddec = gy.ravel() + rng.uniform(-0.02, 0.02, gy.size) * half
    bright = pd.DataFrame({"ra": RA0 + dra / np.cos(np.radians(DEC0)), "dec": DEC0 + ddec,
                           "mag": rng.uniform(11.0, 12.0, dra.size)})
    # fainter stars, kept > 30 grid px from every bright star so apertures measure one star
    fx = rng.uniform(-1.3, 1.3, 200) * half
    fy = rng.uniform(-1.3, 1.3, 200) * half
    far = np.hypot(fx[:, None] - dra[None, :], fy[:, None] - ddec[None, :]).min(axis=1) > 30 * GRID_SCALE / 3600
    fx, fy = fx[far][:25], fy[far][:25]
    faint = pd.DataFrame({"ra": RA0 + fx / np.cos(np.radians(DEC0)), "dec": DEC0 + fy,
                          "mag": rng.uniform(15.5, 17.5, fx.size)})
    t = pd.concat([bright, faint], ignore_index=True)
    t["color"] = 0.0
    t["bright"] = t["mag"] < 14.0
    return t


@dataclass(frozen=True)
class FrameSet:
    frames: tuple  # SyntheticFrame
    stars: pd.DataFrame


def heterogeneous_specs(n: int, rng: np.random.Generator, *, shape=(210, 210)) -> list[FrameSpec]:
    scales = np.linspace(1.7, 2.5, n)
    rng.shuffle(scales)
    specs = []
    for i in range(n):
        scale = float(scales[i])
        specs.append(FrameSpec(
            ra_deg=RA0 + rng.uniform(-0.6, 0.6) / 60 / np.cos(np.radians(DEC0)), dec_deg=DEC0 + rng.uniform(-0.6, 0.6) / 60,
            shape=shape, pixel_scale_arcsec=scale, rotation_deg=float(rng.uniform(0, 360)),
            fwhm_px=SEEING_ARCSEC / scale, sky_adu=float(rng.uniform(200, 800)), exptime_s=float(rng.choice([30, 60, 120])),
            zero_point=float(rng.uniform(20.6, 21.4)), color_term=0.05, mag_limit=18.0, fill_from_mag=None,
            saturation_adu=5e6,  # a deep-well camera: bright stars stay linear (saturation: test_normalise)
            date_obs=f"2025-03-15T03:{i:02d}:00"))
    return specs


def render(specs, rng: np.random.Generator, stars: pd.DataFrame) -> FrameSet:
    cat = DataFrameCatalog(stars[["ra", "dec", "mag", "color"]])
    frames = tuple(render_frame(s, rng, catalog=cat) for s in specs)
    return FrameSet(frames=frames, stars=stars)


def common_flux(mag: np.ndarray) -> np.ndarray:
    """True flux of a colour-0 star in the common unit (mag = 25 - 2.5 log10 F)."""
    return 10.0 ** (-0.4 * (np.asarray(mag) - COMMON_ZP))
