"""Strict stand-ins for the BOINC server tools that cannot run here (../shared/boinc-contract.md).

``bin/create_work``, ``bin/stage_file``, ``bin/dir_hier_path``, ``bin/xadd`` and ``bin/update_versions`` of
the fake project are shell launchers of this file (``python fake_boinc_tools.py TOOL ARGS``). Each checks
its call against what a real BOINC 1.6.2 server does, and rejects what the server would reject *or
misread*; what it accepts is recorded in ``PROJECT/fake_db/*.json`` so tests can see the effective values
(e.g. template values winning over command-line values).

Checked:
* every tool runs from the project root (it reads ./config.xml);
* create_work: known options only; a registered app; templates that exist and parse; as many input files
  as the input template has ``<file_info>``; inputs already staged at ``dir_hier_path``; a unique
  ``--wu_name`` (the database rejects a duplicate name); ``--stdin`` lines with only the per-line options
  BOINC parses (``--wu_name``, ``--wu_template``, ``--result_template``, ``--command_line``, ``--priority``);
  effective values = template value, else command line, else BOINC default; expanded workunit XML <= 64 KiB;
* stage_file: refuses a different file under an existing name; moves unless ``--copy``;
* dir_hier_path: prints the fan-out path (md5 digits 1-7 modulo ``uldl_dir_fanout``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

DEFAULTS = {"min_quorum": 1, "target_nresults": 1, "max_error_results": 1, "max_total_results": 1,
            "max_success_results": 1, "rsc_fpops_est": 3.6e12, "rsc_fpops_bound": 8.64e13,
            "rsc_memory_bound": 5e8, "rsc_disk_bound": 1e9, "delay_bound": 7 * 86400.0}
NUMERIC = tuple(DEFAULTS) + ("priority", "batch")
LINE_OPTIONS = ("wu_name", "wu_template", "result_template", "command_line", "priority")


class Refused(Exception):
    pass


def project_root() -> Path:
    root = Path.cwd()
    if not (root / "config.xml").is_file():
        raise Refused("can't read config.xml: run BOINC tools from the project root")
    return root


def config(root: Path) -> dict:
    tree = ET.parse(root / "config.xml").getroot()
    get = lambda tag: (tree.findtext(f"config/{tag}") or "").strip()  # noqa: E731
    return {"download_dir": Path(get("download_dir") or root / "download"),
            "upload_dir": Path(get("upload_dir") or root / "upload"),
            "fanout": int(get("uldl_dir_fanout") or 1024)}


def hier_path(root: Path, name: str, create: bool = False) -> Path:
    if "/" in name or not name:
        raise Refused(f"bad file name {name!r}")
    cfg = config(root)
    x = int(hashlib.md5(name.encode()).hexdigest()[1:8], 16) % cfg["fanout"]
    directory = cfg["download_dir"] / f"{x:x}"
    if create:
        directory.mkdir(parents=True, exist_ok=True)
    return directory / name


def db_load(root: Path, name: str, default):
    path = root / "fake_db" / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else default


def db_save(root: Path, name: str, value) -> None:
    path = root / "fake_db" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
    os.replace(tmp, path)


# --- dir_hier_path -----------------------------------------------------------------------------------

def dir_hier_path(args: list[str]) -> int:
    if len(args) != 1:
        raise Refused("usage: dir_hier_path filename")
    print(hier_path(project_root(), args[0], create=True))
    return 0


# --- stage_file ----------------------------------------------------------------------------------------

def stage_file(args: list[str]) -> int:
    root = project_root()
    copy = gzip = False
    paths = []
    for a in args:
        if a == "--copy":
            copy = True
        elif a == "--gzip":
            gzip = True
        elif a == "--verbose":
            pass
        elif a.startswith("-"):
            raise Refused(f"stage_file: unknown option {a}")
        else:
            paths.append(Path(a))
    if len(paths) != 1:
        raise Refused("usage: stage_file [--gzip] [--copy] [--verbose] path")
    src = paths[0]
    if not src.is_file():
        raise Refused(f"{src}: no such file")
    target = hier_path(root, src.name, create=True)
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    if target.exists():
        if hashlib.md5(target.read_bytes()).hexdigest() != md5:
            raise Refused(f"a different file named {src.name} is already in the download hierarchy")
    elif copy:
        shutil.copyfile(src, target)
    else:
        os.replace(src, target)
    if gzip:
        import gzip as gz

        with open(target, "rb") as fin, gz.open(str(target) + ".gz", "wb") as fout:
            fout.write(fin.read())
    md5_path = Path(str(target) + ".md5")
    if not md5_path.exists():
        md5_path.write_text(f"{md5} {target.stat().st_size}\n")
    return 0


# --- create_work ---------------------------------------------------------------------------------------

def parse_options(tokens: list[str], allowed: tuple[str, ...], where: str) -> tuple[dict, list[str]]:
    opts: dict = {}
    files: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("--"):
            name = tok[2:]
            if name not in allowed:
                raise Refused(f"{where}: unknown or misplaced option {tok}")
            if name == "stdin":
                opts["stdin"] = True
                i += 1
                continue
            if i + 1 >= len(tokens):
                raise Refused(f"{where}: {tok} needs a value")
            value = tokens[i + 1]
            if name in NUMERIC:
                try:
                    float(value)
                except ValueError:
                    raise Refused(f"{where}: {tok} value {value!r} is not a number") from None
            if name in opts:
                raise Refused(f"{where}: {tok} given twice")
            opts[name] = value
            i += 2
        else:
            files.append(tok)
            i += 1
    return opts, files


def read_input_template(root: Path, rel: str) -> tuple[int, dict, list]:
    path = root / rel
    if not path.is_file():
        raise Refused(f"can't open input template {rel}")
    try:
        tree = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise Refused(f"input template {rel} is not XML: {exc}") from None
    infos = tree.findall("file_info")
    numbers = sorted(int(fi.findtext("number", "-1")) for fi in infos)
    if numbers != list(range(len(infos))):
        raise Refused(f"input template {rel}: file_info numbers {numbers} are not 0..{len(infos) - 1}")
    wu = tree.find("workunit")
    if wu is None:
        raise Refused(f"input template {rel} has no <workunit>")
    refs = []
    for ref in wu.findall("file_ref"):
        n = int(ref.findtext("file_number", "-1"))
        if n not in numbers:
            raise Refused(f"input template {rel}: file_ref to unknown file number {n}")
        refs.append({"file_number": n, "open_name": ref.findtext("open_name"),
                     "copy_file": ref.find("copy_file") is not None})
    values = {}
    for child in wu:
        if child.tag in DEFAULTS:
            values[child.tag] = float(child.text)
    return len(infos), values, refs


def check_output_template(root: Path, rel: str) -> dict:
    path = root / rel
    if not path.is_file():
        raise Refused(f"can't open output template {rel}")
    text = path.read_text()
    try:
        tree = ET.fromstring(text)
    except ET.ParseError as exc:
        raise Refused(f"output template {rel} is not XML: {exc}") from None
    if "<OUTFILE_0/>" not in text or "<UPLOAD_URL/>" not in text:
        raise Refused(f"output template {rel} lacks <OUTFILE_0/> or <UPLOAD_URL/>")
    info = tree.find("file_info")
    nbytes = float(info.findtext("max_nbytes", "0")) if info is not None else 0
    if not nbytes > 0:
        raise Refused(f"output template {rel} has no positive max_nbytes")
    ref = tree.find("result/file_ref")
    return {"max_nbytes": nbytes, "open_name": ref.findtext("open_name") if ref is not None else None,
            "copy_file": ref is not None and ref.find("copy_file") is not None}


def create_work(args: list[str]) -> int:
    root = project_root()
    allowed = ("appname", "wu_name", "wu_template", "result_template", "batch", "command_line", "stdin") + tuple(DEFAULTS) + ("priority",)
    opts, files = parse_options(args, allowed, "create_work")
    app = opts.get("appname")
    if not app:
        raise Refused("create_work: --appname is required")
    apps = db_load(root, "apps", {}).get("apps", [])
    if app not in apps:
        raise Refused(f"create_work: app {app!r} not found (run bin/xadd)")
    jobs = []
    if opts.get("stdin"):
        if files or "wu_name" in opts:
            raise Refused("create_work --stdin: job names and files come on stdin only")
        for n, line in enumerate(sys.stdin.read().splitlines(), 1):
            if not line.strip():
                continue
            line_opts, line_files = parse_options(shlex.split(line), LINE_OPTIONS, f"stdin line {n}")
            if "wu_name" not in line_opts:
                raise Refused(f"stdin line {n}: no --wu_name")
            jobs.append((line_opts, line_files))
    else:
        if "wu_name" not in opts:
            raise Refused("create_work: --wu_name is required")
        jobs.append(({"wu_name": opts["wu_name"]}, files))
    existing = db_load(root, "workunits", [])
    names = {w["name"] for w in existing}
    created = []
    for line_opts, line_files in jobs:
        name = line_opts["wu_name"]
        if name in names:
            raise Refused(f"can't create workunit {name}: Duplicate entry '{name}' for key 'name'")
        names.add(name)
        wu_t = line_opts.get("wu_template") or opts.get("wu_template") or f"templates/{app}_in"
        res_t = line_opts.get("result_template") or opts.get("result_template") or f"templates/{app}_out"
        n_files, template_values, refs = read_input_template(root, wu_t)
        out = check_output_template(root, res_t)
        if len(line_files) != n_files:
            raise Refused(f"{name}: the input template wants {n_files} input files, got {len(line_files)}")
        inputs = []
        for f in line_files:
            path = hier_path(root, f)
            if not path.is_file():
                raise Refused(f"{name}: input file {f} is not staged at {path}")
            inputs.append({"name": f, "md5": hashlib.md5(path.read_bytes()).hexdigest(),
                           "nbytes": path.stat().st_size})
        effective = {}
        for key, default in DEFAULTS.items():
            if key in template_values:
                effective[key] = template_values[key]           # the template wins
            elif key in opts:
                effective[key] = float(opts[key])
            else:
                effective[key] = default
        if effective["target_nresults"] < effective["min_quorum"]:
            raise Refused(f"{name}: target_nresults < min_quorum")
        xml = "<workunit>" + "".join(f"<file_ref><file_name>{i['name']}</file_name>"
                                     f"<open_name>{r['open_name']}</open_name></file_ref>"
                                     for i, r in zip(inputs, refs))
        xml += "".join(f"<{k}>{v}</{k}>" for k, v in effective.items())
        if line_opts.get("command_line") or opts.get("command_line"):
            xml += f"<command_line>{line_opts.get('command_line') or opts.get('command_line')}</command_line>"
        xml += "</workunit>"
        if len(xml) > 64 * 1024:
            raise Refused(f"{name}: workunit XML is {len(xml)} bytes (> 64 KiB)")
        created.append({"name": name, "appname": app, "batch": int(float(opts.get("batch", 0))),
                        "wu_template": wu_t, "result_template": res_t, "inputs": inputs,
                        "input_refs": refs, "output": out, "effective": effective,
                        "command_line_opts": {k: float(v) for k, v in opts.items() if k in DEFAULTS},
                        "command_line": line_opts.get("command_line") or opts.get("command_line")})
    db_save(root, "workunits", existing + created)
    print(f"created {len(created)} workunits")
    return 0


# --- xadd / update_versions --------------------------------------------------------------------------------

def xadd(args: list[str]) -> int:
    root = project_root()
    if args:
        raise Refused("xadd takes no arguments")
    tree = ET.parse(root / "project.xml").getroot()
    state = db_load(root, "apps", {"apps": [], "platforms": []})
    for tag, key in (("app", "apps"), ("platform", "platforms")):
        for element in tree.findall(tag):
            name = (element.findtext("name") or "").strip()
            if not name or not (element.findtext("user_friendly_name") or "").strip():
                raise Refused(f"project.xml: <{tag}> needs name and user_friendly_name")
            if name not in state[key]:
                state[key].append(name)
    db_save(root, "apps", state)
    return 0


def update_versions(args: list[str]) -> int:
    root = project_root()
    state = db_load(root, "apps", {"apps": [], "platforms": []})
    unknown = [a for a in args if a != "--noconfirm"]
    if unknown:
        raise Refused(f"update_versions: unknown option {unknown[0]}")
    versions = db_load(root, "versions", [])
    for version_xml in sorted((root / "apps").glob("*/*/*/version.xml")):
        # The real tool asks per version ("Add this version?") and per file to sign; an unanswered
        # question (end of input) installs nothing: it registers only with every answer, or --noconfirm.
        if "--noconfirm" not in args:
            for question in ("sign files", "add this version"):
                if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                    raise Refused(f"update_versions: {question}? not confirmed (no version registered)")
        platform_dir = version_xml.parent
        app, version, platform = platform_dir.parts[-3:]
        if app not in state["apps"] or platform not in state["platforms"]:
            raise Refused(f"{platform_dir}: app {app} / platform {platform} not added (run xadd)")
        tree = ET.parse(version_xml).getroot()
        for f in tree.findall("file"):
            if not (platform_dir / f.findtext("physical_name", "")).is_file():
                raise Refused(f"{version_xml}: file {f.findtext('physical_name')} is missing")
        entry = {"app": app, "version": version, "platform": platform}
        if entry not in versions:
            versions.append(entry)
    db_save(root, "versions", versions)
    return 0


def cancel_jobs(args: list[str]) -> int:
    root = project_root()
    if len(args) != 2:
        raise Refused("Usage: cancel_jobs min-ID max-ID\nor cancel_jobs --name wuname")
    if args[0] != "--name":
        raise Refused("this stand-in only takes --name wuname")
    jobs = db_load(root, "workunits", [])
    for job in jobs:
        if job["name"] == args[1]:
            job["error_mask"] = job.get("error_mask", 0) | 16
            db_save(root, "workunits", jobs)
            return 0
    print(f"No workunit named '{args[1]}'", file=sys.stderr)
    return 1


TOOLS = {"cancel_jobs": cancel_jobs, "create_work": create_work, "stage_file": stage_file, "dir_hier_path": dir_hier_path, "xadd": xadd,
         "update_versions": update_versions}


def main(argv: list[str]) -> int:
    tool, args = argv[0], argv[1:]
    try:
        return TOOLS[tool](args)
    except Refused as exc:
        sys.stderr.write(f"{tool}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
