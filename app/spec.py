"""The work-unit spec (``wu.json``) and the result envelope (``result.npz``).

Both cross a trust boundary (server -> volunteer -> server), so both are plain, versioned data.

Work-unit spec, version 1::

    {"format": "openastro.wu", "version": 1,
     "kind": "ttv-nested" | "ttv-emcee" | "reproject-tile",
     "seed": [entropy, spawn_key...],        # numpy SeedSequence(entropy, spawn_key=(...))
     "inputs": {"logical name": "open name in the slot", ...},
     "params": {...kind-specific, validated by the task...}}

Result envelope, version 1: an ``.npz`` holding ``meta`` (a 0-d unicode array with a JSON
object: format "openastro.result", version, kind, app_version, seed, wu_name, timings) and the
kind's numeric arrays. It is read with ``allow_pickle=False`` only, and object arrays are refused.
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from app.atomic import atomic_write_bytes

WU_FORMAT = "openastro.wu"
WU_VERSION = 1
RESULT_FORMAT = "openastro.result"
RESULT_VERSION = 1
KINDS = ("ttv-nested", "ttv-emcee", "reproject-tile")

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_ARRAY_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_SPEC_BYTES = 1 << 20  # the expanded BOINC workunit XML is capped at 64 KiB; a spec is small


class SpecError(ValueError):
    """The work-unit spec is malformed."""


class ResultFormatError(ValueError):
    """A result file is not a well-formed openastro.result envelope."""


@dataclass(frozen=True)
class WorkUnitSpec:
    kind: str
    seed: tuple[int, ...]
    inputs: Mapping[str, str]
    params: Mapping[str, Any]
    version: int = WU_VERSION
    format: str = WU_FORMAT

    def seed_sequence(self):
        """The numpy SeedSequence this work unit's randomness must come from."""
        import numpy as np

        return np.random.SeedSequence(self.seed[0], spawn_key=tuple(self.seed[1:]))

    def to_json(self) -> str:
        return json.dumps({"format": self.format, "version": self.version, "kind": self.kind,
                           "seed": list(self.seed), "inputs": dict(self.inputs),
                           "params": self.params}, sort_keys=True, indent=1)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_open_name(name: Any, what: str) -> str:
    """An open name must be a plain file name in the slot (no directories, no '..')."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or PurePosixPath(name).name != name:
        raise SpecError(f"{what}: {name!r} is not a plain file name "
                        "(letters, digits, '_', '.', '-'; no path separators)")
    return name


def parse_spec(obj: Any) -> WorkUnitSpec:
    """Validate a decoded ``wu.json`` object; raise SpecError naming the offending value."""
    if not isinstance(obj, dict):
        raise SpecError(f"work-unit spec must be a JSON object, got {type(obj).__name__}")
    allowed = {"format", "version", "kind", "seed", "inputs", "params"}
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise SpecError(f"work-unit spec has unknown keys {unknown}")
    missing = sorted(allowed - set(obj))
    if missing:
        raise SpecError(f"work-unit spec lacks keys {missing}")
    if obj["format"] != WU_FORMAT:
        raise SpecError(f"spec format is {obj['format']!r}, expected {WU_FORMAT!r}")
    if not _is_int(obj["version"]) or obj["version"] != WU_VERSION:
        raise SpecError(f"spec version {obj['version']!r} is not supported (this app reads {WU_VERSION})")
    kind = obj["kind"]
    if kind not in KINDS:
        raise SpecError(f"unknown task kind {kind!r}; known kinds: {', '.join(KINDS)}")
    seed = obj["seed"]
    if (not isinstance(seed, list) or not seed or len(seed) > 32
            or not all(_is_int(s) and 0 <= s < 2**128 for s in seed)):
        raise SpecError(f"seed must be a non-empty list of non-negative integers "
                        f"[entropy, spawn_key...], got {seed!r}")
    inputs = obj["inputs"]
    if not isinstance(inputs, dict):
        raise SpecError(f"inputs must be an object {{logical name: open name}}, got {inputs!r}")
    for logical, open_name in inputs.items():
        if not _NAME_RE.match(logical):
            raise SpecError(f"input logical name {logical!r} is not a plain name")
        check_open_name(open_name, f"input {logical!r}")
    params = obj["params"]
    if not isinstance(params, dict):
        raise SpecError(f"params must be an object, got {type(params).__name__}")
    return WorkUnitSpec(kind=kind, seed=tuple(seed), inputs=dict(inputs), params=params)


def load_spec(path: Path) -> WorkUnitSpec:
    """Read and validate a ``wu.json`` file."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"{path.name} is {size} bytes; a work-unit spec is at most {MAX_SPEC_BYTES}")
    raw = path.read_bytes()
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"{path.name} is not valid JSON: {exc}") from exc
    return parse_spec(obj)


