"""Safe reading of FITS images and WCS header hygiene, shared by the image stages.

``open_image`` refuses, before any pixel is read: a file that is not FITS, a header whose
NAXISn/BITPIX would allocate more than ``max_bytes``, and data shorter than the header
promises (truncated files). Compressed images (``.fits.fz``, tile-compressed BINTABLE)
are found and checked through their ZNAXISn keywords.
"""
from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.atomic import atomic_open

DEFAULT_MAX_BYTES = 4 * 1024**3  # 4 GiB of decoded pixels: larger than any amateur frame

# Every keyword that describes a celestial WCS (including SIP and TPV distortion terms).
_WCS_KEY_RE = re.compile(
    r"^(WCSAXES[A-Z]?|CTYPE\d+[A-Z]?|CRVAL\d+[A-Z]?|CRPIX\d+[A-Z]?|CDELT\d+[A-Z]?|CUNIT\d+[A-Z]?|"
    r"CROTA\d+|CD\d+_\d+[A-Z]?|PC\d+_\d+[A-Z]?|PV\d+_\d+[A-Z]?|PS\d+_\d+[A-Z]?|LONPOLE[A-Z]?|"
    r"LATPOLE[A-Z]?|RADESYS[A-Z]?|RADECSYS|EQUINOX[A-Z]?|EPOCH|WCSNAME[A-Z]?|CNAME\d+[A-Z]?|"
    r"CRDER\d+[A-Z]?|CSYER\d+[A-Z]?|MJDREF|DATEREF|"
    r"A_ORDER|B_ORDER|AP_ORDER|BP_ORDER|A_\d+_\d+|B_\d+_\d+|AP_\d+_\d+|BP_\d+_\d+|A_DMAX|B_DMAX|"
    r"IMAGEW|IMAGEH)$")


def is_wcs_keyword(key: str) -> bool:
    return bool(_WCS_KEY_RE.match(key.upper()))


def strip_wcs(header):
    """A copy of ``header`` without any WCS keyword (and without astrometry.net comments)."""
    out = header.copy()
    for key in list(out.keys()):
        if key and is_wcs_keyword(key):
            out.remove(key, ignore_missing=True, remove_all=True)
    return out


@dataclass(frozen=True)
class ImageInfo:
    hdu_index: int
    shape: tuple[int, ...]
    bitpix: int
    compressed: bool
    nbytes: int


def inspect_image(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ImageInfo:
    """Find the first 2-D image HDU and validate its size against the header and the file.

    The headers are walked by :func:`server.ingest.fitsmeta.scan_fits_structure` (the one
    structural FITS scanner: our own card parser, no astropy), so an absurd NAXIS is refused
    and a truncated file detected before astropy (or anyone) allocates or reads pixels.
    Errors are ``ValueError`` naming the file and the reason.
    """
    from server.ingest.fitsmeta import FitsError, scan_fits_structure, science_hdu

    path = Path(path)
    try:
        structure = scan_fits_structure(path, max_data_bytes=max_bytes)
        layout = science_hdu(structure)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a FITS file") from None
    except FitsError as exc:
        raise ValueError(f"{path}: {exc}") from None
    dims = layout.image_shape
    if any(d > 1 for d in dims[2:]):
        raise ValueError(f"{path}: HDU {layout.index} is a {len(dims)}-D cube {list(dims)}, "
                         f"expected 2-D")
    nbytes = math.prod(dims) * abs(layout.image_bitpix) // 8
    return ImageInfo(layout.index, (dims[1], dims[0]), layout.image_bitpix,
                     layout.kind == "compressed-image", nbytes)


def open_image(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES):
    """Validated (data float32 2-D array, header) of the first image HDU."""
    from astropy.io import fits

    info = inspect_image(path, max_bytes=max_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            with fits.open(path, memmap=False) as hdul:
                hdu = hdul[info.hdu_index]
                data = np.asarray(hdu.data, dtype=np.float32)
                header = hdu.header.copy()
        except (OSError, ValueError, TypeError, Warning) as exc:
            raise ValueError(f"{path}: cannot read image data ({exc})") from None
    data = data.reshape(data.shape[-2:])
    return data, header


def write_fits_atomic(path: str | os.PathLike, data: np.ndarray, header) -> None:
    """Write a primary-HDU FITS file via a temp file in the same directory and os.replace."""
    from astropy.io import fits

    with atomic_open(path) as fh:
        fits.PrimaryHDU(data=data, header=header).writeto(fh)
