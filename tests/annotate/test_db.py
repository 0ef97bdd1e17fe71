"""The database: migrations that match the models, SQLite in WAL mode, an append-only audit log, clear errors."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from directalign.annotate.db import Database, audit, database_url
from directalign.annotate.models import Base
from directalign.errors import ConfigError


def test_the_migrations_build_exactly_the_models_schema(db):
    with db.reader.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    assert db.revision() == "0001"
    assert db.migrate() == "0001"  # upgrading an up-to-date database is a no-op


def test_sqlite_runs_in_wal_mode_with_full_sync(db):
    with db.writer.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_the_audit_log_refuses_updates_and_deletes(db):
    with db.write() as session:
        audit(session, db.clock(), "test", detail="kept")
    for statement in ("UPDATE audit_log SET action = 'forged'", "DELETE FROM audit_log"):
        with pytest.raises(DatabaseError, match="append-only"), db.write() as session:
            session.execute(text(statement))
    with db.read() as session:
        assert session.execute(text("SELECT action FROM audit_log")).scalars().all() == ["test"]


def test_db_paths_and_urls(tmp_path):
    assert database_url(str(tmp_path / "a.db")) == f"sqlite:///{tmp_path / 'a.db'}"
    assert database_url("postgresql+psycopg://u@localhost/annotate").startswith("postgresql+psycopg://")
    with pytest.raises(ConfigError, match="does not exist"):
        Database(str(tmp_path / "missing" / "a.db"))
    with pytest.raises(ConfigError, match="run `directalign annotate init` first"):
        Database(str(tmp_path / "empty.db")).check_ready()
