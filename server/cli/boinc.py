"""``openastro boinc ...``: BOINC project commands (app packaging here; server commands below it)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def boinc() -> None:
    """BOINC project tasks: package the volunteer app, and run work on a BOINC server."""


# --- package: the volunteer app's app-version directory (docs/volunteer_app.md) --------------------

@boinc.command("package")
@click.option("--version", "version", required=True, help="BOINC app version, X.YY (e.g. 1.00).")
@click.option("--wrapper", "wrapper", required=True, type=click.Path(exists=True, dir_okay=False),
              help="BOINC's wrapper binary for this platform (from the admin's BOINC build).")
@click.option("--apps-dir", "apps_dir", default="apps", show_default=True,
              type=click.Path(file_okay=False),
              help="The BOINC project's apps/ directory (or a staging copy of it).")
@click.option("--bundle", "bundle", default=None, type=click.Path(exists=True, file_okay=False),
              help="Use this already built onedir bundle (dist/openastro_app) instead of building.")
@click.option("--build-dir", "build_dir", default=None, type=click.Path(file_okay=False),
              help="Keep PyInstaller's build files here (default: a temp dir).")
def package(version: str, wrapper: str, apps_dir: str, bundle: str | None, build_dir: str | None) -> None:
    """Freeze openastro-app and lay out apps/openastro_app/VERSION/PLATFORM/."""
    from server.boinc.package import PackagingError, package_app_version

    try:
        result = package_app_version(Path(apps_dir), version, Path(wrapper),
                                     bundle_dir=Path(bundle) if bundle else None,
                                     build_dir=Path(build_dir) if build_dir else None)
    except (PackagingError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"app version laid out in {result.version_dir}")
    click.echo(f"  platform     {result.platform}")
    click.echo(f"  bundle       {result.bundle_bytes / 1e6:.1f} MB unpacked, "
               f"{result.zip_bytes / 1e6:.1f} MB zipped ({result.zip_path.name})")
    click.echo(f"  job.xml      {result.job_path.name}")
    click.echo(f"  wrapper      {result.wrapper_path.name}")
    if result.glibc_floor:
        click.echo(f"  glibc floor  {result.glibc_floor} (oldest glibc the build runs on)")


# --- server side: work generation, installation, status (BOINC engineer; docs/boinc.md, docs/deploy.md) ------

def _mod_option(value: tuple[int, int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    n, r = value
    if n < 1 or not 0 <= r < n:
        raise click.BadParameter(f"--mod N R needs N >= 1 and 0 <= R < N, got {n} {r}")
    return n, r


@boinc.command("generate")
@click.option("--campaign", "campaign_id", type=int, default=None, help="Only this campaign (default: every "
              "campaign whose executor is boinc).")
@click.option("--project-dir", "project_dir", type=click.Path(file_okay=False), default=None,
              help="BOINC project root (default: the boinc_project_dir setting).")
@click.option("--daemon", is_flag=True, help="Keep running until the project's stop_daemons file appears.")
@click.option("--one_pass", "--one-pass", "one_pass", is_flag=True, help="One pass over the campaigns, then exit.")
@click.option("--dry_run", "--dry-run", "dry_run", is_flag=True,
              help="Plan and print the create_work calls; change nothing.")
@click.option("--mod", "mod", type=(int, int), default=None, metavar="N R",
              help="Handle only campaigns with id % N == R (several generator instances).")
@click.option("--sleep", "sleep_s", type=click.IntRange(1, 3600), default=10, show_default=True,
              help="Seconds between passes of the daemon.")
@click.pass_obj
def generate_cmd(app, campaign_id, project_dir, daemon, one_pass, dry_run, mod, sleep_s) -> None:
    """Turn campaigns into BOINC work units (stage inputs, bin/create_work --stdin)."""
    from work_generator.boinc_project import BoincProject, BoincProjectError
    from work_generator.generate import generate, run_daemon

    project_dir = project_dir or app.settings.boinc_project_dir
    if not project_dir:
        raise click.ClickException("no BOINC project directory: pass --project-dir or set OPENASTRO_BOINC_PROJECT_DIR")
    try:
        project = BoincProject(project_dir)
        if daemon or campaign_id is None:
            run_daemon(app, project, one_pass=one_pass or not daemon, dry_run=dry_run, mod=_mod_option(mod),
                       campaign_id=campaign_id, sleep_s=sleep_s, echo=click.echo)
            return
        report = generate(app, campaign_id, project=project, dry_run=dry_run)
    except (BoincProjectError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(report.line())
    if dry_run:
        for call in report.calls:
            click.echo(call.shell_text())


@boinc.command("install")
@click.option("--project-dir", "project_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Root of a BOINC project made with make_project.")
@click.option("--apps-dir", "apps_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="apps/ laid out by `openastro boinc package` (copied into the project).")
@click.option("--no-register", is_flag=True, help="Do not run bin/xadd and bin/update_versions.")
@click.pass_obj
def install_cmd(app, project_dir, apps_dir, no_register) -> None:
    """Install launchers, templates, daemons, apps and platforms into a BOINC project."""
    import os

    from server.boinc.install import InstallError, install
    from server.boinc.executors import settings_env

    env = settings_env(app.settings)
    if os.environ.get("OPENASTRO_CONFIG"):
        env["OPENASTRO_CONFIG"] = str(Path(os.environ["OPENASTRO_CONFIG"]).absolute())
    try:
        report = install(project_dir, env, apps_dir=Path(apps_dir) if apps_dir else None,
                         register=not no_register)
    except InstallError as exc:
        raise click.ClickException(str(exc)) from None
    for path in report.launchers:
        click.echo(f"launcher   {path}")
    for path in report.templates:
        click.echo(f"template   {path}")
    for entry in report.daemons:
        click.echo(f"daemon     {entry.cmd}  (output {entry.output}, pid {entry.pid_file})")
    for item in report.project_xml:
        click.echo(f"project.xml + {item}")
    for path in report.app_versions:
        click.echo(f"app version {path}")
    for command in report.commands_run:
        click.echo(f"ran        {command}")
    click.echo("done: restart the project's daemons (bin/stop; bin/start) to pick up config.xml")


@boinc.command("status")
@click.option("--campaign", "campaign_id", type=int, default=None, help="Only this campaign.")
@click.option("--project-dir", "project_dir", type=click.Path(file_okay=False), default=None,
              help="BOINC project root whose database to read too (default: the boinc_project_dir setting).")
@click.pass_obj
def status_cmd(app, campaign_id, project_dir) -> None:
    """Work units by state per campaign, in OpenAstro's database and in BOINC's own."""
    import time

    from server.boinc.campaigns import work_unit_table

    rows = work_unit_table(app, campaign_id)
    if not rows:
        click.echo("no campaigns")
        return
    states = ("created", "sent", "done", "error", "cancelled")
    click.echo(f"{'id':>4}  {'name':<28} {'kind':<6} {'executor':<8} {'status':<10} "
               + " ".join(f"{s:>9}" for s in states))
    for row in rows:
        click.echo(f"{row['id']:>4}  {row['name'][:28]:<28} {row['kind']:<6} {row['executor']:<8} "
                   f"{row['status']:<10} " + " ".join(f"{row['counts'].get(s, 0):>9}" for s in states))
    project_dir = project_dir or app.settings.boinc_project_dir
    boinc_ids = [r["id"] for r in rows if r["executor"] == "boinc"]
    if not project_dir or not boinc_ids:
        return
    from work_generator.boinc_project import BoincProject, BoincProjectError

    try:
        summaries = BoincProject(project_dir).batch_summaries(boinc_ids)
    except BoincProjectError as exc:
        click.echo(f"BOINC's database: {exc}")
        return
    click.echo("")
    click.echo("in BOINC's database (results of each campaign's work units):")
    click.echo(f"{'id':>4}  {'WUs':>5} {'WU err':>6} {'assim':>6}  {'unsent':>6} {'in prog':>7} {'valid':>6} "
               f"{'invalid':>7} {'error':>6}  oldest in progress   results per host")
    now = time.time()
    for cid in boinc_ids:
        b = summaries[cid]
        oldest = "-" if b.oldest_in_progress_sent is None else \
            f"{(now - b.oldest_in_progress_sent) / 60:.1f} min ago"
        hosts = ", ".join(f"host {h}: {n}" for h, n in sorted(b.results_per_host.items())) or "-"
        click.echo(f"{cid:>4}  {b.workunits:>5} {b.workunits_error:>6} {b.workunits_assimilated:>6}  {b.unsent:>6} "
                   f"{b.in_progress:>7} {b.valid:>6} {b.invalid:>7} {b.error:>6}  {oldest:<19}  {hosts}")


@boinc.command("doctor")
@click.option("--project-dir", "project_dir", type=click.Path(file_okay=False), default=None,
              help="BOINC project root (default: the boinc_project_dir setting).")
@click.pass_obj
def doctor_cmd(app, project_dir) -> None:
    """Check a BOINC project for what stops OpenAstro's jobs; print each problem and its fix."""
    from server.boinc.doctor import diagnose

    project_dir = project_dir or app.settings.boinc_project_dir
    if not project_dir:
        raise click.ClickException("no BOINC project directory: pass --project-dir or set OPENASTRO_BOINC_PROJECT_DIR")
    findings = diagnose(project_dir, app.settings)
    for finding in findings:
        click.echo(finding.line())
    if findings:
        raise click.ClickException(f"{len(findings)} problem(s) in {project_dir}")
    click.echo(f"ok: {project_dir} passes every check (file modes, launchers, app version, databases, "
               "object store and var dir, daemons for this host)")


