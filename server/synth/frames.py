"""Synthetic CCD frames rendered from real catalog stars at a real sky position.

The photometric model (documented in docs/synthetic_frames.md) is

    m_inst = -2.5 log10(F / t)                       F: total star counts [ADU], t: EXPTIME [s]
    m_cat  = m_inst + zero_point + color_term * color

so a star with catalog magnitude ``mag`` (Johnson V from the catalog) and colour ``color``
(B-V) deposits ``F = t * 10**(-0.4 * (mag - zero_point - color_term * color))`` ADU, and
``zero_point`` is the catalog magnitude of a colour-0 star giving 1 ADU/s. This is exactly the
model ``server.image.calibrate`` fits, so a calibration must recover (zero_point, color_term).

Pixels: 0-based, pixel (i, j) covers [i-0.5, i+0.5]; the PSF is a circular Gaussian of
FWHM ``fwhm_px`` integrated exactly over each pixel. Noise: Poisson on (star + sky)
electrons with ``gain_e_per_adu``, plus Gaussian read noise ``read_noise_e``; the result is
clipped at ``saturation_adu``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.special import erf as _erf

from server.image.fitsimage import strip_wcs as _strip_wcs
from server.image.fitsimage import write_fits_atomic

if TYPE_CHECKING:
    from astropy.io.fits import Header
    from astropy.wcs import WCS

    from server.image.catalogs import CatalogProvider

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
#: slope of the synthetic faint-star counts, d log10 N / dm (typical of V = 12-17 star counts)
FAINT_COUNT_SLOPE = 0.30
#: B-V distribution given to stars whose catalog colour is unknown (field-star like)
SYNTH_COLOR_MEAN, SYNTH_COLOR_SD, SYNTH_COLOR_RANGE = 0.75, 0.35, (-0.2, 2.0)


@dataclass(frozen=True)
class FrameSpec:
    """Everything that defines a synthetic frame (angles in degrees, pixel units 0-based)."""

    ra_deg: float
    dec_deg: float
    shape: tuple[int, int] = (1024, 1024)  # (ny, nx)
    pixel_scale_arcsec: float = 1.5
    rotation_deg: float = 0.0  # north is turned by this angle from +y towards +x (towards -x if flip)
    fwhm_px: float = 3.0
    sky_adu: float = 400.0  # sky level per pixel over the exposure [ADU]
    read_noise_e: float = 8.0
    gain_e_per_adu: float = 1.5
    exptime_s: float = 60.0
    zero_point: float = 21.0  # catalog mag of a colour-0 star giving 1 ADU/s
    color_term: float = 0.08  # per magnitude of colour (B-V)
    band: str = "V"
    saturation_adu: float = 60000.0
    mag_limit: float = 16.0  # faintest star rendered [catalog mag]
    # faint fill: synthetic stars fainter than this magnitude, count slope FAINT_COUNT_SLOPE,
    # normalised to the catalog's own count of stars in [fill_norm_mag - 1, fill_norm_mag]
    fill_from_mag: float | None = 12.0
    fill_norm_mag: float = 11.0
    flip: bool = False  # mirror image (negative parity), as after a diagonal/odd number of mirrors
    n_cosmic_rays: int = 0
    satellite_trail_adu: float = 0.0  # peak ADU of one straight trail across the frame; 0 = none
    date_obs: str = "2025-03-15T03:00:00"
    instrument: str = "SynthCam 1"
    telescope: str = "Synthetic 200mm"
    binning: int = 1
    pointing_keywords: bool = True  # write approximate RA/DEC (deg) of the centre, like capture software

    def __post_init__(self):
        ny, nx = self.shape
        checks = [
            (np.isfinite(self.ra_deg), "ra_deg", self.ra_deg),
            (np.isfinite(self.dec_deg) and -90 <= self.dec_deg <= 90, "dec_deg", self.dec_deg),
            (int(ny) == ny and int(nx) == nx and 16 <= ny <= 16384 and 16 <= nx <= 16384, "shape", self.shape),
            (0 < self.pixel_scale_arcsec < 3600, "pixel_scale_arcsec", self.pixel_scale_arcsec),
            (0.5 <= self.fwhm_px <= 50, "fwhm_px", self.fwhm_px),
            (self.sky_adu >= 0, "sky_adu", self.sky_adu),
            (self.read_noise_e >= 0, "read_noise_e", self.read_noise_e),
            (self.gain_e_per_adu > 0, "gain_e_per_adu", self.gain_e_per_adu),
            (self.exptime_s > 0, "exptime_s", self.exptime_s),
            (self.saturation_adu > 0, "saturation_adu", self.saturation_adu),
            (self.n_cosmic_rays >= 0, "n_cosmic_rays", self.n_cosmic_rays),
            (self.binning >= 1, "binning", self.binning),
        ]
        for ok, name, value in checks:
            if not ok:
                raise ValueError(f"FrameSpec.{name} is out of range: {value!r}")

    @property
    def field_deg(self) -> tuple[float, float]:
        """(height, width) of the field in degrees."""
        return (self.shape[0] * self.pixel_scale_arcsec / 3600.0, self.shape[1] * self.pixel_scale_arcsec / 3600.0)

    def with_(self, **changes) -> "FrameSpec":
        return replace(self, **changes)


@dataclass(frozen=True)
class SyntheticFrame:
    spec: FrameSpec
    data: np.ndarray  # float32 (ny, nx) ADU
    header: "Header"  # full TAN WCS + observation keywords
    header_nowcs: "Header"  # the same without any WCS keyword
    wcs: "WCS"
    truth: pd.DataFrame = field(repr=False)  # one row per rendered star, see render_frame


def make_wcs(spec: FrameSpec) -> "WCS":
    """The true TAN WCS: CRPIX at the frame centre, CD from scale, rotation and parity."""
    from astropy.wcs import WCS

    ny, nx = spec.shape
    s = spec.pixel_scale_arcsec / 3600.0
    th = np.radians(spec.rotation_deg)
    cd = s * np.array([[-np.cos(th), np.sin(th)], [np.sin(th), np.cos(th)]])
    if spec.flip:
        cd[:, 0] *= -1.0
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [spec.ra_deg % 360.0, spec.dec_deg]
    w.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    w.wcs.cd = cd
    w.wcs.radesys = "ICRS"
    w.wcs.equinox = 2000.0
    w.wcs.set()
    return w


def _draw_colors(rng: np.random.Generator, n: int) -> np.ndarray:
    lo, hi = SYNTH_COLOR_RANGE
    return np.clip(rng.normal(SYNTH_COLOR_MEAN, SYNTH_COLOR_SD, n), lo, hi)


def _faint_fill(spec: FrameSpec, stars: pd.DataFrame, area_deg2: float, rng: np.random.Generator,
                wcs: "WCS", margin: float) -> pd.DataFrame:
    """Synthetic stars in (fill_from_mag, mag_limit] with dN/dm ~ 10**(0.3 m), uniform on the frame."""
    if spec.fill_from_mag is None or spec.mag_limit <= spec.fill_from_mag:
        return stars.iloc[0:0]
    in_norm = ((stars["mag"] > spec.fill_norm_mag - 1) & (stars["mag"] <= spec.fill_norm_mag)).sum()
    dens_norm = max(in_norm / area_deg2, 10.0)  # stars / deg^2 / mag around fill_norm_mag - 0.5
    a = FAINT_COUNT_SLOPE * np.log(10.0)
    m0, m1, mref = spec.fill_from_mag, spec.mag_limit, spec.fill_norm_mag - 0.5
    # integral of dens_norm * 10**(0.3 (m - mref)) dm over [m0, m1]
    expected = dens_norm * area_deg2 * (np.exp(a * (m1 - mref)) - np.exp(a * (m0 - mref))) / a
    n = int(rng.poisson(expected))
    u = rng.random(n)
    mags = np.log(np.exp(a * m0) + u * (np.exp(a * m1) - np.exp(a * m0))) / a  # inverse CDF
    ny, nx = spec.shape
    x = rng.uniform(-margin, nx - 1 + margin, n)
    y = rng.uniform(-margin, ny - 1 + margin, n)
    ra, dec = wcs.all_pix2world(x, y, 0)
    return pd.DataFrame({
        "source_id": pd.array([f"synth:{i}" for i in range(n)], dtype="string"),
        "ra": ra, "dec": dec, "mag": mags, "mag_err": np.full(n, 0.0),
        "color": _draw_colors(rng, n), "color_err": np.full(n, 0.0),
        "origin": pd.array(["synthetic"] * n, dtype="string"),
    })


def _default_catalog() -> "CatalogProvider":
    from server.image.catalogs import default_offline_catalog

    return default_offline_catalog()


def _render_stars(img: np.ndarray, x: np.ndarray, y: np.ndarray, flux: np.ndarray, sigma: float) -> None:
    """Add pixel-integrated circular Gaussians (total ``flux`` ADU each) into ``img`` in place."""
    ny, nx = img.shape
    root2s = np.sqrt(2.0) * sigma
    for xi, yi, fi in zip(x, y, flux):
        if fi <= 0:
            continue
        # half-size where the Gaussian tail drops below 1e-3 ADU per pixel
        peak = fi / (2 * np.pi * sigma**2)
        half = int(np.ceil(sigma * np.sqrt(2.0 * np.log(max(peak / 1e-3, 2.0))))) + 1
        x0, x1 = max(int(np.floor(xi)) - half, 0), min(int(np.floor(xi)) + half + 2, nx)
        y0, y1 = max(int(np.floor(yi)) - half, 0), min(int(np.floor(yi)) + half + 2, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        ex = _erf((np.arange(x0, x1 + 1) - 0.5 - xi) / root2s)
        ey = _erf((np.arange(y0, y1 + 1) - 0.5 - yi) / root2s)
        px = 0.5 * np.diff(ex)
        py = 0.5 * np.diff(ey)
        img[y0:y1, x0:x1] += fi * np.outer(py, px)


def render_frame(spec: FrameSpec, rng: np.random.Generator, catalog: "CatalogProvider | None" = None) -> SyntheticFrame:
    """Render ``spec`` with stars from ``catalog`` (default: the offline catalog) plus faint fill.

    ``truth`` columns: source_id, origin ('gaia-dr3+hip2', 'tycho2-index', 'synthetic', ...),
    ra, dec (deg), x, y (0-based pixels), mag (catalog), color (B-V used for rendering),
    color_synthetic (True if the colour was drawn: the catalog had none, or the star is synthetic),
    flux_adu (expected total counts), inst_mag (-2.5 log10(flux_adu / exptime)),
    peak_adu (expected peak pixel above sky), saturated, in_frame.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if catalog is None:
        catalog = _default_catalog()
    wcs = make_wcs(spec)
    ny, nx = spec.shape
    h_deg, w_deg = spec.field_deg
    radius = 0.5 * np.hypot(h_deg, w_deg) * 1.05 + 2 * spec.fwhm_px * spec.pixel_scale_arcsec / 3600
    cat = catalog.cone(spec.ra_deg % 360.0, spec.dec_deg, min(radius, 90.0), spec.mag_limit)
    sigma = spec.fwhm_px * FWHM_TO_SIGMA
    margin = 6.0 * sigma
    if len(cat):
        cx, cy = wcs.all_world2pix(cat["ra"].to_numpy(), cat["dec"].to_numpy(), 0)
        inside = (cx > -margin) & (cx < nx - 1 + margin) & (cy > -margin) & (cy < ny - 1 + margin)
        cat = cat[inside].reset_index(drop=True)
    area = (nx + 2 * margin) * (ny + 2 * margin) * (spec.pixel_scale_arcsec / 3600.0) ** 2
    fill = _faint_fill(spec, cat, area, rng, wcs, margin)
    cat = cat[[c for c in cat.columns if c in ("source_id", "ra", "dec", "mag", "color", "origin")]]
    stars = pd.concat([cat, fill[["source_id", "ra", "dec", "mag", "color", "origin"]]], ignore_index=True)
    color = np.array(stars["color"].to_numpy(dtype=float, na_value=np.nan), dtype=float, copy=True)
    no_color = ~np.isfinite(color)
    color[no_color] = _draw_colors(rng, int(no_color.sum()))
    x, y = wcs.all_world2pix(stars["ra"].to_numpy(float), stars["dec"].to_numpy(float), 0)
    mag = stars["mag"].to_numpy(float)
    flux = spec.exptime_s * 10.0 ** (-0.4 * (mag - spec.zero_point - spec.color_term * color))

    img = np.zeros((ny, nx), dtype=np.float64)
    _render_stars(img, x, y, flux, sigma)
    # cosmic rays: 1-3 adjacent pixels with 1000-30000 e- each (added to the electron image)
    cr_img = np.zeros_like(img)
    for _ in range(spec.n_cosmic_rays):
        cxr, cyr = rng.integers(0, nx), rng.integers(0, ny)
        for k in range(int(rng.integers(1, 4))):
            xx, yy = min(cxr + k * int(rng.integers(0, 2)), nx - 1), min(cyr + k * int(rng.integers(0, 2)), ny - 1)
            cr_img[yy, xx] += rng.uniform(1000, 30000) / spec.gain_e_per_adu
    if spec.satellite_trail_adu > 0:
        ang = rng.uniform(0, np.pi)
        px0, py0 = rng.uniform(0.3, 0.7) * nx, rng.uniform(0.3, 0.7) * ny
        yy, xx = np.mgrid[0:ny, 0:nx]
        dist = np.abs((xx - px0) * np.sin(ang) - (yy - py0) * np.cos(ang))
        img += spec.satellite_trail_adu * np.exp(-0.5 * (dist / 1.2) ** 2)

    electrons = (img + spec.sky_adu) * spec.gain_e_per_adu
    noisy = rng.poisson(np.maximum(electrons, 0.0)).astype(np.float64)
    noisy += rng.normal(0.0, spec.read_noise_e, size=noisy.shape)
    data = noisy / spec.gain_e_per_adu + cr_img
    data = np.clip(data, None, spec.saturation_adu).astype(np.float32)

    peak = flux * _erf(0.5 / (np.sqrt(2.0) * sigma)) ** 2  # star centred on a pixel
    truth = pd.DataFrame({
        "source_id": stars["source_id"].astype("string"), "origin": stars["origin"].astype("string"),
        "ra": stars["ra"].to_numpy(float), "dec": stars["dec"].to_numpy(float), "x": x, "y": y,
        "mag": mag, "color": color,
        "color_synthetic": no_color | (stars["origin"].astype(str).to_numpy() == "synthetic"),
        "flux_adu": flux, "inst_mag": -2.5 * np.log10(flux / spec.exptime_s), "peak_adu": peak,
    })
    truth["saturated"] = truth["peak_adu"] + spec.sky_adu >= spec.saturation_adu
    truth["in_frame"] = (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)

    header = _make_header(spec, wcs)
    return SyntheticFrame(spec=spec, data=data, header=header, header_nowcs=_strip_wcs(header), wcs=wcs, truth=truth)


