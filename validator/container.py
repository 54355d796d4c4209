"""Opening an untrusted result file with bounded memory, and checking its zip container before anything is loaded.

A volunteer's ``result.npz`` is read only through :func:`open_untrusted`: the path must be a regular file (no link,
device or FIFO: a link to ``/dev/zero`` or ``/etc/passwd`` is refused without reading it), its size is checked with
``fstat`` on the open descriptor before a byte is read, and everything after that reads the same descriptor.

:func:`check_container` then decides from the zip's central directory and each member's ``.npy`` header alone:

* every member is ``NAME.npy``, stored or deflated (no encryption, no bzip2/lzma), no duplicates;
* the ``.npy`` header declares a plain dtype (numbers or text; object dtypes are pickles and are refused) and a
  shape; the member's declared uncompressed size must be exactly header + shape x itemsize;
* the declared sizes add up to at most ``max_expanded`` bytes (from the work unit's spec, see
  :func:`validator.checks.expanded_limit`), so a small zip that expands to gigabytes is refused before it is
  decompressed; a member that lies about its size cannot expand past the declared size (zipfile stops there) and
  fails its CRC;
* every member's CRC (streamed, a chunk at a time).

Only reading a header decompresses anything before these checks pass, and a header is at most a few kB.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

MAX_EXPANSION = 64            # uncompressed / max_nbytes when no spec gives a tighter bound
MAX_META_BYTES = 1 << 20      # the JSON meta member (0-d unicode array)
MAX_MEMBERS = 64
_MEMBER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\.npy$")
_CHUNK = 1 << 20


class InvalidResult(ValueError):
    """The result is malformed, implausible or not this work unit's: the validator says invalid."""


@contextlib.contextmanager
def open_untrusted(path: str | Path, max_nbytes: int) -> Iterator[BinaryIO]:
    """The file at ``path`` opened for reading, after checking on the descriptor that it is a regular file of
    1..``max_nbytes`` bytes. A symbolic link (as the last component), device, FIFO or directory is refused."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if path.is_symlink():
            raise InvalidResult(f"{path.name} is a symbolic link (to {os.readlink(path)!r}), not an uploaded "
                                "file: refused without reading it") from None
        raise InvalidResult(f"cannot open {path.name}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidResult(f"{path.name} is not a regular file (mode {stat.filemode(info.st_mode)}): refused")
        if info.st_size > max_nbytes:
            raise InvalidResult(f"{path.name} is {info.st_size} bytes, over the limit of {max_nbytes} for this kind")
        if info.st_size == 0:
            raise InvalidResult(f"{path.name} is empty")
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle


def sha256_of(handle: BinaryIO) -> str:
    """SHA-256 of an open file, read a chunk at a time (the position is restored to the start)."""
    digest = hashlib.sha256()
    handle.seek(0)
    for chunk in iter(lambda: handle.read(_CHUNK), b""):
        digest.update(chunk)
    handle.seek(0)
    return digest.hexdigest()


def check_container(source: str | Path | BinaryIO, max_nbytes: int, kind: str | None = None,
                    expected: set[str] | None = None, max_expanded: int | None = None,
                    label: str | None = None) -> dict[str, tuple]:
    """Refuse oversized, truncated, non-zip, pickled or bomb-like results before anything is loaded.

    ``source`` is a path (opened with :func:`open_untrusted`) or a file already opened that way. Returns
    ``{array name: (shape, dtype)}`` as the headers declare them."""
    if isinstance(source, (str, os.PathLike)):
        with open_untrusted(source, max_nbytes) as handle:
            return check_container(handle, max_nbytes, kind, expected, max_expanded, Path(source).name)
    name = label or "result"
    limit = MAX_EXPANSION * max_nbytes if max_expanded is None else int(max_expanded)
    source.seek(0, os.SEEK_END)
    size = source.tell()
    source.seek(0)
    declared: dict[str, tuple] = {}
    try:
        with zipfile.ZipFile(source) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_MEMBERS:
                raise InvalidResult(f"{name} has {len(infos)} members (at most {MAX_MEMBERS})")
            total = sum(i.file_size for i in infos)
            if total > limit:
                raise InvalidResult(f"{name} declares {total} uncompressed bytes (> {limit} for this work unit): "
                                    "refused as a zip bomb before decompressing")
            if sum(i.compress_size for i in infos) > size:
                raise InvalidResult(f"{name} declares more compressed bytes than the file holds: truncated or forged")
            for info in infos:
                _check_member_entry(info, name)
                if info.filename[:-4] in declared:
                    raise InvalidResult(f"{name} has duplicate member {info.filename!r}")
                with archive.open(info) as member:
                    shape, dtype = _check_npy_header(member, info)
                declared[info.filename[:-4]] = (shape, dtype)
            bad = archive.testzip()  # CRC of every member, streamed: catches truncation, corruption, lying sizes
            if bad is not None:
                raise InvalidResult(f"{name}: member {bad!r} is corrupt (CRC mismatch)")
    except zipfile.BadZipFile as exc:
        raise InvalidResult(f"{name} is not a readable npz (zip) file: {exc}") from None
    except (EOFError, OSError, zlib.error, zipfile.LargeZipFile, NotImplementedError, RuntimeError) as exc:
        raise InvalidResult(f"{name} is truncated or unreadable: {exc}") from None
    if "meta" not in declared:
        raise InvalidResult(f"{name} has no 'meta' member: not an openastro.result envelope")
    shape, dtype = declared["meta"]
    if shape != () or dtype.kind != "U" or dtype.itemsize > MAX_META_BYTES * 4:
        raise InvalidResult(f"{name}: 'meta' must be a 0-d string of at most {MAX_META_BYTES} characters, "
                            f"got {dtype} shape {shape}")
    if expected is not None:
        got = set(declared) - {"meta"}
        if got != expected:
            raise InvalidResult(f"{name}: a {kind} result holds arrays {sorted(expected)}, got "
                                f"missing {sorted(expected - got)}, unexpected {sorted(got - expected)}")
    source.seek(0)
    return declared


def _check_member_entry(info: zipfile.ZipInfo, name: str) -> None:
    if not _MEMBER_RE.match(info.filename):
        raise InvalidResult(f"{name} holds member {info.filename!r}, not a NAME.npy array")
    if info.flag_bits & 0x1:
        raise InvalidResult(f"{name}: member {info.filename!r} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise InvalidResult(f"{name}: member {info.filename!r} uses compression method {info.compress_type} "
                            "(only stored or deflated)")


def _check_npy_header(member, info: zipfile.ZipInfo) -> tuple[tuple, np.dtype]:
    label = info.filename
    try:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise InvalidResult(f"member {label!r} has unsupported npy version {version}")
        header_len = member.tell()
    except (ValueError, TypeError, SyntaxError) as exc:
        raise InvalidResult(f"member {label!r} is not a valid .npy array: {exc}") from None
    if dtype.hasobject:
        raise InvalidResult(f"member {label!r} has dtype {dtype} (Python objects = a pickle): refused")
    if dtype.kind not in "biufU" or dtype.fields is not None or dtype.subdtype is not None:
        raise InvalidResult(f"member {label!r} has dtype {dtype}; only numbers and text are allowed")
    if len(shape) > 3 or any(d < 0 for d in shape):
        raise InvalidResult(f"member {label!r} has shape {shape}: at most 3 non-negative dimensions")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if info.file_size != header_len + nbytes:
        raise InvalidResult(f"member {label!r} declares {info.file_size} bytes but its header says "
                            f"{header_len} + {nbytes} ({dtype} {shape}): forged sizes")
    return tuple(int(d) for d in shape), dtype
