"""Gnomonic (TAN) projection with optional SIP distortion, in numpy: the WCS of nearly every
plate-solved amateur frame (astrometry.net writes TAN-SIP) and of our output grids.

Why not astropy.wcs here: importing it pulls in astropy.coordinates, units and table (~0.2 s
of a ~1 s frame reprojection in a fresh process, every volunteer work unit). The reprojection
kernel uses :class:`TanSip` when :func:`tan_sip_from_cards` accepts a header, and astropy.wcs
(wcslib) for everything else; the tests check both agree to 1e-9 px.

Conventions (FITS WCS papers I/II and the SIP convention): pixel coordinates are 0-based here;
``u = x - (CRPIX1 - 1)``, ``v = y - (CRPIX2 - 1)``; SIP adds ``A(u, v)``, ``B(u, v)``; the CD
matrix (or PC x CDELT) gives intermediate world coordinates (xi east, eta north) in degrees;
the native pole of the projection is the reference point (LONPOLE 180). Pixel <- world uses the
same per-point fixed iteration as the kernel's astropy path (20 rounds of ``u = u' - A(u, v)``,
ending early only once every point sits at an exact fixed point, which changes no bit), so no
point depends on which others are evaluated with it; points that do not converge to
1e-6 px, or lie 90 deg or more from the reference point, are NaN.

:func:`tan_sip_from_cards` accepts only what it models exactly and returns None otherwise
(other projections, CROTA, PV/distortion-table keywords, a LONPOLE other than 180, a reference
point at a pole, celestial frames other than ICRS / FK5, non-degree units, SIP keywords without
the -SIP suffix or the reverse).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["TanSip", "tan_sip_from_cards"]

INVERSE_ITERATIONS = 20
INVERSE_TOLERANCE_PX = 1e-6
_SIP_KEY = re.compile(r"^(A|B)_(\d+)_(\d+)$")
_UNMODELLED = re.compile(r"^(PV\d|PS\d|CROTA|CPDIS|CQDIS|CPERR|DP\d|DQ\d|D2IM)")


@dataclass(frozen=True)
class TanSip:
    crpix: tuple[float, float]  # FITS 1-based reference pixel (x, y)
    crval: tuple[float, float]  # (ra, dec) of the reference point [deg]
    cd: tuple[tuple[float, float], tuple[float, float]]  # [deg / px]
    sip_a: tuple[tuple[int, int, float], ...] = ()  # (p, q, coefficient) of u^p v^q
    sip_b: tuple[tuple[int, int, float], ...] = ()
    frame: tuple = ("ICRS",)  # ("ICRS",) or ("FK5", equinox)

    def _sip(self, u, v):
        top = max((max(p, q) for p, q, _ in self.sip_a + self.sip_b), default=0)
        upow, vpow = [np.ones_like(u), u], [np.ones_like(v), v]
        for _ in range(2, top + 1):
            upow.append(upow[-1] * u)
            vpow.append(vpow[-1] * v)
        du = np.zeros_like(u)
        dv = np.zeros_like(v)
        for terms, out in ((self.sip_a, du), (self.sip_b, dv)):
            for p, q, c in terms:
                out += c * upow[p] * vpow[q]
        return du, dv

    def pixel_to_world(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) [deg] of 0-based pixel coordinates."""
        u = np.asarray(x, dtype=float) - (self.crpix[0] - 1.0)
        v = np.asarray(y, dtype=float) - (self.crpix[1] - 1.0)
        if self.sip_a or self.sip_b:
            du, dv = self._sip(u, v)
            u, v = u + du, v + dv
        (c11, c12), (c21, c22) = self.cd
        xi = np.radians(c11 * u + c12 * v)
        eta = np.radians(c21 * u + c22 * v)
        a0, d0 = math.radians(self.crval[0]), math.radians(self.crval[1])
        den = math.cos(d0) - eta * math.sin(d0)
        ra = np.degrees(a0 + np.arctan2(xi, den)) % 360.0
        dec = np.degrees(np.arctan2(eta * math.cos(d0) + math.sin(d0), np.hypot(xi, den)))
        return ra, dec

    def world_to_pixel(self, ra, dec) -> tuple[np.ndarray, np.ndarray]:
        """0-based pixel coordinates (x, y) of (ra, dec) [deg]; NaN where undefined."""
        a = np.radians(np.asarray(ra, dtype=float)) - math.radians(self.crval[0])
        d = np.radians(np.asarray(dec, dtype=float))
        d0 = math.radians(self.crval[1])
        cos_d = np.cos(d)
        cos_c = math.sin(d0) * np.sin(d) + math.cos(d0) * cos_d * np.cos(a)
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = cos_c > 0
            xi = np.degrees(np.where(ok, cos_d * np.sin(a) / cos_c, np.nan))
            eta = np.degrees(np.where(ok, (math.cos(d0) * np.sin(d) - math.sin(d0) * cos_d * np.cos(a)) / cos_c, np.nan))
        (c11, c12), (c21, c22) = self.cd
        det = c11 * c22 - c12 * c21
        u0 = (c22 * xi - c12 * eta) / det
        v0 = (c11 * eta - c21 * xi) / det
        if self.sip_a or self.sip_b:
            u, v = u0, v0
            for _ in range(INVERSE_ITERATIONS):
                du, dv = self._sip(u, v)
                un, vn = u0 - du, v0 - dv
                # every point at an exact fixed point: further rounds would change no bit, so
                # stopping here gives the same result as all INVERSE_ITERATIONS rounds
                done = np.array_equal(un, u, equal_nan=True) and np.array_equal(vn, v, equal_nan=True)
                u, v = un, vn
                if done:
                    break
            du, dv = self._sip(u, v)
            bad = np.hypot(u + du - u0, v + dv - v0) > INVERSE_TOLERANCE_PX
            u, v = np.where(bad, np.nan, u), np.where(bad, np.nan, v)
        else:
            u, v = u0, v0
        return u + (self.crpix[0] - 1.0), v + (self.crpix[1] - 1.0)


