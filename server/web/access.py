"""Who is asking, for the portal's routes: the logged-in user behind the session cookie, and the role checks.

``Reader`` is the request's view: ``principal`` (None when anonymous) and ``published_only`` (anonymous readers
see published products only). ``require_user``/``require_admin`` raise :class:`Denied` (401 without a login,
403 with the wrong role); state-changing requests also need the session's CSRF token (:func:`check_csrf`).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from server.web.auth import SESSION_COOKIE, Principal, csrf_ok, principal_for


class Denied(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Reader:
    principal: Principal | None

    @property
    def published_only(self) -> bool:
        return self.principal is None


async def reader_of(request: Request) -> Reader:
    app = request.app.state.oa
    token = request.cookies.get(SESSION_COOKIE)
    principal = await run_in_threadpool(principal_for, app.db, token) if token else None
    return Reader(principal)


def require_user(reader: Reader) -> Principal:
    if reader.principal is None:
        raise Denied(401, "login_required", "log in (POST /login) to read unpublished products")
    return reader.principal


def require_admin(reader: Reader) -> Principal:
    p = require_user(reader)
    if not p.is_admin:
        raise Denied(403, "admin_only", f"user {p.name!r} has role {p.role!r}; this needs role 'admin'")
    return p


def check_csrf(principal: Principal, sent: str | None) -> None:
    if not csrf_ok(principal.csrf_token, sent):
        raise Denied(403, "csrf_failed", "missing or wrong CSRF token (form field 'csrf' or header X-CSRF-Token)")
