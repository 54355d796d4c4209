"""``openastro serve``: the live upload API."""

from __future__ import annotations

import click

from server.core.context import OpenAstro


@click.command()
@click.option("--host", default=None, help="Listen address (default: setting api_host).")
@click.option("--port", default=None, type=click.IntRange(1, 65535), help="Port (default: setting api_port).")
@click.pass_obj
def serve(app: OpenAstro, host: str | None, port: int | None) -> None:
    """Serve the upload API (POST /api/v1/observations) with uvicorn."""
    import uvicorn

    from server.web.api import create_api

    app.db.require_current_schema()
    host = host or app.settings.api_host
    port = port or app.settings.api_port
    click.echo(f"upload API on http://{host}:{port}/api/v1 (limit {app.settings.upload_max_bytes} bytes)")
    uvicorn.run(create_api(app), host=host, port=port, log_level="info", lifespan="off")
