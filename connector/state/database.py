"""The state database: its engine, the code that migrates it, and :class:`Database`,
the shared object every table module works through (transactions, errors, chunks).

SQLite (the embedded default) gets WAL journaling, ``synchronous=NORMAL``,
foreign keys and a busy timeout on every connection; PostgreSQL goes through
psycopg 3. Migrations (Alembic, see :mod:`connector.state.migrations`) run in one
transaction that also serialises concurrent starts: an advisory lock on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import NullPool, StaticPool

from connector.errors import StateError
from connector.state.migrations import alembic_config
from connector.state.schema import connections

log = logging.getLogger(__name__)

#: how long a SQLite writer waits for another one before giving up
SQLITE_BUSY_TIMEOUT_S = 30.0
#: worker threads each take their own connection; beyond this they queue
POOL_SIZE = 10
#: pg_advisory_xact_lock key held while migrating ("cosl" in ASCII)
PG_MIGRATION_LOCK = 0x636F736C

SUPPORTED_BACKENDS = ("sqlite", "postgresql")

T = TypeVar("T")


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


Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


#: ids per ``IN (...)`` query: far below SQLite's 32766 bound parameters
LOOKUP_CHUNK = 5000
#: rows per page when streaming links
ITER_PAGE = 1000


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    """``items`` in chunks of at most ``size`` for ``IN (...)``, each padded to a bucket.

    Every length of an ``IN`` list is a statement of its own, and the driver keeps the
    last 128 statements it prepared (about 200 KB each at 1,000 ids in SQLite): a long
    run meeting every length from 1 to 1,000 grew by 25 MB. A chunk is padded with its
    last id up to the next power of two (or ``size``), so a lookup has at most
    ``log2(size) + 1`` statements; the repeated id changes nothing in an ``IN``.
    """
    for start in range(0, len(items), size):
        chunk = list(items[start : start + size])
        bucket = min(size, 1 << (len(chunk) - 1).bit_length())
        yield chunk + chunk[-1:] * (bucket - len(chunk))


class Database:
    """The engine every table module shares, with its transactions and error handling.

    Every read and write is its own short transaction on its own pooled connection
    and has committed when the block ends; database failures surface as
    :class:`~connector.errors.StateError` (``transient`` when retrying may help), their
    messages without the URL's password. ``clock`` is injectable (lease expiry in tests);
    ``lookup_chunk`` (ids per ``IN`` list) and ``iter_page`` (rows per streamed page)
    are the table modules' batch sizes.
    """

    def __init__(
        self,
        engine: Engine,
        url: URL,
        *,
        clock: Clock = utc_now,
        lookup_chunk: int = LOOKUP_CHUNK,
        iter_page: int = ITER_PAGE,
    ) -> None:
        if lookup_chunk < 1 or iter_page < 1:
            raise ValueError("lookup_chunk and iter_page must be at least 1")
        self.engine = engine
        self.url = url
        self.clock = clock
        self.lookup_chunk = lookup_chunk
        self.iter_page = iter_page
        self._known_connections: set[str] = set()
        self._lock = threading.Lock()
        self._prepared: dict[str, Any] = {}

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    def prepared(self, key: str, build: Callable[[Database], T]) -> T:
        """A statement built once per database (building an upsert's ``excluded``
        columns costs more than running it), shared by every handle."""
        found = self._prepared.get(key)
        if found is None:
            with self._lock:
                found = self._prepared.get(key)
                if found is None:
                    found = self._prepared[key] = build(self)
        return cast(T, found)

    def insert(self, table: sa.Table) -> sqlite.Insert | postgresql.Insert:
        """The dialect's ``INSERT`` (with ``ON CONFLICT``) of ``table``."""
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    def chunks(self, items: Sequence[str]) -> Iterator[Sequence[str]]:
        """:func:`chunks` of ``lookup_chunk`` ids."""
        return chunks(items, self.lookup_chunk)

    @contextmanager
    def read(self, what: str) -> Iterator[Connection]:
        try:
            with self.engine.connect() as db:
                yield db
        except sa.exc.SQLAlchemyError as exc:
            raise self.error(what, exc) from exc

    @contextmanager
    def write(self, what: str, conn: str | None = None) -> Iterator[Connection]:
        """One committed transaction; registers ``conn`` in ``connections`` first."""
        registered = False
        try:
            with self.engine.begin() as db:
                if conn is not None and conn not in self._known_connections:
                    self.register(db, conn)
                    registered = True
                yield db
        except sa.exc.SQLAlchemyError as exc:
            raise self.error(what, exc) from exc
        if registered:  # only once committed: a rollback would have undone the row
            with self._lock:
                self._known_connections.add(conn)  # type: ignore[arg-type]

    def register(self, db: Connection, conn: str) -> None:
        """Add ``conn`` to the ``connections`` table (if new) in ``db``'s transaction."""
        insert = self.insert(connections).values(name=conn, created=self.clock())
        db.execute(insert.on_conflict_do_nothing(index_elements=[connections.c.name]))

    def ping(self) -> None:
        """Raise :class:`StateError` when the database does not answer."""
        with self.read("reach the state store") as db:
            db.execute(sa.text("SELECT 1"))

    def error(self, what: str, exc: sa.exc.SQLAlchemyError) -> StateError:
        if isinstance(exc, sa.exc.IntegrityError):
            return StateError(
                f"could not {what}: it conflicts with what the store holds ({self.reason(exc)})",
                code="state_conflict",
            )
        transient = isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
        advice = "it will be retried" if transient else "check the database and the logs"
        return StateError(
            f"could not {what} in the state store {masked(self.url)}: {self.reason(exc)}; {advice}",
            transient=transient,
        )

    def reason(self, exc: BaseException) -> str:
        """The driver's own words, one line, without the password."""
        origin = getattr(exc, "orig", None) or exc
        text = " ".join(line.strip() for line in str(origin).splitlines() if line.strip())
        text = text or type(origin).__name__
        if self.url.password:
            text = text.replace(str(self.url.password), "***")
        return text[:500]

    def dispose(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()
