"""The portal's server-rendered pages (Jinja2 templates in ``templates/``, our own JS/CSS in ``static/``).

Public: target list and search, target page (light curve, periodogram + phase fold, O-C), campaigns, stacks.
Behind login with role admin: ``/admin`` (sites and upload keys, campaign launch and cancel, queue and BOINC).
Every POST from a logged-in browser carries the session's CSRF token (form field ``csrf``).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from server.web import products as P
from server.web.access import Denied, check_csrf, reader_of, require_admin
from server.web.auth import LOGIN_CSRF_COOKIE, SESSION_COOKIE, csrf_ok, login, logout

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"


def _float_or_none(raw: str | None, name: str) -> float | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise P.BadParameter(f"{name}={raw!r} is not a number") from None


def build_pages(app, runner, openapi) -> APIRouter:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    router = APIRouter(include_in_schema=False)
    secure = bool(app.settings.portal_cookie_secure)
    hours = float(app.settings.portal_session_hours)

    async def render(request: Request, name: str, status: int = 200, **ctx) -> HTMLResponse:
        reader = await reader_of(request)
        html = env.get_template(name).render(user=reader.principal, **ctx)
        return HTMLResponse(html, status_code=status)

    def error_page(status: int, detail: str, user=None) -> HTMLResponse:
        return HTMLResponse(env.get_template("error.html").render(status=status, detail=detail, user=user),
                            status_code=status)

    async def guarded(request: Request, fn):
        """Run a page body; domain errors become an HTML page with the right status."""
        try:
            return await fn()
        except P.NotFound as exc:
            return error_page(404, str(exc), (await reader_of(request)).principal)
        except P.BadParameter as exc:
            return error_page(400, str(exc), (await reader_of(request)).principal)
        except Denied as exc:
            if exc.status == 401:
                return RedirectResponse("/login?" + urlencode({"next": request.url.path}), status_code=303)
            return error_page(exc.status, exc.message, (await reader_of(request)).principal)

    @router.get("/")
    async def home() -> Response:
        return RedirectResponse("/targets", status_code=303)

    @router.get("/targets")
    async def targets(request: Request, q: str | None = None, ra: str | None = None, dec: str | None = None,
                      radius: str | None = None, offset: int = 0) -> Response:
        async def body():
            r, d, rad = (_float_or_none(ra, "ra"), _float_or_none(dec, "dec"), _float_or_none(radius, "radius"))
            page = await run_in_threadpool(P.list_targets, app.db, name=q, ra=r, dec=d, radius=rad, limit=50,
                                           offset=max(0, offset))
            base = {k: v for k, v in {"q": q, "ra": ra, "dec": dec, "radius": radius}.items() if v}
            return await render(request, "targets.html", page=page, q=q, ra=r, dec=d, radius=rad,
                                cone=r is not None,
                                prev_url="/targets?" + urlencode({**base, "offset": max(0, offset - 50)}),
                                next_url="/targets?" + urlencode({**base, "offset": offset + 50}))
        return await guarded(request, body)

    @router.get("/targets/{target_id}")
    async def target(request: Request, target_id: int) -> Response:
        async def body():
            reader = await reader_of(request)
            t = await run_in_threadpool(P.get_target, app.db, target_id, published_only=reader.published_only)
            return await render(request, "target.html", t=t)
        return await guarded(request, body)

    @router.get("/campaigns")
    async def campaigns(request: Request) -> Response:
        async def body():
            reader = await reader_of(request)
            page = await run_in_threadpool(P.list_campaigns, app.db, published_only=reader.published_only,
                                           limit=200)
            return await render(request, "campaigns.html", page=page)
        return await guarded(request, body)

    @router.get("/campaigns/{campaign_id}")
    async def campaign(request: Request, campaign_id: int) -> Response:
        async def body():
            reader = await reader_of(request)
            c = await run_in_threadpool(P.campaign_detail, app, campaign_id, published_only=reader.published_only)
            return await render(request, "campaign.html", c=c)
        return await guarded(request, body)

    @router.get("/stacks")
    async def stacks(request: Request) -> Response:
        async def body():
            reader = await reader_of(request)
            page = await run_in_threadpool(P.list_stacks, app.db, published_only=reader.published_only, limit=200)
            return await render(request, "stacks.html", page=page)
        return await guarded(request, body)

    @router.get("/stacks/{stack_id}")
    async def stack(request: Request, stack_id: int) -> Response:
        async def body():
            reader = await reader_of(request)
            s = await run_in_threadpool(P.get_stack, app.db, stack_id, published_only=reader.published_only)
            return await render(request, "stack.html", s=s)
        return await guarded(request, body)

    @router.get("/api/docs")
    async def api_docs(request: Request) -> Response:
        return await render(request, "apidocs.html", spec=openapi())

    # --- login ----------------------------------------------------------------------------------------------
    def _safe_next(raw: str | None) -> str:
        return raw if raw and raw.startswith("/") and not raw.startswith("//") else "/targets"

    @router.get("/login")
    async def login_page(request: Request, next: str | None = None) -> Response:
        token = secrets.token_urlsafe(24)
        resp = await render(request, "login.html", login_csrf=token, next=_safe_next(next))
        resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=secure, max_age=3600)
        return resp

    @router.post("/login")
    async def login_submit(request: Request, name: Annotated[str, Form(max_length=80)],
                           password: Annotated[str, Form(max_length=1024)], csrf: Annotated[str, Form()] = "",
                           next: Annotated[str, Form()] = "/targets") -> Response:
        if not csrf_ok(request.cookies.get(LOGIN_CSRF_COOKIE), csrf):
            return error_page(403, "the login form expired or was not sent from this site: open /login again")
        result = await run_in_threadpool(login, app.db, name, password, hours=hours)
        if result is None:
            token = secrets.token_urlsafe(24)
            resp = HTMLResponse(env.get_template("login.html").render(
                user=None, login_csrf=token, next=_safe_next(next), error="wrong user name or password"),
                status_code=401)
            resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=secure)
            return resp
        cookie, _principal = result
        resp = RedirectResponse(_safe_next(next), status_code=303)
        resp.set_cookie(SESSION_COOKIE, cookie, httponly=True, samesite="lax", secure=secure,
                        max_age=int(hours * 3600))
        resp.delete_cookie(LOGIN_CSRF_COOKIE)
        return resp

    @router.post("/logout")
    async def logout_submit(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
        reader = await reader_of(request)
        if reader.principal is not None and csrf_ok(reader.principal.csrf_token, csrf):
            await run_in_threadpool(logout, app.db, request.cookies.get(SESSION_COOKIE))
        resp = RedirectResponse("/targets", status_code=303)
        resp.delete_cookie(SESSION_COOKIE)
        return resp

    # --- admin ----------------------------------------------------------------------------------------------
    async def admin_page(request: Request, status: int = 200, **ctx) -> Response:
        from server.ingest.sites import list_sites
        from server.web.read_api import queue_status

        sites = await run_in_threadpool(list_sites, app.db)
        queue = await run_in_threadpool(queue_status, app, runner)
        return await render(request, "admin.html", status=status, sites=sites, queue=queue,
                            executor=app.settings.executor, **ctx)

    async def admin_action(request: Request, csrf: str, action):
        async def body():
            reader = await reader_of(request)
            check_csrf(require_admin(reader), csrf)
            try:
                return await action()
            except (ValueError, P.BadParameter) as exc:
                return await admin_page(request, status=400, error=str(exc))
        return await guarded(request, body)

    @router.get("/admin")
    async def admin(request: Request, message: str | None = None) -> Response:
        async def body():
            require_admin(await reader_of(request))
            return await admin_page(request, message=message)
        return await guarded(request, body)

    @router.post("/admin/sites")
    async def add_site(request: Request, name: Annotated[str, Form(max_length=120)], csrf: Annotated[str, Form()] = "",
                       lat: Annotated[str, Form()] = "", lon: Annotated[str, Form()] = "") -> Response:
        async def action():
            from server.ingest.sites import create_site

            site = await run_in_threadpool(create_site, app.db, name, latitude_deg=_float_or_none(lat, "lat"),
                                           longitude_deg=_float_or_none(lon, "lon"))
            return RedirectResponse("/admin?" + urlencode({"message": f"site #{site.id} {site.name} added"}), 303)
        return await admin_action(request, csrf, action)

    @router.post("/admin/keys")
    async def issue_key(request: Request, site: Annotated[str, Form(max_length=120)],
                        csrf: Annotated[str, Form()] = "") -> Response:
        async def action():
            from server.ingest.sites import issue_api_key

            issued = await run_in_threadpool(issue_api_key, app.db, site)
            return await admin_page(request, new_key=issued)  # shown once, never in a URL
        return await admin_action(request, csrf, action)

    @router.post("/admin/keys/revoke")
    async def revoke_key(request: Request, prefix: Annotated[str, Form(max_length=40)],
                         csrf: Annotated[str, Form()] = "") -> Response:
        async def action():
            from server.ingest.sites import revoke_api_key

            n = await run_in_threadpool(revoke_api_key, app.db, prefix.strip())
            return RedirectResponse("/admin?" + urlencode({"message": f"revoked {n} key(s) with prefix {prefix}"}),
                                    303)
        return await admin_action(request, csrf, action)

    @router.post("/admin/campaigns")
    async def launch(request: Request, times: Annotated[UploadFile, File()], priors: Annotated[UploadFile, File()],
                     csrf: Annotated[str, Form()] = "", name: Annotated[str, Form(max_length=120)] = "",
                     bins: Annotated[str, Form(max_length=4000)] = "auto", replicas: Annotated[int, Form()] = 2,
                     executor: Annotated[str, Form()] = "", seed: Annotated[str, Form()] = "") -> Response:
        async def action():
            from server.web.read_api import launch_from_upload

            if replicas not in (1, 2):
                raise P.BadParameter(f"replicas must be 1 or 2, got {replicas}")
            if executor not in ("", "local", "boinc"):
                raise P.BadParameter(f"executor must be local or boinc, got {executor!r}")
            try:
                seed_value = int(seed) if seed.strip() else None
            except ValueError:
                raise P.BadParameter(f"seed={seed!r} is not an integer") from None
            launched = await launch_from_upload(runner=runner, times=times, priors=priors, name=name,
                                                replicas=replicas, bins=bins, executor=executor or None,
                                                seed=seed_value)
            return RedirectResponse(f"/campaigns/{launched.campaign_id}", status_code=303)
        return await admin_action(request, csrf, action)

    @router.post("/admin/campaigns/{campaign_id}/cancel")
    async def cancel(request: Request, campaign_id: int, csrf: Annotated[str, Form()] = "") -> Response:
        async def action():
            from server.web.read_api import _cancel

            n = await run_in_threadpool(_cancel, runner, campaign_id)
            return RedirectResponse("/admin?" + urlencode(
                {"message": f"campaign {campaign_id} cancelled ({n} unfinished work units)"}), 303)
        return await admin_action(request, csrf, action)

    return router
