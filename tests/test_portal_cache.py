"""The read API's light-curve response cache (server/web/respcache.py): a repeated request is served from memory,
a conditional request gets 304, and any new or deleted point changes the answer at once (the data's version is
part of the key)."""

from __future__ import annotations

import warnings

import pytest
from sqlalchemy import delete, select
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():  # starlette 1.x suggests httpx2 (not installed); httpx works the same here
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

from portal_seed import seed
from server.core.db.models import PhotometryPoint
from server.web.api import create_api
from server.web.respcache import Cached, ResponseCache


@pytest.fixture()
def portal(tmp_path):
    from server.core.context import OpenAstro
    from server.core.settings import load_settings

    app = OpenAstro(load_settings(env={}, overrides={"var_dir": str(tmp_path), "progress": False}))
    app.db.upgrade()
    return app, seed(app, n_v=40, n_b=10)


def test_a_repeated_light_curve_request_is_served_from_the_cache_and_a_conditional_one_gets_304(portal):
    app, ids = portal
    api = create_api(app)
    c = TestClient(api)
    url = f"/api/v1/targets/{ids['target']}/lightcurve"
    first = c.get(url, params={"band": "V"})
    cache = api.state.lightcurve_cache
    assert first.status_code == 200 and cache.misses == 1 and cache.hits == 0
    again = c.get(url, params={"band": "V"})
    assert again.content == first.content and cache.hits == 1
    assert again.headers["etag"] == first.headers["etag"]
    assert c.get(url, params={"band": "V"}, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    # another format or band is another entry, with its own ETag
    csv = c.get(url, params={"band": "V", "format": "csv"})
    assert csv.headers["etag"] != first.headers["etag"] and "attachment" in csv.headers["content-disposition"]
    assert c.get(url, params={"band": "V", "format": "csv"}).headers["content-disposition"] == \
        csv.headers["content-disposition"]


def test_a_new_or_deleted_point_changes_the_served_light_curve_at_once(portal):
    app, ids = portal
    api = create_api(app)
    c = TestClient(api)
    url = f"/api/v1/targets/{ids['target']}/lightcurve"
    before = c.get(url, params={"band": "V"})
    assert before.json()["n"] == 40
    with app.db.session() as s:
        s.add(PhotometryPoint(target_id=ids["target"], band="V", jd_utc=2460100.0, bjd_tdb=2460100.004, mag=13.0,
                              mag_err=0.01, source="pipeline"))
    after = c.get(url, params={"band": "V"})
    assert after.json()["n"] == 41 and after.headers["etag"] != before.headers["etag"]
    assert c.get(url, params={"band": "V"}, headers={"If-None-Match": before.headers["etag"]}).status_code == 200
    with app.db.session() as s:
        first_id = s.scalars(select(PhotometryPoint.id).where(PhotometryPoint.target_id == ids["target"],
                                                              PhotometryPoint.band == "V")
                             .order_by(PhotometryPoint.id)).first()
        s.execute(delete(PhotometryPoint).where(PhotometryPoint.id == first_id))
    assert c.get(url, params={"band": "V"}).json()["n"] == 40


def test_the_cache_keeps_within_its_byte_budget_dropping_the_least_recently_used():
    cache = ResponseCache(10)
    cache.put(("a",), Cached(b"12345", "text/plain"))
    cache.put(("b",), Cached(b"12345", "text/plain"))
    assert cache.get(("a",)) is not None           # a is now the most recently used
    cache.put(("c",), Cached(b"123", "text/plain"))
    assert cache.get(("b",)) is None and cache.get(("a",)) is not None and cache.size_bytes == 8
    cache.put(("big",), Cached(b"x" * 11, "text/plain"))   # larger than the budget: served, not kept
    assert cache.get(("big",)) is None and len(cache) == 2
    with pytest.raises(ValueError, match="-1"):
        ResponseCache(-1)
    off = ResponseCache(0)
    off.put(("a",), Cached(b"1", "text/plain"))
    assert len(off) == 0
