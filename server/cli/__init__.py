"""The ``openastro`` command line: one click group, one subgroup per role.

Layering: this package turns arguments into calls on the ``OpenAstro`` application object and turns domain
exceptions into one clear error line (``click.ClickException``); it never writes SQL.
"""

from __future__ import annotations

import importlib
import sys

import click

from server.core.context import OpenAstro
from server.core.db import DatabaseError
from server.core.settings import SettingsError, load_settings
from server.core.storage import StorageError

# Role subgroups, each a module of this package defining one click command or group of the same name.
ROLE_MODULES = ("config", "db", "pipeline", "sites", "target", "serve", "store", "results", "ttv", "campaign", "boinc",
                "demo", "worker", "queue", "transients", "users")

DOMAIN_ERRORS = (SettingsError, DatabaseError, StorageError)


class OpenAstroGroup(click.Group):
    """Turns the domain errors every command can hit into one line and exit code 1."""

    def invoke(self, ctx: click.Context):
        from sqlalchemy.exc import OperationalError, ProgrammingError

        try:
            return super().invoke(ctx)
        except DOMAIN_ERRORS as exc:
            raise click.ClickException(str(exc)) from None
        except (OperationalError, ProgrammingError) as exc:
            message = str(exc.orig if getattr(exc, "orig", None) is not None else exc)
            if not _missing_table(message):
                raise
            url = ctx.obj.settings.resolved_database_url if isinstance(ctx.obj, OpenAstro) else "the database"
            raise click.ClickException(f"the database has no OpenAstro tables yet ({message.splitlines()[0]}): run "
                                       f"`openastro db upgrade` first (database {_safe_url(url)})") from None


def _missing_table(message: str) -> bool:
    # SQLite: "no such table: campaigns"; MariaDB/MySQL: (1146, "Table 'db.campaigns' doesn't exist")
    return "no such table" in message or ("1146" in message and "doesn't exist" in message)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for the message
        return "(unparsable URL)"


@click.group(cls=OpenAstroGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML settings file (also OPENASTRO_CONFIG).")
@click.version_option(package_name="openastro-compute", prog_name="openastro")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """OpenAstro Compute: amateur telescope data to science, scaled out through BOINC.

    Settings come from defaults, an optional TOML file and OPENASTRO_* environment variables
    (see `openastro config show`).
    """
    try:
        settings = load_settings(config_path)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    ctx.obj = OpenAstro(settings)
    from server.queue.reactive import reactive_enabled

    if reactive_enabled(settings):  # new data sets the pipeline going (docs/queue.md)
        from server.queue.reactive import attach

        attach(ctx.obj)


def _register() -> None:
    for name in ROLE_MODULES:
        module_name = f"{__name__}.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # role not built yet
            raise
        main.add_command(getattr(module, name))


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
