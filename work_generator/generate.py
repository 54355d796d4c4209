"""The work generator: campaigns in the database -> work-unit rows -> BOINC jobs.

Two steps, both idempotent:

1. **materialise** (:func:`materialise`): plan the campaign's work units (``work_generator.plan``) and, in
   one transaction, insert the rows that do not exist yet (state ``created``) and put their input files in
   the object store. Planning the same campaign twice creates nothing twice: work-unit names are
   deterministic and unique. The campaign moves from ``created`` to ``running``.
2. **submit** (:func:`submit_to_boinc`): stage the inputs of rows in state ``created`` into the project's
   download hierarchy and create the jobs in bulk (``bin/create_work --stdin``), then mark them ``sent``.

If the process dies between ``create_work`` and the commit that marks the rows ``sent``, the next pass finds
those jobs in BOINC's own ``workunit`` table (only for rows whose inputs are already staged) and marks the
rows ``sent`` itself instead of submitting them again (:func:`_recover_submitted`).

The daemon (:func:`run_daemon`) repeats both steps for every campaign whose executor is ``boinc`` (or only
``--campaign N``), honouring BOINC's ``stop_daemons`` file, ``--one_pass``, ``--dry_run`` and ``--mod N R``
(this instance handles campaign ids with ``id % N == R``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable

from sqlalchemy import select

from server.core.boinc_contract import templates_for
from server.core.db.models import Campaign, WorkUnit
from work_generator.boinc_project import BoincProject, CreateWorkCall
from work_generator.plan import FrameInput, PlannedWorkUnit, plan_tiles, plan_ttv
from work_generator.sizing import Resources


@dataclass
class GenerateReport:
    campaign_id: int
    planned: int = 0
    inserted: int = 0
    submitted: int = 0
    recovered: int = 0
    calls: list[CreateWorkCall] = field(default_factory=list)

    def line(self) -> str:
        line = (f"campaign {self.campaign_id}: {self.planned} work units planned, {self.inserted} new, "
                f"{self.submitted} submitted in {len(self.calls)} create_work call(s)")
        if self.recovered:
            line += f", {self.recovered} found already in BOINC (marked sent)"
        return line


def _load_frames(app, config: dict) -> list[FrameInput]:
    import numpy as np
    from astropy.io import fits

    frames = []
    for entry in config["frames"]:
        with fits.open(app.store.path(entry["key"]), memmap=False) as hdul:
            hdu = next(h for h in hdul if getattr(h, "is_image", False) and h.data is not None)
            data = np.array(hdu.data, dtype=np.float32)
            header = hdu.header.copy()
        if entry.get("weight_key"):
            with fits.open(app.store.path(entry["weight_key"]), memmap=False) as hdul:
                weight = np.array(next(h for h in hdul if h.data is not None).data, dtype=np.float32)
        else:
            weight = np.ones_like(data)
        frames.append(FrameInput(int(entry["index"]), data, weight, header))
    return frames


def plan_campaign(app, campaign: Campaign, estimate: Callable[[str, dict], Resources]) -> list[PlannedWorkUnit]:
    config = campaign.config
    entropy = int(campaign.seed_entropy)
    if campaign.kind == "ttv":
        return plan_ttv(campaign.id, entropy, config, estimate)
    if campaign.kind == "stack":
        grid = config["grid"]
        return plan_tiles(campaign.id, entropy, _load_frames(app, config), grid["header"], grid["shape"], estimate,
                          tile=int(config.get("tile", 512)), margin_px=int(config.get("margin_px", 2)),
                          method=config.get("method", "bilinear"),
                          conserve_flux=bool(config.get("conserve_flux", True)))
    raise ValueError(f"campaign {campaign.id} has unknown kind {campaign.kind!r}")


def materialise(app, campaign_id: int, *, estimate: Callable[[str, dict], Resources] | None = None,
                dry_run: bool = False) -> tuple[GenerateReport, list[PlannedWorkUnit]]:
    """Insert the campaign's missing work-unit rows (and store their inputs); idempotent."""
    if estimate is None:
        from work_generator.sizing import estimate
    with app.db.session() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise ValueError(f"no campaign with id {campaign_id}")
        if campaign.status == "cancelled":
            return GenerateReport(campaign_id), []
        planned = plan_campaign(app, campaign, estimate)
        report = GenerateReport(campaign_id, planned=len(planned))
        existing = set(session.scalars(select(WorkUnit.name).where(WorkUnit.campaign_id == campaign_id)))
        clash = session.scalars(select(WorkUnit.name).where(
            WorkUnit.name.in_([p.name for p in planned if p.name not in existing]))).first()
        if clash is not None:
            raise ValueError(f"work unit {clash!r} already belongs to another campaign")
        new = [p for p in planned if p.name not in existing]
        report.inserted = len(new)
        if dry_run:
            return report, new
        quorum = int(campaign.config.get("replicas", 2))
        for p in new:
            files = {}
            for f in p.files:
                stored = app.store.put_bytes(f.data)
                files[f.open_name] = {"physical": f.physical_name, "key": stored.key, "sha256": stored.sha256,
                                      "size": stored.size}
            templates = templates_for(p.kind, quorum)
            session.add(WorkUnit(campaign_id=campaign_id, name=p.name, kind=p.kind, bin_index=p.bin_index
                                 if p.bin_index is not None else p.label.get("frame"), run_index=p.run_index,
                                 spec=p.spec, input_files={"files": files, "order": [f.open_name for f in p.files],
                                                           "templates": [templates.input_template,
                                                                         templates.output_template],
                                                           "quorum": quorum,
                                                           "resources": p.resources.__dict__},
                                 state="created", rsc_fpops_est=p.resources.fpops_est))
        if campaign.status == "created":
            campaign.status = "running"
    return report, new


