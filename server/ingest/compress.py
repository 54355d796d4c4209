"""Lossless RICE tile compression of integer raw frames, in the fpack format, with the exact original reproducible.

A raw frame that is one integer image (BITPIX 8, 16 or 32; no scaling other than the unsigned-integer offsets)
is stored as an fpack-style file: an empty primary HDU and a ``COMPRESSED_IMAGE`` extension (astropy's
``CompImageHDU``, ``RICE_1``, one row per tile), which astropy, CFITSIO/funpack, ds9 and our readers
(``server.image.fitsimage.open_image`` takes the first image HDU) all decompress to the same pixel values and
header keywords. Compression of integers is lossless; floats are never compressed (RICE on floats quantizes).

The original file's identity stays recorded twice: the observation row keeps the original's ``sha256`` and
``size_bytes`` (its ``storage_key`` names the compressed object), and the compressed file's primary header keeps

* ``OA_OSHA``  - SHA-256 of the original file,
* ``OA_OSIZE`` - its size in bytes,
* ``OA_OHDR``  - the original primary header's card images, zlib-compressed and URL-safe base64-encoded (a long
  string, FITS CONTINUE convention; encoded because card images hold quotes and slashes that a long string
  value cannot carry verbatim through every reader).

:func:`restore_original` rebuilds the original bytes from those cards and the decompressed raw integers, and
checks them against ``OA_OSHA``. :func:`rice_compress` runs that restore before it hands the compressed file
out, so a frame is only ever stored compressed when its exact original is reproducible; any other frame (an
odd header layout, trailing bytes, extensions, floats, BSCALE) is stored as it came.
"""

from __future__ import annotations

import base64
import hashlib
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from server.core.storage import StoredObject, open_temp

CARD = 80
BLOCK = 2880
SHA_KEY, SIZE_KEY, HEADER_KEY = "OA_OSHA", "OA_OSIZE", "OA_OHDR"
_RAW_DTYPE = {8: ">u1", 16: ">i2", 32: ">i4"}  # on-disk integer type per BITPIX (RICE_1 takes these)
_UNSIGNED_OFFSET = {8: -128, 16: 32768, 32: 2147483648}


@dataclass(frozen=True)
class Compression:
    """Outcome of :func:`rice_compress`: the compressed file, or None and the reason it was not compressed."""

    path: Path | None
    reason: str  # "RICE_1" when compressed
    original_sha256: str
    original_size: int
    compressed_size: int | None = None

    @property
    def ratio(self) -> float | None:
        return self.original_size / self.compressed_size if self.compressed_size else None


def _header_end(raw: bytes) -> int | None:
    """Offset just past the END card of the first header (None: no END card on a card boundary)."""
    for offset in range(0, len(raw) - CARD + 1, CARD):
        card = raw[offset:offset + CARD]
        if card[:8] == b"END     ":
            return offset + CARD
    return None


def _not_compressible(raw: bytes, hdul) -> str | None:
    if len(hdul) != 1:
        return f"{len(hdul)} HDUs (only single-image files are compressed)"
    header = hdul[0].header
    bitpix, naxis = header.get("BITPIX"), header.get("NAXIS", 0)
    if bitpix not in _RAW_DTYPE:
        return f"BITPIX {bitpix} is not an 8/16/32-bit integer image"
    if naxis != 2:
        return f"NAXIS {naxis} (only 2-D images are compressed)"
    if header.get("BSCALE", 1) != 1 or header.get("BZERO", 0) not in (0, _UNSIGNED_OFFSET[bitpix]):
        return "scaled integers (BSCALE/BZERO) would not decompress to the same stored values"
    if _header_end(raw) is None:
        return "no END card on a card boundary"
    if not all(32 <= b <= 126 for b in raw[:_header_end(raw)]):
        return "non-ASCII bytes in the header"
    return None


def _encode_header(cards: bytes) -> str:
    return base64.urlsafe_b64encode(zlib.compress(cards, 9)).decode("ascii")


def _decode_header(text: str) -> bytes:
    try:
        return zlib.decompress(base64.urlsafe_b64decode(text.encode("ascii")), bufsize=BLOCK)
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"the {HEADER_KEY} card does not hold an encoded header ({exc})") from None


