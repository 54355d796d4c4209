"""The BOINC slot directory: file-name resolution and ``init_data.xml``.

What a real client put in a slot (../shared/boinc-captures/): every file given without
``<copy_file/>`` is a small text stub ``<soft_link>../../projects/HOST/PHYSICAL</soft_link>``,
never a symlink, and that includes outputs. Writing an output over its stub loses it ("output
file absent"), so outputs are written to the stub's target. With ``<copy_file/>`` an input is the
real file and an output does not exist until the app writes it.

No numpy here: the slot is read before the thread caps are set.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

STUB_OPEN = "<soft_link>"
STUB_CLOSE = "</soft_link>"
_STUB_MAX_BYTES = 4096

DEFAULT_CHECKPOINT_PERIOD_S = 60.0
DEFAULT_NCPUS = 1


@dataclass(frozen=True)
class SlotConfig:
    """What the app takes from ``init_data.xml`` (standalone defaults when it is absent)."""

    under_boinc: bool
    checkpoint_period_s: float = DEFAULT_CHECKPOINT_PERIOD_S
    ncpus: int = DEFAULT_NCPUS
    rsc_memory_bound: float | None = None   # bytes
    rsc_disk_bound: float | None = None     # bytes
    wu_name: str | None = None
    result_name: str | None = None


@dataclass(frozen=True)
class ResolvedFile:
    open_name: str
    path: Path       # where to read/write
    via_stub: bool   # True when the open name was a <soft_link> stub


def read_stub_target(path: Path) -> str | None:
    """The target of a BOINC soft-link stub, or None when ``path`` is a real file."""
    with open(path, "rb") as handle:
        head = handle.read(_STUB_MAX_BYTES + 1)
    if len(head) > _STUB_MAX_BYTES or not head.lstrip().startswith(STUB_OPEN.encode()):
        return None
    text = head.decode("utf-8", errors="strict").strip()
    if not text.endswith(STUB_CLOSE):
        raise ValueError(f"{path}: malformed BOINC soft-link stub {text[:120]!r}")
    target = text[len(STUB_OPEN):-len(STUB_CLOSE)].strip()
    if not target:
        raise ValueError(f"{path}: empty BOINC soft-link stub")
    return target


def resolve_input(slot_dir: Path, open_name: str) -> ResolvedFile:
    """Where to read the input called ``open_name`` in the slot.

    Raises FileNotFoundError when the open name, or the stub's target, does not exist.
    """
    path = Path(slot_dir) / open_name
    if not path.is_file():
        raise FileNotFoundError(f"input {open_name!r} not found in slot ({path})")
    target = read_stub_target(path)
    if target is None:
        return ResolvedFile(open_name, path, via_stub=False)
    real = Path(slot_dir) / target
    if not real.is_file():
        raise FileNotFoundError(f"input {open_name!r} is a stub to {target!r}, which does not exist")
    return ResolvedFile(open_name, real, via_stub=True)


def resolve_output(slot_dir: Path, open_name: str) -> ResolvedFile:
    """Where to write the output called ``open_name``: the stub's target, or the slot file."""
    path = Path(slot_dir) / open_name
    if path.is_file():
        target = read_stub_target(path)
        if target is not None:
            return ResolvedFile(open_name, Path(slot_dir) / target, via_stub=True)
    return ResolvedFile(open_name, path, via_stub=False)


def check_writable(directory: Path) -> None:
    """Raise PermissionError/OSError now, not after hours of work, if ``directory`` is unwritable."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"output directory {directory} does not exist")
    probe = directory / f".openastro-write-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"ok")
    finally:
        if probe.exists():
            probe.unlink()


def _float(root: ET.Element, tag: str) -> float | None:
    node = root.find(tag)
    if node is None or node.text is None or not node.text.strip():
        return None
    try:
        return float(node.text.strip())
    except ValueError as exc:
        raise ValueError(f"init_data.xml: <{tag}> is not a number: {node.text!r}") from exc


def _text(root: ET.Element, tag: str) -> str | None:
    node = root.find(tag)
    if node is None or node.text is None:
        return None
    return node.text.strip() or None


def parse_init_data(text: str) -> SlotConfig:
    """Parse the text of a BOINC ``init_data.xml`` (the client's ``<app_init_data>``)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"init_data.xml is not well-formed XML: {exc}") from exc
    if root.tag != "app_init_data":
        raise ValueError(f"init_data.xml: root element is <{root.tag}>, expected <app_init_data>")
    period = _float(root, "checkpoint_period")
    if period is None or period <= 0:
        period = DEFAULT_CHECKPOINT_PERIOD_S
    ncpus_f = _float(root, "ncpus")
    # The client gives ncpus as a float ("1.000000", or e.g. 0.5 for a fractional share).
    ncpus = DEFAULT_NCPUS if ncpus_f is None else max(1, int(round(ncpus_f)))
    return SlotConfig(
        under_boinc=True,
        checkpoint_period_s=period,
        ncpus=ncpus,
        rsc_memory_bound=_float(root, "rsc_memory_bound"),
        rsc_disk_bound=_float(root, "rsc_disk_bound"),
        wu_name=_text(root, "wu_name"),
        result_name=_text(root, "result_name"),
    )


def load_slot_config(slot_dir: Path) -> SlotConfig:
    """``init_data.xml`` of the slot, or standalone defaults when there is none."""
    path = Path(slot_dir) / "init_data.xml"
    if not path.is_file():
        return SlotConfig(under_boinc=False)
    return parse_init_data(path.read_text(encoding="utf-8", errors="replace"))