def _number(cards: Mapping, key: str, default=None):
    value = cards.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{key} must be a number, got {value!r}")
    return float(value)


def _frame(cards: Mapping):
    radesys = str(cards.get("RADESYS", cards.get("RADECSYS", ""))).strip().upper()
    equinox = _number(cards, "EQUINOX", cards.get("EPOCH"))
    if not radesys:
        radesys = "ICRS" if equinox is None else ("FK4" if equinox < 1984.0 else "FK5")
    if radesys == "ICRS":
        return ("ICRS",)
    if radesys == "FK5":
        return ("FK5", 2000.0 if equinox is None else equinox)
    return None


def tan_sip_from_cards(cards: Mapping) -> TanSip | None:
    """A :class:`TanSip` for a header (dict or FITS Header) it models exactly, else None."""
    try:
        keys = [str(k).upper() for k in cards]
        ctype = (str(cards.get("CTYPE1", "")).strip().upper(), str(cards.get("CTYPE2", "")).strip().upper())
        if ctype == ("RA---TAN-SIP", "DEC--TAN-SIP"):
            sip = True
        elif ctype == ("RA---TAN", "DEC--TAN"):
            sip = False
        else:
            return None
        if any(_UNMODELLED.match(k) for k in keys):
            return None
        if _number(cards, "WCSAXES", 2.0) != 2.0 or _number(cards, "LONPOLE", 180.0) != 180.0:
            return None
        for i in (1, 2):
            if str(cards.get(f"CUNIT{i}", "deg")).strip().lower() not in ("deg", ""):
                return None
        frame = _frame(cards)
        crval = (_number(cards, "CRVAL1", 0.0), _number(cards, "CRVAL2", 0.0))
        crpix = (_number(cards, "CRPIX1", 0.0), _number(cards, "CRPIX2", 0.0))
        if frame is None or abs(crval[1]) >= 90.0:
            return None
        has_cd = any(re.match(r"^CD\d_\d$", k) for k in keys)
        has_pc = any(re.match(r"^PC\d_\d$", k) for k in keys)
        if has_cd and has_pc:
            return None
        if has_cd:
            cd = tuple(tuple(_number(cards, f"CD{i}_{j}", 0.0) for j in (1, 2)) for i in (1, 2))
        else:
            cdelt = (_number(cards, "CDELT1", 1.0), _number(cards, "CDELT2", 1.0))
            cd = tuple(tuple(cdelt[i - 1] * _number(cards, f"PC{i}_{j}", 1.0 if i == j else 0.0) for j in (1, 2))
                       for i in (1, 2))
        if not all(math.isfinite(v) for v in (*crval, *crpix, *cd[0], *cd[1])) or cd[0][0] * cd[1][1] == cd[0][1] * cd[1][0]:
            return None
        terms = {"A": [], "B": []}
        for k in keys:
            m = _SIP_KEY.match(k)
            if m:
                terms[m.group(1)].append((int(m.group(2)), int(m.group(3)), _number(cards, k)))
        has_sip_keys = bool(terms["A"] or terms["B"]) or "A_ORDER" in keys or "B_ORDER" in keys
        if has_sip_keys != sip:
            return None
        if sip:
            orders = (_number(cards, "A_ORDER"), _number(cards, "B_ORDER"))
            if None in orders:
                return None
            for name, order in zip("AB", orders, strict=True):
                if any(p + q > order for p, q, _ in terms[name]):
                    return None  # wcslib ignores terms above the order; we would not
    except (ValueError, TypeError):
        return None
    return TanSip(crpix=crpix, crval=crval, cd=cd, frame=frame,
                  sip_a=tuple(sorted(t for t in terms["A"] if t[2] != 0.0)),
                  sip_b=tuple(sorted(t for t in terms["B"] if t[2] != 0.0)))
