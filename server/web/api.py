"""The live upload HTTP API (FastAPI, served by uvicorn through ``openastro serve``).

``POST /api/v1/observations`` takes ``multipart/form-data`` with one ``file`` part (a FITS image, plain or
tile-compressed) and an optional ``metadata`` part (a JSON object; keys in
:data:`server.ingest.service.CLIENT_META_KEYS`, which fill gaps in the FITS header, never override it).

* Authentication: a per-site key in ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, checked before a
  byte of the body is read. Keys are stored hashed (see :mod:`server.ingest.sites`).
* Size limit: ``upload_max_bytes``. A declared ``Content-Length`` above it is refused at once with 413; a
  streamed body is counted as it arrives and refused the moment the file part passes the limit. Nothing is
  stored in either case.
* Streaming: the multipart body is parsed incrementally; the file part is spooled to a temporary file inside
  the object store (``<store>/tmp/put-upload-*``, a random name: the client's file name is only recorded as
  metadata, never used as a path) and hashed while it streams. Only a file that passes every check is put in
  the store.
* Idempotent retries: the same content gives the same observation: 201 the first time, 200 with the same id
  afterwards (``"created": false``), whichever site sends it.
* Every rejection has a JSON body ``{"error": {"code": ..., "message": ...}}``.

``GET /api/v1/observations/{id}`` (any valid key) and ``GET /api/v1/health`` (no key) complete the API.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from server.core.context import OpenAstro
from server.core.db import DatabaseError
from server.ingest.service import (
    IngestError,
    IngestOptions,
    ingest_path,
    observation_json,
    parse_client_meta,
    result_json,
)
from server.ingest.sites import authenticate
from server.core.storage import TEMP_PREFIX, StorageError, open_temp

log = logging.getLogger("openastro.api")

API_PREFIX = "/api/v1"
FORM_OVERHEAD_BYTES = 64 * 1024  # multipart headers + the metadata part, on top of the file limit
METADATA_MAX_BYTES = 16 * 1024
DRAIN_MAX_BYTES = 8 * 1024 * 1024  # read (and discard) at most this much of a refused body, for a clean 413
DECOMPRESSION_FACTOR = 16  # a tile-compressed upload may decode to at most this many times the upload limit
UPLOAD_TEMP_PREFIX = TEMP_PREFIX + "upload-"
RETRY_AFTER_S = 5


class _Slots:
    """At most ``active`` uploads are received and checked at once; up to ``waiting`` more wait (without their
    body being read) for a slot; any further upload is answered 503 with Retry-After at once."""

    def __init__(self, active: int, waiting: int) -> None:
        self.active, self.waiting = active, waiting
        self._sem: asyncio.Semaphore | None = None
        self._queued = 0

    async def __aenter__(self) -> None:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.active)  # created in the server's event loop
        if self._sem.locked():
            if self._queued >= self.waiting:
                raise Rejection(503, "busy", f"{self.active} uploads are in progress and {self._queued} waiting: "
                                             f"retry in {RETRY_AFTER_S} s", {"Retry-After": str(RETRY_AFTER_S)})
            self._queued += 1
            try:
                await self._sem.acquire()
            finally:
                self._queued -= 1
        else:
            await self._sem.acquire()

    async def __aexit__(self, *exc_info) -> None:
        self._sem.release()


class Rejection(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def safe_client_name(raw: str | None) -> str:
    """The client's file name reduced to a harmless label (last path component, printable, <= 255 chars)."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).strip().lstrip(".")
    return name[:255] or "upload"


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


