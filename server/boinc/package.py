"""Build the frozen volunteer app and lay out a BOINC app version for it.

Layout produced for ``--version 1.00`` on Linux x86_64 (all physical names carry the version and
the platform: BOINC physical names are immutable forever, so a changed file needs a new version)::

    apps/openastro_app/1.00/x86_64-pc-linux-gnu/
        <wrapper physical name>                        main program (BOINC's wrapper, from the admin)
        openastro_app_1.00_x86_64-pc-linux-gnu.zip     onedir bundle, logical name openastro_app.zip
        openastro_app_job_1.00_x86_64-pc-linux-gnu.xml logical name job.xml
        version.xml                                    is_wrapper

The wrapper unpacks the zip into the slot once (``<unzip_input>``; it deletes the zip's stub after
unpacking, so a restarted task does not unpack again) and runs ``openastro_app/openastro_app``.
Choice and measurements: docs/volunteer_app.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as _platform
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from string import Template

APP_NAME = "openastro_app"
ZIP_LOGICAL_NAME = f"{APP_NAME}.zip"
CHECKPOINT_FILENAME = "openastro_checkpoint.dat"
FRACTION_DONE_FILENAME = "fraction_done"
SPEC_OPEN_NAME = "wu.json"
VERSION_META = ".openastro.json"  # server.boinc.hosts reads it
RESULT_OPEN_NAME = "result.npz"
REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGING_DIR = REPO_ROOT / "packaging"

_VERSION_RE = re.compile(r"^[0-9]{1,3}\.[0-9]{2}$")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

PLATFORMS = ("x86_64-pc-linux-gnu", "aarch64-unknown-linux-gnu", "windows_x86_64",
             "x86_64-apple-darwin", "arm64-apple-darwin")


class PackagingError(RuntimeError):
    """Building or laying out the app version failed."""


@dataclass(frozen=True)
class PackagedVersion:
    version_dir: Path
    platform: str
    zip_path: Path
    job_path: Path
    version_xml: Path
    wrapper_path: Path
    bundle_bytes: int
    zip_bytes: int
    glibc_floor: str | None


def check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise ValueError(f"app version must look like X.YY (e.g. 1.00), got {version!r}")
    return version


def platform_name(system: str | None = None, machine: str | None = None) -> str:
    """BOINC platform name of the machine the build runs on (PyInstaller builds for the host)."""
    system = (system or _platform.system()).lower()
    machine = (machine or _platform.machine()).lower()
    table = {
        ("linux", "x86_64"): "x86_64-pc-linux-gnu",
        ("linux", "amd64"): "x86_64-pc-linux-gnu",
        ("linux", "aarch64"): "aarch64-unknown-linux-gnu",
        ("linux", "arm64"): "aarch64-unknown-linux-gnu",
        ("windows", "amd64"): "windows_x86_64",
        ("windows", "x86_64"): "windows_x86_64",
        ("darwin", "x86_64"): "x86_64-apple-darwin",
        ("darwin", "arm64"): "arm64-apple-darwin",
    }
    try:
        return table[(system, machine)]
    except KeyError:
        raise PackagingError(f"no BOINC platform name for system={system!r} machine={machine!r}") from None


def executable_name(platform: str) -> str:
    return f"{APP_NAME}.exe" if platform.startswith("windows") else APP_NAME


def build_frozen_app(build_dir: Path, *, python: str | None = None, spec: Path | None = None) -> Path:
    """Run PyInstaller on packaging/openastro_app.spec; return the onedir bundle directory."""
    build_dir = Path(build_dir)
    spec = Path(spec) if spec is not None else PACKAGING_DIR / "openastro_app.spec"
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, "1")
    command = [python or sys.executable, "-m", "PyInstaller", "--noconfirm",
               "--log-level", "WARN", "--distpath", str(build_dir / "dist"),
               "--workpath", str(build_dir / "work"), str(spec)]
    proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise PackagingError(f"PyInstaller failed (exit {proc.returncode}):\n{tail}")
    bundle = build_dir / "dist" / APP_NAME
    if not (bundle / APP_NAME).is_file() and not (bundle / f"{APP_NAME}.exe").is_file():
        raise PackagingError(f"PyInstaller produced no executable in {bundle}")
    return bundle


def tree_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file() and not p.is_symlink())


def zip_bundle(bundle_dir: Path, zip_path: Path, *, compresslevel: int = 6) -> None:
    """Zip the onedir bundle as ``<bundle name>/...`` keeping Unix permissions (like ``zip -X``).

    Entries are sorted and dated 1980-01-01 so the zip depends only on the bundle's content.
    Symlinks: PyInstaller 6 adds top-level links ``_internal/libX.so -> numpy.libs/libX.so``;
    the extension modules load those libraries through their own RPATH (checked with LD_DEBUG,
    and the packaging test runs the unzipped app), so links to files inside the bundle are left
    out - no duplicate 25 MB OpenBLAS copies, and no reliance on BOINC's unzip restoring links.
    A link pointing outside the bundle is stored as the file it points to.
    """
    bundle_dir = Path(bundle_dir)
    top = bundle_dir.name
    root = bundle_dir.resolve()
    tmp = Path(str(zip_path) + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel) as archive:
        for path in sorted(bundle_dir.rglob("*")):
            rel = path.relative_to(bundle_dir).as_posix()
            arcname = f"{top}/{rel}"
            if path.is_symlink() and path.resolve().is_relative_to(root):
                continue
            if path.is_dir() and not path.is_symlink():
                info = zipfile.ZipInfo(arcname + "/", date_time=_ZIP_EPOCH)
                info.create_system = 3  # Unix: unzip restores the mode bits below
                info.external_attr = ((stat.S_IFDIR | 0o755) << 16) | 0x10
                archive.writestr(info, b"")
                continue
            real = path.resolve()
            mode = stat.S_IMODE(real.stat().st_mode)
            info = zipfile.ZipInfo(arcname, date_time=_ZIP_EPOCH)
            info.create_system = 3
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(real, "rb") as handle:
                archive.writestr(info, handle.read(), compress_type=zipfile.ZIP_DEFLATED,
                                 compresslevel=compresslevel)
    os.replace(tmp, zip_path)


_GLIBC_RE = re.compile(r"GLIBC_([0-9]+)\.([0-9]+)(?:\.([0-9]+))?")


def glibc_floor(bundle_dir: Path) -> str | None:
    """Highest ``GLIBC_x.y`` symbol version any ELF file in the bundle needs (``objdump -T``).

    That is the oldest glibc the build runs on. None when objdump is missing or nothing is ELF.
    """
    objdump = shutil.which("objdump")
    if objdump is None:
        return None
    best: tuple[int, int, int] | None = None
    for path in sorted(Path(bundle_dir).rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        with open(path, "rb") as handle:
            if handle.read(4) != b"\x7fELF":
                continue
        proc = subprocess.run([objdump, "-T", str(path)], capture_output=True, text=True)
        for match in _GLIBC_RE.finditer(proc.stdout):
            version = tuple(int(g or 0) for g in match.groups())
            if best is None or version > best:
                best = version
    if best is None:
        return None
    return ".".join(str(v) for v in (best if best[2] else best[:2]))


def _render(template_name: str, **values: str) -> str:
    text = (PACKAGING_DIR / template_name).read_text(encoding="utf-8")
    return Template(text).substitute(**values)


def render_job_xml(platform: str) -> str:
    command_line = (f"run --spec {SPEC_OPEN_NAME} --out {RESULT_OPEN_NAME} "
                    f"--checkpoint {CHECKPOINT_FILENAME} --fraction-done {FRACTION_DONE_FILENAME}")
    return _render("job.xml.in", zip_logical_name=ZIP_LOGICAL_NAME,
                   application=f"{APP_NAME}/{executable_name(platform)}",
                   command_line=command_line, checkpoint_filename=CHECKPOINT_FILENAME,
                   fraction_done_filename=FRACTION_DONE_FILENAME)


def physical_names(version: str, platform: str, wrapper: Path) -> dict[str, str]:
    """Immutable physical names for one app version on one platform."""
    check_version(version)
    wrapper_name = Path(wrapper).name
    if not wrapper_name.endswith(platform):
        # The admin's wrapper file is not named per BOINC convention: give it a name that
        # changes with its content.
        digest = hashlib.sha256(Path(wrapper).read_bytes()).hexdigest()[:12]
        suffix = ".exe" if platform.startswith("windows") else ""
        wrapper_name = f"wrapper_{digest}_{platform}{suffix}"
    return {"wrapper": wrapper_name,
            "zip": f"{APP_NAME}_{version}_{platform}.zip",
            "job": f"{APP_NAME}_job_{version}_{platform}.xml"}


def render_version_xml(names: dict[str, str]) -> str:
    return _render("version.xml.in", wrapper_physical_name=names["wrapper"],
                   zip_physical_name=names["zip"], zip_logical_name=ZIP_LOGICAL_NAME,
                   job_physical_name=names["job"])


def package_app_version(apps_dir: Path, version: str, wrapper: Path, *, bundle_dir: Path | None = None,
                        build_dir: Path | None = None, platform: str | None = None,
                        compresslevel: int = 6) -> PackagedVersion:
    """Lay out ``apps_dir/openastro_app/VERSION/PLATFORM/``; build the bundle unless given.

    Refuses to touch an existing version directory. Everything is assembled in a temp dir beside
    the target and renamed into place, so a failure leaves nothing half-made.
    """
    check_version(version)
    wrapper = Path(wrapper)
    if not wrapper.is_file():
        raise PackagingError(f"wrapper {wrapper} does not exist (build BOINC's samples/wrapper first)")
    platform = platform or platform_name()
    if platform not in PLATFORMS:
        raise PackagingError(f"unknown BOINC platform {platform!r}; known: {', '.join(PLATFORMS)}")
    target = Path(apps_dir) / APP_NAME / version / platform
    if target.exists():
        raise PackagingError(f"{target} already exists: physical names are immutable, "
                             "bump --version instead of rebuilding")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".openastro-build-", dir=target.parent) as scratch:
        scratch = Path(scratch)
        if bundle_dir is None:
            bundle_dir = build_frozen_app(build_dir or scratch / "build")
        bundle_dir = Path(bundle_dir)
        if not (bundle_dir / executable_name(platform)).is_file():
            raise PackagingError(f"{bundle_dir} holds no {executable_name(platform)}")
        if bundle_dir.name != APP_NAME:
            raise PackagingError(f"bundle directory must be named {APP_NAME!r}, got {bundle_dir.name!r}")
        names = physical_names(version, platform, wrapper)
        staging = scratch / "version"
        staging.mkdir()
        zip_bundle(bundle_dir, staging / names["zip"], compresslevel=compresslevel)
        shutil.copy2(wrapper, staging / names["wrapper"])
        os.chmod(staging / names["wrapper"], 0o755)
        (staging / names["job"]).write_text(render_job_xml(platform), encoding="utf-8")
        (staging / "version.xml").write_text(render_version_xml(names), encoding="utf-8")
        floor = glibc_floor(bundle_dir) if platform.endswith("linux-gnu") else None
        bundle_bytes = tree_size(bundle_dir)
        # what `openastro boinc hosts` needs to know of this version (a dot file: update_versions skips it)
        (staging / VERSION_META).write_text(json.dumps(
            {"platform": platform, "glibc_floor": floor, "bundle_bytes": bundle_bytes}, sort_keys=True) + "\n",
            encoding="utf-8")
        os.rename(staging, target)
    return PackagedVersion(version_dir=target, platform=platform, zip_path=target / names["zip"],
                           job_path=target / names["job"], version_xml=target / "version.xml",
                           wrapper_path=target / names["wrapper"], bundle_bytes=bundle_bytes,
                           zip_bytes=(target / names["zip"]).stat().st_size, glibc_floor=floor)
