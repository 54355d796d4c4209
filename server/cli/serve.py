"""``openastro serve``: the live upload API, over TLS when given a certificate."""

from __future__ import annotations

import ipaddress

import click

from server.core.context import OpenAstro


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to a public address


@click.command()
@click.option("--host", default=None, help="Listen address (default: setting api_host).")
@click.option("--port", default=None, type=click.IntRange(1, 65535), help="Port (default: setting api_port).")
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PEM certificate (chain) to serve HTTPS with; needs --ssl-keyfile.")
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PEM private key of --ssl-certfile.")
@click.option("--forwarded-allow-ips", default="127.0.0.1", show_default=True,
              help="Reverse proxies trusted for X-Forwarded-For/-Proto (comma-separated IPs, or '*').")
@click.pass_obj
def serve(app: OpenAstro, host: str | None, port: int | None, ssl_certfile: str | None, ssl_keyfile: str | None,
          forwarded_allow_ips: str) -> None:
    """Serve the upload API (POST /api/v1/observations), the read API and the science portal with uvicorn.

    Site keys travel in every request: bind a public address only with --ssl-certfile/--ssl-keyfile, or keep
    the default 127.0.0.1 behind a TLS reverse proxy (docs/deploy.md)."""
    import uvicorn

    from server.web.api import create_api

    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise click.UsageError("--ssl-certfile and --ssl-keyfile go together")
    app.db.require_current_schema()
    host = host or app.settings.api_host
    port = port or app.settings.api_port
    tls = ssl_certfile is not None
    if not tls and not is_loopback(host):
        click.echo(f"WARNING: serving plain HTTP on {host}: API keys and uploads cross the network unencrypted. "
                   "Use --ssl-certfile/--ssl-keyfile, or bind 127.0.0.1 behind a TLS reverse proxy "
                   "(docs/deploy.md).", err=True)
    scheme = "https" if tls else "http"
    click.echo(f"upload API on {scheme}://{host}:{port}/api/v1 (limit {app.settings.upload_max_bytes} bytes, "
               f"{app.settings.upload_max_concurrent} at a time)")
    click.echo(f"science portal on {scheme}://{host}:{port}/targets (docs/portal.md)")
    uvicorn.run(create_api(app), host=host, port=port, log_level="info", lifespan="off",
                ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, proxy_headers=True,
                forwarded_allow_ips=forwarded_allow_ips)
