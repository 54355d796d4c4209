"""Which attached hosts can take work: reach measured from BOINC's ``host`` table, not assumed (issue #23 item 6).

BOINC's ``host`` table keeps what each client reported at its last scheduler RPC: ``os_name`` ("Linux Debian",
"Microsoft Windows 11", "Darwin"), ``os_version`` (on Linux "Debian GNU/Linux 12 (bookworm) [6.1.0|libc 2.36]"),
``p_vendor``/``p_model`` (the CPU), ``p_ncpus``, ``m_nbytes`` (RAM), ``rpc_time``, ``expavg_credit``, and ``misc``
(JSON: client version, GPUs, Docker/Podman). It does not keep the platform names the client asked for, nor its CPU
feature flags (those travel only in the request): the platforms are inferred here the way BOINC clients report
them (a 64-bit client also asks for its 32-bit platform; an Apple-silicon Mac also for x86_64 under Rosetta).

An app version is usable by a host when the host asks for its platform, its plan class needs nothing the host lacks
(``docker``/container plan classes need Docker or Podman in ``misc``) and, on Linux, the host's glibc is at least
the version's floor (``boinc package`` records it in ``.openastro.json`` beside the version's files; BOINC's
``update_versions`` skips dot files). A host is active when its last RPC is at most ``active_days`` old.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from server.boinc.package import VERSION_META  # written by `boinc package`

_LIBC = re.compile(r"libc\s+(\d+)\.(\d+)")


@dataclass(frozen=True)
class HostRow:
    """One row of BOINC's ``host`` table (the columns this report reads)."""

    id: int
    os_name: str
    os_version: str
    p_vendor: str
    p_model: str
    p_ncpus: int
    m_nbytes: float
    rpc_time: int
    expavg_credit: float
    misc: str = ""

    @classmethod
    def from_db(cls, row: Sequence) -> "HostRow":
        """From (id, os_name, os_version, p_vendor, p_model, p_ncpus, m_nbytes, rpc_time, expavg_credit, misc)."""
        i, os_name, os_version, vendor, model, ncpus, mem, rpc_time, credit, misc = row
        return cls(int(i), os_name or "", os_version or "", vendor or "", model or "", int(ncpus or 0),
                   float(mem or 0), int(rpc_time or 0), float(credit or 0), misc or "")


@dataclass(frozen=True)
class AppVersionRow:
    """A registered app version: BOINC's ``app_version`` + ``platform`` rows, with our recorded glibc floor."""

    version_num: int
    platform: str
    plan_class: str = ""
    deprecated: bool = False
    glibc_floor: tuple[int, int] | None = None


@dataclass(frozen=True)
class HostReach:
    host: HostRow
    platforms: tuple[str, ...]
    os_family: str
    glibc: tuple[int, int] | None
    container: bool
    active: bool
    usable: tuple[AppVersionRow, ...]
    why_not: str          # empty when usable


@dataclass(frozen=True)
class ReachReport:
    hosts: tuple[HostReach, ...]
    active_days: float

    @property
    def active(self) -> list[HostReach]:
        return [h for h in self.hosts if h.active]

    def share_without_version(self) -> tuple[float, float]:
        """(share of active hosts, share of their recent average credit) with no usable app version."""
        active = self.active
        if not active:
            return 0.0, 0.0
        stranded = [h for h in active if not h.usable]
        credit = sum(max(h.host.expavg_credit, 0.0) for h in active)
        stranded_credit = sum(max(h.host.expavg_credit, 0.0) for h in stranded)
        return len(stranded) / len(active), (stranded_credit / credit if credit > 0 else 0.0)

    def by_platform(self) -> Counter:
        return Counter(h.platforms[0] if h.platforms else "unknown" for h in self.active)


