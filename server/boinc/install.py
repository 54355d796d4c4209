"""``openastro boinc install``: put OpenAstro into a real BOINC project directory.

What it does (each step idempotent; nothing that exists with different content is overwritten):

1. ``bin/``: launchers under the console-script names (``openastro-validate-init``,
   ``openastro-validate-compare``, ``openastro-assimilate``, ``openastro-work-generator``). BOINC runs
   them with the daemons' environment, so each launcher sets the OpenAstro settings (``OPENASTRO_CONFIG``
   or explicit values) and the thread caps, then ``exec``s the program of this installation.
2. ``templates/``: the versioned input/output templates (work_generator.templates).
3. ``config.xml``: one ``<daemon>`` per program, each with its own ``<output>`` and ``<pid_file>``:
   ``script_validator --app openastro_app --init_script openastro-validate-init --compare_script
   openastro-validate-compare --credit_from_runtime`` (bare script names: argument tokens are broken in
   server 1.6.2), ``script_assimilator --app openastro_app --script openastro-assimilate`` and the work
   generator daemon.
4. ``project.xml``: the app and platforms of this repository's ``project.xml`` merged in, for ``bin/xadd``.
5. ``apps/``: app versions laid out by ``openastro boinc package`` copied in, for ``bin/update_versions``;
   then ``bin/xadd`` and ``bin/update_versions --noconfirm`` are run (unless ``register=False``).

Every file it writes is world-readable (launchers 0755, the rest 0644): the scheduler CGI runs as the web
server's user. It refuses launchers whose programs the project user (``config.xml``'s owner) cannot run.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from server.core.boinc_contract import (APP_NAME, ASSIMILATE_SCRIPT, VALIDATE_COMPARE_SCRIPT, VALIDATE_INIT_SCRIPT,
                                   WORK_GENERATOR_SCRIPT)
from server.core.storage import atomic_write_bytes

REPO_ROOT = Path(__file__).resolve().parents[2]
REPO_PROJECT_XML = REPO_ROOT / "project.xml"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


LAUNCHERS = (VALIDATE_INIT_SCRIPT, VALIDATE_COMPARE_SCRIPT, ASSIMILATE_SCRIPT, WORK_GENERATOR_SCRIPT)
READABLE = 0o644  # what the daemons and the scheduler CGI (the web server's user) read


class InstallError(RuntimeError):
    """The project directory cannot take the installation."""


def _make_readable(root: Path) -> None:
    """a+rX under ``root``: app-version files are read by update_versions and served to clients."""
    for dirpath, _, filenames in os.walk(root):
        os.chmod(dirpath, os.stat(dirpath).st_mode | 0o555)
        for name in filenames:
            path = os.path.join(dirpath, name)
            os.chmod(path, os.stat(path).st_mode | 0o444)


def check_launchers_runnable(project: Path) -> None:
    """Refuse launchers whose programs the project user (config.xml's owner) cannot run."""
    from server.boinc import access

    owner = access.project_owner(project)
    problems = access.launcher_problems(project, LAUNCHERS, owner)
    if problems:
        raise InstallError("; ".join(f"{name}: {problem}" for name, problem in problems)
                           + f". BOINC's daemons run the launchers as {owner.name}. Fix: {access.RUNNABLE_FIX}")


def _program(name: str) -> list[str]:
    script = Path(sys.executable).parent / name
    if script.is_file():
        return [str(script)]
    modules = {VALIDATE_INIT_SCRIPT: "validator.init", VALIDATE_COMPARE_SCRIPT: "validator.compare",
               ASSIMILATE_SCRIPT: "assimilator.main"}
    return [sys.executable, "-m", modules[name]]


def launcher_text(command: list[str], env: Mapping[str, str]) -> str:
    lines = ["#!/bin/sh", "# OpenAstro launcher written by `openastro boinc install`; re-run install to change it."]
    for key, value in sorted({**{v: "1" for v in THREAD_VARS}, **env}.items()):
        lines.append(f"{key}={shlex.quote(str(value))}; export {key}")
    lines.append("exec " + " ".join(shlex.quote(c) for c in command) + ' "$@"')
    return "\n".join(lines) + "\n"


def launchers(env: Mapping[str, str], project_dir: Path | None = None) -> dict[str, str]:
    out = {name: launcher_text(_program(name), env)
           for name in (VALIDATE_INIT_SCRIPT, VALIDATE_COMPARE_SCRIPT, ASSIMILATE_SCRIPT)}
    if project_dir is not None:
        openastro = _openastro_cli()
        out[WORK_GENERATOR_SCRIPT] = launcher_text(
            openastro + ["boinc", "generate", "--daemon", "--project-dir", str(project_dir)], env)
    return out


def _openastro_cli() -> list[str]:
    script = Path(sys.executable).parent / "openastro"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "server.cli"]


