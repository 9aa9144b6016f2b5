"""The connector's durable memory: cursors, links, dead letters, runs and leases.

One :class:`Store` per process, shared by the engine's worker threads. Every
method runs in its own short transaction on its own pooled connection and has
committed when it returns, so a crash loses nothing that a method reported as
done. Database failures surface as :class:`~connector.errors.StateError`
(``transient`` when retrying may help, e.g. a locked SQLite file or a dropped
PostgreSQL connection); messages never carry the URL's password.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic.util import CommandError
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, Row

from connector.errors import StateError
from connector.redaction import scrub, scrub_data
from connector.state import database
from connector.state.records import DeadLetter, LetterStamp, Link, LinkState, Run
from connector.state.schema import (
    UNRESOLVED,
    connections,
    cursors,
    dead_letters,
    leases,
    links,
    runs,
)

__all__ = ["DeadLetter", "LetterStamp", "Link", "LinkState", "Run", "Store"]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: ids per ``IN (...)`` query: far below SQLite's 32766 bound parameters
LOOKUP_CHUNK = 5000
#: rows per page when streaming links
ITER_PAGE = 1000


#: reason-code prefixes of the dead letters the engine retries at the start of a cycle:
#: a transient failure that outlived its retries, and a retry an operator asked for
TRANSIENT_PREFIX = "transient:"
RETRY_PREFIX = "retry:"


def utc_now() -> datetime:
    return datetime.now(UTC)


_LINK_KEY = (links.c.connection, links.c.crm_id)
_LINK_VALUES = [c.name for c in links.c if c.name not in ("connection", "crm_id")]


#: the table's columns in the order of Link's fields, so rows unpack straight into it
_LINK_COLUMNS = [links.c[field.name] for field in fields(Link)]


def _link(row: Sequence[Any]) -> Link:
    # positional and by hand: the hot path of every batch lookup
    return Link(row[0], row[1], LinkState(row[2]), *row[3:])


def _dead_letter(row: Row[Any]) -> DeadLetter:
    return DeadLetter(**row._asdict())


def _run(row: Row[Any]) -> Run:
    return Run(**row._asdict())


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
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


class _BulkLinkUpsert:
    """``INSERT … ON CONFLICT DO UPDATE`` of links, compiled once, fed raw driver rows.

    SQLAlchemy's per-row parameter handling costs more than SQLite's own work on
    a 10,000-link batch; this keeps the statement and the column types' own
    bind processors (so values are stored exactly as the ORM-free path would)
    and hands the driver plain tuples (qmark) or dicts (pyformat).
    """

    def __init__(self, dialect: sa.Dialect) -> None:
        module = postgresql if dialect.name == "postgresql" else sqlite
        insert = module.insert(links)
        upsert = insert.on_conflict_do_update(
            index_elements=list(_LINK_KEY),
            set_={name: insert.excluded[name] for name in _LINK_VALUES},
        )
        compiled = upsert.compile(dialect=dialect)
        self.sql = str(compiled)
        self._positional = compiled.positiontup is not None
        self._names: list[str] = list(compiled.positiontup or compiled.binds)
        self._processors = [
            links.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in self._names
        ]

    def parameters(self, rows: Iterable[Mapping[str, Any]]) -> list[Any]:
        columns = list(zip(self._names, self._processors, strict=True))
        params: list[Any] = []
        for row in rows:
            values = [
                row[name] if process is None else process(row[name]) for name, process in columns
            ]
            params.append(
                tuple(values) if self._positional else dict(zip(self._names, values, strict=True))
            )
        return params


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
    time (lease expiry) without sleeping.
    """

    def __init__(self, engine: Engine, url: URL, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._url = url
        self._clock = clock
        self._known_connections: set[str] = set()
        self._known_lock = threading.Lock()
        self.revision: str | None = None
        self._bulk_links = _BulkLinkUpsert(engine.dialect)
        # built once: building an upsert's ``excluded`` columns costs more than running it
        pending = self._insert(links)
        # A record already pending is marked again only by the run that holds its intent
        # (a retry of its own create): a second run's intent is refused in the same
        # statement, so two runs never both POST (see connector.sync.existing).
        self._mark_pending = pending.on_conflict_do_update(
            index_elements=list(_LINK_KEY),
            set_={
                "fingerprint": pending.excluded.fingerprint,
                "sent_body": pending.excluded.sent_body,
                "updated": pending.excluded.updated,
                "intent_at": pending.excluded.intent_at,
            },
            where=(links.c.state == LinkState.PENDING_CREATE.value)
            & (links.c.intent_by == pending.excluded.intent_by),
        )
        letter = self._insert(dead_letters)
        self._add_letter = letter.on_conflict_do_update(
            index_elements=[dead_letters.c.connection, dead_letters.c.crm_id],
            index_where=UNRESOLVED,
            set_={
                "attempts": dead_letters.c.attempts + 1,
                "reason_code": letter.excluded.reason_code,
                "message": letter.excluded.message,
                "last_seen": letter.excluded.last_seen,
                "crm_modstamp": letter.excluded.crm_modstamp,
                "crm_fingerprint": letter.excluded.crm_fingerprint,
            },
        )

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def open(
        cls, url: str, *, clock: Clock = utc_now, migrate: bool = True, existing: bool = False
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
        store = cls(engine, parsed, clock=clock)
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
        try:
            return database.current_revision(self._engine)
        except sa.exc.SQLAlchemyError as exc:
            raise StateError(
                f"cannot open the state store at {database.masked(self._url)}: "
                f"{self._reason(exc)}. Check that the database is reachable and that the "
                "URL, user and database name are right",
                transient=isinstance(exc, sa.exc.OperationalError),
            ) from exc

    def upgrade(self) -> str | None:
        """Apply pending migrations; safe to call from several processes at once."""
        where = database.masked(self._url)
        try:
            self.revision = database.upgrade_schema(self._engine, self._url)
        except CommandError as exc:
            raise StateError(
                f"cannot migrate the state store at {where}: {exc}. A database written by a "
                "newer connector cannot be used by this one; upgrade the connector",
                code="state_schema",
            ) from exc
        except sa.exc.SQLAlchemyError as exc:
            raise StateError(
                f"cannot open the state store at {where}: {self._reason(exc)}. Check that the "
                "database is reachable and that the URL, user and database name are right",
                transient=isinstance(exc, sa.exc.OperationalError),
            ) from exc
        return self.revision

    def close(self) -> None:
        """Release every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    def __repr__(self) -> str:
        return f"Store({database.masked(self._url)}, schema={self.revision})"

    # -- cursors -----------------------------------------------------------------------

    def get_cursor(self, conn: str, name: str) -> str | None:
        query = sa.select(cursors.c.value).where(
            cursors.c.connection == conn, cursors.c.name == name
        )
        with self._read(f"read cursor {name!r} of connection {conn!r}") as db:
            return db.execute(query).scalar_one_or_none()

    def set_cursor(self, conn: str, name: str, value: str) -> None:
        insert = self._insert(cursors).values(
            connection=conn, name=name, value=value, updated=self._clock()
        )
        upsert = insert.on_conflict_do_update(
            index_elements=[cursors.c.connection, cursors.c.name],
            set_={"value": insert.excluded.value, "updated": insert.excluded.updated},
        )
        with self._write(f"save cursor {name!r} of connection {conn!r}", conn) as db:
            db.execute(upsert)

    # -- links -------------------------------------------------------------------------

    def get_link(self, conn: str, crm_id: str) -> Link | None:
        with self._read(f"read the link of CRM record {crm_id} ({conn})") as db:
            return self._link_of(db, conn, crm_id)

    def get_links(self, conn: str, crm_ids: Sequence[str]) -> dict[str, Link]:
        """Links of these CRM records, by CRM id (absent ids have no link)."""
        return self._links_where(conn, links.c.crm_id, crm_ids, key="crm_id")

    def link_by_referral(self, conn: str, referral_id: str) -> Link | None:
        query = sa.select(*_LINK_COLUMNS).where(
            links.c.connection == conn, links.c.referral_id == referral_id
        )
        with self._read(f"find the link of referral {referral_id} ({conn})") as db:
            row = db.execute(query).first()
        return None if row is None else _link(row)

    def links_by_referral(self, conn: str, referral_ids: Sequence[str]) -> dict[str, Link]:
        """Links of these referrals, by referral id."""
        return self._links_where(conn, links.c.referral_id, referral_ids, key="referral_id")

    def etags_by_referral(self, conn: str, referral_ids: Sequence[str]) -> dict[str, str]:
        """The eTag each referral had when last written or read, by referral id.

        Only links that hold the core's facts and an eTag are answered: a referral listed
        with that eTag has not changed since, and needs no work. Reads two columns
        instead of whole links (the pull-back after a large run checks every referral).
        """
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(referral_ids))
        with self._read(f"read the eTags of {len(unique)} referrals ({conn})") as db:
            for chunk in _chunks(unique, LOOKUP_CHUNK):
                query = sa.select(links.c.referral_id, links.c.etag).where(
                    links.c.connection == conn,
                    links.c.referral_id.in_(chunk),
                    links.c.core_facts.is_not(None),
                    links.c.etag.is_not(None),
                )
                for referral_id, etag in db.execute(query).all():
                    found[referral_id] = etag
        return found

    def links_by_engagement(self, conn: str, engagement_id: str) -> list[Link]:
        """Links of the referrals in one engagement (the partner's side of a co-sell deal)."""
        return list(
            self._links_where(conn, links.c.engagement_id, [engagement_id], key="crm_id").values()
        )

    def links_by_engagements(self, conn: str, engagement_ids: Sequence[str]) -> list[Link]:
        """Links of the referrals in any of the engagements, in one query per chunk."""
        return list(
            self._links_where(conn, links.c.engagement_id, engagement_ids, key="crm_id").values()
        )

    def ping(self) -> None:
        """Raise :class:`StateError` when the database does not answer."""
        with self._read("reach the state store") as db:
            db.execute(sa.text("SELECT 1"))

    def mark_pending(
        self, conn: str, crm_id: str, fingerprint: str, body: Mapping[str, Any], *, holder: str
    ) -> Link:
        """Record ``holder``'s intent to create a referral, *before* the POST.

        Refuses (:class:`StateError`, code ``state_conflict``) when the record is
        already linked or terminal, or pending under another run's intent: a second
        POST would duplicate its referral.
        """
        refused = self.mark_pending_many(conn, [(crm_id, fingerprint, body)], holder=holder)
        if crm_id in refused:
            raise refused[crm_id]
        link = self.get_link(conn, crm_id)
        assert link is not None
        return link

    def mark_pending_many(
        self, conn: str, items: Sequence[tuple[str, str, Mapping[str, Any]]], *, holder: str
    ) -> dict[str, StateError]:
        """:meth:`mark_pending` for many records in one transaction.

        Returns the refusals by CRM id (records already linked or terminal, or pending
        under another holder's intent); every other record is marked pending with
        ``holder``'s intent, timed now. The refusals are read in the transaction that
        wrote the intents: on PostgreSQL the upsert has locked every conflicting row, on
        SQLite the transaction holds the write lock, so no other run slips in between.
        """
        if not items:
            return {}
        now = self._clock()
        what = f"mark {len(items)} CRM records ({conn}) as pending"
        ids = [crm_id for crm_id, _, _ in items]
        with self._write(what, conn) as db:
            db.execute(
                self._mark_pending,
                [
                    self._pending_row(conn, crm_id, fp, body, now, holder)
                    for crm_id, fp, body in items
                ],
            )
            refused: dict[str, StateError] = {}
            for chunk in _chunks(ids, LOOKUP_CHUNK):
                rows = db.execute(
                    sa.select(*_LINK_COLUMNS).where(
                        links.c.connection == conn,
                        links.c.crm_id.in_(chunk),
                        sa.or_(
                            links.c.state != LinkState.PENDING_CREATE.value,
                            links.c.intent_by.is_distinct_from(holder),
                        ),
                    )
                )
                for row in rows:
                    link = _link(row)
                    refused[link.crm_id] = self._not_pending(conn, link.crm_id, link)
        return refused

    def take_over_intents(self, conn: str, items: Sequence[Link], holder: str) -> set[str]:
        """Make these pending links ``holder``'s intents, if they are still as read.

        For intents left by a run that is gone (a crash, a lost lease), once the core
        has been searched for their referral in vain. A compare-and-set on the intent's
        holder and time: a link another run took over or linked meanwhile stays as it
        is. Returns the CRM ids taken over.
        """
        taken: set[str] = set()
        if not items:
            return taken
        with self._write(f"take over {len(items)} create intents ({conn})", conn) as db:
            for link in items:
                update = (
                    sa.update(links)
                    .where(
                        links.c.connection == conn,
                        links.c.crm_id == link.crm_id,
                        links.c.state == LinkState.PENDING_CREATE.value,
                        links.c.intent_by.is_not_distinct_from(link.intent_by),
                        links.c.intent_at.is_not_distinct_from(link.intent_at),
                    )
                    .values(intent_by=holder, updated=self._clock())
                )
                if db.execute(update).rowcount:
                    taken.add(link.crm_id)
        return taken

    @staticmethod
    def _pending_row(
        conn: str,
        crm_id: str,
        fingerprint: str,
        body: Mapping[str, Any],
        now: datetime,
        holder: str,
    ) -> dict[str, Any]:
        return {
            "connection": conn,
            "crm_id": crm_id,
            "state": LinkState.PENDING_CREATE.value,
            "fingerprint": fingerprint,
            "sent_body": dict(body),
            "direction": "Outgoing",
            "updated": now,
            "intent_at": now,
            "intent_by": holder,
        }

    @staticmethod
    def _not_pending(conn: str, crm_id: str, existing: Link | None) -> StateError:
        if existing is not None and existing.state is LinkState.PENDING_CREATE:
            return StateError(
                f"CRM record {crm_id} on connection {conn!r} is being created by another run "
                f"({existing.intent_by or 'an older connector'}, since "
                f"{existing.intent_at or existing.updated}); it is left to that run, a second "
                "create would duplicate the referral",
                code="state_conflict",
            )
        referral = existing.referral_id if existing else None
        state = existing.state if existing else "unknown"
        return StateError(
            f"CRM record {crm_id} on connection {conn!r} is already {state} (referral "
            f"{referral}); it cannot be marked for creation again, that would duplicate the "
            "referral. Update the existing link instead",
            code="state_conflict",
        )

    def release_pending(
        self, conn: str, crm_ids: Sequence[str], *, holder: str | None = None
    ) -> None:
        """Drop the create intents of these records: their POST was never sent.

        Only links still pending are deleted (and, given ``holder``, only the intents
        that run wrote); a record linked meanwhile keeps its link.
        """
        if not crm_ids:
            return
        with self._write(f"release {len(crm_ids)} create intents ({conn})", conn) as db:
            for chunk in _chunks(list(crm_ids), LOOKUP_CHUNK):
                db.execute(
                    sa.delete(links).where(
                        links.c.connection == conn,
                        links.c.crm_id.in_(chunk),
                        links.c.state == LinkState.PENDING_CREATE.value,
                        *([links.c.intent_by == holder] if holder is not None else []),
                    )
                )

    def save_link(self, conn: str, link: Link) -> None:
        """Insert or replace one link (keyed by connection and CRM id)."""
        self.save_links(conn, [link])

    def save_links(self, conn: str, items: Sequence[Link]) -> None:
        """Insert or replace many links in one transaction (all or none)."""
        if not items:
            return
        now = self._clock()
        rows: dict[str, dict[str, Any]] = {}
        for link in items:  # the last word on a CRM id wins, like sequential saves
            if link.connection != conn:
                raise StateError(
                    f"link of CRM record {link.crm_id} belongs to connection "
                    f"{link.connection!r}, not {conn!r}; save it under its own connection",
                    code="state_conflict",
                )
            rows[link.crm_id] = self._link_row(link, now)
        what = (
            f"save the link of CRM record {items[0].crm_id} ({conn})"
            if len(rows) == 1
            else f"save {len(rows)} links ({conn})"
        )
        try:
            params = self._bulk_links.parameters(rows.values())
        except (TypeError, ValueError) as exc:  # naive datetime, body that is not JSON
            raise StateError(f"could not {what}: {exc}", code="state_invalid") from exc
        try:
            with self._write(what, conn) as db:
                db.exec_driver_sql(self._bulk_links.sql, params)
        except StateError as exc:
            if exc.code == "state_conflict":
                raise self._explain_conflict(conn, list(rows.values()), exc) from exc
            raise

    def iter_links(self, conn: str, state: LinkState | None = None) -> Iterator[Link]:
        """Every link of ``conn`` (optionally in one state), ordered by CRM id.

        Streamed in pages, each its own short read, so no connection is held
        between pages and concurrent writes are never blocked.
        """
        after: str | None = None
        while True:
            query = (
                sa.select(*_LINK_COLUMNS)
                .where(links.c.connection == conn)
                .order_by(links.c.crm_id)
                .limit(ITER_PAGE)
            )
            if state is not None:
                query = query.where(links.c.state == state.value)
            if after is not None:
                query = query.where(links.c.crm_id > after)
            with self._read(f"list the links of connection {conn!r}") as db:
                page = [_link(row) for row in db.execute(query)]
            yield from page
            if len(page) < ITER_PAGE:
                return
            after = page[-1].crm_id

    def links_to_mirror(self, conn: str, limit: int = 5000) -> list[Link]:
        """Links whose core facts were never written to the CRM (after a crash, say)."""
        query = (
            sa.select(*_LINK_COLUMNS)
            .where(
                links.c.connection == conn,
                links.c.core_facts.is_not(None),
                links.c.mirrored_fingerprint.is_(None),
            )
            .order_by(links.c.crm_id)
            .limit(limit)
        )
        with self._read(f"list the links to mirror of connection {conn!r}") as db:
            return [_link(row) for row in db.execute(query)]

    def set_mirrored(self, conn: str, fingerprints: Mapping[str, str | None]) -> None:
        """Record which status values were written to each CRM record (one transaction).

        None marks a record whose status is still to be written (:meth:`links_to_mirror`).
        """
        if not fingerprints:
            return
        statement = (
            links.update()
            .where(links.c.connection == conn, links.c.crm_id == sa.bindparam("b_crm_id"))
            .values(mirrored_fingerprint=sa.bindparam("b_fp"))
        )
        rows = [{"b_crm_id": crm_id, "b_fp": fp} for crm_id, fp in fingerprints.items()]
        with self._write(f"record mirrored status of {len(rows)} links", conn) as db:
            db.execute(statement, rows)

    def count_links(self, conn: str) -> dict[LinkState, int]:
        """Number of links per state (every state present, zero when none)."""
        query = (
            sa.select(links.c.state, sa.func.count())
            .where(links.c.connection == conn)
            .group_by(links.c.state)
        )
        counts = dict.fromkeys(LinkState, 0)
        with self._read(f"count the links of connection {conn!r}") as db:
            for state, count in db.execute(query):
                counts[LinkState(state)] = count
        return counts

    # -- dead letters ------------------------------------------------------------------

    def add_dead_letter(
        self,
        conn: str,
        crm_id: str,
        reason_code: str,
        message: str,
        crm_modstamp: datetime | None = None,
        crm_fingerprint: str | None = None,
    ) -> DeadLetter:
        """Record a permanent failure; a repeat while unresolved increments ``attempts``.

        ``crm_fingerprint`` hashes the record's content as the mapping read it (see
        :func:`connector.sync.dead_letters.content_fingerprint`).
        """
        params = self._letter_row(
            conn, crm_id, reason_code, message, crm_modstamp, self._clock(), crm_fingerprint
        )
        with self._write(f"dead-letter CRM record {crm_id} ({conn})", conn) as db:
            return _dead_letter(
                db.execute(self._add_letter.returning(*dead_letters.c), params).one()
            )

    def add_dead_letters(
        self, conn: str, items: Sequence[tuple[str, str, str, datetime | None, str | None]]
    ) -> None:
        """:meth:`add_dead_letter` for many ``(crm_id, code, message, modstamp,
        fingerprint)`` at once."""
        if not items:
            return
        now = self._clock()
        rows: dict[str, dict[str, Any]] = {}
        for crm_id, code, message, modstamp, fp in items:  # one letter per record: the last
            rows[crm_id] = self._letter_row(conn, crm_id, code, message, modstamp, now, fp)
        with self._write(f"dead-letter {len(rows)} CRM records ({conn})", conn) as db:
            db.execute(self._add_letter, list(rows.values()))

    @staticmethod
    def _letter_row(
        conn: str,
        crm_id: str,
        reason_code: str,
        message: str,
        crm_modstamp: datetime | None,
        now: datetime,
        crm_fingerprint: str | None = None,
    ) -> dict[str, Any]:
        return {
            "connection": conn,
            "crm_id": crm_id,
            "reason_code": scrub(reason_code),
            "message": scrub(message),  # often a remote system's text: no secret kept
            "attempts": 1,
            "first_seen": now,
            "last_seen": now,
            "crm_modstamp": crm_modstamp,
            "resolved": False,
            "crm_fingerprint": crm_fingerprint,
        }

    def resolve_dead_letter(self, conn: str, crm_id: str) -> bool:
        """Mark the record's open dead letter resolved; False when there was none."""
        update = (
            sa.update(dead_letters)
            .where(
                dead_letters.c.connection == conn,
                dead_letters.c.crm_id == crm_id,
                dead_letters.c.resolved == sa.false(),
            )
            .values(resolved=True)
        )
        with self._write(f"resolve the dead letter of CRM record {crm_id} ({conn})") as db:
            return db.execute(update).rowcount > 0

    def request_retry(self, dead_letter_ids: Sequence[int] | None = None) -> list[DeadLetter]:
        """Mark open dead letters (these ids, or all when None) for the next cycle to retry.

        The reason code becomes ``retry:<code>`` (the engine re-fetches and re-processes
        such records at the start of its next cycle); a new failure then replaces it.
        Returns the letters marked; unknown or resolved ids are ignored.
        """
        query = sa.select(dead_letters).where(dead_letters.c.resolved == sa.false())
        if dead_letter_ids is not None:
            query = query.where(dead_letters.c.id.in_(list(dead_letter_ids)))
        marked: list[DeadLetter] = []
        with self._write("mark dead letters for retry") as db:
            for row in db.execute(query).all():
                letter = _dead_letter(row)
                code = letter.reason_code
                if not code.startswith((RETRY_PREFIX, TRANSIENT_PREFIX)):
                    code = (RETRY_PREFIX + code)[:64]
                    db.execute(
                        sa.update(dead_letters)
                        .where(dead_letters.c.id == letter.id)
                        .values(reason_code=code)
                    )
                marked.append(replace(letter, reason_code=code))
        return marked

    def dead_letter_stamps(self, conn: str, crm_ids: Sequence[str]) -> dict[str, LetterStamp]:
        """How each record was when it was last dead-lettered (open or resolved letter).

        A record read again unchanged since (same CRM stamp, or same content when its
        stamp moved only because the connector wrote its error field) is left alone by
        the engine: a discarded letter stays discarded; an open one is retried on purpose.
        """
        found: dict[str, tuple[int, LetterStamp]] = {}
        unique = list(dict.fromkeys(crm_ids))
        with self._read(f"read the dead letters of {len(unique)} records ({conn})") as db:
            for chunk in _chunks(unique, LOOKUP_CHUNK):
                query = sa.select(
                    dead_letters.c.id,
                    dead_letters.c.crm_id,
                    dead_letters.c.crm_modstamp,
                    dead_letters.c.crm_fingerprint,
                ).where(
                    dead_letters.c.connection == conn,
                    dead_letters.c.crm_id.in_(chunk),
                    sa.or_(
                        dead_letters.c.crm_modstamp.is_not(None),
                        dead_letters.c.crm_fingerprint.is_not(None),
                    ),
                )
                for letter_id, crm_id, stamp, fingerprint in db.execute(query):
                    if crm_id not in found or found[crm_id][0] < letter_id:
                        found[crm_id] = (letter_id, LetterStamp(stamp, fingerprint))
        return {crm_id: stamp for crm_id, (_, stamp) in found.items()}

    def discard_dead_letter(self, dead_letter_id: int) -> bool:
        """Resolve one open dead letter without retrying it; False when none is open."""
        update = (
            sa.update(dead_letters)
            .where(dead_letters.c.id == dead_letter_id, dead_letters.c.resolved == sa.false())
            .values(resolved=True)
        )
        with self._write(f"discard dead letter {dead_letter_id}") as db:
            return db.execute(update).rowcount > 0

    def list_dead_letters(
        self,
        conn: str | None = None,
        include_resolved: bool = False,
        *,
        reason: str | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        """Dead letters, most recently failed first.

        ``reason`` keeps the letters whose reason code contains it (``invalid_record``,
        ``transient:``); ``limit`` keeps the first so many.
        """
        query = sa.select(dead_letters).order_by(
            dead_letters.c.last_seen.desc(), dead_letters.c.id.desc()
        )
        query = self._letters_where(query, conn, include_resolved, reason)
        if limit is not None:
            query = query.limit(limit)
        with self._read("list dead letters") as db:
            return [_dead_letter(row) for row in db.execute(query)]

    def count_dead_letters(
        self, conn: str | None = None, *, include_resolved: bool = False, reason: str | None = None
    ) -> int:
        """How many letters :meth:`list_dead_letters` would list without a limit."""
        query = self._letters_where(
            sa.select(sa.func.count()).select_from(dead_letters), conn, include_resolved, reason
        )
        with self._read("count dead letters") as db:
            return int(db.execute(query).scalar_one())

    @staticmethod
    def _letters_where(
        query: Any, conn: str | None, include_resolved: bool, reason: str | None
    ) -> Any:
        if conn is not None:
            query = query.where(dead_letters.c.connection == conn)
        if not include_resolved:
            query = query.where(dead_letters.c.resolved == sa.false())
        if reason:
            query = query.where(dead_letters.c.reason_code.contains(reason, autoescape=True))
        return query

    def open_dead_letters(self, conn: str, crm_ids: Sequence[str]) -> dict[str, DeadLetter]:
        """The open dead letter of each of these records that has one (by CRM id)."""
        found: dict[str, DeadLetter] = {}
        unique = list(dict.fromkeys(crm_ids))
        with self._read(f"read the open dead letters of {len(unique)} records ({conn})") as db:
            for chunk in _chunks(unique, LOOKUP_CHUNK):
                query = sa.select(dead_letters).where(
                    dead_letters.c.connection == conn,
                    dead_letters.c.crm_id.in_(chunk),
                    dead_letters.c.resolved == sa.false(),
                )
                for row in db.execute(query):
                    letter = _dead_letter(row)
                    found[letter.crm_id] = letter
        return found

    def get_dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        query = sa.select(dead_letters).where(dead_letters.c.id == dead_letter_id)
        with self._read(f"read dead letter {dead_letter_id}") as db:
            row = db.execute(query).first()
        return None if row is None else _dead_letter(row)

    # -- runs --------------------------------------------------------------------------

    def start_run(self, conn: str) -> int:
        """Record the start of a sync cycle; returns the run id for :meth:`finish_run`."""
        insert = sa.insert(runs).values(connection=conn, started=self._clock()).returning(runs.c.id)
        with self._write(f"record the start of a run of connection {conn!r}", conn) as db:
            return int(db.execute(insert).scalar_one())

    def finish_run(
        self,
        run_id: int,
        outcome: str,
        counts: Mapping[str, Any],
        api_calls: Mapping[str, Any],
        duration_s: float,
        error: str | None = None,
    ) -> None:
        update = (
            sa.update(runs)
            .where(runs.c.id == run_id)
            .values(
                finished=self._clock(),
                outcome=outcome,
                counts=scrub_data(dict(counts)),
                api_calls=dict(api_calls),
                duration_s=duration_s,
                error=scrub(error) if error else error,  # no secret kept, whoever wrote it
            )
        )
        with self._write(f"record the end of run {run_id}") as db:
            if db.execute(update).rowcount == 0:
                raise StateError(
                    f"run {run_id} does not exist; finish only a run returned by start_run",
                    code="state_conflict",
                )

    def last_run(self, conn: str, outcomes: Sequence[str] | None = None) -> Run | None:
        """The latest run of ``conn`` (with one of ``outcomes`` when given), or None."""
        query = sa.select(runs).where(runs.c.connection == conn).order_by(runs.c.id.desc())
        if outcomes is not None:
            query = query.where(runs.c.outcome.in_(list(outcomes)))
        with self._read(f"read the last run of connection {conn!r}") as db:
            row = db.execute(query.limit(1)).first()
        return None if row is None else _run(row)

    def recent_runs(self, conn: str | None = None, limit: int = 10) -> list[Run]:
        """The latest runs, newest first."""
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if conn is not None:
            query = query.where(runs.c.connection == conn)
        with self._read("list recent runs") as db:
            return [_run(row) for row in db.execute(query)]

    # -- leases ------------------------------------------------------------------------

    def acquire_lease(self, conn: str, holder: str, ttl_s: float) -> bool:
        """Take (or extend) the lease on ``conn`` for ``ttl_s`` seconds.

        One atomic upsert: succeeds when nobody holds the lease, when ``holder``
        already does, or when the other holder's lease has expired.
        """
        now = self._clock()
        insert = self._insert(leases).values(
            connection=conn, holder=holder, expires=now + timedelta(seconds=ttl_s)
        )
        upsert = insert.on_conflict_do_update(
            index_elements=[leases.c.connection],
            set_={"holder": insert.excluded.holder, "expires": insert.excluded.expires},
            where=sa.or_(leases.c.holder == insert.excluded.holder, leases.c.expires <= now),
        ).returning(leases.c.holder)
        with self._write(f"acquire the lease of connection {conn!r}", conn) as db:
            return db.execute(upsert).first() is not None

    def current_lease(self, conn: str) -> tuple[str, datetime] | None:
        """Who holds the lease on ``conn`` and until when; None when nobody does."""
        query = sa.select(leases.c.holder, leases.c.expires).where(
            leases.c.connection == conn, leases.c.expires > self._clock()
        )
        with self._read(f"read the lease of connection {conn!r}") as db:
            row = db.execute(query).first()
        return None if row is None else (row.holder, row.expires)

    def renew_lease(self, conn: str, holder: str, ttl_s: float) -> bool:
        """Push the expiry of a lease ``holder`` still has; False when it was taken over."""
        update = (
            sa.update(leases)
            .where(leases.c.connection == conn, leases.c.holder == holder)
            .values(expires=self._clock() + timedelta(seconds=ttl_s))
        )
        with self._write(f"renew the lease of connection {conn!r}") as db:
            return db.execute(update).rowcount > 0

    def take_over_lease(self, conn: str, gone: str, holder: str, ttl_s: float) -> bool:
        """Give ``holder`` the lease ``gone`` still has on ``conn`` (a process known to be
        dead); False when the lease changed hands meanwhile (compare and set)."""
        update = (
            sa.update(leases)
            .where(leases.c.connection == conn, leases.c.holder == gone)
            .values(holder=holder, expires=self._clock() + timedelta(seconds=ttl_s))
        )
        with self._write(f"take over the lease of connection {conn!r}", conn) as db:
            return db.execute(update).rowcount > 0

    def release_lease(self, conn: str, holder: str) -> bool:
        """Give the lease up (only if ``holder`` has it)."""
        delete = sa.delete(leases).where(leases.c.connection == conn, leases.c.holder == holder)
        with self._write(f"release the lease of connection {conn!r}") as db:
            return db.execute(delete).rowcount > 0

    # -- plumbing ----------------------------------------------------------------------

    def _insert(self, table: sa.Table) -> sqlite.Insert | postgresql.Insert:
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    @contextmanager
    def _read(self, what: str) -> Iterator[Connection]:
        try:
            with self._engine.connect() as db:
                yield db
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(what, exc) from exc

    @contextmanager
    def _write(self, what: str, conn: str | None = None) -> Iterator[Connection]:
        """One committed transaction; registers ``conn`` in ``connections`` first."""
        registered = False
        try:
            with self._engine.begin() as db:
                if conn is not None and conn not in self._known_connections:
                    self._register(db, conn)
                    registered = True
                yield db
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(what, exc) from exc
        if registered:  # only once committed: a rollback would have undone the row
            with self._known_lock:
                self._known_connections.add(conn)  # type: ignore[arg-type]

    def _register(self, db: Connection, conn: str) -> None:
        insert = self._insert(connections).values(name=conn, created=self._clock())
        db.execute(insert.on_conflict_do_nothing(index_elements=[connections.c.name]))

    def _error(self, what: str, exc: sa.exc.SQLAlchemyError) -> StateError:
        if isinstance(exc, sa.exc.IntegrityError):
            return StateError(
                f"could not {what}: it conflicts with what the store holds ({self._reason(exc)})",
                code="state_conflict",
            )
        transient = isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
        advice = "it will be retried" if transient else "check the database and the logs"
        return StateError(
            f"could not {what} in the state store {database.masked(self._url)}: "
            f"{self._reason(exc)}; {advice}",
            transient=transient,
        )

    def _reason(self, exc: BaseException) -> str:
        """The driver's own words, one line, without the password."""
        origin = getattr(exc, "orig", None) or exc
        text = " ".join(line.strip() for line in str(origin).splitlines() if line.strip())
        text = text or type(origin).__name__
        if self._url.password:
            text = text.replace(str(self._url.password), "***")
        return text[:500]

    def _link_of(self, db: Connection, conn: str, crm_id: str) -> Link | None:
        query = sa.select(*_LINK_COLUMNS).where(
            links.c.connection == conn, links.c.crm_id == crm_id
        )
        row = db.execute(query).first()
        return None if row is None else _link(row)

    def _links_where(
        self, conn: str, column: sa.Column[Any], ids: Sequence[str], *, key: str
    ) -> dict[str, Link]:
        found: dict[str, Link] = {}
        unique = list(dict.fromkeys(ids))
        with self._read(f"read {len(unique)} links ({conn})") as db:
            for chunk in _chunks(unique, LOOKUP_CHUNK):
                query = sa.select(*_LINK_COLUMNS).where(
                    links.c.connection == conn, column.in_(chunk)
                )
                for row in db.execute(query).all():
                    link = _link(row)
                    found[getattr(link, key)] = link
        return found

    def _link_row(self, link: Link, now: datetime) -> dict[str, Any]:
        return {
            "connection": link.connection,
            "crm_id": link.crm_id,
            "referral_id": link.referral_id,
            "engagement_id": link.engagement_id,
            "etag": link.etag,
            "fingerprint": link.fingerprint,
            "sent_body": None if link.sent_body is None else dict(link.sent_body),
            "state": LinkState(link.state).value,
            "status": link.status,
            "substatus": link.substatus,
            "crm_modstamp": link.crm_modstamp,
            "direction": link.direction,
            "mirrored_fingerprint": link.mirrored_fingerprint,
            "updated": now,
            "core_facts": None if link.core_facts is None else dict(link.core_facts),
            "intent_at": link.intent_at,
            "intent_by": link.intent_by,
        }

    def _explain_conflict(
        self, conn: str, rows: list[dict[str, Any]], exc: StateError
    ) -> StateError:
        """Name the record that already owns a referral id, when that is the conflict."""
        seen: dict[str, str] = {}
        for row in rows:
            referral = row["referral_id"]
            if referral and seen.setdefault(referral, row["crm_id"]) != row["crm_id"]:
                return StateError(
                    f"cannot link CRM records {seen[referral]} and {row['crm_id']} on "
                    f"connection {conn!r} to the same referral {referral} in one batch; "
                    "one referral belongs to one record",
                    code="state_conflict",
                )
        referral_ids = [row["referral_id"] for row in rows if row["referral_id"]]
        owners = self.links_by_referral(conn, referral_ids) if referral_ids else {}
        for row in rows:
            owner = owners.get(row["referral_id"])
            if owner is not None and owner.crm_id != row["crm_id"]:
                return StateError(
                    f"cannot link CRM record {row['crm_id']} on connection {conn!r} to "
                    f"referral {row['referral_id']}: that referral is already linked to CRM "
                    f"record {owner.crm_id}. One referral belongs to one record; resolve the "
                    "duplicate in the CRM, then unlink one of them",
                    code="state_conflict",
                )
        return exc