def _make_header(spec: FrameSpec, wcs: "WCS") -> "Header":
    from astropy.io import fits

    h = fits.Header()
    h["DATE-OBS"] = (spec.date_obs, "UTC start of exposure")
    h["EXPTIME"] = (float(spec.exptime_s), "[s] exposure time")
    h["FILTER"] = (spec.band, "filter")
    h["INSTRUME"] = (spec.instrument, "camera")
    h["TELESCOP"] = (spec.telescope, "telescope")
    h["GAIN"] = (float(spec.gain_e_per_adu), "[e-/ADU]")
    h["RDNOISE"] = (float(spec.read_noise_e), "[e-] read noise")
    h["SATURATE"] = (float(spec.saturation_adu), "[ADU] saturation level")
    h["XBINNING"] = (int(spec.binning), "binning")
    h["YBINNING"] = (int(spec.binning), "binning")
    h["PIXSCALE"] = (float(spec.pixel_scale_arcsec), "[arcsec/px] nominal")
    if spec.pointing_keywords:
        h["RA"] = (float(spec.ra_deg % 360.0), "[deg] approximate pointing")
        h["DEC"] = (float(spec.dec_deg), "[deg] approximate pointing")
    h["SYNTHETC"] = (True, "rendered by server.synth (OpenAstro)")
    h.update(wcs.to_header(relax=False))
    return h


def write_frame(frame: SyntheticFrame, path: str | os.PathLike, *, strip_wcs: bool = True) -> None:
    """Write ``frame`` as a FITS file atomically (temp file + rename); WCS stripped by default."""
    write_fits_atomic(path, frame.data, frame.header_nowcs if strip_wcs else frame.header)
