"""Portal accounts: users with scrypt-hashed passwords, browser sessions, CSRF tokens and roles.

* Passwords: ``hashlib.scrypt`` (n=2**14, r=8, p=1, 16-byte random salt), stored as
  ``scrypt$n$r$p$<salt hex>$<hash hex>``; checked in constant time.
* Sessions: a random cookie value (32 bytes, URL-safe); only its SHA-256 is stored (``user_sessions``), with an
  expiry (setting ``portal_session_hours``). Logging out deletes the row.
* CSRF: each session has its own random token; every state-changing request of a logged-in browser must send
  it back (form field ``csrf`` or header ``X-CSRF-Token``). The login form itself uses a double-submit cookie.
* Roles: ``admin`` (sites, keys, campaigns, queue) and ``scientist`` (reads every product, published or not).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select

from server.core.db.models import User, UserSession, utcnow

ROLES = ("admin", "scientist")
SESSION_COOKIE = "oa_session"
LOGIN_CSRF_COOKIE = "oa_login_csrf"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,80}$")
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}
MIN_PASSWORD = 8


class AuthError(ValueError):
    """A user cannot be created or found as asked."""


@dataclass(frozen=True)
class Principal:
    """Who is making a request: a logged-in user (with the session's CSRF token)."""

    user_id: int
    name: str
    role: str
    csrf_token: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, maxmem=64 * 1024 * 1024, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_hex, hash_hex = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r),
                                p=int(p), dklen=len(hash_hex) // 2, maxmem=64 * 1024 * 1024)
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), hash_hex)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_user(db, name: str, role: str, password: str) -> int:
    """Add a user; AuthError for a bad name, role, short password or a duplicate name."""
    if not _NAME.match(name or ""):
        raise AuthError(f"user name must be 1-80 characters of letters, digits and _.@-, got {name!r}")
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"the password must have at least {MIN_PASSWORD} characters (got {len(password)})")
    with db.session() as session:
        if session.scalars(select(User.id).where(User.name == name)).first() is not None:
            raise AuthError(f"a user named {name!r} already exists")
        user = User(name=name, role=role, password_hash=hash_password(password))
        session.add(user)
        session.flush()
        return user.id


def list_users(db) -> list[dict]:
    with db.session() as session:
        return [{"id": u.id, "name": u.name, "role": u.role, "disabled": u.disabled_at is not None}
                for u in session.scalars(select(User).order_by(User.id))]


def disable_user(db, name: str) -> None:
    """Disable a user and end their sessions."""
    with db.session() as session:
        user = session.scalars(select(User).where(User.name == name)).first()
        if user is None:
            raise AuthError(f"no user named {name!r}")
        user.disabled_at = utcnow()
        session.execute(delete(UserSession).where(UserSession.user_id == user.id))


def login(db, name: str, password: str, *, hours: float) -> tuple[str, Principal] | None:
    """(session cookie value, principal) for a correct name and password of an enabled user, else None."""
    with db.session() as session:
        user = session.scalars(select(User).where(User.name == name)).first()
        if user is None:
            hash_password(password)  # same work whether or not the name exists
            return None
        if user.disabled_at is not None or not verify_password(password, user.password_hash):
            return None
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        session.add(UserSession(user_id=user.id, token_hash=_token_hash(token), csrf_token=csrf,
                                expires_at=utcnow() + dt.timedelta(hours=hours)))
        return token, Principal(user.id, user.name, user.role, csrf)


def principal_for(db, token: str | None) -> Principal | None:
    """The logged-in user behind a session cookie, or None (no cookie, unknown, expired or disabled)."""
    if not token:
        return None
    with db.session() as session:
        row = session.execute(select(UserSession, User).join(User, User.id == UserSession.user_id)
                              .where(UserSession.token_hash == _token_hash(token))).first()
        if row is None:
            return None
        sess, user = row
        if sess.expires_at < utcnow() or user.disabled_at is not None:
            session.delete(sess)
            return None
        return Principal(user.id, user.name, user.role, sess.csrf_token)


def logout(db, token: str | None) -> None:
    if token:
        with db.session() as session:
            session.execute(delete(UserSession).where(UserSession.token_hash == _token_hash(token)))


def csrf_ok(expected: str | None, sent: str | None) -> bool:
    return bool(expected) and bool(sent) and hmac.compare_digest(str(expected), str(sent))


__all__ = ["ROLES", "SESSION_COOKIE", "LOGIN_CSRF_COOKIE", "AuthError", "Principal", "hash_password",
           "verify_password", "create_user", "list_users", "disable_user", "login", "principal_for", "logout",
           "csrf_ok"]