def glibc_of(os_version: str) -> tuple[int, int] | None:
    """The glibc a Linux client reported ("... [6.1.0|libc 2.36]"), or None."""
    m = _LIBC.search(os_version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


_X86_VENDORS = ("genuineintel", "authenticamd", "hygongenuine", "centaurhauls", "shanghai", "intel", "amd")
_ARM_MARKERS = ("arm", "aarch64", "apple", "cortex", "neoverse", "qualcomm", "snapdragon", "broadcom", "bcm2")


def cpu_arch(vendor: str, model: str) -> str:
    """The CPU family, "x86" or "arm", from the CPU vendor (decisive when it is an x86 vendor or Apple/ARM) and model."""
    v, m = (vendor or "").strip().lower(), (model or "").lower()
    if v in _X86_VENDORS:
        return "x86"
    if any(s in v for s in _ARM_MARKERS):
        return "arm"
    if any(s in m for s in _ARM_MARKERS):
        return "arm"
    return "x86"


def host_platforms(host: HostRow) -> tuple[str, tuple[str, ...]]:
    """(OS family, BOINC platform names the host's client asks for, primary first)."""
    name = (host.os_name or "").lower()
    version = (host.os_version or "").lower()
    arm = cpu_arch(host.p_vendor, host.p_model) == "arm"
    if "android" in name:
        return "android", ("aarch64-android-linux-gnu", "arm-android-linux-gnu") if arm else ("x86_64-android-linux-gnu",)
    if "windows" in name:
        if arm:
            return "windows", ("windows_arm64", "windows_x86_64", "windows_intelx86")
        return "windows", ("windows_x86_64", "windows_intelx86")
    if "darwin" in name or "mac" in name:
        if arm:
            return "macos", ("arm64-apple-darwin", "x86_64-apple-darwin")
        return "macos", ("x86_64-apple-darwin",)
    if "linux" in name or "linux" in version:
        if arm:
            return "linux", ("aarch64-unknown-linux-gnu", "arm-unknown-linux-gnueabihf")
        return "linux", ("x86_64-pc-linux-gnu", "i686-pc-linux-gnu")
    return "unknown", ()


def has_container_runtime(misc: str) -> bool:
    try:
        info = json.loads(misc or "{}")
    except ValueError:
        return False
    return isinstance(info, dict) and isinstance(info.get("docker"), dict) and bool(info["docker"].get("version"))


def usable_versions(host: HostRow, versions: Sequence[AppVersionRow]) -> tuple[tuple[AppVersionRow, ...], str]:
    """The app versions the host can run, and (when none) why not, in one line."""
    family, platforms = host_platforms(host)
    glibc = glibc_of(host.os_version)
    container = has_container_runtime(host.misc)
    usable, reasons = [], []
    live = [v for v in versions if not v.deprecated]
    for v in live:
        if v.platform not in platforms:
            continue
        if v.plan_class and ("docker" in v.plan_class or "container" in v.plan_class) and not container:
            reasons.append(f"{v.platform} {v.plan_class} needs Docker/Podman")
            continue
        if v.glibc_floor and v.platform.endswith("linux-gnu"):
            if glibc is None:
                reasons.append(f"{v.platform} needs glibc >= {v.glibc_floor[0]}.{v.glibc_floor[1]}; host did not "
                               "report its glibc")
                continue
            if glibc < v.glibc_floor:
                reasons.append(f"glibc {glibc[0]}.{glibc[1]} < {v.platform} floor "
                               f"{v.glibc_floor[0]}.{v.glibc_floor[1]}")
                continue
        usable.append(v)
    if usable:
        return tuple(usable), ""
    if not reasons:
        reasons.append(f"no app version for {family} ({', '.join(platforms) or 'platform unknown'})")
    return (), "; ".join(dict.fromkeys(reasons))


def reach(hosts: Iterable[HostRow], versions: Sequence[AppVersionRow], *, now: float,
          active_days: float = 30.0) -> ReachReport:
    out = []
    for h in hosts:
        family, platforms = host_platforms(h)
        usable, why = usable_versions(h, versions)
        out.append(HostReach(h, platforms, family, glibc_of(h.os_version), has_container_runtime(h.misc),
                             active=(now - h.rpc_time) <= active_days * 86400.0, usable=usable, why_not=why))
    return ReachReport(tuple(out), float(active_days))


def version_floors(project_dir: str | Path, app_name: str) -> dict[tuple[str, str], tuple[int, int] | None]:
    """{(version "X.YY", platform): glibc floor} from ``apps/APP/VERSION/PLATFORM/.openastro.json``."""
    floors: dict[tuple[str, str], tuple[int, int] | None] = {}
    for meta in sorted(Path(project_dir, "apps", app_name).glob(f"*/*/{VERSION_META}")):
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        floor = data.get("glibc_floor")
        parsed = None
        if isinstance(floor, str) and re.fullmatch(r"\d+\.\d+", floor):
            major, minor = floor.split(".")
            parsed = (int(major), int(minor))
        floors[(meta.parent.parent.name, meta.parent.name)] = parsed
    return floors


def version_label(version_num: int) -> str:
    """BOINC's version_num (100) as the apps/ directory name ("1.00")."""
    return f"{version_num // 100}.{version_num % 100:02d}"


def attach_floors(rows: Iterable[tuple[int, str, str, bool]],
                  floors: Mapping[tuple[str, str], tuple[int, int] | None]) -> list[AppVersionRow]:
    """AppVersionRow per (version_num, platform, plan_class, deprecated) row, with the recorded glibc floor."""
    return [AppVersionRow(int(num), str(platform), str(plan or ""), bool(dep),
                          floors.get((version_label(int(num)), str(platform))))
            for num, platform, plan, dep in rows]


def format_report(report: ReachReport, versions: Sequence[AppVersionRow]) -> list[str]:
    lines = []
    live = [v for v in versions if not v.deprecated]
    lines.append("app versions: " + (", ".join(
        f"{version_label(v.version_num)} {v.platform}{' (' + v.plan_class + ')' if v.plan_class else ''}"
        f"{' glibc >= %d.%d' % v.glibc_floor if v.glibc_floor else ''}" for v in live) or "none registered"))
    lines.append(f"{'host':>6}  {'active':<6} {'platform':<26} {'os':<34} {'glibc':<6} {'cpus':>4} {'RAM GB':>6} "
                 f"{'credit':>9}  usable versions")
    for h in report.hosts:
        glibc = f"{h.glibc[0]}.{h.glibc[1]}" if h.glibc else "-"
        usable = ", ".join(f"{version_label(v.version_num)} {v.platform}" for v in h.usable) or f"none: {h.why_not}"
        lines.append(f"{h.host.id:>6}  {'yes' if h.active else 'no':<6} {(h.platforms or ('unknown',))[0]:<26} "
                     f"{(h.host.os_name + ' ' + h.host.os_version)[:34]:<34} {glibc:<6} {h.host.p_ncpus:>4} "
                     f"{h.host.m_nbytes / 2**30:>6.1f} {h.host.expavg_credit:>9.1f}  {usable}")
    hosts, credit = report.share_without_version()
    counts = ", ".join(f"{p} {n}" for p, n in report.by_platform().most_common()) or "none"
    lines.append(f"active hosts (last RPC within {report.active_days:g} days): {len(report.active)} ({counts})")
    lines.append(f"with no usable app version: {hosts:.1%} of active hosts, {credit:.1%} of their recent credit")
    return lines
