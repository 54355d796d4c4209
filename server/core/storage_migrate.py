"""Copy every object of one store into another (local -> S3): resumable, verified, idempotent.

Keys are content hashes, so the destination gets the same keys and the database needs no change: after the
copy, point ``OPENASTRO_STORAGE_URL`` at the destination. For each key of the source, in key order:

* already in the destination (same size; with ``verify_existing`` also re-hashed there) -> ``present``;
* the source copy no longer hashes to its name -> ``corrupt`` (reported, never copied);
* otherwise uploaded with the destination's own checks (SHA-256 on the wire, size and hash after the upload)
  -> ``copied``.

An interrupted run leaves every finished object in place and at most one incomplete multipart upload, which the
next run resumes; running again after a complete run copies nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from server.core.storage import StorageError, sha256_file


@dataclass(frozen=True)
class MigrationReport:
    total: int
    copied: int
    present: int
    bytes_copied: int
    corrupt: tuple[str, ...]

    def summary(self, destination: str) -> str:
        line = (f"{self.total} objects -> {destination}: {self.copied} copied ({self.bytes_copied} bytes), "
                f"{self.present} already there")
        if self.corrupt:
            line += f", {len(self.corrupt)} corrupt in the source and NOT copied: " + ", ".join(self.corrupt[:10])
        return line


def migrate_store(source, dest, *, verify_existing: bool = False,
                  progress: Callable[[str, str], None] | None = None) -> MigrationReport:
    """Copy ``source``'s objects into ``dest``; ``progress(key, status)`` after each one."""
    if repr(source) == repr(dest):
        raise ValueError(f"source and destination are the same store: {source!r}")
    keys = list(source.keys())
    copied = present = nbytes = 0
    corrupt: list[str] = []
    for key in keys:
        sha = key.rsplit("/", 1)[1]
        if dest.exists(key) and (not verify_existing or dest.verify(key)):
            status = "present"
            present += 1
        else:
            if dest.exists(key):  # only with verify_existing: a bad copy at the destination is replaced
                dest.delete(key)
            local = source.path(key)
            if sha256_file(local) != sha:
                status = "corrupt"
                corrupt.append(key)
            else:
                stored = dest.put_file(local)
                if stored.key != key:
                    raise StorageError(f"{key} changed while it was copied (now {stored.key})")
                status = "copied" if stored.created else "present"
                copied += stored.created
                present += not stored.created
                nbytes += stored.size if stored.created else 0
        if progress is not None:
            progress(key, status)
    return MigrationReport(len(keys), copied, present, nbytes, tuple(corrupt))
