"""Safe reading of FITS images and WCS header hygiene, shared by the image stages.

``open_image`` refuses, before any pixel is read: a file that is not FITS, a header whose
NAXISn/BITPIX would allocate more than ``max_bytes``, and data shorter than the header
promises (truncated files). Compressed images (``.fits.fz``, tile-compressed BINTABLE)
are found and checked through their ZNAXISn keywords.
"""
from __future__ import annotations

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


def _fits_magic(path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(30)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a FITS file") from None
    if not head.startswith(b"SIMPLE  =") or head[29:30] != b"T":
        raise ValueError(f"{path}: not a FITS file (starts with {head[:16]!r})")


def _dims(hdr, prefix: str, path, index: int) -> list[int]:
    naxis = hdr.get(f"{prefix}NAXIS", 0)
    if not isinstance(naxis, (int, np.integer)) or not 0 <= naxis <= 999:
        raise ValueError(f"{path}: HDU {index} has invalid {prefix}NAXIS = {naxis!r}")
    dims = []
    for i in range(1, int(naxis) + 1):
        v = hdr.get(f"{prefix}NAXIS{i}")
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{path}: HDU {index} has invalid {prefix}NAXIS{i} = {v!r}")
        dims.append(int(v))
    return dims


def _bitpix(hdr, key: str, path, index: int) -> int:
    bitpix = hdr.get(key)
    if bitpix not in (8, 16, 32, 64, -32, -64):
        raise ValueError(f"{path}: HDU {index} has invalid {key} = {bitpix!r}")
    return int(bitpix)


def inspect_image(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ImageInfo:
    """Find the first 2-D image HDU and validate its size against the header and the file.

    Headers are parsed one by one from our own file handle and every data size is computed
    from the keywords, so an absurd NAXIS is refused and a truncated file detected before
    astropy (or anyone) allocates or reads pixels.
    """
    from astropy.io import fits

    path = Path(path)
    _fits_magic(path)
    file_size = path.stat().st_size
    offset, index = 0, 0
    with open(path, "rb") as fh:
        while offset < file_size:
            fh.seek(offset)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # non-standard cards are not our concern here
                try:
                    hdr = fits.Header.fromfile(fh, endcard=True, padding=True)
                except (OSError, ValueError, EOFError) as exc:
                    if index == 0:
                        raise ValueError(f"{path}: unreadable FITS header ({exc})") from None
                    break  # trailing bytes after the last HDU
            data_start = fh.tell()
            dims = _dims(hdr, "", path, index)
            bitpix = _bitpix(hdr, "BITPIX", path, index)
            pcount, gcount = hdr.get("PCOUNT", 0), hdr.get("GCOUNT", 1)
            if not isinstance(pcount, (int, np.integer)) or not isinstance(gcount, (int, np.integer)) \
                    or pcount < 0 or gcount < 0:
                raise ValueError(f"{path}: HDU {index} has invalid PCOUNT/GCOUNT = {pcount!r}/{gcount!r}")
            npix = int(np.prod(dims, dtype=object)) if dims else 0
            data_bytes = abs(bitpix) // 8 * int(gcount) * (int(pcount) + npix) if dims else 0
            xt = str(hdr.get("XTENSION", "")).strip().upper()
            compressed = xt == "BINTABLE" and bool(hdr.get("ZIMAGE", False))
            if compressed:
                img_dims = _dims(hdr, "Z", path, index)
                img_bitpix = _bitpix(hdr, "ZBITPIX", path, index)
            else:
                img_dims, img_bitpix = dims, bitpix
            is_image = (index == 0 or xt == "IMAGE" or compressed) and len(img_dims) >= 2
            if is_image:
                img_pix = int(np.prod(img_dims, dtype=object))
                nbytes = img_pix * abs(img_bitpix) // 8
                if nbytes > max_bytes:
                    raise ValueError(f"{path}: header declares {'x'.join(map(str, img_dims))} pixels of BITPIX "
                                     f"{img_bitpix} = {nbytes} bytes, above the limit of {max_bytes}")
            if data_start + data_bytes > file_size:
                raise ValueError(f"{path}: truncated, HDU {index} data needs {data_start + data_bytes} bytes, "
                                 f"file has {file_size}")
            if is_image:
                if img_pix == 0:
                    raise ValueError(f"{path}: HDU {index} has an empty image {img_dims}")
                if any(d > 1 for d in img_dims[2:]):
                    raise ValueError(f"{path}: HDU {index} is a {len(img_dims)}-D cube {img_dims}, expected 2-D")
                return ImageInfo(index, (img_dims[1], img_dims[0]), img_bitpix, compressed, nbytes)
            offset = data_start + -(-data_bytes // 2880) * 2880
            index += 1
    raise ValueError(f"{path}: no 2-D image in the file")


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
