"""The application object: resolved settings plus the database and object store built from them.

``cli.py -> OpenAstro -> storage/db`` (the datasette layering): commands get this object, never globals.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any, Callable

from server.core.db import Database
from server.core.settings import Settings, load_settings
from server.core.storage import LocalObjectStore, ObjectStore

log = logging.getLogger("openastro")


class OpenAstro:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else load_settings()
        # Called with each IngestResult that created an observation (the reactive pipeline subscribes here).
        self.ingest_listeners: list[Callable[[Any], None]] = []

    def notify_ingested(self, result: Any) -> None:
        """Pass a new observation to the listeners. A listener's failure (say, the broker is down) is logged, not
        raised: the observation is stored, and `openastro pipeline process` picks up what was not queued."""
        for listener in list(self.ingest_listeners):
            try:
                listener(result)
            except Exception:  # noqa: BLE001 - the ingest itself succeeded; a lost trigger is recoverable
                logging.getLogger("openastro.ingest").exception(
                    "ingest listener %r failed for observation %s", listener, getattr(result, "observation_id", "?"))

    @cached_property
    def db(self) -> Database:
        return Database(self.settings.resolved_database_url)

    @cached_property
    def store(self) -> ObjectStore:
        """The local store (default) or, when ``storage_url`` is set, the S3 store. Opening it removes the local
        temp files that crashed writers left behind (older than ``store_temp_grace_s`` and held by no live
        process), so every command, and the API at start-up, begins with a clean ``tmp/``."""
        if self.settings.storage_url:
            from server.core.storage_s3 import open_s3_store

            store = open_s3_store(self.settings)
        else:
            store = LocalObjectStore(self.settings.resolved_storage_dir)
        removed = store.clean_temp(float(self.settings.store_temp_grace_s))
        if removed:
            log.info("removed %d temp file(s) left in %s by an interrupted write", removed, store)
        return store

    @property
    def var_dir(self):
        from pathlib import Path

        path = Path(self.settings.var_dir).absolute()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def work_dir(self, name: str):
        path = self.var_dir / "work" / name
        path.mkdir(parents=True, exist_ok=True)
        return path
