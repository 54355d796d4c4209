"""``openastro-assimilate``: script_assimilator's script.

Called as BOINC calls it with the bare name, from ``PROJECT/tmp_HOST``:

* success: ``../bin/openastro-assimilate WU_ID PATH...`` (the canonical result's output files);
* failure: ``../bin/openastro-assimilate --error ERROR_MASK WU_NAME WU_ID BATCH_ID``.

A non-zero exit makes BOINC's assimilator daemon log "handler error" and exit, leaving the work unit
unassimilated until an admin restarts it. So every *expected* failure (unknown work unit, unreadable file,
a failed work unit, a refused result) is recorded in the database and the program exits 0; it is idempotent (the same work
unit may be handed over again after a restart) and copies from ``upload/``, never moves.

The canonical result is merged only when the validator recorded that very file (by SHA-256) ``valid`` and it
passes every init check again here; otherwise it is refused: the Result row says ``invalid`` with the reason,
the campaign's ``errors`` list names it, and the work unit is left unmerged (state ``error``).

If the database is unreachable, nothing can be recorded: the call is written to a spool directory
(``VAR_DIR/assimilator-spool``, the files copied beside it) and replayed by the next call that reaches the
database, and the program exits 0. A bug (an unexpected exception) still exits non-zero, loudly.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from server.core.boinc_contract import ERROR_MASK_BITS, parse_upload_name
from server.core.db.models import Campaign, Result, WorkUnit, utcnow
from server.core.storage import ObjectTooLarge
from validator.checks import InvalidResult
from validator.container import open_untrusted
from validator.common import TRANSIENT_ERRORS, Transient, WorkUnitInfo, check_upload, log, open_app

PROGRAM = "openastro-assimilate"
SPOOL_DIR = "assimilator-spool"


def describe_mask(mask: int) -> str:
    parts = [text for bit, text in ERROR_MASK_BITS.items() if mask & bit]
    return ", ".join(parts) or f"mask {mask}"


def _campaign_progress(session, campaign: Campaign) -> dict:
    counts = dict(session.execute(select(WorkUnit.state, func.count()).where(WorkUnit.campaign_id == campaign.id)
                                  .group_by(WorkUnit.state)).all())
    return {state: int(n) for state, n in counts.items()}


def _after_change(app, session, campaign: Campaign, changed_bin: int | None = None) -> None:
    """Rebuild the campaign's products and status after a work unit of ``changed_bin`` finished or failed."""
    summary = dict(campaign.summary or {})
    if campaign.kind == "ttv":
        from assimilator.ttv import rebuild_campaign_posterior

        changed = None if changed_bin is None else {int(changed_bin)}
        summary.update(rebuild_campaign_posterior(app, session, campaign, changed))
    elif campaign.kind == "stack":
        from assimilator.tiles import update_stack

        summary.update(update_stack(app, session, campaign))
    progress = _campaign_progress(session, campaign)
    summary["work_units"] = progress
    open_states = {"created", "sent"}
    if campaign.kind == "ttv" and campaign.status != "cancelled" and not any(progress.get(s, 0) for s in open_states):
        from assimilator.ttv import plan_reruns

        added = plan_reruns(campaign, summary)
        if added:
            summary.setdefault("reruns_planned", []).extend(added)
            campaign.status = "running"  # the work generator's next pass creates the reruns' work units
            campaign.summary = json.loads(json.dumps(summary, default=float))
            return
    if campaign.status not in ("cancelled",) and not any(progress.get(s, 0) for s in open_states):
        campaign.status = "done" if progress.get("done", 0) else "failed"
    campaign.summary = json.loads(json.dumps(summary, default=float))


def _refuse(app, session, wu: WorkUnit, boinc_wu_id: int, result_name: str, reason: str) -> str:
    """Record a refused canonical result (on its Result row and in the campaign's errors) and leave the work
    unit unmerged: state ``error``, no canonical result, nothing added to any posterior."""
    result = session.scalars(select(Result).where(Result.name == result_name)).first()
    if result is None:
        result = Result(work_unit_id=wu.id, name=result_name)
        session.add(result)
    result.validate_state = "invalid"
    result.invalid_reason = f"refused by the assimilator: {reason}"[:2000]
    wu.state, wu.assimilated_at, wu.canonical_result_id = "error", utcnow(), None
    campaign = wu.campaign
    errors = [e for e in (campaign.summary or {}).get("errors", []) if e.get("wu") != wu.name]
    errors.append({"wu": wu.name, "boinc_wu_id": boinc_wu_id, "result": result_name, "error_mask": wu.error_mask,
                   "reason": f"canonical result refused: {reason}"[:500]})
    campaign.summary = {**(campaign.summary or {}), "errors": errors}
    session.flush()
    _after_change(app, session, campaign, wu.bin_index)
    return f"REFUSED {result_name} of {wu.name}: {reason}; recorded, work unit left unmerged"


