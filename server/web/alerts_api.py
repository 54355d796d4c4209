"""``GET /api/v1/alerts?since=``: transient alerts as JSON, and each alert's Avro and VOEvent packet.

Read-only and public (alerts are for brokers and observers). Included by ``server.web.api.create_api``.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from server.core.context import OpenAstro
from server.transients.alertstore import alert_packet, list_alerts, parse_since

API_PREFIX = "/api/v1"


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def alerts_router(app: OpenAstro) -> APIRouter:
    router = APIRouter()

    @router.get(f"{API_PREFIX}/alerts")
    async def alerts(since: str | None = None, limit: int = 100) -> JSONResponse:
        try:
            t = parse_since(since)
            rows = await run_in_threadpool(list_alerts, app, since=t, limit=limit)
        except ValueError as exc:
            return _error(400, "invalid_request", str(exc))
        return JSONResponse({"alerts": rows, "count": len(rows)})

    async def _packet(alert_id: int, fmt: str, media_type: str) -> Response:
        try:
            data = await run_in_threadpool(alert_packet, app, alert_id, fmt)
        except KeyError:
            return _error(404, "not_found", f"no alert {alert_id}")
        return Response(data, media_type=media_type)

    @router.get(API_PREFIX + "/alerts/{alert_id}.avro")
    async def alert_avro(alert_id: int) -> Response:
        return await _packet(alert_id, "avro", "avro/binary")

    @router.get(API_PREFIX + "/alerts/{alert_id}.xml")
    async def alert_voevent(alert_id: int) -> Response:
        return await _packet(alert_id, "xml", "application/xml")

    return router