def _ordered_physical(wu: WorkUnit) -> list[str]:
    files = wu.input_files["files"]
    return [files[name]["physical"] for name in wu.input_files["order"]]


def submit_to_boinc(app, project: BoincProject, campaign_id: int, *,
                    report: GenerateReport | None = None) -> GenerateReport:
    """Stage inputs and create BOINC jobs for the campaign's rows in state ``created``."""
    report = report or GenerateReport(campaign_id)
    with app.db.session() as session:
        rows = list(session.scalars(select(WorkUnit).where(WorkUnit.campaign_id == campaign_id,
                                                           WorkUnit.state == "created").order_by(WorkUnit.id)))
        groups: dict[tuple, list[WorkUnit]] = defaultdict(list)
        for wu in rows:
            res = Resources(**wu.input_files["resources"])
            groups[(tuple(wu.input_files["templates"]), res.cost_class())].append(wu)
        for (templates, cost), wus in sorted(groups.items(), key=lambda kv: kv[1][0].id):
            wus = _recover_submitted(project, wus, report)
            if not wus:
                continue
            call = project.create_work_call([(wu.name, _ordered_physical(wu)) for wu in wus],
                                            wu_template=templates[0], result_template=templates[1],
                                            batch=campaign_id, fpops_est=cost[0], fpops_bound=cost[1],
                                            memory_bytes=cost[2], disk_bytes=cost[3])
            report.calls.append(call)
            for wu in wus:
                for meta in wu.input_files["files"].values():
                    with app.store.open(meta["key"]) as fh:
                        project.stage_bytes(meta["physical"], fh.read())
            project.run_create_work(call)
            # (a crash here leaves the rows `created` with their jobs in BOINC: _recover_submitted on the next pass)
            for wu in wus:
                wu.state = "sent"
            session.flush()
            report.submitted += len(wus)
    return report