def assimilate_success(app, boinc_wu_id: int, paths: list[str]) -> str:
    """Merge the canonical result, but only a result the validator recorded ``valid`` for this very file, and
    only after every init check passes again here (``validator.common.check_upload``): the assimilator is the
    second line of defence, so a result it is handed directly, or one recorded invalid, never reaches a posterior."""
    if not paths:
        return "no output files given: nothing to assimilate (check the daemon uses the bare script name)"
    upload = parse_upload_name(Path(paths[0]).name)
    with app.db.session() as session:
        wu = session.scalars(select(WorkUnit).where(WorkUnit.name == upload.wu_name)).first()
        if wu is None:
            return f"work unit {upload.wu_name!r} (BOINC id {boinc_wu_id}) is not in the OpenAstro database; ignored"
        wu.boinc_wu_id = boinc_wu_id
        if wu.assimilated_at is not None and wu.state == "done":
            return f"{wu.name} already assimilated; nothing to do"
        if wu.state == "cancelled":
            wu.assimilated_at = utcnow()
            return f"{wu.name} belongs to a cancelled campaign; result not used"
        result = session.scalars(select(Result).where(Result.name == upload.result_name)).first()
        if result is None or result.validate_state != "valid":
            state = "not recorded by the validator" if result is None else f"recorded {result.validate_state}"
            why = f" ({result.invalid_reason})" if result is not None and result.invalid_reason else ""
            return _refuse(app, session, wu, boinc_wu_id, upload.result_name,
                           f"result {upload.result_name} is {state}{why}, not valid")
        info = WorkUnitInfo.from_row(wu)
        try:
            checked = check_upload(info, paths[0])
            with open_untrusted(paths[0], info.max_nbytes) as handle:
                stored = app.store.put_stream(handle, max_bytes=info.max_nbytes)  # a copy: upload/ stays as is
        except (InvalidResult, ObjectTooLarge) as exc:
            return _refuse(app, session, wu, boinc_wu_id, upload.result_name, str(exc))
        if result.sha256 and result.sha256 != checked.sha256:
            return _refuse(app, session, wu, boinc_wu_id, upload.result_name,
                           f"file SHA-256 {checked.sha256[:12]}... is not the {result.sha256[:12]}... the validator "
                           "accepted")
        if stored.sha256 != checked.sha256:
            return _refuse(app, session, wu, boinc_wu_id, upload.result_name,
                           "the file changed while it was being checked")
        result.storage_key, result.sha256 = stored.key, stored.sha256
        session.flush()
        wu.canonical_result_id = result.id
        wu.state, wu.assimilated_at = "done", utcnow()
        session.flush()
        _after_change(app, session, wu.campaign, wu.bin_index)
        return f"assimilated {wu.name} (result {upload.result_name}, {stored.size} bytes as {stored.key})"


def assimilate_error(app, mask: int, wu_name: str, boinc_wu_id: int, batch_id: int) -> str:
    with app.db.session() as session:
        wu = session.scalars(select(WorkUnit).where(WorkUnit.name == wu_name)).first()
        if wu is None:
            return f"failed work unit {wu_name!r} (BOINC id {boinc_wu_id}) is not in the OpenAstro database; ignored"
        wu.boinc_wu_id = boinc_wu_id
        if wu.state in ("error", "cancelled") and wu.error_mask == mask and wu.assimilated_at is not None:
            return f"{wu_name} failure already recorded"
        wu.state = "cancelled" if mask & 16 else "error"  # 16: cancelled by the project, not a failure
        wu.error_mask, wu.assimilated_at = mask, utcnow()
        campaign = wu.campaign
        errors = list((campaign.summary or {}).get("errors", []))
        errors = [e for e in errors if e.get("wu") != wu_name]
        errors.append({"wu": wu_name, "boinc_wu_id": boinc_wu_id, "batch": batch_id, "error_mask": mask,
                       "reason": describe_mask(mask)})
        campaign.summary = {**(campaign.summary or {}), "errors": errors}
        session.flush()
        _after_change(app, session, campaign, wu.bin_index)
        return f"recorded failure of {wu_name}: {describe_mask(mask)} (error_mask {mask})"


# --- spool: calls that arrived while the database was unreachable ------------------------------------------

def _spool_dir() -> Path:
    from server.core.settings import load_settings

    return Path(load_settings().var_dir).absolute() / SPOOL_DIR


def spool(argv: list[str]) -> Path:
    directory = _spool_dir() / f"{time.time_ns()}"
    directory.mkdir(parents=True, exist_ok=False)
    args = list(argv)
    if args and args[0] != "--error":
        for i, path in enumerate(args[1:], start=1):
            copy = directory / Path(path).name
            shutil.copy2(path, copy)
            args[i] = str(copy)
    (directory / "call.json").write_text(json.dumps(args))
    return directory


def replay_spool(app) -> int:
    base = _spool_dir()
    done = 0
    for directory in sorted(base.glob("*")) if base.is_dir() else []:
        call = directory / "call.json"
        if not call.is_file():
            continue
        log(PROGRAM, f"replaying spooled call {directory.name}: {dispatch(app, json.loads(call.read_text()))}")
        shutil.rmtree(directory)
        done += 1
    return done


def dispatch(app, argv: list[str]) -> str:
    if argv and argv[0] == "--error":
        if len(argv) != 5:
            return f"--error takes ERROR_MASK WU_NAME WU_ID BATCH_ID, got {argv[1:]!r}; ignored"
        try:
            mask, wu_id, batch = int(argv[1]), int(argv[3]), int(argv[4])
        except ValueError:
            return f"--error arguments are not integers where expected: {argv[1:]!r}; ignored"
        return assimilate_error(app, mask, argv[2], wu_id, batch)
    if not argv:
        return "called without arguments: configure script_assimilator with the bare script name; ignored"
    try:
        wu_id = int(argv[0])
    except ValueError:
        return f"first argument {argv[0]!r} is not a work-unit id; ignored"
    try:
        return assimilate_success(app, wu_id, argv[1:])
    except ValueError as exc:  # an output file name that is not BOINC's
        return f"cannot assimilate {argv[1:]!r}: {exc}; ignored"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app = open_app()
        replay_spool(app)
        log(PROGRAM, dispatch(app, args))
    except (Transient, *TRANSIENT_ERRORS) as exc:
        where = spool(args)
        log(PROGRAM, f"database unavailable ({exc}); call spooled in {where} for replay, exiting 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
