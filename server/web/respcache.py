"""A bounded in-process cache of encoded light-curve responses (the portal's read API).

A 100k-point light curve costs the database fetch alone ~0.2 s on SQLite and ~0.8 s on MariaDB here
(benchmarks/bench_portal.py), so a target page that is opened again, or by a second scientist, should not pay it
again. Entries are keyed by the request (target, band, format, columns, page) and by the version of the data: the
count and the largest id of the target's points in that band (one index-only query). Photometry rows are only ever
inserted or deleted (a re-run calibration deletes an observation's points and inserts new ones, with new ids), so
any change to the curve changes its version and the old entry is simply never asked for again; least recently used
entries go first once ``max_bytes`` is reached. The version also gives the response its ETag (a client sending
``If-None-Match`` gets 304).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Cached:
    body: bytes
    media_type: str
    headers: dict = field(default_factory=dict)


class ResponseCache:
    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache size must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[tuple, Cached] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def etag(key: tuple) -> str:
        return '"' + hashlib.sha256(repr(key).encode()).hexdigest()[:32] + '"'

    def get(self, key: tuple) -> Cached | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: tuple, entry: Cached) -> None:
        size = len(entry.body)
        if size > self.max_bytes:
            return  # larger than the whole cache: serve it, do not keep it
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old.body)
            self._entries[key] = entry
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted.body)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)
