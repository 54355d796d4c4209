"""Reading stored alerts back: the list the API and the CLI show, and the packets themselves."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from server.core.db.models import TransientAlert, TransientCandidate, TransientObject

MAX_LIMIT = 1000


def parse_since(text: str | None) -> dt.datetime | None:
    """An ISO 8601 time (UTC when no zone is given) as a naive UTC datetime; None for empty."""
    if text is None or not str(text).strip():
        return None
    try:
        t = dt.datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"since must be an ISO 8601 time such as 2026-01-31T12:00:00Z, got {text!r}") from None
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return t


def list_alerts(app, *, since: dt.datetime | None = None, limit: int = 100) -> list[dict]:
    """Alerts created after ``since`` (oldest first), each with its object and history length."""
    if not 1 <= int(limit) <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit!r}")
    with app.db.session() as s:
        q = (select(TransientAlert, TransientObject, TransientCandidate)
             .join(TransientObject, TransientObject.id == TransientAlert.object_id)
             .join(TransientCandidate, TransientCandidate.id == TransientAlert.candidate_id))
        if since is not None:
            q = q.where(TransientAlert.created_at > since)
        rows = s.execute(q.order_by(TransientAlert.created_at, TransientAlert.id).limit(int(limit))).all()
        return [{
            "id": a.id, "object": o.name, "candid": c.id, "created_at": a.created_at.isoformat() + "Z",
            "jd": a.jd, "ra_deg": a.ra_deg, "dec_deg": a.dec_deg, "band": c.band, "mag": a.mag,
            "mag_err": c.mag_err, "isdiffpos": c.sign > 0, "snr": c.snr, "rb": a.rb, "n_previous": a.n_previous,
            "observation_id": c.observation_id, "avro": f"/api/v1/alerts/{a.id}.avro",
            "voevent": f"/api/v1/alerts/{a.id}.xml",
        } for a, o, c in rows]


def alert_packet(app, alert_id: int, kind: str) -> bytes:
    """The stored Avro (``avro``) or VOEvent (``xml``) packet of an alert; KeyError when there is none."""
    if kind not in ("avro", "xml"):
        raise ValueError(f"packet kind must be avro or xml, got {kind!r}")
    with app.db.session() as s:
        a = s.get(TransientAlert, int(alert_id))
        if a is None:
            raise KeyError(alert_id)
        key = a.avro_key if kind == "avro" else a.voevent_key
        if key is None:
            raise KeyError(alert_id)  # the packet object was lost (see `openastro store check`)
    with app.store.open(key) as fh:
        return fh.read()
