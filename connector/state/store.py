"""The connector's durable memory: cursors, links, dead letters, runs and leases.

One :class:`Store` per process, shared by the engine's worker threads. Each table
has its module (:mod:`~connector.state.cursors`, :mod:`~connector.state.links`,
:mod:`~connector.state.dead_letters`, :mod:`~connector.state.runs`,
:mod:`~connector.state.leases`) working through the shared
:class:`~connector.state.database.Database`; :meth:`Store.connection` hands out one
connection's :class:`~connector.state.connection.ConnectionState`, whose methods
have the connection's name bound in. The store itself keeps what spans
connections: opening and migrating, dead letters by id, retries, recent runs.

Every method runs in its own short transaction on its own pooled connection and has
committed when it returns, so a crash loses nothing that a method reported as
done. Database failures surface as :class:`~connector.errors.StateError`
(``transient`` when retrying may help, e.g. a locked SQLite file or a dropped
PostgreSQL connection); messages never carry the URL's password.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic.util import CommandError
from sqlalchemy.engine import URL, Engine

from connector.errors import StateError
from connector.state import database
from connector.state import dead_letters as letters
from connector.state import runs as run_rows
from connector.state.connection import ConnectionState
from connector.state.database import ITER_PAGE, LOOKUP_CHUNK, Clock, Database, utc_now
from connector.state.dead_letters import RETRY_PREFIX, TRANSIENT_PREFIX, LetterItem
from connector.state.links import PendingItem
from connector.state.records import DeadLetter, LetterStamp, Link, LinkState, Run

__all__ = [
    "ITER_PAGE",
    "LOOKUP_CHUNK",
    "RETRY_PREFIX",
    "TRANSIENT_PREFIX",
    "ConnectionState",
    "DeadLetter",
    "LetterStamp",
    "Link",
    "LinkState",
    "Run",
    "Store",
    "utc_now",
]

log = logging.getLogger(__name__)


def _no_state(url: URL) -> StateError:
    return StateError(
        f"there is no connector state at {database.masked(url)}: no sync has run with this "
        "state store. Check CONNECTOR_STATE_URL (or the config file's state_url) for a typo; "
        "`connector sync --once` creates the store on its first run",
        code="state_missing",
    )


class Store:
    """Typed access to the state database (SQLite file or PostgreSQL).

    Open it with :meth:`open`; ``clock`` is injectable so that tests can move
    time (lease expiry) without sleeping; ``lookup_chunk`` (ids per ``IN`` list) and
    ``iter_page`` (rows per streamed page) are the batch sizes of every table.
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
        self.database = Database(
            engine, url, clock=clock, lookup_chunk=lookup_chunk, iter_page=iter_page
        )
        self.revision: str | None = None
        self._handles: dict[str, ConnectionState] = {}
        self._handles_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str,
        *,
        clock: Clock = utc_now,
        migrate: bool = True,
        existing: bool = False,
        lookup_chunk: int = LOOKUP_CHUNK,
        iter_page: int = ITER_PAGE,
    ) -> Store:
        """Connect to ``url`` and apply pending migrations (unless ``migrate`` is False).

        ``sqlite:///path/state.db`` creates the folder if needed;
        ``postgresql://user@host/db`` uses psycopg 3. With ``existing`` (commands that
        only read or mark what a sync wrote) a store that holds no connector state yet,
        a mistyped SQLite path say, is an error instead of a new, empty store.
        """
        try:
            parsed = database.parse_url(url)
        except ValueError as exc:
            raise StateError(str(exc), code="config") from None
        if existing and database.missing_sqlite_file(parsed):
            raise _no_state(parsed)
        try:
            engine = database.create_state_engine(parsed)
        except ImportError as exc:
            raise StateError(
                f"cannot open the state store at {database.masked(parsed)}: the driver is "
                f"missing ({exc.name}); install cosell-connector[postgres]",
                code="config",
            ) from None
        except OSError as exc:
            raise StateError(
                f"cannot create the folder for the state store {database.masked(parsed)}: "
                f"{exc.strerror}; check the path and its permissions"
            ) from exc
        store = cls(engine, parsed, clock=clock, lookup_chunk=lookup_chunk, iter_page=iter_page)
        try:
            if existing and store._current_revision() is None:
                raise _no_state(parsed)
            store.revision = store.upgrade() if migrate else database.current_revision(engine)
        except BaseException:
            engine.dispose()
            raise
        # every command opens it: worth a line only when looking closely
        log.debug("state store open at %s (schema %s)", database.masked(parsed), store.revision)
        return store

    def _current_revision(self) -> str | None:
        db = self.database
        try:
            return database.current_revision(db.engine)
        except sa.exc.SQLAlchemyError as exc:
            raise StateError(
                f"cannot open the state store at {database.masked(db.url)}: "
                f"{db.reason(exc)}. Check that the database is reachable and that the "
                "URL, user and database name are right",
                transient=isinstance(exc, sa.exc.OperationalError),
            ) from exc

    def upgrade(self) -> str | None:
        """Apply pending migrations; safe to call from several processes at once."""
        db = self.database
        where = database.masked(db.url)
        try:
            self.revision = database.upgrade_schema(db.engine, db.url)
        except CommandError as exc:
            raise StateError(
                f"cannot migrate the state store at {where}: {exc}. A database written by a "
                "newer connector cannot be used by this one; upgrade the connector",
                code="state_schema",
            ) from exc
        except sa.exc.SQLAlchemyError as exc:
            raise StateError(
                f"cannot open the state store at {where}: {db.reason(exc)}. Check that the "
                "database is reachable and that the URL, user and database name are right",
                transient=isinstance(exc, sa.exc.OperationalError),
            ) from exc
        return self.revision

    def close(self) -> None:
        """Release every pooled connection."""
        self.database.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.database.dialect

    def __repr__(self) -> str:
        return f"Store({database.masked(self.database.url)}, schema={self.revision})"

    def ping(self) -> None:
        """Raise :class:`StateError` when the database does not answer."""
        self.database.ping()

    # -- one connection ----------------------------------------------------------------

    def connection(self, name: str) -> ConnectionState:
        """The handle on connection ``name``'s cursors, links, dead letters, runs, lease."""
        handle = self._handles.get(name)
        if handle is None:
            with self._handles_lock:
                handle = self._handles.setdefault(name, ConnectionState(self.database, name))
        return handle

    # -- across connections ------------------------------------------------------------

    def get_dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        return letters.get(self.database, dead_letter_id)

    def discard_dead_letter(self, dead_letter_id: int) -> bool:
        """Resolve one open dead letter without retrying it; False when none is open."""
        return letters.discard(self.database, dead_letter_id)

    def request_retry(self, dead_letter_ids: Sequence[int] | None = None) -> list[DeadLetter]:
        """Mark open dead letters (these ids, or all when None) for the next cycle to retry
        (see :func:`connector.state.dead_letters.request_retry`)."""
        return letters.request_retry(self.database, dead_letter_ids)

    def list_dead_letters(
        self,
        conn: str | None = None,
        include_resolved: bool = False,
        *,
        reason: str | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        """Dead letters of ``conn`` or of every connection, most recently failed first.

        ``reason`` keeps the letters whose reason code contains it (``invalid_record``,
        ``transient:``); ``limit`` keeps the first so many.
        """
        return letters.list_letters(
            self.database, conn, include_resolved, reason=reason, limit=limit
        )

    def count_dead_letters(
        self, conn: str | None = None, *, include_resolved: bool = False, reason: str | None = None
    ) -> int:
        """How many letters :meth:`list_dead_letters` would list without a limit."""
        return letters.count_letters(
            self.database, conn, include_resolved=include_resolved, reason=reason
        )

    def recent_runs(self, conn: str | None = None, limit: int = 10) -> list[Run]:
        """The latest runs of ``conn`` or of every connection, newest first."""
        return run_rows.recent(self.database, conn, limit)

    # -- transition: callers in connector/sync move to Store.connection(); remove then --
    # One line each, same signature as before the split by table.

    def get_cursor(self, conn: str, name: str) -> str | None:
        return self.connection(conn).cursors.get(name)

    def set_cursor(self, conn: str, name: str, value: str) -> None:
        return self.connection(conn).cursors.set(name, value)

    def get_link(self, conn: str, crm_id: str) -> Link | None:
        return self.connection(conn).links.get(crm_id)

    def get_links(self, conn: str, crm_ids: Sequence[str]) -> dict[str, Link]:
        return self.connection(conn).links.get_many(crm_ids)

    def link_by_referral(self, conn: str, referral_id: str) -> Link | None:
        return self.connection(conn).links.by_referral(referral_id)

    def links_by_referral(self, conn: str, referral_ids: Sequence[str]) -> dict[str, Link]:
        return self.connection(conn).links.by_referrals(referral_ids)

    def etags_by_referral(self, conn: str, referral_ids: Sequence[str]) -> dict[str, str]:
        return self.connection(conn).links.etags_by_referral(referral_ids)

    def links_by_engagement(self, conn: str, engagement_id: str) -> list[Link]:
        return self.connection(conn).links.by_engagement(engagement_id)

    def links_by_engagements(self, conn: str, engagement_ids: Sequence[str]) -> list[Link]:
        return self.connection(conn).links.by_engagements(engagement_ids)

    def mark_pending(
        self, conn: str, crm_id: str, fingerprint: str, body: Mapping[str, Any], *, holder: str
    ) -> Link:
        return self.connection(conn).links.mark_pending(crm_id, fingerprint, body, holder=holder)

    def mark_pending_many(
        self, conn: str, items: Sequence[PendingItem], *, holder: str
    ) -> dict[str, StateError]:
        return self.connection(conn).links.mark_pending_many(items, holder=holder)

    def take_over_intents(self, conn: str, items: Sequence[Link], holder: str) -> set[str]:
        return self.connection(conn).links.take_over_intents(items, holder)

    def release_pending(
        self, conn: str, crm_ids: Sequence[str], *, holder: str | None = None
    ) -> None:
        return self.connection(conn).links.release_pending(crm_ids, holder=holder)

    def save_link(self, conn: str, link: Link) -> None:
        return self.connection(conn).links.save(link)

    def save_links(self, conn: str, items: Sequence[Link]) -> None:
        return self.connection(conn).links.save_many(items)

    def iter_links(self, conn: str, state: LinkState | None = None) -> Iterator[Link]:
        return self.connection(conn).links.iterate(state)

    def links_to_mirror(self, conn: str, limit: int = 5000) -> list[Link]:
        return self.connection(conn).links.to_mirror(limit)

    def set_mirrored(self, conn: str, fingerprints: Mapping[str, str | None]) -> None:
        return self.connection(conn).links.set_mirrored(fingerprints)

    def count_links(self, conn: str) -> dict[LinkState, int]:
        return self.connection(conn).links.count()

    def add_dead_letter(
        self,
        conn: str,
        crm_id: str,
        reason_code: str,
        message: str,
        crm_modstamp: datetime | None = None,
        crm_fingerprint: str | None = None,
    ) -> DeadLetter:
        return self.connection(conn).dead_letters.add(
            crm_id, reason_code, message, crm_modstamp, crm_fingerprint
        )

    def add_dead_letters(self, conn: str, items: Sequence[LetterItem]) -> None:
        return self.connection(conn).dead_letters.add_many(items)

    def resolve_dead_letter(self, conn: str, crm_id: str) -> bool:
        return self.connection(conn).dead_letters.resolve(crm_id)

    def dead_letter_stamps(self, conn: str, crm_ids: Sequence[str]) -> dict[str, LetterStamp]:
        return self.connection(conn).dead_letters.stamps(crm_ids)

    def open_dead_letters(self, conn: str, crm_ids: Sequence[str]) -> dict[str, DeadLetter]:
        return self.connection(conn).dead_letters.open_of(crm_ids)

    def start_run(self, conn: str) -> int:
        return self.connection(conn).runs.start()

    def finish_run(
        self,
        run_id: int,
        outcome: str,
        counts: Mapping[str, Any],
        api_calls: Mapping[str, Any],
        duration_s: float,
        error: str | None = None,
    ) -> None:
        return run_rows.finish(self.database, run_id, outcome, counts, api_calls, duration_s, error)

    def last_run(self, conn: str, outcomes: Sequence[str] | None = None) -> Run | None:
        return self.connection(conn).runs.last(outcomes)

    def acquire_lease(self, conn: str, holder: str, ttl_s: float) -> bool:
        return self.connection(conn).lease.acquire(holder, ttl_s)

    def current_lease(self, conn: str) -> tuple[str, datetime] | None:
        return self.connection(conn).lease.current()

    def renew_lease(self, conn: str, holder: str, ttl_s: float) -> bool:
        return self.connection(conn).lease.renew(holder, ttl_s)

    def take_over_lease(self, conn: str, gone: str, holder: str, ttl_s: float) -> bool:
        return self.connection(conn).lease.take_over(gone, holder, ttl_s)

    def release_lease(self, conn: str, holder: str) -> bool:
        return self.connection(conn).lease.release(holder)
