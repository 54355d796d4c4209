"""The end-to-end demonstration run on embedded defaults."""

from __future__ import annotations

from typing import Callable

from server.context import OpenAstro


def run_demo(app: OpenAstro, *, quick: bool = False, echo: Callable[[str], None] = print) -> dict:
    echo(f"[1] database: {app.db}")
    app.db.upgrade()
    echo(f"    schema at revision {app.db.current_revision()}, {len(app.db.table_names())} tables")
    echo(f"[2] object store: {app.store.root}")
    obj = app.store.put_bytes(b"OpenAstro demo object\n")
    echo(f"    stored {obj.size} bytes as {obj.key} ({'new' if obj.created else 'already stored'})")
    return {"revision": app.db.current_revision(), "object": obj.key}
