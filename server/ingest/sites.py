"""Sites and their upload API keys.

A key is ``oa_<prefix>_<secret>``: ``prefix`` (8 hex characters) is stored in clear to find the key row,
``secret`` is 32 random bytes (URL-safe base64). Only the SHA-256 of the whole key is stored, and the
comparison is constant-time (:func:`hmac.compare_digest`). The key is shown once, when issued.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import func, select

from server.core.db.models import ApiKey, Site, utcnow

_TOKEN = re.compile(r"^oa_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class SiteInfo:
    id: int
    name: str
    latitude_deg: float | None
    longitude_deg: float | None
    height_m: float | None
    n_active_keys: int = 0


@dataclass(frozen=True)
class IssuedKey:
    site_id: int
    site_name: str
    prefix: str
    token: str  # the only time the clear key exists: print it once, never store it


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _info(site: Site, n_keys: int = 0) -> SiteInfo:
    return SiteInfo(site.id, site.name, site.latitude_deg, site.longitude_deg, site.height_m, n_keys)


def create_site(db, name: str, *, latitude_deg: float | None = None, longitude_deg: float | None = None,
                height_m: float | None = None) -> SiteInfo:
    """Add a site; ValueError for a duplicate name or an impossible location."""
    name = name.strip()
    if not name or len(name) > 120:
        raise ValueError(f"site name must be 1-120 characters, got {name!r}")
    if latitude_deg is not None and not -90 <= latitude_deg <= 90:
        raise ValueError(f"latitude {latitude_deg!r} is outside [-90, 90] degrees")
    if longitude_deg is not None and not -180 <= longitude_deg <= 360:
        raise ValueError(f"longitude {longitude_deg!r} is outside [-180, 360] degrees")
    if longitude_deg is not None and longitude_deg > 180:
        longitude_deg -= 360.0
    with db.session() as s:
        if s.scalars(select(Site).where(func.lower(Site.name) == name.lower())).first() is not None:
            raise ValueError(f"a site named {name!r} already exists")
        site = Site(name=name, latitude_deg=latitude_deg, longitude_deg=longitude_deg, height_m=height_m)
        s.add(site)
        s.flush()
        return _info(site)


def find_site(db, name: str) -> SiteInfo:
    with db.session() as s:
        site = s.scalars(select(Site).where(func.lower(Site.name) == name.strip().lower())).first()
        if site is None:
            raise ValueError(f"no site named {name!r} (add it with `openastro site add`)")
        return _info(site)


def list_sites(db) -> list[SiteInfo]:
    with db.session() as s:
        out = []
        for site in s.scalars(select(Site).order_by(Site.name)):
            n = s.scalar(select(func.count(ApiKey.id)).where(ApiKey.site_id == site.id, ApiKey.revoked_at.is_(None)))
            out.append(_info(site, int(n or 0)))
        return out


def issue_api_key(db, site_name: str) -> IssuedKey:
    """A new key for ``site_name``; only its hash is stored."""
    site = find_site(db, site_name)
    prefix = secrets.token_hex(4)
    token = f"oa_{prefix}_{secrets.token_urlsafe(32)}"
    with db.session() as s:
        s.add(ApiKey(site_id=site.id, prefix=prefix, key_hash=hash_token(token)))
    return IssuedKey(site.id, site.name, prefix, token)


def revoke_api_key(db, prefix: str) -> int:
    """Revoke the active key(s) with ``prefix``; returns how many were revoked (ValueError when none)."""
    with db.session() as s:
        keys = s.scalars(select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))).all()
        if not keys:
            raise ValueError(f"no active API key with prefix {prefix!r}")
        for key in keys:
            key.revoked_at = utcnow()
        return len(keys)


def authenticate(db, token: str | None) -> int | None:
    """The site id of a valid, unrevoked key, else None. Constant-time comparison of the hashes."""
    if not token:
        return None
    digest = hash_token(token)
    m = _TOKEN.match(token)
    if m is None:
        hmac.compare_digest(digest, "0" * 64)  # same work for malformed keys
        return None
    with db.session() as s:
        candidates = s.scalars(
            select(ApiKey).where(ApiKey.prefix == m.group(1), ApiKey.revoked_at.is_(None))
        ).all()
        site_id = None
        for key in candidates:
            if hmac.compare_digest(digest, key.key_hash):
                site_id = key.site_id
        return site_id