@boinc.command("hosts")
@click.option("--project-dir", "project_dir", type=click.Path(file_okay=False), default=None,
              help="BOINC project root (default: the boinc_project_dir setting).")
@click.option("--active-days", type=click.FloatRange(min=0.0, min_open=True), default=30.0, show_default=True,
              help="A host is active when its last scheduler RPC is at most this old.")
@click.pass_obj
def hosts_cmd(app, project_dir, active_days) -> None:
    """Attached hosts by platform, OS, glibc, CPUs and memory, which app versions each can take, and the share of
    active hosts (and of their credit) with none."""
    import time

    from server.boinc.hosts import HostRow, attach_floors, format_report, reach, version_floors
    from server.boinc.package import APP_NAME
    from work_generator.boinc_project import BoincProject, BoincProjectError

    project_dir = project_dir or app.settings.boinc_project_dir
    if not project_dir:
        raise click.ClickException("no BOINC project directory: pass --project-dir or set OPENASTRO_BOINC_PROJECT_DIR")
    try:
        project = BoincProject(project_dir)
        hosts = [HostRow.from_db(r) for r in project.host_rows()]
        versions = attach_floors(project.app_version_rows(APP_NAME), version_floors(project_dir, APP_NAME))
    except BoincProjectError as exc:
        raise click.ClickException(str(exc)) from None
    for line in format_report(reach(hosts, versions, now=time.time(), active_days=active_days), versions):
        click.echo(line)