# --- result envelope ------------------------------------------------------------------------

@dataclass(frozen=True)
class ResultEnvelope:
    meta: Mapping[str, Any]
    arrays: Mapping[str, Any] = field(repr=False)

    @property
    def kind(self) -> str:
        return self.meta["kind"]


def result_meta(kind: str, seed: tuple[int, ...], *, app_version: str, wu_name: str | None,
                timings: Mapping[str, float], extra: Mapping[str, Any] | None = None) -> dict:
    meta = {"format": RESULT_FORMAT, "version": RESULT_VERSION, "kind": kind,
            "app_version": app_version, "seed": list(seed), "wu_name": wu_name,
            "timings": {k: float(v) for k, v in timings.items()}}
    if extra:
        clash = sorted(set(extra) & set(meta))
        if clash:
            raise ValueError(f"extra meta keys {clash} clash with envelope keys")
        meta.update(extra)
    return meta


def encode_result(meta: Mapping[str, Any], arrays: Mapping[str, Any]) -> bytes:
    """The bytes of a result ``.npz`` (meta JSON + numeric arrays)."""
    import numpy as np

    if meta.get("format") != RESULT_FORMAT or meta.get("kind") not in KINDS:
        raise ValueError(f"result meta is not an {RESULT_FORMAT} envelope: {dict(meta)!r}")
    payload = {}
    for name, value in arrays.items():
        if name == "meta" or not _ARRAY_NAME_RE.match(name):
            raise ValueError(f"invalid result array name {name!r}")
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise ValueError(f"result array {name!r} has dtype object; only plain data is allowed")
        payload[name] = array
    payload["meta"] = np.asarray(json.dumps(meta, sort_keys=True, allow_nan=False))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **payload)
    return buffer.getvalue()


def write_result(path: Path, meta: Mapping[str, Any], arrays: Mapping[str, Any]) -> None:
    atomic_write_bytes(path, encode_result(meta, arrays))


def read_result(source) -> ResultEnvelope:
    """Load a result ``.npz`` (path or file object) with ``allow_pickle=False``; validate the meta."""
    import zipfile
    import zlib

    import numpy as np

    def _load(handle):
        with np.load(handle, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}

    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as handle:  # np.load leaks its own handle on a bad zip
                arrays = _load(handle)
        else:
            arrays = _load(source)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise ResultFormatError(f"not a readable result npz: {exc}") from exc
    if "meta" not in arrays:
        raise ResultFormatError("result npz has no 'meta' entry")
    meta_array = arrays.pop("meta")
    if meta_array.shape != () or meta_array.dtype.kind != "U":
        raise ResultFormatError(f"result 'meta' must be a 0-d string, got {meta_array.dtype} "
                                f"shape {meta_array.shape}")
    try:
        meta = json.loads(str(meta_array))
    except json.JSONDecodeError as exc:
        raise ResultFormatError(f"result 'meta' is not JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != RESULT_FORMAT:
        raise ResultFormatError(f"result meta format is {meta.get('format') if isinstance(meta, dict) else meta!r}, "
                                f"expected {RESULT_FORMAT!r}")
    if meta.get("version") != RESULT_VERSION:
        raise ResultFormatError(f"result version {meta.get('version')!r} is not supported "
                                f"(this code reads {RESULT_VERSION})")
    if meta.get("kind") not in KINDS:
        raise ResultFormatError(f"result kind {meta.get('kind')!r} is unknown")
    return ResultEnvelope(meta=meta, arrays=arrays)