def _recover_submitted(project: BoincProject, wus: list[WorkUnit], report: GenerateReport) -> list[WorkUnit]:
    """Close the crash window between ``create_work`` and the commit that marks rows ``sent``.

    Rows whose inputs are all staged may have been submitted by a pass that died before its commit: those that
    BOINC's ``workunit`` table already holds are marked ``sent`` (with BOINC's id) here instead of being submitted
    again (``create_work`` would refuse the duplicate names). Fresh rows (nothing staged) cost no query.
    Returns the rows still to submit."""
    maybe = [wu for wu in wus if all(project.is_staged(p) for p in _ordered_physical(wu))]
    if not maybe:
        return wus
    known = project.workunit_ids([wu.name for wu in maybe])
    for wu in maybe:
        if wu.name in known:
            wu.state = "sent"
            wu.boinc_wu_id = known[wu.name]
            report.recovered += 1
    return [wu for wu in wus if wu.name not in known]


def generate(app, campaign_id: int, *, project: BoincProject | None = None, dry_run: bool = False,
             estimate=None) -> GenerateReport:
    """Materialise a campaign's work units and, with a project, submit them to BOINC.

    ``dry_run``: plan and print, change nothing (no rows, no staged files, no jobs).
    """
    report, new = materialise(app, campaign_id, estimate=estimate, dry_run=dry_run)
    if project is None:
        return report
    if not dry_run:
        return submit_to_boinc(app, project, campaign_id, report=report)
    with app.db.session() as session:
        campaign = session.get(Campaign, campaign_id)
        quorum = int(campaign.config.get("replicas", 2))
        pending = [(wu.name, tuple(wu.input_files["templates"]), Resources(**wu.input_files["resources"]),
                    _ordered_physical(wu)) for wu in session.scalars(
                        select(WorkUnit).where(WorkUnit.campaign_id == campaign_id, WorkUnit.state == "created"))]
    for p in new:
        t = templates_for(p.kind, quorum)
        pending.append((p.name, (t.input_template, t.output_template), p.resources,
                        [f.physical_name for f in p.files]))
    groups: dict[tuple, list] = defaultdict(list)
    for name, templates, res, files in pending:
        groups[(templates, res.cost_class())].append((name, files))
    for (templates, cost), jobs in groups.items():
        report.calls.append(project.create_work_call(jobs, wu_template=templates[0], result_template=templates[1],
                                                     batch=campaign_id, fpops_est=cost[0], fpops_bound=cost[1],
                                                     memory_bytes=cost[2], disk_bytes=cost[3]))
    return report


def campaigns_to_generate(app, *, mod: tuple[int, int] | None = None, campaign_id: int | None = None) -> list[int]:
    with app.db.session() as session:
        query = select(Campaign.id).where(Campaign.executor == "boinc",
                                          Campaign.status.in_(("created", "running")))
        if campaign_id is not None:
            query = query.where(Campaign.id == campaign_id)
        ids = list(session.scalars(query.order_by(Campaign.id)))
    if mod is not None:
        n, r = mod
        ids = [i for i in ids if i % n == r]
    return ids


def run_daemon(app, project: BoincProject, *, one_pass: bool = False, dry_run: bool = False,
               mod: tuple[int, int] | None = None, campaign_id: int | None = None, sleep_s: int = 10,
               echo: Callable[[str], None] = print, max_passes: int | None = None) -> int:
    """Generate work until ``stop_daemons`` appears (or once with ``one_pass``); returns passes made."""
    passes = 0
    while not project.stop_requested():
        for cid in campaigns_to_generate(app, mod=mod, campaign_id=campaign_id):
            if project.stop_requested():
                break
            report = generate(app, cid, project=project, dry_run=dry_run)
            if report.inserted or report.submitted or report.recovered or dry_run:
                echo(report.line())
            if dry_run:
                for call in report.calls:
                    echo(call.shell_text())
        passes += 1
        if one_pass or (max_passes is not None and passes >= max_passes):
            break
        for _ in range(sleep_s):  # like BOINC's daemon_sleep: check the trigger file every second
            if project.stop_requested():
                break
            time.sleep(1)
    if project.stop_requested():
        echo(f"stopping: {project.stop_file} is present")
    return passes


def iter_campaign_rows(app, campaign_id: int) -> Iterable[WorkUnit]:
    with app.db.session() as session:
        return list(session.scalars(select(WorkUnit).where(WorkUnit.campaign_id == campaign_id)
                                    .order_by(WorkUnit.id)))
