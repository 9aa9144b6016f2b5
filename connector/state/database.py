"""Engines for the state store and the code that migrates them.

SQLite (the embedded default) gets WAL journaling, ``synchronous=NORMAL``,
foreign keys and a busy timeout on every connection; PostgreSQL goes through
psycopg 3. Migrations (Alembic, see :mod:`connector.state.migrations`) run in one
transaction that also serialises concurrent starts: an advisory lock on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import NullPool, StaticPool

from connector.state.migrations import alembic_config

log = logging.getLogger(__name__)

#: how long a SQLite writer waits for another one before giving up
SQLITE_BUSY_TIMEOUT_S = 30.0
#: worker threads each take their own connection; beyond this they queue
POOL_SIZE = 10
#: pg_advisory_xact_lock key held while migrating ("cosl" in ASCII)
PG_MIGRATION_LOCK = 0x636F736C

SUPPORTED_BACKENDS = ("sqlite", "postgresql")


def parse_url(url: str) -> URL:
    """Parse and normalise a state URL; ``postgresql://`` means psycopg 3 here.

    Raises :class:`ValueError` without echoing the URL (it may hold a password).
    """
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise ValueError(
            "the state store URL is not a valid database URL (expected e.g. "
            "sqlite:///.connector/state.db or postgresql://user@host/db); "
            "the value is not shown because it may contain a password"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise ValueError(
            f"the state store supports sqlite and postgresql, not {parsed.get_backend_name()!r}"
        )
    return parsed


def masked(url: URL | str) -> str:
    """The URL fit for a log line or an error message: password replaced by ``***``."""
    try:
        return (url if isinstance(url, URL) else make_url(url)).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<invalid URL>"


def is_sqlite_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def missing_sqlite_file(url: URL) -> bool:
    """Whether ``url`` names a SQLite file that does not exist (yet)."""
    if url.get_backend_name() != "sqlite" or is_sqlite_memory(url):
        return False
    return not Path(str(url.database)).exists()


def create_state_engine(url: URL) -> Engine:
    """The store's pooled engine; each store method checks out its own connection."""
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_size=POOL_SIZE, pool_pre_ping=True)
    if is_sqlite_memory(url):
        # one shared connection, or every thread would see its own empty database
        engine = sa.create_engine(
            url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        Path(str(url.database)).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            pool_size=POOL_SIZE,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
        )
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        # Switching a new file to WAL needs an exclusive lock, and SQLite may answer
        # "database is locked" at once (no busy wait) while another process opens the
        # same new file: try again for up to the busy timeout.
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
        while True:
            try:
                cursor.execute("PRAGMA journal_mode=WAL")  # stays "memory" in memory
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable with WAL, far fewer fsyncs
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_migration_engine(url: URL) -> Engine:
    """A throw-away engine whose transactions really cover DDL.

    The sqlite3 module only opens a transaction before DML, so CREATE TABLE would
    commit on its own; here we take manual control and ``BEGIN IMMEDIATE`` so
    that two processes starting at once migrate one after the other.
    """
    engine = sa.create_engine(
        url,
        poolclass=NullPool,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
    )

    def manual_transactions(dbapi_connection: Any, record: Any) -> None:
        _sqlite_pragmas(dbapi_connection, record)
        dbapi_connection.isolation_level = None

    def begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    sa.event.listen(engine, "connect", manual_transactions)
    sa.event.listen(engine, "begin", begin_immediate)
    return engine


def upgrade_schema(engine: Engine, url: URL) -> str | None:
    """Apply pending migrations; returns the revision the database is now at."""
    if url.get_backend_name() == "sqlite" and not is_sqlite_memory(url):
        migration_engine = _sqlite_migration_engine(url)
    else:
        migration_engine = engine
    try:
        with migration_engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK}
                )
            before = MigrationContext.configure(connection).get_current_revision()
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            after = MigrationContext.configure(connection).get_current_revision()
    finally:
        if migration_engine is not engine:
            migration_engine.dispose()
    if before != after:
        log.info("state store migrated from %s to %s at %s", before, after, masked(url))
    return after


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
