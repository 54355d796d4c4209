"""Database access: an engine, transactional sessions, and Alembic migrations.

``Database(url).session()`` is one transaction: it commits when the block ends and rolls back on any
exception, so a multi-row change either lands whole or not at all.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from server.core.db.models import Base

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class DatabaseError(RuntimeError):
    """The database cannot be reached, or its schema does not match the code."""


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # pragma: no cover - trivial
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise DatabaseError(f"invalid database URL {url!r}: expected e.g. sqlite:///path.db or "
                                "mysql+mysqldb://user:password@host/dbname") from None
        self.url = url
        self.dialect = parsed.get_backend_name()
        kwargs: dict = {"echo": echo, "future": True}
        if self.dialect == "sqlite":
            db_path = parsed.database
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        elif self.dialect in {"mysql", "mariadb"}:
            kwargs.update(pool_pre_ping=True, pool_recycle=3600)
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
        try:
            self.engine: Engine = create_engine(parsed, **kwargs)
        except (ImportError, ModuleNotFoundError) as exc:
            raise DatabaseError(f"no driver for {self.dialect}: {exc}") from None
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Database({self.engine.url.render_as_string(hide_password=True)!r})"

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any exception."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def check_connection(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except OperationalError as exc:
            raise DatabaseError(
                f"cannot reach the database at {self.engine.url.render_as_string(hide_password=True)}: "
                f"{exc.orig}. Check OPENASTRO_DATABASE_URL and that the server is running."
            ) from None

    def create_all(self) -> None:
        """Create the current schema directly (tests); production uses ``upgrade()``."""
        Base.metadata.create_all(self.engine)

    # --- migrations -----------------------------------------------------------------------------------

    def _alembic_config(self):
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["engine"] = self.engine
        return cfg

    def upgrade(self, revision: str = "head") -> None:
        from alembic import command

        self.check_connection()
        command.upgrade(self._alembic_config(), revision)

    def downgrade(self, revision: str = "base") -> None:
        from alembic import command

        self.check_connection()
        command.downgrade(self._alembic_config(), revision)

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str | None:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def require_current_schema(self) -> None:
        """Refuse to run against a schema older (or newer) than the code, with what to do."""
        self.check_connection()
        try:
            current = self.current_revision()
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot read the schema version: {exc}") from None
        head = self.head_revision()
        if current is None:
            raise DatabaseError("the database has no OpenAstro schema yet: run `openastro db upgrade`")
        if current != head:
            raise DatabaseError(
                f"the database schema is at revision {current} but this code needs {head}: "
                "run `openastro db upgrade`"
            )

    def table_names(self) -> list[str]:
        return sorted(n for n in inspect(self.engine).get_table_names() if n != "alembic_version")


__all__ = ["Database", "DatabaseError", "Base"]
