"""Reading the small TOML/JSON files admins hand to the CLI (priors, transit parameters)."""

from __future__ import annotations

import json
import os
import tomllib

MAX_CONFIG_BYTES = 1 * 2**20  # a prior or transit-parameter file is a few hundred bytes


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows; write a finite value")


def read_config_file(path: str) -> dict:
    """A ``.toml`` file as TOML, anything else as JSON (UTF-8, at most ``MAX_CONFIG_BYTES``).

    Every problem is a ValueError naming the file: missing, too large, not UTF-8, not valid, nested too deeply,
    JSON's non-standard NaN/Infinity, not a key/value table at the top.
    """
    kind = "TOML" if str(path).endswith(".toml") else "JSON"
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    if size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path} is {size} bytes, more than the {MAX_CONFIG_BYTES} bytes a config file may have")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        text = raw.decode("utf-8-sig")
        data = tomllib.loads(text) if kind == "TOML" else json.loads(text, parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except RecursionError:
        raise ValueError(f"{path} is not valid {kind}: nested too deeply") from None
    except (tomllib.TOMLDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path} is not valid {kind}: {exc}") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a {kind} object (key/value table), got {type(data).__name__}")
    return data
