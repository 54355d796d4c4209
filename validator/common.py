"""What the validator programs share: settings from the environment, the work unit behind a file, logging.

The programs run as BOINC runs them: ``../bin/NAME PATH...`` from ``PROJECT/tmp_HOST`` with the daemons'
environment; the launcher in ``bin/`` sets ``OPENASTRO_CONFIG`` (see ``openastro boinc install``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from server.core.boinc_contract import MAX_ROWS_PER_RUN, parse_upload_name, templates_for
from server.core.db import DatabaseError
from server.core.settings import SettingsError
from validator.checks import CheckedResult, InvalidResult, check_result


class Transient(RuntimeError):
    """A problem that may go away (database unreachable, settings unreadable): exit 3, BOINC retries."""


TRANSIENT_ERRORS = (DatabaseError, SQLAlchemyError, SettingsError, OSError)


def log(program: str, message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    sys.stderr.write(f"{stamp} [{program}] {message}\n")
    sys.stderr.flush()


def open_app():
    from server.core.context import OpenAstro
    from server.core.settings import load_settings

    try:
        app = OpenAstro(load_settings())
        app.db.check_connection()
    except TRANSIENT_ERRORS as exc:
        raise Transient(f"cannot open the OpenAstro database/settings: {exc}") from None
    return app


@dataclass(frozen=True)
class WorkUnitInfo:
    id: int
    name: str
    kind: str
    spec: dict
    quorum: int
    max_nbytes: int
    campaign_id: int

    @classmethod
    def from_row(cls, wu) -> "WorkUnitInfo":
        quorum = int((wu.input_files or {}).get("quorum", 2))
        return cls(wu.id, wu.name, wu.kind, dict(wu.spec), quorum, templates_for(wu.kind, quorum).max_nbytes,
                   wu.campaign_id)


def work_unit_for_file(app, path: str | Path) -> tuple[WorkUnitInfo, str]:
    """(work unit, result name) of an uploaded output file, from its server-given name."""
    from server.core.db.models import WorkUnit

    upload = parse_upload_name(Path(path).name)
    try:
        with app.db.session() as session:
            wu = session.scalars(select(WorkUnit).where(WorkUnit.name == upload.wu_name)).first()
            if wu is None:
                raise LookupError(f"no work unit named {upload.wu_name!r} in the OpenAstro database")
            info = WorkUnitInfo.from_row(wu)
    except TRANSIENT_ERRORS as exc:
        raise Transient(f"database error looking up {upload.wu_name!r}: {exc}") from None
    return info, upload.result_name


def check_upload(wu: WorkUnitInfo, path: str | Path) -> CheckedResult:
    """Every check of one uploaded result against its work unit: the one call the init script, the compare
    script and the assimilator all make (raises :class:`validator.checks.InvalidResult`)."""
    if wu.spec.get("kind") != wu.kind:
        raise InvalidResult(f"work unit {wu.name} is a {wu.kind} but its spec says {wu.spec.get('kind')!r}")
    return check_result(path, wu.spec, wu.max_nbytes, max_rows=MAX_ROWS_PER_RUN, wu_name=wu.name)


def record_validation(app, wu: WorkUnitInfo, result_name: str, sha256: str | None, valid: bool, reason: str,
                      summary: dict[str, Any] | None) -> None:
    from server.core.db.models import Result

    try:
        with app.db.session() as session:
            row = session.scalars(select(Result).where(Result.name == result_name)).first()
            if row is None:
                row = Result(work_unit_id=wu.id, name=result_name)
                session.add(row)
            row.validate_state = "valid" if valid else "invalid"
            row.invalid_reason = None if valid else reason[:2000]
            row.summary = _plain(summary) if summary else None
            row.sha256 = sha256
    except TRANSIENT_ERRORS as exc:
        raise Transient(f"database error recording {result_name}: {exc}") from None


def _plain(obj):
    """JSON-safe copy (NaN/inf -> None) for DB JSON columns."""
    import math

    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return _plain(obj.item())
    return obj
