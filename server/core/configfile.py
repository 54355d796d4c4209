"""Reading the small TOML/JSON files admins hand to the CLI (priors, transit parameters)."""

from __future__ import annotations

import json
import tomllib


def read_config_file(path: str) -> dict:
    """A ``.toml`` file as TOML, anything else as JSON; ValueError naming the file when it does not parse."""
    kind = "TOML" if path.endswith(".toml") else "JSON"
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh) if kind == "TOML" else json.load(fh)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a {kind} object (key/value table), got {type(data).__name__}")
    return data
