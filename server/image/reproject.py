"""Reference grid selection and whole-frame reprojection of FITS images (server side).

The numerical kernel lives in :mod:`app.reproject_kernel` (it also runs on volunteers' machines as
tile work units); this module does the choosing and the file I/O around it.

Reference frame criterion (:func:`select_reference`)
----------------------------------------------------
Among frames with a celestial WCS: the **finest pixel scale**, where scales within
``SCALE_TOLERANCE`` (10 %) of the finest count as equal; among those the **best seeing** (smallest
FWHM in arcsec; unknown = worst); then the **highest SNR** (unknown = worst); then the path, so the
choice is deterministic. The 10 % band keeps a slightly finer but blurrier frame from defining the
grid: a stack is sampled at the finest scale available, but the seeing decides what detail exists.

Output grid (:func:`output_grid`)
---------------------------------
A TAN projection, north up and east left, at the reference pixel scale, centred on the requested
region (``(ra_deg, dec_deg, width_deg, height_deg)``) or, without a region, on the union of all
frames' footprints (corners and edge midpoints), sized to cover it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from app.reproject_kernel import DEFAULT_TOLERANCE_PX, as_wcs, cutout_for_tile, reproject_tile
from server.image.fitsimage import is_wcs_keyword, open_image, write_fits_atomic

__all__ = ["FrameInfo", "NoOverlapError", "NoWCSError", "ReferenceChoice", "ReprojectionBatch", "frame_info",
           "output_grid", "reproject_frames", "reproject_image", "select_reference", "weight_path_for"]

SCALE_TOLERANCE = 0.10
MAX_GRID_PIXELS = 400_000_000  # 20k x 20k: beyond this a region is certainly a mistake
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO", "BSCALE", "BLANK",
               "PCOUNT", "GCOUNT", "XTENSION", "CHECKSUM", "DATASUM", "END", "HISTORY", "COMMENT", ""}


class NoWCSError(ValueError):
    """The frame has no usable celestial WCS (not plate-solved, or the solve failed)."""


class NoOverlapError(ValueError):
    """The frame does not overlap the output grid."""


@dataclass(frozen=True)
class FrameInfo:
    path: str
    shape: tuple[int, int]  # (ny, nx)
    header: dict | None = None  # WCS cards; None when the frame has no WCS
    fwhm_arcsec: float | None = None
    snr: float | None = None
    wcs_failed_reason: str | None = None

    @property
    def pixel_scale_arcsec(self) -> float:
        wcs = as_wcs(self.header)
        from astropy.wcs.utils import proj_plane_pixel_scales

        sx, sy = proj_plane_pixel_scales(wcs)
        return float(math.sqrt(sx * sy) * 3600.0)


@dataclass(frozen=True)
class ReferenceChoice:
    frame: FrameInfo
    pixel_scale_arcsec: float
    reason: str
    refused: tuple[tuple[str, str], ...] = ()  # (path, reason) of frames without WCS


@dataclass(frozen=True)
class ReprojectionBatch:
    outputs: tuple[tuple[str, str, str], ...]  # (input path, reprojected path, weight path)
    skipped: tuple[tuple[str, str], ...] = field(default=())  # (input path, reason)


def _wcs_cards(header) -> dict | None:
    cards = {k: header[k] for k in header if k and is_wcs_keyword(k)}
    if not any(k.startswith("CTYPE") for k in cards):
        return None
    try:
        as_wcs(cards)
    except (ValueError, TypeError):
        return None
    return cards


def frame_info(path, *, fwhm_arcsec: float | None = None, snr: float | None = None) -> FrameInfo:
    """FrameInfo of a FITS file (header only)."""
    with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
        hdr = hdul[0].header if hdul[0].header.get("NAXIS", 0) == 2 else hdul[1].header
        shape = (int(hdr["NAXIS2"]), int(hdr["NAXIS1"]))
        cards = _wcs_cards(hdr)
    return FrameInfo(path=str(path), shape=shape, header=cards, fwhm_arcsec=fwhm_arcsec, snr=snr,
                     wcs_failed_reason=None if cards else "no celestial WCS in the header (not plate-solved?)")


def _split_by_wcs(frames):
    good, refused = [], []
    for f in frames:
        if f.header is None:
            refused.append((f.path, f.wcs_failed_reason or "no WCS"))
        else:
            good.append(f)
    return good, refused


def select_reference(frames: list[FrameInfo]) -> ReferenceChoice:
    """The reference frame by the documented criterion (finest scale, then seeing, then SNR)."""
    good, refused = _split_by_wcs(frames)
    if not good:
        reasons = "; ".join(f"{p}: {r}" for p, r in refused) or "no frames given"
        raise NoWCSError(f"no frame with a WCS to define the grid ({reasons})")
    scales = [f.pixel_scale_arcsec for f in good]
    finest = min(scales)
    band = [(f, s) for f, s in zip(good, scales) if s <= finest * (1 + SCALE_TOLERANCE)]

    def key(fs):
        f, s = fs
        fwhm = f.fwhm_arcsec if f.fwhm_arcsec is not None and np.isfinite(f.fwhm_arcsec) else math.inf
        snr = f.snr if f.snr is not None and np.isfinite(f.snr) else -math.inf
        return (fwhm, -snr, f.path)

    best, scale = min(band, key=key)
    reason = (f"finest pixel scale band ({finest:.3f}\"/px +{SCALE_TOLERANCE:.0%}: {len(band)} frame(s)); "
              f"then best seeing (FWHM {best.fwhm_arcsec}\"), then SNR ({best.snr})")
    return ReferenceChoice(frame=best, pixel_scale_arcsec=scale, reason=reason, refused=tuple(refused))


def _tan_header(ra, dec, scale_deg, shape, crpix):
    ny, nx = shape
    return {"NAXIS": 2, "NAXIS1": int(nx), "NAXIS2": int(ny), "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN",
            "CRVAL1": float(ra % 360.0), "CRVAL2": float(dec), "CRPIX1": float(crpix[0]), "CRPIX2": float(crpix[1]),
            "CD1_1": -float(scale_deg), "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": float(scale_deg),
            "CUNIT1": "deg", "CUNIT2": "deg", "RADESYS": "ICRS"}


def _check_grid(shape):
    if shape[0] < 1 or shape[1] < 1 or shape[0] * shape[1] > MAX_GRID_PIXELS:
        raise ValueError(f"output grid shape {shape} is empty or larger than {MAX_GRID_PIXELS} pixels")


def output_grid(frames: list[FrameInfo], region=None, *, pixel_scale_arcsec: float | None = None):
    """(WCS header dict, (ny, nx)) of the output grid covering ``region`` or all frames' footprints.

    ``region`` = (ra_deg, dec_deg, width_deg, height_deg). The pixel scale is the reference
    frame's (see :func:`select_reference`) unless ``pixel_scale_arcsec`` is given.
    """
    if pixel_scale_arcsec is None:
        pixel_scale_arcsec = select_reference(frames).pixel_scale_arcsec
    if not (np.isfinite(pixel_scale_arcsec) and pixel_scale_arcsec > 0):
        raise ValueError(f"pixel_scale_arcsec must be > 0, got {pixel_scale_arcsec!r}")
    scale = pixel_scale_arcsec / 3600.0
    if region is not None:
        try:
            ra, dec, width, height = (float(v) for v in region)
        except (TypeError, ValueError):
            raise ValueError(f"region must be (ra_deg, dec_deg, width_deg, height_deg), got {region!r}") from None
        if not (-90 <= dec <= 90 and width > 0 and height > 0):
            raise ValueError(f"region out of range: {region!r}")
        shape = (int(math.ceil(height / scale)), int(math.ceil(width / scale)))
        _check_grid(shape)
        return _tan_header(ra, dec, scale, shape, ((shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0)), shape
    good, _ = _split_by_wcs(frames)
    if not good:
        raise NoWCSError("no frame with a WCS to define the grid")
    lon, lat = [], []
    for f in good:
        w = as_wcs(f.header)
        ny, nx = f.shape
        xs = np.array([-0.5, nx / 2 - 0.5, nx - 0.5])
        ys = np.array([-0.5, ny / 2 - 0.5, ny - 0.5])
        gx, gy = np.meshgrid(xs, ys)
        world = w.all_pix2world(np.column_stack([gx.ravel(), gy.ravel()]), 0)
        lon.append(world[:, w.wcs.lng])
        lat.append(world[:, w.wcs.lat])
    lon, lat = np.radians(np.concatenate(lon)), np.radians(np.concatenate(lat))
    v = np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)]).sum(axis=1)
    ra0 = math.degrees(math.atan2(v[1], v[0])) % 360.0
    dec0 = math.degrees(math.atan2(v[2], math.hypot(v[0], v[1])))
    probe = WCS(fits.Header(_tan_header(ra0, dec0, scale, (1, 1), (0.0, 0.0))))
    px, py = probe.wcs_world2pix(np.degrees(lon), np.degrees(lat), 0)
    x0, x1 = math.floor(px.min()), math.ceil(px.max())
    y0, y1 = math.floor(py.min()), math.ceil(py.max())
    shape = (y1 - y0 + 1, x1 - x0 + 1)
    _check_grid(shape)
    # probe 0-based pixel p = u - 1 (its CRPIX is 0); the grid's q = u + CRPIX - 1 must be p - x0
    return _tan_header(ra0, dec0, scale, shape, (-float(x0), -float(y0))), shape


def weight_path_for(out_path) -> str:
    p = Path(out_path)
    return str(p.with_name(p.stem + "_weight" + p.suffix))


def reproject_image(fits_path: str, reference_wcs: dict, output_shape: tuple, *, weight_path=None, out_path=None,
                    weight_out_path=None, method: str = "bilinear", conserve_flux: bool = True,
                    tolerance_px: float = DEFAULT_TOLERANCE_PX) -> str:
    """Reproject one FITS frame (and its weight map) onto the grid; returns the reprojected path.

    The weight map goes to ``weight_out_path`` (default :func:`weight_path_for`). Both files carry
    the full output WCS and provenance (source file, method, mapping step and its checked error).
    Raises :class:`NoWCSError` for a frame without WCS, :class:`NoOverlapError` if it misses the grid.
    """
    ny, nx = (int(v) for v in output_shape)
    as_wcs(reference_wcs)  # refuse a bad grid before reading pixels
    data, header = open_image(fits_path)
    cards = _wcs_cards(header)
    if cards is None:
        raise NoWCSError(f"{fits_path}: no celestial WCS in the header (plate solving failed or not run)")
    weight = None
    if weight_path is not None:
        weight, _ = open_image(weight_path)
        if weight.shape != data.shape:
            raise ValueError(f"{weight_path}: weight shape {weight.shape} != image shape {data.shape}")
    # the kernel gets header cards, not WCS objects: it then maps TAN(-SIP) headers with its own
    # numpy code exactly as the volunteer app does for tiles of the same frame
    box = cutout_for_tile(data.shape, cards, reference_wcs, (0, ny, 0, nx))
    if box is None:
        raise NoOverlapError(f"{fits_path}: does not overlap the output grid")
    res = reproject_tile(data, weight, cards, (0, 0), reference_wcs, (0, ny, 0, nx), method=method,
                         conserve_flux=conserve_flux, tolerance_px=tolerance_px)
    if not res.footprint.any():
        raise NoOverlapError(f"{fits_path}: does not overlap the output grid")
    src = Path(fits_path)
    out = Path(out_path) if out_path else src.with_name(src.stem + "_reproj.fits")
    wout = Path(weight_out_path) if weight_out_path else Path(weight_path_for(out))
    hdr = fits.Header()
    for k, v in reference_wcs.items():
        if k not in ("NAXIS", "NAXIS1", "NAXIS2"):
            hdr[k] = v
    for card in header.cards:
        if card.keyword not in _STRUCTURAL and not is_wcs_keyword(card.keyword) and card.keyword not in hdr:
            hdr.append(card)
    hdr["SRCFILE"] = (os.path.basename(str(fits_path))[:68], "reprojected from")
    hdr["RPMETHOD"] = (method, "reprojection sampling")
    hdr["RPSTEP"] = (res.step, "mapping node step [px] (1 = exact)")
    hdr["RPMAXERR"] = (res.max_error_px, "max mapping error at checked points [px]")
    hdr["RPFLUX"] = (bool(conserve_flux), "values scaled by output/input pixel area")
    write_fits_atomic(out, res.data, hdr)
    whdr = hdr.copy()
    whdr["PRODUCT"] = ("weight", "reprojected relative weight map")
    write_fits_atomic(wout, res.weight, whdr)
    return str(out)


def reproject_frames(paths, reference_wcs: dict, output_shape, out_dir, *, weight_paths=None,
                     method: str = "bilinear", conserve_flux: bool = True) -> ReprojectionBatch:
    """Reproject many frames; frames without WCS or overlap are skipped and reported, not fatal."""
    paths = [str(p) for p in paths]
    if weight_paths is not None and len(weight_paths) != len(paths):
        raise ValueError(f"{len(paths)} frames but {len(weight_paths)} weight maps")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs, skipped = [], []
    for i, p in enumerate(paths):
        out = out_dir / f"{i:04d}_{Path(p).stem}_reproj.fits"
        try:
            rp = reproject_image(p, reference_wcs, output_shape, out_path=out, method=method,
                                 weight_path=None if weight_paths is None else weight_paths[i],
                                 conserve_flux=conserve_flux)
        except (NoWCSError, NoOverlapError) as exc:
            skipped.append((p, str(exc)))
            continue
        outputs.append((p, rp, weight_path_for(rp)))
    return ReprojectionBatch(outputs=tuple(outputs), skipped=tuple(skipped))
