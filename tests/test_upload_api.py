"""The live upload API over real HTTP on 127.0.0.1 (uvicorn in a thread, httpx clients): authentication, dedup,
size limit, malformed input, path-traversal names, and 20 concurrent uploads with nothing lost or duplicated."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from astropy.io import fits
from sqlalchemy import func, select

from ingest_samples import HEADER, astrobin_header, ext_row, small_image
from server.web.api import create_api, safe_client_name
from server.core.context import OpenAstro
from server.core.db.models import Observation
from server.ingest.sites import create_site, issue_api_key, revoke_api_key

LIMIT = 96 * 1024  # upload_max_bytes for these tests


def fits_bytes(seed: int = 0, shape=(48, 64), **cards) -> bytes:
    h = astrobin_header()
    for key, value in cards.items():
        if value is None:
            del h[key]
        else:
            h[key] = value
    buf = io.BytesIO()
    fits.PrimaryHDU(small_image(seed, shape), h).writeto(buf)
    return buf.getvalue()


@pytest.fixture
def api(settings):
    app = OpenAstro(settings.with_overrides(upload_max_bytes=LIMIT))
    app.db.upgrade()
    create_site(app.db, "Backyard", latitude_deg=45.5, longitude_deg=-71.25, height_m=350)
    create_site(app.db, "Club")
    key = issue_api_key(app.db, "Backyard").token
    other = issue_api_key(app.db, "Club").token
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_api(app), log_level="warning", lifespan="off",
                                           limit_concurrency=64))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield app, client, key, other
    server.should_exit = True
    thread.join(20)
    sock.close()


def post(client, key, content: bytes, *, name="light.fits", metadata=None, header="bearer"):
    headers = {"Authorization": f"Bearer {key}"} if header == "bearer" else {"X-API-Key": key}
    data = {"metadata": json.dumps(metadata)} if metadata is not None else None
    return client.post("/api/v1/observations", headers=headers, files={"file": (name, content, "application/fits")},
                       data=data)


def n_observations(app) -> int:
    with app.db.session() as s:
        return s.scalar(select(func.count()).select_from(Observation))


def assert_nothing_stored(app):
    assert n_observations(app) == 0
    assert list(app.store.keys()) == [] and list((app.store.root / "tmp").iterdir()) == []


def assert_error(response, status: int, code: str):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code and body["error"]["message"]
    return body["error"]["message"]


def test_health_needs_no_key(api):
    _app, client, _key, _other = api
    response = client.get("/api/v1/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_upload_without_a_key_or_with_a_wrong_or_revoked_key_is_refused_and_stores_nothing(api):
    app, client, key, _other = api
    content = fits_bytes()
    response = client.post("/api/v1/observations", files={"file": ("a.fits", content)})
    assert_error(response, 401, "missing_api_key")
    assert_error(post(client, key[:-4] + "AAAA", content), 401, "invalid_api_key")
    assert_error(post(client, "not-a-key", content), 401, "invalid_api_key")
    revoke_api_key(app.db, key.split("_")[1])
    assert_error(post(client, key, content), 401, "invalid_api_key")
    assert_nothing_stored(app)


def test_upload_creates_once_and_retries_get_the_same_answer(api):
    app, client, key, other = api
    content = fits_bytes()
    first = post(client, key, content)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["created"] and body["kind"] == "image" and first.headers["location"].endswith(f"/{body['id']}")
    retry = post(client, key, content, header="x-api-key")
    from_other_site = post(client, other, content, name="other-name.fits")
    assert retry.status_code == 200 and from_other_site.status_code == 200
    assert retry.json()["id"] == from_other_site.json()["id"] == body["id"] and not retry.json()["created"]
    got = client.get(f"/api/v1/observations/{body['id']}", headers={"X-API-Key": key})
    assert got.status_code == 200
    obs = got.json()
    assert obs["date_obs"] == "2024-03-05T21:10:11.500000Z" and obs["filter"] == "V" and obs["exptime"] == 120.0
    assert obs["target"] == "SS Cyg" and obs["original_name"] == "light.fits" and obs["site_id"] is not None
    assert n_observations(app) == 1 and len(list(app.store.keys())) == 1
    assert list((app.store.root / "tmp").iterdir()) == []


def test_get_needs_a_key_and_unknown_ids_are_json_404(api):
    _app, client, key, _other = api
    assert_error(client.get("/api/v1/observations/1"), 401, "missing_api_key")
    assert_error(client.get("/api/v1/observations/999", headers={"X-API-Key": key}), 404, "not_found")
    assert_error(client.get("/api/v1/observations/abc", headers={"X-API-Key": key}), 422, "invalid_request")
    assert_error(client.get(f"/api/v1/observations/{10**30}", headers={"X-API-Key": key}), 422, "invalid_request")
    assert_error(client.get("/api/v1/nowhere"), 404, "not_found")


def test_oversized_upload_is_refused_with_413_and_nothing_stored(api):
    app, client, key, _other = api
    big = fits_bytes(shape=(256, 256))  # 256 KiB of data > LIMIT
    assert len(big) > LIMIT + 64 * 1024
    message = assert_error(post(client, key, big), 413, "too_large")
    assert str(LIMIT) in message
    assert_nothing_stored(app)


def test_oversized_streamed_upload_without_content_length_is_cut_off_with_413(api):
    app, client, key, _other = api
    boundary = "oaboundary1234"
    big = fits_bytes(shape=(200, 200))

    def body():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.fits\"\r\n"
               "Content-Type: application/fits\r\n\r\n").encode()
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post("/api/v1/observations", content=body(),
                           headers={"Authorization": f"Bearer {key}",
                                    "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "too_large")
    assert_nothing_stored(app)


@pytest.mark.parametrize("split", [1, 2, 5], ids=["one-message", "two-messages", "five-messages"])
def test_oversized_body_whose_last_message_already_arrived_still_gets_413_not_500(settings, split):
    """The server may hand over the whole body before the parser notices it is too large (the overflow is in
    the final ASGI message). Draining must then see the body is complete, not fail on a consumed stream."""
    app = OpenAstro(settings.with_overrides(upload_max_bytes=LIMIT))
    app.db.upgrade()
    create_site(app.db, "Backyard")
    key = issue_api_key(app.db, "Backyard").token
    boundary = "oaboundary1234"
    payload = ((f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.fits\"\r\n"
                "Content-Type: application/fits\r\n\r\n").encode()
               + fits_bytes(shape=(200, 200)) + f"\r\n--{boundary}--\r\n".encode())
    step = -(-len(payload) // split)
    messages = [{"type": "http.request", "body": payload[i : i + step], "more_body": i + step < len(payload)}
                for i in range(0, len(payload), step)]
    received: list[dict] = []
    sent: list[dict] = []

    async def receive():
        if messages:
            received.append(messages.pop(0))
            return received[-1]
        raise AssertionError("the app read past the end of the body")

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/api/v1/observations", "raw_path": b"/api/v1/observations",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80),
             "headers": [(b"authorization", f"Bearer {key}".encode()),
                         (b"content-type", f"multipart/form-data; boundary={boundary}".encode())]}
    asyncio.run(create_api(app)(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    assert start["status"] == 413 and body["error"]["code"] == "too_large", body
    assert not messages  # the refused remainder was drained
    assert_nothing_stored(app)


@pytest.mark.parametrize("content, code", [
    (b"this is not a FITS file at all" * 10, "invalid_file"),
    (fits_bytes()[:5000], "invalid_file"),                       # truncated
    (fits_bytes(**{"DATE-OBS": None}), "invalid_file"),          # no observation time
    ((HEADER.format(delim=",", date="JD") + ext_row()).encode(), "invalid_file"),  # photometry is not an image
])
def test_malformed_uploads_get_422_with_the_reason_and_nothing_stored(api, content, code):
    app, client, key, _other = api
    message = assert_error(post(client, key, content), 422, code)
    assert "light.fits" in message
    assert_nothing_stored(app)


def test_absurd_naxis_upload_is_refused(api):
    app, client, key, _other = api
    h = fits.Header()
    h["SIMPLE"], h["BITPIX"], h["NAXIS"], h["NAXIS1"], h["NAXIS2"] = True, 16, 2, 10**6, 10**6
    h["DATE-OBS"] = "2024-01-01T00:00:00"
    message = assert_error(post(client, key, h.tostring().encode()), 422, "invalid_file")
    assert "above the limit" in message
    assert_nothing_stored(app)


def test_bad_requests_have_json_errors(api):
    app, client, key, _other = api
    auth = {"Authorization": f"Bearer {key}"}
    assert_error(client.post("/api/v1/observations", headers=auth, content=b"raw bytes"), 415,
                 "unsupported_media_type")
    assert_error(client.post("/api/v1/observations", headers=auth, data={"metadata": "{}"},
                             files={"other": ("x", b"1")}), 400, "unknown_part")
    assert_error(client.post("/api/v1/observations", headers=auth, files={"metadata": (None, "{}")}), 400,
                 "missing_file")
    assert_error(post(client, key, fits_bytes(), metadata={"colour": "red"}), 422, "invalid_metadata")
    assert_error(client.post("/api/v1/observations", headers=auth, data={"metadata": "{not json"},
                             files={"file": ("a.fits", fits_bytes())}), 422, "invalid_metadata")
    assert_error(client.put("/api/v1/observations", headers=auth), 405, "method_not_allowed")
    assert_nothing_stored(app)


def test_path_traversal_file_names_are_only_labels(api, tmp_path):
    app, client, key, _other = api
    response = post(client, key, fits_bytes(), name="../../../../../evil.fits")
    assert response.status_code == 201
    obs = client.get(f"/api/v1/observations/{response.json()['id']}", headers={"X-API-Key": key}).json()
    assert obs["original_name"] == "evil.fits"
    assert not list(Path(tmp_path).rglob("evil.fits")) and not Path("/evil.fits").exists()
    assert safe_client_name("..\\..\\windows\\x.fits") == "x.fits" and safe_client_name("\x00..") == "upload"


def test_metadata_fills_gaps_in_the_header_but_does_not_override_it(api):
    app, client, key, _other = api
    response = post(client, key, fits_bytes(FILTER=None, OBJECT=None),
                    metadata={"filter": "R", "target": "RR Lyr", "exptime": 999.0, "client_ref": "run-7"})
    assert response.status_code == 201, response.text
    assert any("exptime" in w for w in response.json()["warnings"])
    obs = client.get(f"/api/v1/observations/{response.json()['id']}", headers={"X-API-Key": key}).json()
    assert obs["filter"] == "R" and obs["target"] == "RR Lyr" and obs["exptime"] == 120.0


def test_twenty_concurrent_uploads_lose_nothing_and_duplicate_nothing(api):
    app, client, key, _other = api
    distinct = [fits_bytes(seed=i) for i in range(15)]
    repeated = fits_bytes(seed=99)
    jobs = [(f"f{i}.fits", c) for i, c in enumerate(distinct)] + [(f"dup{i}.fits", repeated) for i in range(5)]
    base = str(client.base_url)

    def upload(job):
        name, content = job
        with httpx.Client(base_url=base, timeout=120) as c:
            return content, post(c, key, content, name=name)

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(upload, jobs))
    assert all(r.status_code in (200, 201) for _c, r in results), [r.text for _c, r in results if r.status_code >= 300]
    ids_by_content: dict[bytes, set[int]] = {}
    created_by_content: dict[bytes, int] = {}
    for content, r in results:
        ids_by_content.setdefault(content, set()).add(r.json()["id"])
        created_by_content[content] = created_by_content.get(content, 0) + (r.status_code == 201)
    assert len(ids_by_content) == 16 and all(len(ids) == 1 for ids in ids_by_content.values())
    assert all(n == 1 for n in created_by_content.values())
    assert n_observations(app) == 16 and len(list(app.store.keys())) == 16
    assert list((app.store.root / "tmp").iterdir()) == []


def test_absurd_header_values_and_deep_metadata_get_422_not_500(api):
    app, client, key, _other = api
    mjd = post(client, key, fits_bytes(**{"DATE-OBS": None, "MJD-OBS": 1e20}))
    assert "MJD-OBS = 1e+20 is not a date" in assert_error(mjd, 422, "invalid_file")
    deep = client.post("/api/v1/observations", headers={"Authorization": f"Bearer {key}"},
                       files={"file": ("a.fits", fits_bytes(), "application/fits")},
                       data={"metadata": "[" * 5000 + "]" * 5000})
    assert "nests 5000 levels deep" in assert_error(deep, 422, "invalid_metadata")
    assert_nothing_stored(app)


def test_a_second_site_uploading_known_content_gets_its_metadata_recorded_and_told_so(api):
    _app, client, key, other = api
    content = fits_bytes()
    first = post(client, key, content, metadata={"client_ref": "a-1"})
    second = post(client, other, content, name="club.fits", metadata={"client_ref": "club-9", "observer": "C"})
    assert first.status_code == 201 and second.status_code == 200
    assert any("first sent by site" in w for w in second.json()["warnings"])
    obs = client.get(f"/api/v1/observations/{first.json()['id']}", headers={"X-API-Key": other}).json()
    assert obs["original_name"] == "light.fits"
    assert [(s["original_name"], s["client"]) for s in obs["submissions"]] == [
        ("club.fits", {"client_ref": "club-9", "observer": "C"})]


def test_upload_slots_queue_a_bounded_number_and_answer_503_with_retry_after_beyond():
    from server.web.api import Rejection, _Slots

    async def scenario():
        slots = _Slots(active=1, waiting=1)
        order = []
        await slots.__aenter__()  # the one active upload

        async def queued():
            async with slots:
                order.append("queued ran")

        waiter = asyncio.create_task(queued())
        await asyncio.sleep(0)  # the second upload is now waiting for the slot
        with pytest.raises(Rejection) as refused:
            await slots.__aenter__()  # a third: the queue is full
        assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "5"}
        assert order == []
        await slots.__aexit__(None, None, None)
        await waiter
        assert order == ["queued ran"]
        async with slots:  # free again
            pass

    asyncio.run(scenario())
