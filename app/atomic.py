"""Atomic file writes: everything is written to a temp file beside the target, fsynced, then renamed into place.

A reader (or a restarted process) sees either the old file or the complete new one, never a partial write; a
failure or a kill leaves at most a stray hidden temp file. Shared by the volunteer app and the server.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Iterator


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux: /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file (0666 less the umask)."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], mode: int | None = None) -> Iterator[str]:
    """Yield a temp path (same directory and extension as ``path``) to write; on success it replaces ``path``.

    The file gets ``mode``, by default the mode a plain ``open()`` would give it (0666 less the umask), not
    mkstemp's 0600: other users' programs (a web server's CGI, BOINC's daemons) read what we write.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    name = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=os.path.splitext(name)[1] or ".tmp", dir=directory)
    os.fchmod(fd, default_file_mode() if mode is None else mode)
    os.close(fd)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", *, file_mode: int | None = None,
                **kwargs) -> Iterator[IO]:
    """``open`` for writing, atomically: the file appears at ``path`` only when the block succeeds."""
    with atomic_path(path, file_mode) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int | None = None) -> None:
    with atomic_open(path, "wb", file_mode=mode) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    with atomic_open(path, "w", encoding=encoding) as fh:
        fh.write(text)
