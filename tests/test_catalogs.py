"""Reference catalogs: bundled offline catalog, Tycho-2 from the astrometry.net index, the cached
online provider (over real HTTP on 127.0.0.1, never the internet)."""
from __future__ import annotations

import sqlite3
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from server.image.catalogs import (
    COLUMNS,
    BundledCatalog,
    CachedOnlineCatalog,
    CompositeCatalog,
    DataFrameCatalog,
    GaiaTapFetcher,
    TychoIndexCatalog,
    angular_separation_deg,
    cross_match,
    gaia_g_to_v,
    read_gaia_binary,
)
from imgfront_helpers import fake_gaia_tap, offline_catalog, random_gaia_table

INDEX07 = Path("/usr/share/astrometry/index-tycho2-07.littleendian.fits")


@pytest.fixture(scope="module")
def bundled():
    cat = offline_catalog()
    return cat.providers[0] if isinstance(cat, CompositeCatalog) else cat


# --- bundled Gaia DR3 + Hipparcos ------------------------------------------------------------------

# Johnson V and B-V of well-known stars (Hipparcos/SIMBAD values, rounded); our V comes from Gaia G
# (or the package's Hipparcos fallback for the brightest) through Evans et al. (2018).
KNOWN_STARS = [  # name, ra, dec, V, B-V
    ("Alcyone", 56.871, 24.105, 2.87, -0.09),
    ("Polaris", 37.95, 89.264, 1.98, 0.60),
    ("Aldebaran", 68.98, 16.509, 0.86, 1.54),
    ("Altair", 297.696, 8.868, 0.77, 0.22),
    ("HD 209458", 330.795, 18.884, 7.65, 0.58),
]


@pytest.mark.parametrize("name,ra,dec,v,bv", KNOWN_STARS, ids=[s[0] for s in KNOWN_STARS])
def test_bundled_catalog_gives_johnson_v_and_b_minus_v_of_known_stars(bundled, name, ra, dec, v, bv):
    found = bundled.cone(ra, dec, 0.02)
    star = found.iloc[int(np.argmin(found["mag"]))]
    assert abs(star["mag"] - v) < 0.08, (name, star["mag"], v)
    assert abs(star["color"] - bv) < 0.05, (name, star["color"], bv)


def test_cone_returns_standard_columns_only_inside_radius_and_mag_limit(bundled):
    got = bundled.cone(83.8, -5.4, 1.0, mag_limit=8.5)
    assert set(COLUMNS) <= set(got.columns)
    assert got.attrs["band"] == "V" and got.attrs["color_name"] == "B-V"
    assert len(got) > 10
    assert (angular_separation_deg(83.8, -5.4, got["ra"], got["dec"]) <= 1.0 + 1e-9).all()
    assert (got["mag"] <= 8.5).all()
    wider = bundled.cone(83.8, -5.4, 1.5, mag_limit=8.5)
    assert set(got["source_id"]) < set(wider["source_id"])


def test_cone_across_ra_zero_and_at_the_pole_finds_stars_on_both_sides(bundled):
    got = bundled.cone(0.2, 10.0, 2.0)
    assert (got["ra"] > 359).any() and (got["ra"] < 1).any()
    pole = bundled.cone(123.0, 89.9, 1.0)
    assert pole["ra"].max() - pole["ra"].min() > 180  # stars all around the pole


@pytest.mark.parametrize("ra,dec,radius", [(np.nan, 0, 1), (10, 95, 1), (10, 0, 0), (10, 0, -1), (10, 0, 200)])
def test_cone_rejects_invalid_arguments_naming_the_value(bundled, ra, dec, radius):
    with pytest.raises(ValueError, match="must be"):
        bundled.cone(ra, dec, radius)


def test_gaia_to_v_transformation_matches_the_published_polynomial():
    # Evans et al. 2018: G - V = -0.01760 - 0.006860 (B-V) - 0.1732 (B-V)^2
    assert gaia_g_to_v(10.0, 0.0) == pytest.approx(10.0176)
    assert gaia_g_to_v(10.0, 1.0) == pytest.approx(10.0 + 0.01760 + 0.006860 + 0.1732)


def test_gaia_binary_reader_refuses_wrong_magic_and_truncation(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"XXXX" + bytes(12))
    with pytest.raises(ValueError, match="magic"):
        read_gaia_binary(bad)
    short = tmp_path / "short.bin"
    short.write_bytes(b"GDR3" + (1).to_bytes(4, "little") + (10).to_bytes(8, "little") + bytes(36 * 3))
    with pytest.raises(ValueError, match="truncated"):
        read_gaia_binary(short)


# --- Tycho-2 stars read from the astrometry.net index ------------------------------------------------

@pytest.mark.skipif(not INDEX07.exists(), reason="astrometry-data-tycho2-07 not installed")
def test_tycho_index_stars_coincide_with_gaia_positions_and_magnitudes(bundled):
    cat = offline_catalog()
    tycho = next(p for p in cat.providers if isinstance(p, TychoIndexCatalog))
    t = tycho.cone(300.0, 35.0, 2.0)
    g = bundled.cone(300.0, 35.0, 2.0)
    idx, sep = cross_match(t["ra"].to_numpy(), t["dec"].to_numpy(), g["ra"].to_numpy(), g["dec"].to_numpy(), 5.0)
    hit = idx >= 0
    assert hit.sum() > 100
    # an independent check of the kd-tree decoding: J2000 Tycho-2 vs 2016 Gaia, proper motions only
    assert np.median(sep[hit]) < 0.5
    dv = t["mag"].to_numpy()[hit] - g["mag"].to_numpy()[idx[hit]]
    assert abs(np.median(dv)) < 0.15


