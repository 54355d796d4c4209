"""Test helpers for the BOINC side: a project directory laid out like a real one, and small TTV runs.

``make_fake_project(root)`` lays out what ``make_project`` leaves (bin/, templates/, download/ with the
fan-out, upload/, tmp_HOST/, log_HOST/, config.xml, project.xml) with strict stand-ins for the server tools
(tests/fake_boinc_tools.py). ``run_as_boinc`` calls a bin/ program exactly as script_validator and
script_assimilator do: ``system("../bin/NAME ARGS")`` from ``PROJECT/tmp_HOST``.
"""

from __future__ import annotations

import functools
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

TOOLS_SCRIPT = Path(__file__).with_name("fake_boinc_tools.py")
HOST = "testhost"

CONFIG_XML = """<?xml version="1.0" ?>
<boinc>
    <config>
        <!-- written by make_project -->
        <upload_dir>{root}/upload</upload_dir>
        <download_dir>{root}/download</download_dir>
        <download_url>http://127.0.0.1/openastro/download</download_url>
        <upload_url>http://127.0.0.1/openastro_cgi/file_upload_handler</upload_url>
        <uldl_dir_fanout>1024</uldl_dir_fanout>
        <db_name>openastro</db_name>
        <host>{host}</host>
    </config>
    <tasks>
        <task><cmd>antique_file_deleter -d 2</cmd><period>24 hours</period><output>antique_file_deleter.out</output></task>
    </tasks>
    <daemons>
        <daemon><cmd>feeder -d 3</cmd></daemon>
        <daemon><cmd>transitioner -d 3</cmd></daemon>
        <daemon><cmd>file_deleter -d 3</cmd></daemon>
    </daemons>
</boinc>
"""

PROJECT_XML = """<boinc>
    <platform><name>x86_64-pc-linux-gnu</name><user_friendly_name>Linux x86_64</user_friendly_name></platform>
</boinc>
"""


def make_fake_project(root: Path) -> Path:
    root = Path(root)
    for d in ("bin", "templates", "download", "upload", f"tmp_{HOST}", f"log_{HOST}", "apps", "html/ops"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "config.xml").write_text(CONFIG_XML.format(root=root, host=HOST))
    (root / "project.xml").write_text(PROJECT_XML)
    for tool in ("create_work", "stage_file", "dir_hier_path", "xadd", "update_versions", "cancel_jobs"):
        path = root / "bin" / tool
        path.write_text(f"#!/bin/sh\nexec '{sys.executable}' '{TOOLS_SCRIPT}' {tool} \"$@\"\n")
        path.chmod(0o755)
    return root


def run_tool(project: Path, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([f"bin/{argv[0]}", *argv[1:]], cwd=project, input=stdin, capture_output=True, text=True)


def run_as_boinc(project: Path, script: str, *args) -> subprocess.CompletedProcess:
    """system("../bin/SCRIPT ARGS") from PROJECT/tmp_HOST: unquoted paths, the daemon's environment."""
    command = " ".join([f"../bin/{script}", *[str(a) for a in args]])
    return subprocess.run(command, shell=True, cwd=Path(project) / f"tmp_{HOST}", capture_output=True, text=True)


def fake_db(project: Path, name: str):
    path = Path(project) / "fake_db" / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


# --- small TTV work (tests/app_workunits.py's system: 3 free parameters, ~20 s per nested run) ----------

def small_ttv_params(nlive: int = 30, period=(22.2, 22.4)) -> dict:
    from app_workunits import _ttv_likelihood

    like = _ttv_likelihood(7, 30)
    like["prior"]["planets"][1]["period"] = {"dist": "uniform", "min": float(period[0]), "max": float(period[1])}
    return {"likelihood": like, "sampler": {"name": "dynesty", "nlive": nlive, "sample": "rwalk", "dlogz": 0.5},
            "label": {"test": True}}


@functools.lru_cache(maxsize=8)
def small_ttv_result_bytes(seed: tuple[int, ...], nlive: int = 30, period=(22.2, 22.4)) -> bytes:
    """The result.npz bytes the app would upload for a small ttv-nested work unit (cached per session)."""
    from app.spec import encode_result, result_meta
    from app.ttv.task import run_ttv_task

    params = small_ttv_params(nlive, period)
    result = run_ttv_task(params, list(seed), None)
    meta = result_meta("ttv-nested", tuple(seed), app_version="test", wu_name=None, timings={"wall_s": 1.0},
                       extra={"ttv": result.meta})
    return encode_result(meta, dict(result.arrays))


def spec_for(params: dict, seed, kind: str = "ttv-nested") -> dict:
    return {"format": "openastro.wu", "version": 1, "kind": kind, "seed": list(seed), "inputs": {}, "params": params}


def rewrite_result(data: bytes, *, meta_update=None, arrays_update=None, drop=()) -> bytes:
    """Decode a result npz, change it, and encode it again (for forged/bad results)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {k: np.array(npz[k]) for k in npz.files}
    meta = json.loads(str(arrays.pop("meta")))
    if meta_update:
        meta.update(meta_update)
    if arrays_update:
        arrays.update(arrays_update)
    for k in drop:
        arrays.pop(k, None)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, meta=np.asarray(json.dumps(meta)), **arrays)
    return buffer.getvalue()
