"""Content-addressed object storage.

Objects are named by the SHA-256 of their bytes (``sha256/ab/cd/abcd...``). Writes go to a temporary file in
the store, are fsynced and renamed into place, so a reader never sees a partial object and a crash leaves at
most a stray temp file (removed by :meth:`LocalObjectStore.clean_temp`). An object is never overwritten: putting
the same bytes twice returns the same key.

:class:`ObjectStore` is the interface; the S3 backend (:mod:`server.core.storage_s3`) implements the same methods.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol

from app.atomic import atomic_write_bytes  # noqa: F401  (re-exported: server code writes through it)

CHUNK = 1 << 20


class StorageError(RuntimeError):
    """The store cannot be written or read (permissions, full disk, missing object, size limit)."""


class ObjectTooLarge(StorageError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"object exceeds the size limit of {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class StoredObject:
    key: str
    sha256: str
    size: int
    created: bool  # False when the content was already stored


class ObjectStore(Protocol):
    def put_file(self, path: str | os.PathLike[str]) -> StoredObject: ...
    def put_bytes(self, data: bytes) -> StoredObject: ...
    def put_stream(self, stream: BinaryIO, max_bytes: int | None = None) -> StoredObject: ...
    def open(self, key: str) -> BinaryIO: ...
    def exists(self, key: str) -> bool: ...
    def path(self, key: str) -> Path: ...
    def keys(self) -> Iterator[str]: ...
    def verify(self, key: str) -> bool: ...
    def delete(self, key: str) -> bool: ...
    def clean_temp(self, grace_s: float = 0.0) -> int: ...


TEMP_PREFIX = "put-"


def open_temp(tmp_dir: Path, prefix: str = TEMP_PREFIX) -> tuple[int, Path]:
    """A new temp file in the store's ``tmp/`` (fd, path), held with an exclusive ``flock`` for as long as the
    fd is open: :meth:`LocalObjectStore.clean_temp` never removes a file a live process still holds (the kernel
    drops the lock when the process dies, kill -9 included)."""
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix=prefix)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        Path(name).unlink(missing_ok=True)
        raise
    return fd, Path(name)


def key_for(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class LocalObjectStore:
    """The embedded default: a directory tree on the local filesystem."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        try:
            self._mkdirs(self.root / "tmp")
        except OSError as exc:
            raise StorageError(f"cannot create the object store at {self.root}: {exc.strerror}") from None
        if not os.access(self.root, os.W_OK) or not os.access(self.root / "tmp", os.W_OK):
            raise StorageError(
                f"the object store directory {self.root} is not writable: fix its permissions or set "
                "OPENASTRO_STORAGE_DIR to a writable directory"
            )

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    @staticmethod
    def _mkdirs(directory: Path) -> None:
        """``mkdir -p``, keeping a shared tree shared: when the nearest existing ancestor is setgid (the object
        store and var dir as docs/deploy.md sets them up: group-writable, setgid), new directories get its mode
        whatever the umask, so whoever runs an admin command (root, say), the directories stay writable for the
        group and BOINC's daemons (the project user) are not locked out."""
        missing = []
        d = Path(os.path.abspath(directory))
        while not d.exists() and d.parent != d:
            missing.append(d)
            d = d.parent
        Path(directory).mkdir(parents=True, exist_ok=True)
        mode = d.stat().st_mode
        if mode & stat.S_ISGID:
            for new in reversed(missing):
                with contextlib.suppress(OSError):  # a concurrent writer made it: its mode is right too
                    os.chmod(new, stat.S_IMODE(mode))

    # --- writing --------------------------------------------------------------------------------------

    def _commit(self, tmp_path: Path, sha: str, size: int) -> StoredObject:
        key = key_for(sha)
        final = self.root / key
        if final.exists():
            tmp_path.unlink(missing_ok=True)
            return StoredObject(key, sha, size, created=False)
        self._mkdirs(final.parent)
        os.chmod(tmp_path, 0o444)
        # os.link fails if the target appeared meanwhile (a concurrent put of the same bytes): never overwrite.
        try:
            os.link(tmp_path, final)
            created = True
        except FileExistsError:
            created = False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP):
                raise
            # Filesystems without hard links: rename (atomic; same content if it raced).
            os.replace(tmp_path, final)
            created = True
        tmp_path.unlink(missing_ok=True)
        _fsync_dir(final.parent)
        return StoredObject(key, sha, size, created=created)

    def put_stream(self, stream: BinaryIO, max_bytes: int | None = None) -> StoredObject:
        digest = hashlib.sha256()
        size = 0
        fd, tmp_path = open_temp(self.root / "tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    block = stream.read(CHUNK)
                    if not block:
                        break
                    size += len(block)
                    if max_bytes is not None and size > max_bytes:
                        raise ObjectTooLarge(max_bytes)
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
                return self._commit(tmp_path, digest.hexdigest(), size)  # still locked: clean_temp keeps off
        except OSError as exc:
            tmp_path.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageError(f"the object store at {self.root} is full (no space left on device)") from None
            if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise StorageError(f"cannot write to the object store at {self.root}: {exc.strerror}") from None
            raise
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise

    def put_file(self, path: str | os.PathLike[str]) -> StoredObject:
        try:
            with open(path, "rb") as fh:
                return self.put_stream(fh)
        except FileNotFoundError:
            raise StorageError(f"no such file: {os.fspath(path)!r}") from None

    def put_bytes(self, data: bytes) -> StoredObject:
        import io

        return self.put_stream(io.BytesIO(data))

    # --- reading --------------------------------------------------------------------------------------

    def path(self, key: str) -> Path:
        parts = key.split("/")
        if len(parts) != 4 or parts[0] != "sha256" or key_for(parts[3]) != key:
            raise ValueError(f"not a storage key: {key!r}")  # also: no path traversal through keys
        return self.root / key

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self.path(key), "rb")
        except FileNotFoundError:
            raise StorageError(f"object {key} is not in the store at {self.root}") from None

    def copy_to(self, key: str, dest: str | os.PathLike[str]) -> Path:
        """Copy an object out to ``dest`` atomically (temp + rename)."""
        return copy_object(self, key, dest)

    def keys(self) -> Iterator[str]:
        base = self.root / "sha256"
        if base.is_dir():
            for p in sorted(base.glob("*/*/*")):
                yield f"sha256/{p.parent.parent.name}/{p.parent.name}/{p.name}"

    def verify(self, key: str) -> bool:
        """True when the object's bytes still hash to its name."""
        return sha256_file(self.path(key)) == key.rsplit("/", 1)[1]

    def delete(self, key: str) -> bool:
        """Remove an object; False when it was not there. Only ``openastro store check --repair`` and a failed
        ingest's clean-up call this (objects are otherwise immutable)."""
        path = self.path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(f"cannot delete {key} from the object store at {self.root}: {exc.strerror}") from None
        _fsync_dir(path.parent)
        return True

    def clean_temp(self, grace_s: float = 0.0) -> int:
        """Remove temp files left by crashed writers (see :func:`remove_stale_temp`); how many were removed."""
        return remove_stale_temp(self.root / "tmp", grace_s)


def copy_object(store: ObjectStore, key: str, dest: str | os.PathLike[str]) -> Path:
    """Copy an object of ``store`` out to ``dest`` atomically (temp file beside it + rename)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=".copy-")
    try:
        with os.fdopen(fd, "wb") as out, store.open(key) as src:
            shutil.copyfileobj(src, out, CHUNK)
        os.replace(name, dest)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return dest


def remove_stale_temp(tmp_dir: Path, grace_s: float = 0.0, prefixes: tuple[str, ...] = (TEMP_PREFIX,)) -> int:
    """Remove the temp files in ``tmp_dir`` that no live process holds (``flock``, see :func:`open_temp`) and that
    were last modified more than ``grace_s`` seconds ago. Returns how many were removed."""
    removed = 0
    cutoff = time.time() - grace_s
    for p in (p for prefix in prefixes for p in tmp_dir.glob(f"{prefix}*")):
        try:
            if p.stat().st_mtime > cutoff:
                continue
            fd = os.open(p, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer holds it
            p.unlink(missing_ok=True)
            removed += 1
        finally:
            os.close(fd)
    return removed


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
