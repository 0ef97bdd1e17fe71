"""Open the annotation database (a path: SQLite in WAL mode; or any SQLAlchemy URL), migrate it, audit into it.

SQLite: WAL lets readers run beside the one writer; synchronous=FULL makes each commit survive a power cut,
not only a crash, which is what "every acknowledged vote is durable" needs. Claims (a new lease) write through
a second engine with synchronous=NORMAL: in WAL mode that survives a crash of the process, and a power cut can
only lose leases (which expire anyway), since the next FULL commit syncs them too. Write transactions start with
BEGIN IMMEDIATE, so two claims never both read the queue and then both write (the second waits, up to
busy_timeout, instead of failing at commit). Reads (dashboards, exports) use a second engine that starts its
transactions deferred and so never wait for a writer. PostgreSQL and other servers use one engine; the queue
locks rows there (queue.py).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from directalign.annotate.models import AuditEvent
from directalign.errors import ConfigError

BUSY_TIMEOUT_MS = 30_000


def database_url(db: str) -> str:
    """An SQLAlchemy URL from --db: a URL is kept, anything else is a path to an SQLite file."""
    if "://" in db:
        try:
            make_url(db)
        except ArgumentError as err:
            raise ConfigError(f"--db {db!r}: not a valid SQLAlchemy URL ({err})") from err
        return db
    return f"sqlite:///{Path(db).expanduser().resolve()}"


class Database:
    """The engines and session factories of one annotation database; `clock` gives the time (tests move it)."""

    def __init__(self, db: str, clock: Callable[[], float] = time.time):
        self.url = database_url(db)
        self.clock = clock
        self.is_sqlite = make_url(self.url).get_backend_name() == "sqlite"
        if self.is_sqlite:
            path = make_url(self.url).database
            if path and not Path(path).parent.is_dir():
                raise ConfigError(f"--db {db}: folder {Path(path).parent} does not exist")
            self.writer = _sqlite_engine(self.url, "IMMEDIATE", "FULL")
            self.lease_writer = _sqlite_engine(self.url, "IMMEDIATE", "NORMAL")
            self.reader = _sqlite_engine(self.url, "DEFERRED", "FULL")
        else:
            self.writer = self.lease_writer = self.reader = create_engine(self.url, pool_pre_ping=True)
        self._write = sessionmaker(self.writer, expire_on_commit=False)
        self._write_lease = sessionmaker(self.lease_writer, expire_on_commit=False)
        # SQLite's busy handler polls with growing sleeps (up to 100 ms), so threads that wait for the write lock
        # wake late and in no order; a lock in the process queues them instead (busy_timeout still covers
        # other processes, such as a CLI export beside the server).
        self._write_lock = threading.Lock() if self.is_sqlite else contextlib.nullcontext()
        self._read = sessionmaker(self.reader, expire_on_commit=False)

    @property
    def shown(self) -> str:
        """The URL for messages and logs, its password masked."""
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self.writer.dialect.name

    @contextlib.contextmanager
    def write(self, durable: bool = True) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any error.

        durable=False (SQLite: synchronous=NORMAL) is for writes a power cut may lose, such as leases.
        """
        factory = self._write if durable else self._write_lease
        with self._write_lock, factory() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    def migrate(self) -> str:
        """Create or upgrade the schema to the newest migration; returns that revision."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(files("directalign.annotate") / "migrations"))
        with self.writer.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        return self.revision()

    def revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.reader.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def check_ready(self) -> None:
        """ConfigError unless the schema exists (the user ran `annotate init`) and is the newest one."""
        try:
            tables = set(inspect(self.reader).get_table_names())
        except OperationalError as err:
            raise ConfigError(f"cannot open database {self.shown}: {err.orig}") from err
        if "projects" not in tables:
            raise ConfigError(f"{self.shown}: no annotation database here; run `directalign annotate init` first")

    def dispose(self) -> None:
        for engine in {self.writer, self.lease_writer, self.reader}:
            engine.dispose()


def audit(
    session: Session,
    now: float,
    action: str,
    user_id: int | None = None,
    project_id: int | None = None,
    ip: str | None = None,
    **detail: Any,
) -> None:
    """Append one event to the audit log, in the caller's transaction (it commits or rolls back with it)."""
    session.add(AuditEvent(at=now, user_id=user_id, action=action, project_id=project_id,
                           detail=json.dumps(detail, ensure_ascii=False, default=str), ip=ip))


def _sqlite_engine(url: str, begin: str, synchronous: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Let SQLAlchemy's "begin" event start transactions (pysqlite's own implicit BEGIN is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", f"synchronous={synchronous}", f"busy_timeout={BUSY_TIMEOUT_MS}",
                       "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        connection.exec_driver_sql(f"BEGIN {begin}")

    return engine
