"""Schema, migrations and transactions on the embedded SQLite default and on a real MariaDB server."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, select

from server.core.db import Database, DatabaseError
from server.core.db.models import Base, Campaign, Observation, Site, WorkUnit

EXPECTED_TABLES = sorted(Base.metadata.tables)


def _columns(db: Database) -> dict[str, set[str]]:
    insp = inspect(db.engine)
    return {t: {c["name"] for c in insp.get_columns(t)} for t in db.table_names()}


def test_upgrade_on_empty_database_creates_every_model_table(any_db):
    any_db.upgrade()
    assert any_db.table_names() == EXPECTED_TABLES
    assert any_db.current_revision() == any_db.head_revision()
    any_db.require_current_schema()


def test_migrations_match_the_models_exactly(any_db):
    """No drift between models and migrations (alembic autogenerate finds nothing to do)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    any_db.upgrade()
    with any_db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    assert diff == []


def test_downgrade_to_base_removes_everything_and_upgrade_restores_it(any_db):
    any_db.upgrade()
    any_db.downgrade("base")
    assert any_db.table_names() == []
    any_db.upgrade()
    assert any_db.table_names() == EXPECTED_TABLES


@pytest.mark.mariadb
def test_sqlite_and_mariadb_get_the_same_tables_and_columns(tmp_path, mariadb_url):
    lite = Database(f"sqlite:///{tmp_path / 'a.db'}")
    maria = Database(mariadb_url)
    lite.upgrade()
    maria.upgrade()
    assert _columns(lite) == _columns(maria)
    maria.engine.dispose()


def test_failed_multi_row_change_leaves_nothing_behind(any_db):
    any_db.upgrade()
    with pytest.raises(RuntimeError, match="simulated failure"):
        with any_db.session() as s:
            camp = Campaign(name="c1", kind="ttv", config={"bins": "auto"})
            s.add(camp)
            s.flush()
            for i in range(5):
                s.add(WorkUnit(campaign_id=camp.id, name=f"wu_{i}", kind="ttv-nested", spec={"i": i}))
            s.flush()
            raise RuntimeError("simulated failure")
    with any_db.session() as s:
        assert s.scalars(select(Campaign)).all() == []
        assert s.scalars(select(WorkUnit)).all() == []


def test_duplicate_content_hash_is_refused_by_the_schema(any_db):
    from sqlalchemy.exc import IntegrityError

    any_db.upgrade()
    with any_db.session() as s:
        s.add(Observation(sha256="a" * 64, storage_key="k", kind="image", source_format="fits"))
    with pytest.raises(IntegrityError):
        with any_db.session() as s:
            s.add(Observation(sha256="a" * 64, storage_key="k2", kind="image", source_format="fits"))
    with any_db.session() as s:
        assert len(s.scalars(select(Observation)).all()) == 1


def test_bjd_times_keep_double_precision(any_db):
    """BJD_TDB ~2.46e6 d needs 64-bit floats: a single-precision column would lose minutes."""
    from server.core.db.models import Target, TransitTime

    any_db.upgrade()
    t = 2460123.456789123
    with any_db.session() as s:
        target = Target(name="K88")
        s.add(target)
        s.flush()
        s.add(TransitTime(target_id=target.id, planet="b", epoch=3, t_obs=t, sigma=1e-3))
    with any_db.session() as s:
        got = s.scalars(select(TransitTime)).one().t_obs
    assert abs(got - t) < 1e-8


def test_schema_older_than_code_is_reported_with_the_fix(any_db):
    any_db.upgrade()
    with any_db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num='0000old'")
    with pytest.raises(DatabaseError, match="run `openastro db upgrade`"):
        any_db.require_current_schema()


def test_empty_database_is_reported_with_the_fix(any_db):
    with pytest.raises(DatabaseError, match="no OpenAstro schema yet"):
        any_db.require_current_schema()


def test_unreachable_database_is_one_clear_error():
    db = Database("mysql+mysqldb://nobody:pw@127.0.0.1:1/none")
    with pytest.raises(DatabaseError, match="cannot reach the database at .*Check OPENASTRO_DATABASE_URL"):
        db.check_connection()


def test_malformed_database_url_is_one_clear_error():
    with pytest.raises(DatabaseError, match="invalid database URL"):
        Database("not a url")


def test_session_commits_related_rows_together(any_db):
    any_db.upgrade()
    with any_db.session() as s:
        site = Site(name="Obs A", latitude_deg=52.1, longitude_deg=-1.2, height_m=80.0)
        s.add(site)
    with any_db.session() as s:
        assert s.scalars(select(Site.name)).all() == ["Obs A"]