def write_launchers(bin_dir: Path, env: Mapping[str, str], project_dir: Path | None = None) -> list[Path]:
    bin_dir = Path(bin_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in launchers(env, project_dir).items():
        path = bin_dir / name
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        atomic_write_bytes(path, text.encode("utf-8"), mode=0o755)
        written.append(path)
    return written


# --- config.xml ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DaemonEntry:
    cmd: str
    output: str
    pid_file: str


def daemon_entries(appname: str = APP_NAME) -> list[DaemonEntry]:
    return [
        DaemonEntry(f"script_validator -d 3 --app {appname} --init_script {VALIDATE_INIT_SCRIPT} "
                    f"--compare_script {VALIDATE_COMPARE_SCRIPT} --credit_from_runtime",
                    "openastro_validator.log", "openastro_validator.pid"),
        DaemonEntry(f"script_assimilator -d 3 --app {appname} --script {ASSIMILATE_SCRIPT}",
                    "openastro_assimilator.log", "openastro_assimilator.pid"),
        DaemonEntry(f"{WORK_GENERATOR_SCRIPT}", "openastro_work_generator.log", "openastro_work_generator.pid"),
    ]


def _parse_keeping_comments(path: Path) -> ET.ElementTree:
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
    try:
        return ET.parse(path, parser=parser)
    except ET.ParseError as exc:
        raise InstallError(f"{path} is not well-formed XML: {exc}") from None


def add_daemons(config_path: Path, entries: list[DaemonEntry]) -> list[DaemonEntry]:
    """Add missing ``<daemon>`` entries to config.xml (matched by ``<cmd>``); returns those added."""
    tree = _parse_keeping_comments(config_path)
    root = tree.getroot()
    daemons = root.find("daemons")
    if daemons is None:
        daemons = ET.SubElement(root, "daemons")
    have = {(d.findtext("cmd") or "").strip() for d in daemons.findall("daemon")}
    used = {(d.findtext(tag) or "").strip() for d in daemons.findall("daemon") for tag in ("output", "pid_file")}
    added = []
    for entry in entries:
        if entry.cmd in have:
            continue
        if entry.output in used or entry.pid_file in used:
            raise InstallError(f"config.xml already uses {entry.output} or {entry.pid_file} for another daemon")
        node = ET.SubElement(daemons, "daemon")
        for tag, text in (("cmd", entry.cmd), ("output", entry.output), ("pid_file", entry.pid_file)):
            ET.SubElement(node, tag).text = text
        added.append(entry)
    if added:
        ET.indent(tree, space="    ")
        backup = config_path.with_name("config.xml.before-openastro")
        if not backup.exists():
            shutil.copy2(config_path, backup)
        # 0644: the scheduler CGI runs as the web server's user and must read config.xml
        atomic_write_bytes(config_path, ET.tostring(root, encoding="unicode").encode("utf-8") + b"\n",
                           mode=READABLE)
    return added


# --- project.xml -----------------------------------------------------------------------------------------

def merge_project_xml(target: Path, source: Path = REPO_PROJECT_XML) -> list[str]:
    """Add our ``<app>`` and ``<platform>`` entries to the project's project.xml (by name)."""
    src = _parse_keeping_comments(source).getroot()
    if target.is_file():
        tree = _parse_keeping_comments(target)
    else:
        tree = ET.ElementTree(ET.Element("boinc"))
    root = tree.getroot()
    added = []
    for tag in ("app", "platform"):
        have = {(e.findtext("name") or "").strip() for e in root.findall(tag)}
        for element in src.findall(tag):
            name = (element.findtext("name") or "").strip()
            if name and name not in have:
                root.append(element)
                added.append(f"{tag} {name}")
    if added:
        ET.indent(tree, space="    ")
        atomic_write_bytes(target, ET.tostring(root, encoding="unicode").encode("utf-8") + b"\n", mode=READABLE)
    return added


def copy_app_versions(apps_dir: Path, project_dir: Path) -> list[Path]:
    """Copy ``apps/openastro_app/VERSION/PLATFORM`` dirs in; an existing version dir must be identical."""
    source = Path(apps_dir) / APP_NAME
    if not source.is_dir():
        raise InstallError(f"{source} does not exist: lay out app versions with `openastro boinc package`")
    copied = []
    for platform_dir in sorted(source.glob("*/*")):
        if not platform_dir.is_dir():
            continue
        rel = platform_dir.relative_to(apps_dir)
        target = project_dir / "apps" / rel
        if target.exists():
            for f in platform_dir.iterdir():
                other = target / f.name
                if not other.is_file() or other.read_bytes() != f.read_bytes():
                    raise InstallError(f"{target} exists and differs ({f.name}): physical names are immutable, "
                                       "package a new version instead")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(platform_dir, target)
        _make_readable(target)
        copied.append(target)
    return copied


@dataclass
class InstallReport:
    launchers: list[Path] = field(default_factory=list)
    templates: list[Path] = field(default_factory=list)
    daemons: list[DaemonEntry] = field(default_factory=list)
    project_xml: list[str] = field(default_factory=list)
    app_versions: list[Path] = field(default_factory=list)
    commands_run: list[str] = field(default_factory=list)


def _run_tool(project_dir: Path, argv: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(argv, cwd=project_dir, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise InstallError(f"{' '.join(argv)} failed (exit {proc.returncode}): {tail}")
    return " ".join(argv)


def install(project_dir: str | os.PathLike[str], env: Mapping[str, str], *, apps_dir: Path | None = None,
            register: bool = True) -> InstallReport:
    from work_generator.templates import write_templates

    project = Path(project_dir).absolute()
    if not (project / "config.xml").is_file():
        raise InstallError(f"{project} is not a BOINC project directory (no config.xml); create it with "
                           "BOINC's make_project first")
    report = InstallReport()
    report.launchers = write_launchers(project / "bin", env, project_dir=project)
    check_launchers_runnable(project)
    try:
        report.templates = write_templates(project / "templates")
    except ValueError as exc:
        raise InstallError(str(exc)) from None
    for template in report.templates:
        os.chmod(template, READABLE)
    for directory in (project / "bin", project / "templates"):  # mkdir under a strict umask gives 0700
        os.chmod(directory, os.stat(directory).st_mode | 0o555)
    report.daemons = add_daemons(project / "config.xml", daemon_entries())
    report.project_xml = merge_project_xml(project / "project.xml")
    if apps_dir is not None:
        report.app_versions = copy_app_versions(Path(apps_dir), project)
    if register:
        for tool in ("xadd", "update_versions"):
            if not os.access(project / "bin" / tool, os.X_OK):
                raise InstallError(f"{project / 'bin' / tool} is missing: is this a BOINC project directory?")
        report.commands_run.append(_run_tool(project, ["bin/xadd"]))
        if apps_dir is not None or (project / "apps" / APP_NAME).is_dir():
            # --noconfirm: update_versions asks one question per version and file otherwise
            report.commands_run.append(_run_tool(project, ["bin/update_versions", "--noconfirm"], stdin=""))
    return report
