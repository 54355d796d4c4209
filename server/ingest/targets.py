"""Targets' coordinates, set by hand: an AAVSO- or MPC-only target has none from its files, and converting its
UTC times to BJD_TDB (light curves, transit times) needs them.

Accepted forms: decimal degrees (``97.6366``, ``-29.67``), or sexagesimal ``HH MM SS.s`` / ``HH:MM:SS`` /
``06h30m32.8s`` for RA (hours) and ``+DD MM SS`` / ``-DD:MM:SS`` / ``29d40m20s`` for Dec (degrees). ICRS, J2000.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sqlalchemy import func, select

from server.core.db.models import Target
from server.ingest.fitsmeta import parse_sexagesimal

_DECIMAL = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*(deg|d|°)?\s*$")


def parse_ra(text: str) -> float:
    """RA in degrees [0, 360) from decimal degrees or sexagesimal hours; ValueError naming the text."""
    text = str(text).strip()
    if _DECIMAL.match(text) and not re.search(r"[hH:]", text):
        value = float(re.sub(r"(deg|d|°)\s*$", "", text))
    else:
        try:
            value = 15.0 * parse_sexagesimal(text.replace("h", " ").replace("m", " ").rstrip("s"))
        except ValueError:
            raise ValueError(f"RA {text!r} is neither decimal degrees nor sexagesimal hours (HH MM SS.s)") from None
        if text.startswith("-"):
            raise ValueError(f"RA {text!r} is negative")
    if not (math.isfinite(value) and 0.0 <= value < 360.0):
        raise ValueError(f"RA {text!r} is outside 0..360 degrees (0..24 h)")
    return value


def parse_dec(text: str) -> float:
    """Dec in degrees [-90, 90] from decimal or sexagesimal degrees; ValueError naming the text."""
    text = str(text).strip()
    if _DECIMAL.match(text) and ":" not in text:
        value = float(re.sub(r"(deg|d|°)\s*$", "", text))
    else:
        try:
            value = parse_sexagesimal(text.replace("d", " ").replace("m", " ").rstrip("s"))
        except ValueError:
            raise ValueError(f"Dec {text!r} is neither decimal degrees nor sexagesimal degrees (+DD MM SS)") from None
    if not (math.isfinite(value) and -90.0 <= value <= 90.0):
        raise ValueError(f"Dec {text!r} is outside -90..+90 degrees")
    return value


@dataclass(frozen=True)
class CoordinateChange:
    target: str
    ra_deg: float
    dec_deg: float
    previous: tuple[float, float] | None


def set_target_coordinates(db, name: str, ra_deg: float, dec_deg: float, *, replace: bool = False) -> CoordinateChange:
    """Set the coordinates of the target called ``name`` (case-insensitive; created when new), in one transaction.

    ValueError for an empty name, or when the target has different coordinates and ``replace`` is false.
    """
    name = name.strip()
    if not name or len(name) > 120:
        raise ValueError(f"target name {name!r} must have 1..120 characters")
    with db.session() as session:
        target = session.scalars(select(Target).where(func.lower(Target.name) == name.lower())).first()
        if target is None:
            target = Target(name=name)
            session.add(target)
        previous = None
        if target.ra_deg is not None and target.dec_deg is not None:
            previous = (float(target.ra_deg), float(target.dec_deg))
            same = abs(previous[0] - ra_deg) < 1e-6 and abs(previous[1] - dec_deg) < 1e-6
            if not same and not replace:
                raise ValueError(f"target {target.name!r} already has RA {previous[0]:.6f}, Dec {previous[1]:+.6f} "
                                 "degrees; pass --replace to change them")
        target.ra_deg, target.dec_deg = float(ra_deg), float(dec_deg)
        return CoordinateChange(target.name, float(ra_deg), float(dec_deg), previous)