class _Spool:
    """Receives the multipart body: the file part into a temp file under the store (hashed on the way),
    the metadata part into memory. Limits are enforced as bytes arrive."""

    def __init__(self, tmp_dir: Path, limit: int) -> None:
        self.tmp_dir, self.limit = tmp_dir, limit
        self.path: Path | None = None
        self._fh = None
        self.sha = hashlib.sha256()
        self.size = 0
        self.filename: str | None = None
        self.metadata = bytearray()
        self.file_done = False
        self.finished = False
        self._part: str | None = None
        self._headers: dict[str, str] = {}
        self._field, self._value = bytearray(), bytearray()
        self.parts_seen: list[str] = []

    # python-multipart callbacks (synchronous; exceptions propagate out of parser.write)
    def on_part_begin(self) -> None:
        self._headers = {}
        self._part = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._field.decode("latin-1").strip().lower()] = self._value.decode("latin-1")
        self._field, self._value = bytearray(), bytearray()

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get("content-disposition", ""))
        name = options.get(b"name", b"").decode("latin-1")
        if disposition != b"form-data" or not name:
            raise Rejection(400, "malformed_multipart", "every part needs Content-Disposition: form-data; name=...")
        if name in self.parts_seen:
            raise Rejection(400, "duplicate_part", f"the part {name!r} appears more than once")
        self.parts_seen.append(name)
        if name == "file":
            # undecodable bytes kept as surrogates: ingest records them as U+FFFD and says so in `warnings`
            self.filename = options.get(b"filename", b"").decode("utf-8", errors="surrogateescape")
            fd, self.path = open_temp(self.tmp_dir, prefix=UPLOAD_TEMP_PREFIX)
            self._fh = os.fdopen(fd, "wb")
        elif name != "metadata":
            raise Rejection(400, "unknown_part", f"unexpected form field {name!r}: send 'file' and 'metadata'")
        self._part = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._part == "file":
            self.size += len(chunk)
            if self.size > self.limit:
                raise Rejection(413, "too_large", f"the file exceeds the upload limit of {self.limit} bytes")
            self.sha.update(chunk)
            self._fh.write(chunk)
        else:
            self.metadata += chunk
            if len(self.metadata) > METADATA_MAX_BYTES:
                raise Rejection(413, "metadata_too_large", f"metadata is larger than {METADATA_MAX_BYTES} bytes")

    def on_part_end(self) -> None:
        if self._part == "file":
            self._fh.flush()  # kept open (and flock-ed) until cleanup: start-up cleaning of another process
            self.file_done = True  # never removes a file this request is still ingesting

    def on_end(self) -> None:
        self.finished = True

    def callbacks(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in (
            "on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
            "on_part_data", "on_part_end", "on_end")}

    def cleanup(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class _Body:
    """The request body read straight from the ASGI channel, remembering whether its last message arrived.

    A second ``Request.stream()`` raises "Stream consumed" once the last message has arrived, so draining an
    upload refused in its final message failed with a 500 (seen in CI when the server delivered the rest of the
    body in one message).  Reading ``receive`` ourselves keeps one flag for both the parser and the drain."""

    def __init__(self, request: Request) -> None:
        self._receive = request.receive
        self.complete = False

    async def chunks(self) -> AsyncIterator[bytes]:
        while not self.complete:
            message = await self._receive()
            if message["type"] == "http.request":
                self.complete = not message.get("more_body", False)
                body = message.get("body", b"")
                if body:
                    yield body
            elif message["type"] == "http.disconnect":
                raise ClientDisconnect()


async def _drain(body: _Body, budget: int) -> None:
    """Read and drop what is left of a refused body (bounded), so the client can read our answer."""
    try:
        async for chunk in body.chunks():
            budget -= len(chunk)
            if budget < 0:
                return
    except ClientDisconnect:
        return


async def _receive(request: Request, body: _Body, spool: _Spool) -> None:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise Rejection(415, "unsupported_media_type",
                        "send multipart/form-data with a 'file' part (FITS) and an optional 'metadata' part (JSON)")
    parser = MultipartParser(boundary, spool.callbacks())
    try:
        async for chunk in body.chunks():
            await run_in_threadpool(parser.write, chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise Rejection(400, "malformed_multipart", f"the multipart body cannot be parsed: {exc}") from None
    except ClientDisconnect:
        raise Rejection(400, "incomplete_body", "the client disconnected before the body was complete") from None
    if not spool.finished:
        raise Rejection(400, "malformed_multipart", "the multipart body ended without its closing boundary")
    if not spool.file_done:
        raise Rejection(400, "missing_file", "the upload has no 'file' part")


def create_api(app: OpenAstro) -> FastAPI:
    """The upload API bound to one application object (settings, database, store)."""
    api = FastAPI(title="OpenAstro Compute API", version="1", docs_url=None, redoc_url=None,
                  openapi_url=f"{API_PREFIX}/openapi.json")
    limit = int(app.settings.upload_max_bytes)
    max_data = min(int(app.settings.fits_max_image_bytes), DECOMPRESSION_FACTOR * limit)
    max_tile = int(app.settings.fits_max_tile_bytes)
    slots = _Slots(int(app.settings.upload_max_concurrent), int(app.settings.upload_max_waiting))
    app.store  # noqa: B018  (opening the store at start-up removes temp files a crashed server left)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @api.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return error_response(422, "invalid_request", details or "invalid request")

    _mount_portal(api, app)

    @api.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in the upload API")
        return error_response(500, "internal_error", f"internal error ({type(exc).__name__})")

    async def _site_of(request: Request) -> int:
        token = bearer_token(request)
        if token is None:
            raise Rejection(401, "missing_api_key", "send the site's API key as 'Authorization: Bearer <key>' "
                                                    "or 'X-API-Key: <key>'", {"WWW-Authenticate": "Bearer"})
        site_id = await run_in_threadpool(authenticate, app.db, token)
        if site_id is None:
            raise Rejection(401, "invalid_api_key", "the API key is not valid (unknown or revoked)",
                            {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return site_id

    @api.get(f"{API_PREFIX}/health")
    async def health() -> JSONResponse:
        try:
            await run_in_threadpool(app.db.check_connection)
        except DatabaseError as exc:
            return error_response(503, "database_unavailable", str(exc))
        return JSONResponse({"status": "ok", "database": "ok", "upload_max_bytes": limit})

    @api.get(f"{API_PREFIX}/observations/{{observation_id}}")
    async def get_observation(observation_id: Annotated[int, PathParam(ge=1, le=2**63 - 1)],
                              request: Request) -> JSONResponse:
        try:
            await _site_of(request)
        except Rejection as r:
            return error_response(r.status, r.code, r.message, r.headers)
        body = await run_in_threadpool(observation_json, app, observation_id)
        if body is None:
            return error_response(404, "not_found", f"no observation with id {observation_id}")
        return JSONResponse(body)

    async def _receive_and_ingest(request: Request, body: _Body, spool: _Spool, site_id: int):
        try:
            await _receive(request, body, spool)
        except Rejection as r:
            spool.cleanup()
            if r.status == 413:
                await _drain(body, DRAIN_MAX_BYTES)
            raise
        try:
            client_meta = parse_client_meta(bytes(spool.metadata))
        except ValueError as exc:
            raise Rejection(422, "invalid_metadata", str(exc)) from None
        options = IngestOptions(site_id=site_id, original_name=safe_client_name(spool.filename),
                                client_meta=client_meta, formats=("fits",), max_data_bytes=max_data,
                                max_tile_bytes=max_tile)
        try:
            return await run_in_threadpool(ingest_path, app, spool.path, options, sha256=spool.sha.hexdigest())
        except IngestError as exc:
            raise Rejection(422, "invalid_file", str(exc)) from None
        except StorageError as exc:
            raise Rejection(507, "storage_error", str(exc)) from None
        except DatabaseError as exc:
            raise Rejection(503, "database_unavailable", str(exc)) from None

    @api.post(f"{API_PREFIX}/observations")
    async def upload(request: Request) -> JSONResponse:
        spool = _Spool(app.store.root / "tmp", limit)
        try:
            site_id = await _site_of(request)
            declared = request.headers.get("content-length")
            if declared is not None:
                try:
                    declared_bytes = int(declared)
                except ValueError:
                    raise Rejection(400, "bad_content_length", f"Content-Length {declared!r} is not a number") from None
                if declared_bytes > limit + FORM_OVERHEAD_BYTES:
                    raise Rejection(413, "too_large", f"the upload ({declared_bytes} bytes) exceeds the limit of "
                                                      f"{limit} bytes")
            body = _Body(request)
            async with slots:
                result = await _receive_and_ingest(request, body, spool, site_id)
        except Rejection as r:
            return error_response(r.status, r.code, r.message, r.headers)
        finally:
            spool.cleanup()
        body = result_json(result)
        location = f"{API_PREFIX}/observations/{result.observation_id}"
        return JSONResponse(body, status_code=201 if result.created else 200, headers={"Location": location})

    from server.web.alerts_api import alerts_router; api.include_router(alerts_router(app))  # noqa: E702
    return api


def _mount_portal(api: FastAPI, app: OpenAstro) -> None:
    """The science portal (issue 17): read API, pages, admin, static files (docs/portal.md)."""
    from fastapi.staticfiles import StaticFiles

    from server.web.access import Denied
    from server.web.jobs import CampaignRunner
    from server.web.pages import STATIC, build_pages
    from server.web.products import BadParameter, NotFound
    from server.web.read_api import build_router

    api.state.oa = app
    runner = CampaignRunner(app)
    read_router = build_router(app, runner)
    api.state.lightcurve_cache = read_router.lightcurve_cache
    api.include_router(read_router)
    api.include_router(build_pages(app, runner, api.openapi))
    api.mount("/static", StaticFiles(directory=STATIC), name="static")

    @api.exception_handler(Denied)
    async def _denied(_request: Request, exc: Denied) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @api.exception_handler(NotFound)
    async def _not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return error_response(404, "not_found", str(exc))

    @api.exception_handler(BadParameter)
    async def _bad(_request: Request, exc: BadParameter) -> JSONResponse:
        return error_response(400, "bad_parameter", str(exc))


__all__ = ["create_api", "safe_client_name", "bearer_token", "API_PREFIX"]
