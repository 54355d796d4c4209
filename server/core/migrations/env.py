"""Alembic environment: runs migrations on the engine handed over by ``server.core.db.Database``."""

from __future__ import annotations

from alembic import context

from server.core.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from server.core.context import OpenAstro

        engine = OpenAstro().db.engine
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():  # pragma: no cover - we always migrate a live database
    raise SystemExit("offline (SQL script) migrations are not supported: run `openastro db upgrade`")
run_migrations_online()
