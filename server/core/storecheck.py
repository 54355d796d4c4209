"""Does the object store agree with the database? (``openastro store check [--repair]``)

Three kinds of disagreement, each the trace of a crash or of damage:

* **orphan**: an object no database row refers to (a process killed between putting the object and committing
  its row). Repair deletes it: nothing can reach it, and re-sending the file stores it again.
* **missing**: a row refers to a key the store does not hold (a lost or deleted object). Repair, in the same
  transaction as everything else:

  - an observation's raw file (``observations.storage_key``): the row and everything derived from it are kept
    and the observation is marked ``status = "object_missing"``; sending the same file again restores the object
    and the status (ingest's dedup path);
  - a derived product (solved frame, light curve, periodogram, stack image, result file, posterior): the key
    column is set to NULL, which is what the stage that makes it sees before it ran: re-run that stage.
  - a key inside a JSON column (e.g. MPC records, campaign frame lists) cannot be cut out safely: it is reported
    and left for a person (``repairable = False``).
* **corrupt**: an object whose bytes no longer hash to its name. Repair deletes it and treats its references as
  missing (above).

Written against the store's interface only (``keys()``, ``exists()``, ``verify()``, ``delete()``), so it checks
any backend. The database changes happen in ONE transaction, before any object is deleted; an object is deleted
only after the rows that referred to it are committed (a crash in between leaves an orphan for the next check).
Run ``--repair`` while nothing ingests: an ingest puts its object a moment before it commits its row, and in that
moment the object looks like an orphan (each orphan is re-checked just before it is deleted, which narrows but
cannot close that window).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from sqlalchemy import select, update

from server.core.db.models import (
    Base,
    LightCurve,
    Observation,
    Periodogram,
    Posterior,
    Result,
    Stack,
    TransientAlert,
    TransientCandidate,
    TransientReference,
)

OBJECT_MISSING = "object_missing"  # Observation.status when its raw object is gone (set by repair)
KEY_PATTERN = re.compile(r"^sha256/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}$")

# Every column that holds one object key. tests/test_store_check.py checks that no `*_key` column is missing here.
KEY_COLUMNS: tuple[tuple[type, str], ...] = (
    (Observation, "storage_key"),
    (Observation, "solved_storage_key"),
    (LightCurve, "storage_key"),
    (Periodogram, "storage_key"),
    (Stack, "stacked_key"),
    (Stack, "uncertainty_key"),
    (Stack, "coverage_key"),
    (Result, "storage_key"),
    (Posterior, "storage_key"),
    (TransientReference, "image_key"),
    (TransientReference, "uncertainty_key"),
    (TransientReference, "coverage_key"),
    (TransientCandidate, "triplet_key"),
    (TransientAlert, "avro_key"),
    (TransientAlert, "voevent_key"),
)


@dataclass(frozen=True)
class Reference:
    table: str
    row_id: int
    column: str  # a key column, or the JSON column the key was found in
    key: str

    @property
    def repairable(self) -> bool:
        return any(m.__tablename__ == self.table and c == self.column for m, c in KEY_COLUMNS)

    def __str__(self) -> str:
        return f"{self.table} #{self.row_id} {self.column} -> {self.key}"


@dataclass(frozen=True)
class StoreReport:
    n_objects: int
    n_references: int
    orphans: tuple[str, ...]
    missing: tuple[Reference, ...]  # rows referring to keys the store does not hold (corrupt ones excluded)
    corrupt: tuple[str, ...]  # objects whose bytes do not match their name
    corrupt_refs: tuple[Reference, ...]  # rows referring to corrupt objects
    marked_missing: tuple[int, ...]  # observation ids already marked object_missing (not a new problem)
    verified: bool

    @property
    def clean(self) -> bool:
        return not (self.orphans or self.missing or self.corrupt)


@dataclass(frozen=True)
class RepairOutcome:
    deleted: tuple[str, ...]  # orphan and corrupt objects removed
    marked: tuple[Reference, ...]  # rows changed (status marked or key set to NULL)
    left: tuple[Reference, ...] = field(default=())  # references repair cannot fix (keys inside JSON)


def _keys_in(value: Any) -> Iterator[str]:
    """Object keys anywhere inside a JSON value (strings that look exactly like keys)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if KEY_PATTERN.match(item):
                yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def references(session) -> list[Reference]:
    """Every reference from the database to an object: the key columns, and keys inside any JSON column."""
    from sqlalchemy import JSON

    refs: list[Reference] = []
    for model, column in KEY_COLUMNS:
        col = getattr(model, column)
        for row_id, key in session.execute(select(model.id, col).where(col.is_not(None))):
            refs.append(Reference(model.__tablename__, row_id, column, key))
    for mapper in Base.registry.mappers:
        model = mapper.class_
        json_columns = [c for c in mapper.columns if isinstance(c.type, JSON)]
        if not json_columns or "id" not in mapper.columns:
            continue
        for row in session.execute(select(model.id, *json_columns)).yield_per(500):
            for col, value in zip(json_columns, row[1:]):
                for key in set(_keys_in(value)):
                    refs.append(Reference(model.__tablename__, row[0], col.key, key))
    return refs


