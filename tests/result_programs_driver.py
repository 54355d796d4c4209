"""Runs the validator and assimilator programs' ``main`` on a list of calls, in one process, under a memory limit.

``python result_programs_driver.py PLAN.json`` from ``PROJECT/tmp_HOST`` with the launchers' environment (what
BOINC's daemons give the programs). PLAN: ``{"warmup": [call...], "limit_mb": N, "calls": [call...]}``, a call
being ``{"label": str, "program": "init" | "compare" | "assimilate" | "mark_valid" | "mark_invalid", "args": [...]}``
(``mark_*`` take a result name and set its Result row's state).

The warm-up calls run first (imports, lazy modules); then ``RLIMIT_AS`` is set to the address space in use plus
``limit_mb``, so every later call must complete within ``limit_mb`` more memory or fail with MemoryError. Before
each call the peak-RSS mark is reset (``/proc/self/clear_refs``), so the peak each call adds is measured on its
own. One JSON line per call on stdout: label, exit code (or the exception), added peak RSS in MB, and the state
of the work unit / result / posteriors the call touched.
"""

from __future__ import annotations

import json
import re
import resource
import sys


def _status_mb() -> dict[str, float]:
    with open("/proc/self/status") as fh:
        found = dict(re.findall(r"^(Vm\w+):\s+(\d+) kB", fh.read(), re.M))
    return {k: int(v) / 1024 for k, v in found.items()}


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _db_state(app, result_name: str | None) -> dict:
    from sqlalchemy import func, select

    from server.core.db.models import Posterior, Result, WorkUnit

    out = {}
    with app.db.session() as session:
        out["posteriors"] = session.scalar(select(func.count()).select_from(Posterior))
        if result_name:
            wu_name = result_name.rsplit("_", 1)[0]
            wu = session.scalars(select(WorkUnit).where(WorkUnit.name == wu_name)).first()
            row = session.scalars(select(Result).where(Result.name == result_name)).first()
            out["wu_state"] = None if wu is None else wu.state
            out["canonical"] = None if wu is None else wu.canonical_result_id
            out["validate_state"] = None if row is None else row.validate_state
            out["invalid_reason"] = None if row is None else row.invalid_reason
    return out


def _mark(app, result_name: str, state: str) -> int:
    """Set a Result row's validation state: ``valid`` is what a validator that wrongly accepted this result would
    have left (so the assimilator's own checks are what stands between it and a posterior)."""
    from sqlalchemy import select

    from server.core.db.models import Result, WorkUnit

    with app.db.session() as session:
        row = session.scalars(select(Result).where(Result.name == result_name)).first()
        if row is None:
            wu = session.scalars(select(WorkUnit).where(WorkUnit.name == result_name.rsplit("_", 1)[0])).one()
            row = Result(work_unit_id=wu.id, name=result_name)
            session.add(row)
        row.validate_state, row.invalid_reason = state, None if state == "valid" else "marked by the test"
        if state == "valid":
            row.sha256 = None
    return 0


def _result_name(call: dict) -> str | None:
    from server.core.boinc_contract import parse_upload_name

    paths = [a for a in call["args"] if isinstance(a, str) and "/" in a]
    try:
        return parse_upload_name(paths[-1].rsplit("/", 1)[1]).result_name if paths else None
    except ValueError:
        return None


def run(call: dict, app) -> dict:
    import assimilator.main
    import validator.compare
    import validator.init

    programs = {"init": validator.init.main, "compare": validator.compare.main, "assimilate": assimilator.main.main}
    args = [str(a) for a in call["args"]]
    measured = _reset_peak()
    before = _status_mb()["VmRSS"]
    try:
        if call["program"].startswith("mark_"):
            rc = _mark(app, args[0], call["program"][5:])
        else:
            rc = programs[call["program"]](args)
    except MemoryError:
        rc = "MemoryError"
    except BaseException as exc:  # reported to the test, which fails on anything but an exit code
        rc = f"{type(exc).__name__}: {exc}"
    after = _status_mb()
    out = {"label": call["label"], "program": call["program"], "rc": rc,
           "peak_mb": round(after["VmHWM"] - before, 1) if measured else None}
    if not call["program"].startswith("mark_"):
        out.update(_db_state(app, _result_name(call)))
    return out


def main(plan_path: str) -> int:
    from server.core.context import OpenAstro
    from server.core.settings import load_settings

    plan = json.loads(open(plan_path).read())
    app = OpenAstro(load_settings())
    for call in plan.get("warmup", []):
        print(json.dumps({"warmup": True, **run(call, app)}), flush=True)
    base = _status_mb()["VmSize"]
    limit = int((base + plan["limit_mb"]) * 1024 * 1024)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    print(json.dumps({"address_space_mb": round(base, 1), "limit_mb": round(limit / 2**20, 1)}), flush=True)
    for call in plan["calls"]:
        print(json.dumps(run(call, app), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
