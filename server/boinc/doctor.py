"""``openastro boinc doctor``: check a BOINC project for the problems that stop OpenAstro's jobs.

Each check found on a real server (issue #18) gets one :class:`Finding` with what is wrong and the command that
fixes it:

* files the scheduler CGI and the daemons read (``config.xml``, ``project.xml``, ``templates/*``, our launchers)
  must be readable by the web server's user (mode 0600 gives clients "Server can't parse configuration file");
* every launcher's program (interpreter and script) must be runnable by the project user (a ``.venv`` made from a
  Python under ``/root`` is not);
* an app version of ``openastro_app`` must be registered in BOINC's database (``bin/update_versions``);
* OpenAstro's database must not be BOINC's (``make_project P`` names BOINC's database ``P``);
* the object store and var dir must be writable by the project user, whichever user ran an admin command;
* ``config.xml``'s ``<host>`` must be this machine's name (else ``bin/start`` starts no daemons) and our daemons
  must be in it.

The permission checks are pure functions of ``os.stat`` results (:func:`may_access`), so they test without users.
"""

from __future__ import annotations

import os
import socket
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from server.boinc.access import (EXECUTE, READ, RUNNABLE_FIX, WRITE, Account, access_problem, launcher_problems,
                                 may_access, program_problem, project_owner)
from server.boinc.install import LAUNCHERS, daemon_entries
from server.core.boinc_contract import APP_NAME

__all__ = ["Account", "Finding", "access_problem", "may_access", "program_problem", "project_owner", "READ", "WRITE",
           "EXECUTE", "diagnose"]


# --- the checks ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    problem: str
    fix: str

    def line(self) -> str:
        return f"PROBLEM {self.problem}\n    fix: {self.fix}"


def web_user() -> Account | None:
    for name in ("www-data", "apache", "httpd"):
        account = Account.named(name)
        if account is not None:
            return account
    return None


def check_readable_by_web(project: Path, web: Account | None) -> list[Finding]:
    if web is None:
        return []
    files = [project / "config.xml", project / "project.xml", *sorted((project / "templates").glob("*.xml"))]
    out = []
    for path in files:
        if not path.is_file():
            continue
        problem = access_problem(path, web, READ)
        if problem:
            out.append(Finding(f"{problem}: the scheduler CGI runs as {web.name} and must read it",
                               f"chmod a+r {path}  (or re-run `openastro boinc install`)"))
    return out


def check_launchers(project: Path, owner: Account) -> list[Finding]:
    out = []
    for name, problem in launcher_problems(project, LAUNCHERS, owner):
        if problem.endswith("is missing"):
            out.append(Finding(problem, f"run `openastro boinc install --project-dir {project}`"))
        else:
            out.append(Finding(f"{name}: {problem}; BOINC's daemons run it as {owner.name}", RUNNABLE_FIX))
    return out


def _config(project: Path) -> ET.Element:
    return ET.parse(project / "config.xml").getroot()


def check_host_and_daemons(project: Path) -> list[Finding]:
    root = _config(project)
    out = []
    host = (root.findtext("config/host") or "").strip()
    here = socket.gethostname()
    if host and host != here and host.split(".")[0] != here.split(".")[0]:
        out.append(Finding(f"config.xml <host> is {host!r} but this machine is {here!r}: bin/start starts no "
                           "daemons here", f"set <host>{here}</host> in {project / 'config.xml'} (make_project "
                                               "--project_host must be the machine's own name)"))
    cmds = {(d.findtext("cmd") or "").strip() for d in root.findall("daemons/daemon")}
    for entry in daemon_entries():
        if entry.cmd not in cmds:
            out.append(Finding(f"config.xml has no daemon {entry.cmd!r}",
                               f"run `openastro boinc install --project-dir {project}`"))
    return out


def boinc_db_url(project: Path) -> str:
    """SQLAlchemy URL of the project's BOINC database, from config.xml."""
    from work_generator.boinc_project import BoincProject

    return BoincProject(project).db_url()


def check_databases(project: Path, openastro_url: str) -> list[Finding]:
    from sqlalchemy.engine import make_url

    boinc = make_url(boinc_db_url(project))
    ours = make_url(openastro_url)
    if ours.get_backend_name() == "mysql" and ours.database == boinc.database and \
            (ours.host or "localhost") in (boinc.host or "localhost", "127.0.0.1", "localhost"):
        return [Finding(f"OpenAstro's database is BOINC's own ({boinc.database!r})",
                        "give OpenAstro its own database (e.g. OPENASTRO_DATABASE_URL=.../"
                        f"{boinc.database}_openastro) and run `openastro db upgrade`")]
    return []


def check_app_version(project: Path) -> list[Finding]:
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(boinc_db_url(project))
        with engine.connect() as conn:
            n = conn.execute(text("SELECT COUNT(*) FROM app_version v JOIN app a ON a.id = v.appid "
                                  "WHERE a.name = :n AND v.deprecated = 0"), {"n": APP_NAME}).scalar()
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure to reach BOINC's database is the finding
        return [Finding(f"cannot read BOINC's database ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
                        f"check db_host/db_name/db_user/db_passwd in {project / 'config.xml'}")]
    if not n:
        return [Finding(f"no app version of {APP_NAME} is registered: the scheduler has nothing to send",
                        f"cd {project} && bin/xadd && bin/update_versions --noconfirm")]
    return []


def check_writable_tree(root: Path, owner: Account, what: str, skip: Path | None = None) -> list[Finding]:
    if not root.exists():
        return []
    bad = []
    for dirpath, dirnames, _ in os.walk(root):
        d = Path(dirpath)
        if skip is not None and d == skip:
            dirnames[:] = []
            continue
        if access_problem(d, owner, WRITE | EXECUTE):
            bad.append(d)
    if not bad:
        return []
    shown = ", ".join(str(p) for p in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    return [Finding(f"{len(bad)} director{'y' if len(bad) == 1 else 'ies'} of the {what} not writable by "
                    f"{owner.name}: {shown} (the daemons then fail with 'Permission denied')",
                    f"chown -R {owner.name}:{owner.name} {root} && chmod -R g+w {root} && "
                    f"find {root} -type d -exec chmod g+s {{}} +   (then run admin commands as {owner.name} "
                    "or a member of its group)")]


def diagnose(project: str | os.PathLike[str], settings) -> list[Finding]:
    project = Path(project).absolute()
    if not (project / "config.xml").is_file():
        return [Finding(f"{project} is not a BOINC project directory (no config.xml)",
                        "pass the project root made by make_project with --project-dir")]
    owner = project_owner(project)
    findings = check_readable_by_web(project, web_user())
    findings += check_launchers(project, owner)
    findings += check_host_and_daemons(project)
    findings += check_databases(project, settings.resolved_database_url)
    findings += check_app_version(project)
    findings += check_writable_tree(settings.resolved_storage_dir, owner, "object store")
    findings += check_writable_tree(Path(settings.var_dir).absolute(), owner, "var dir",
                                    skip=settings.resolved_storage_dir)
    return findings