def check_store(db, store, *, verify: bool = True) -> StoreReport:
    """Compare the store with the database (read-only). ``verify`` re-hashes every object (reads all bytes)."""
    with db.session() as s:
        refs = references(s)
        marked = tuple(s.scalars(select(Observation.id).where(Observation.status == OBJECT_MISSING)))
    keys = list(store.keys())
    held = set(keys)
    referenced = {r.key for r in refs}
    corrupt = tuple(k for k in keys if verify and not store.verify(k))
    bad = set(corrupt)
    marked_set = set(marked)
    missing, corrupt_refs = [], []
    for ref in refs:
        if ref.key in bad:
            corrupt_refs.append(ref)
        elif ref.key not in held and not store.exists(ref.key):
            if ref.table == "observations" and ref.column == "storage_key" and ref.row_id in marked_set:
                continue  # already marked; re-sending the file restores it
            missing.append(ref)
    orphans = tuple(k for k in keys if k not in referenced and k not in bad)
    return StoreReport(len(keys), len(refs), orphans, tuple(missing), corrupt, tuple(corrupt_refs), marked,
                       verify)


def _mark(session, ref: Reference) -> None:
    model = next(m for m, c in KEY_COLUMNS if m.__tablename__ == ref.table and c == ref.column)
    if model is Observation and ref.column == "storage_key":
        session.execute(update(Observation).where(Observation.id == ref.row_id).values(status=OBJECT_MISSING))
    else:
        column = getattr(model, ref.column)
        session.execute(update(model).where(model.id == ref.row_id, column == ref.key).values({ref.column: None}))


def repair_store(db, store, report: StoreReport) -> RepairOutcome:
    """Fix what ``report`` found: rows first (one transaction), then delete orphan and corrupt objects."""
    fixable = [r for r in (*report.missing, *report.corrupt_refs) if r.repairable]
    left = tuple(r for r in (*report.missing, *report.corrupt_refs) if not r.repairable)
    with db.session() as s:  # one transaction: commits on leaving the block, rolls back on an error
        for ref in fixable:
            _mark(s, ref)
    deleted: list[str] = []
    for key in report.corrupt:
        if store.delete(key):
            deleted.append(key)
    if report.orphans:
        with db.session() as s:  # re-check: a row may have appeared since the report (a concurrent ingest)
            now_referenced = {r.key for r in references(s)}
        for key in report.orphans:
            if key not in now_referenced and store.delete(key):
                deleted.append(key)
    return RepairOutcome(tuple(deleted), tuple(fixable), left)


__all__ = ["OBJECT_MISSING", "KEY_COLUMNS", "Reference", "StoreReport", "RepairOutcome", "references",
           "check_store", "repair_store"]
