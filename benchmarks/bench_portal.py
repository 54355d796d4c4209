"""Light-curve API latency (issue 17): one target's 100k-point light curve, with the photometry table holding
100k rows and then 1M rows (900k of other targets added), side by side, and the ratio (flat = index-bound).

Run: ``python -m benchmarks.bench_portal [--points 100000] [--total 1000000] [--repeats 7]`` from the repository
root. On MariaDB when ``OPENASTRO_TEST_MYSQL_URL`` is set (``bash scripts/mariadb-test-server.sh`` prints one; a
fresh database is created and dropped), else on a temporary SQLite file. The request goes through the whole
FastAPI app in-process (``GET /api/v1/targets/{id}/lightcurve?band=V``, JSON), cold (response cache cleared:
what the first reader of new data pays) and cached (the same request again: the data's version is read, the body
comes from memory); the query alone (``server.web.products.light_curve``) is timed too, and so is the anchor: the
same SELECT through the bare DBAPI cursor (the floor any Python server pays), and the request the target page makes (``columns=`` the 7 columns its
plots use). Medians of ``repeats`` runs after one warm-up.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import secrets  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402


@contextlib.contextmanager
def database_url():
    url = os.environ.get("OPENASTRO_TEST_MYSQL_URL", "")
    if not url:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db", tmp, "SQLite"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = make_url(url)
    name = f"oa_bench_{secrets.token_hex(4)}"
    admin = create_engine(server.set(database=None))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            yield server.set(database=name).render_as_string(hide_password=False), tmp, "MariaDB"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


def insert_points(app, target_id: int, n: int, rng, chunk: int = 20000) -> None:
    from sqlalchemy import insert

    from server.core.db.models import PhotometryPoint

    jd = np.sort(2459000.5 + rng.uniform(0, 2000, n))
    mag = 12 + 0.3 * np.sin(jd) + rng.normal(0, 0.01, n)
    with app.db.engine.begin() as conn:
        for i in range(0, n, chunk):
            rows = [{"target_id": target_id, "band": "V", "jd_utc": float(j), "bjd_tdb": float(j) + 0.003,
                     "mag": float(m), "mag_err": 0.01, "is_upper_limit": False, "source": "bench"}
                    for j, m in zip(jd[i:i + chunk], mag[i:i + chunk])]
            conn.execute(insert(PhotometryPoint), rows)


PLOT_COLUMNS = "bjd_tdb,jd_utc,mag,mag_err,flux,flux_err,id"  # what the target page asks for (portal.js)


def raw_fetch(app, target_id: int) -> int:
    """The anchor: the same SELECT through the bare DBAPI cursor (no SQLAlchemy rows, no encoding)."""
    from sqlalchemy import select

    from server.core.db.models import PhotometryPoint
    from server.web.products import LC_COLUMNS

    q = (select(*[getattr(PhotometryPoint, c) for c in LC_COLUMNS])
         .where(PhotometryPoint.target_id == target_id, PhotometryPoint.band == "V")
         .order_by(PhotometryPoint.jd_utc, PhotometryPoint.id))
    sql = str(q.compile(app.db.engine, compile_kwargs={"literal_binds": True}))
    conn = app.db.engine.raw_connection()
    try:
        cur = conn.cursor()
        cur.execute(sql)
        n = len(cur.fetchall())
        cur.close()
    finally:
        conn.close()
    return n


def measure(app, client, target_id: int, repeats: int) -> dict:
    from server.web.products import light_curve

    url = f"/api/v1/targets/{target_id}/lightcurve"
    cache = client.app.state.lightcurve_cache
    client.get(url, params={"band": "V"})  # warm-up
    api, query, raw, narrow, cached = [], [], [], [], []
    for _ in range(repeats):
        cache.clear()  # cold: what the first reader of new data pays
        t0 = time.perf_counter()
        r = client.get(url, params={"band": "V", "columns": PLOT_COLUMNS})
        narrow.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text
        t0 = time.perf_counter()
        raw_fetch(app, target_id)
        raw.append(time.perf_counter() - t0)
        cache.clear()
        t0 = time.perf_counter()
        r = client.get(url, params={"band": "V"})
        api.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text
        t0 = time.perf_counter()  # warm: the same request again (the data's version checked, body from memory)
        again = client.get(url, params={"band": "V"})
        cached.append(time.perf_counter() - t0)
        assert again.content == r.content
        t0 = time.perf_counter()
        light_curve(app.db, target_id, "V", limit=int(app.settings.portal_lightcurve_max))
        query.append(time.perf_counter() - t0)
    return {"api_ms": 1000 * statistics.median(api), "query_ms": 1000 * statistics.median(query),
            "raw_ms": 1000 * statistics.median(raw), "narrow_ms": 1000 * statistics.median(narrow),
            "cached_ms": 1000 * statistics.median(cached),
            "n": r.json()["n"], "bytes": len(r.content)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--total", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    from starlette.exceptions import StarletteDeprecationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StarletteDeprecationWarning)
        from fastapi.testclient import TestClient

    from server.core.context import OpenAstro
    from server.core.db.models import Target
    from server.core.settings import load_settings
    from server.web.api import create_api

    rng = np.random.default_rng(1)
    with database_url() as (url, tmp, engine):
        app = OpenAstro(load_settings(env={}, overrides={"var_dir": tmp, "database_url": url, "progress": False}))
        app.db.upgrade()
        with app.db.session() as s:
            targets = [Target(name=f"T{i}") for i in range(10)]
            s.add_all(targets)
            s.flush()
            tids = [t.id for t in targets]
        t0 = time.perf_counter()
        insert_points(app, tids[0], args.points, rng)
        print(f"{engine}: inserted {args.points} points of the measured target in {time.perf_counter() - t0:.1f} s")
        client = TestClient(create_api(app))
        small = measure(app, client, tids[0], args.repeats)
        others = args.total - args.points
        t0 = time.perf_counter()
        for k, tid in enumerate(tids[1:]):
            insert_points(app, tid, others // 9 + (1 if k < others % 9 else 0), rng)
        print(f"{engine}: inserted {others} points of 9 other targets in {time.perf_counter() - t0:.1f} s")
        large = measure(app, client, tids[0], args.repeats)
    print(f"{'table rows':>12} {'points':>8} {'API cold (ms)':>14} {'API cached (ms)':>16} {'API, plot columns (ms)':>23} "
          f"{'query median (ms)':>18} {'raw DBAPI fetch (ms)':>21} {'API/raw':>8} {'JSON bytes':>11}")
    for rows, m in ((args.points, small), (args.total, large)):
        print(f"{rows:>12} {m['n']:>8} {m['api_ms']:>14.1f} {m['cached_ms']:>16.1f} {m['narrow_ms']:>23.1f} {m['query_ms']:>18.1f} "
              f"{m['raw_ms']:>21.1f} {m['api_ms'] / m['raw_ms']:>8.2f} {m['bytes']:>11}")
    print(f"ratio {args.total // 1000}k/{args.points // 1000}k rows: API cold {large['api_ms'] / small['api_ms']:.2f}x, "
          f"cached {large['cached_ms'] / small['cached_ms']:.2f}x, "
          f"query {large['query_ms'] / small['query_ms']:.2f}x ({engine})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