def test_composite_catalog_keeps_the_first_provider_on_matches():
    a = pd.DataFrame({"ra": [10.0, 10.1], "dec": [0.0, 0.0], "mag": [9.0, 9.5], "color": [0.5, 0.6]})
    b = pd.DataFrame({"ra": [10.0 + 0.5 / 3600, 10.2], "dec": [0.0, 0.0], "mag": [9.1, 11.0]})
    comp = CompositeCatalog([DataFrameCatalog(a), DataFrameCatalog(b)], match_arcsec=2.0)
    got = comp.cone(10.1, 0.0, 0.5)
    assert len(got) == 3
    assert sorted(got["mag"]) == [9.0, 9.5, 11.0]


def test_dataframe_catalog_needs_ra_dec_mag():
    with pytest.raises(ValueError, match="lacks columns"):
        DataFrameCatalog(pd.DataFrame({"ra": [1.0], "dec": [2.0]}))


# --- online provider behind the SQLite tile cache ---------------------------------------------------

@pytest.fixture
def gaia_table():
    return random_gaia_table(np.random.default_rng(7), 150.0, 20.0, 4.0, 6000)


def test_online_catalog_fetches_each_tile_once_and_then_answers_from_cache(tmp_path, gaia_table):
    with fake_gaia_tap(gaia_table) as srv:
        online = CachedOnlineCatalog(tmp_path / "cache.sqlite", GaiaTapFetcher(base_url=srv.url, timeout_s=10))
        first = online.cone(150.0, 20.0, 0.8, mag_limit=15.0)
        n_tiles = len(srv.requests)
        assert n_tiles >= 1 and online.fetch_count == n_tiles
        again = online.cone(150.0, 20.0, 0.8, mag_limit=15.0)
        smaller = online.cone(150.1, 20.1, 0.3, mag_limit=14.0)
        assert len(srv.requests) == n_tiles  # repeated and contained fields cost nothing
    pd.testing.assert_frame_equal(first, again)
    assert set(smaller["source_id"]) <= set(first["source_id"])
    # the answer is exactly the server's stars in the cone, with V from G and BP-RP
    sep = angular_separation_deg(150.0, 20.0, gaia_table["ra"], gaia_table["dec"])
    g = gaia_table["phot_g_mean_mag"].to_numpy()
    bprp = (gaia_table["phot_bp_mean_mag"] - gaia_table["phot_rp_mean_mag"]).to_numpy()
    v = np.where(np.isfinite(bprp), g + 0.02704 - 0.01424 * bprp + 0.2156 * bprp**2 - 0.01426 * bprp**3, np.nan)
    v = np.where(np.isfinite(v), v, g + 0.02704 - 0.01424 * 0.8 + 0.2156 * 0.64 - 0.01426 * 0.512)
    expected = {f"gaia:{s}" for s, ok in zip(gaia_table["source_id"], (sep <= 0.8) & (v <= 15.0)) if ok}
    assert set(first["source_id"]) == expected
    assert first.attrs["color_name"] == "BP-RP"


def test_cached_field_works_offline_with_a_new_provider(tmp_path, gaia_table):
    cache = tmp_path / "cache.sqlite"
    with fake_gaia_tap(gaia_table) as srv:
        CachedOnlineCatalog(cache, GaiaTapFetcher(base_url=srv.url, timeout_s=10)).cone(150.0, 20.0, 0.5, 14.0)

    def no_network(*args):
        raise AssertionError(f"the cache should have answered, fetch called with {args}")

    offline = CachedOnlineCatalog(cache, no_network)
    got = offline.cone(150.0, 20.0, 0.5, 14.0)
    assert len(got) > 10 and offline.fetch_count == 0


def test_deeper_magnitude_limit_refetches_the_tiles(tmp_path, gaia_table):
    with fake_gaia_tap(gaia_table) as srv:
        online = CachedOnlineCatalog(tmp_path / "c.sqlite", GaiaTapFetcher(base_url=srv.url, timeout_s=10))
        shallow = online.cone(150.0, 20.0, 0.5, 12.0)
        n = len(srv.requests)
        deep = online.cone(150.0, 20.0, 0.5, 16.0)
        assert len(srv.requests) == 2 * n
    assert len(deep) > len(shallow)


def test_failed_fetch_raises_and_caches_nothing(tmp_path, gaia_table):
    cache = tmp_path / "c.sqlite"
    with fake_gaia_tap(gaia_table) as srv:
        srv.fail_with = 503
        online = CachedOnlineCatalog(cache, GaiaTapFetcher(base_url=srv.url, timeout_s=10))
        with pytest.raises(urllib.error.HTTPError):
            online.cone(150.0, 20.0, 0.5, 14.0)
    with sqlite3.connect(cache) as con:
        assert con.execute("SELECT COUNT(*) FROM tiles").fetchone()[0] == 0
        assert con.execute("SELECT COUNT(*) FROM stars").fetchone()[0] == 0


def test_cache_with_another_schema_version_is_refused(tmp_path):
    cache = tmp_path / "c.sqlite"
    CachedOnlineCatalog(cache, lambda *a: pd.DataFrame())
    with sqlite3.connect(cache) as con:
        con.execute("UPDATE meta SET value='99' WHERE key='schema'")
    with pytest.raises(ValueError, match="schema 99"):
        CachedOnlineCatalog(cache, lambda *a: pd.DataFrame())