def rice_compress(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Compression:
    """Write the RICE-compressed form of ``src`` to ``dest`` when the exact original is reproducible from it.

    Returns a :class:`Compression`; when ``path`` is None nothing was written and ``reason`` says why.
    """
    from astropy.io import fits

    src, dest = Path(src), Path(dest)
    raw = src.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()

    def skip(reason: str) -> Compression:
        dest.unlink(missing_ok=True)
        return Compression(None, reason, sha, len(raw))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a non-standard card is the verification's business, not ours
            with fits.open(src, memmap=False) as hdul:
                reason = _not_compressible(raw, hdul)
                if reason is not None:
                    return skip(reason)
                data, header = hdul[0].data, hdul[0].header
                if data is None or data.dtype.kind not in "iu":
                    return skip("the image data are not integers")
                primary = fits.PrimaryHDU()
                primary.header[SHA_KEY] = (sha, "SHA-256 of the original file")
                primary.header[SIZE_KEY] = (len(raw), "size of the original file, bytes")
                primary.header[HEADER_KEY] = _encode_header(raw[:_header_end(raw)])
                packed = fits.CompImageHDU(data=data, header=header, compression_type="RICE_1")
                fits.HDUList([primary, packed]).writeto(dest, overwrite=True, checksum=False)
        restored = original_bytes(dest)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        return skip(f"cannot compress: {type(exc).__name__}: {exc}")
    if hashlib.sha256(restored).hexdigest() != sha:
        return skip("the original would not be reproduced byte for byte")
    return Compression(dest, "RICE_1", sha, len(raw), dest.stat().st_size)


def is_compressed_original(path: str | os.PathLike[str]) -> bool:
    """True for a file written by :func:`rice_compress` (it carries the original's checksum)."""
    from astropy.io import fits

    try:
        return SHA_KEY in fits.getheader(path, 0)
    except (OSError, ValueError):
        return False


def original_bytes(path: str | os.PathLike[str]) -> bytes:
    """The original file's exact bytes, rebuilt from a file written by :func:`rice_compress` (not checked)."""
    from astropy.io import fits

    with fits.open(path, memmap=False, do_not_scale_image_data=True) as hdul:
        if SHA_KEY not in hdul[0].header or len(hdul) != 2:
            raise ValueError(f"{path}: not a RICE-compressed original (no {SHA_KEY} in the primary header)")
        head = _decode_header(str(hdul[0].header[HEADER_KEY]))
        packed = hdul[1]
        bitpix = int(packed.header["BITPIX"])
        data = np.ascontiguousarray(packed.data).astype(_RAW_DTYPE[bitpix], copy=False).tobytes()
    head += b" " * (-len(head) % BLOCK)
    return head + data + b"\0" * (-len(data) % BLOCK)


def restore_original(path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Write the exact original of a compressed frame to ``dest`` (atomically); ValueError if it does not hash
    to the recorded ``OA_OSHA``."""
    from astropy.io import fits

    from app.atomic import atomic_write_bytes

    expected = fits.getheader(path, 0).get(SHA_KEY)
    data = original_bytes(path)
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        raise ValueError(f"{path}: the restored original hashes to {got}, not the recorded {expected}")
    atomic_write_bytes(Path(dest), data)
    return Path(dest)


def store_raw(store, path: str | os.PathLike[str], fmt: str, *, compress: bool) -> StoredObject:
    """Put a raw file in the store: integer FITS frames RICE-compressed when ``compress`` (and reproducible).

    The result's ``key`` names the stored object; its ``sha256`` and ``size`` are the ORIGINAL file's (what the
    observation records and deduplicates on), so a caller cannot tell the two forms apart except by the key.
    """
    if not (compress and fmt == "fits"):
        return store.put_file(path)
    fd, tmp = open_temp(store.root / "tmp", prefix="put-rice-")  # held (flock) until stored: clean_temp skips it
    try:
        result = rice_compress(path, tmp)
        if result.path is None:
            return store.put_file(path)
        stored = store.put_file(result.path)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)
    return StoredObject(stored.key, result.original_sha256, result.original_size, stored.created)
