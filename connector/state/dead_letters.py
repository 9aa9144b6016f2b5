"""The ``dead_letters`` table: records that failed permanently, and what became of them.

:class:`DeadLetters` is one connection's letters (the sync adds, resolves and reads
them by CRM id); the module functions are the store-wide operations of the
operators' commands and the console (by letter id, across connections).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row

from connector.redaction import scrub
from connector.state.database import Database
from connector.state.records import DeadLetter, LetterStamp
from connector.state.schema import UNRESOLVED, dead_letters

#: reason-code prefixes of the dead letters the engine retries at the start of a cycle:
#: a transient failure that outlived its retries, and a retry an operator asked for
TRANSIENT_PREFIX = "transient:"
RETRY_PREFIX = "retry:"

#: ``(crm_id, reason_code, message, crm_modstamp, crm_fingerprint)``
LetterItem = tuple[str, str, str, datetime | None, str | None]


def letter_of(row: Row[Any]) -> DeadLetter:
    return DeadLetter(**row._asdict())


def _add_letter(db: Database) -> Any:
    letter = db.insert(dead_letters)
    return letter.on_conflict_do_update(
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


class DeadLetters:
    """One connection's dead letters, by CRM id."""

    def __init__(self, db: Database, conn: str) -> None:
        self._db = db
        self.connection = conn

    def add(
        self,
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
        conn = self.connection
        params = _letter_row(
            conn, crm_id, reason_code, message, crm_modstamp, self._db.clock(), crm_fingerprint
        )
        statement = self._db.prepared("dead_letters.add", _add_letter)
        with self._db.write(f"dead-letter CRM record {crm_id} ({conn})", conn) as db:
            return letter_of(db.execute(statement.returning(*dead_letters.c), params).one())

    def add_many(self, items: Sequence[LetterItem]) -> None:
        """:meth:`add` for many ``(crm_id, code, message, modstamp, fingerprint)`` at once."""
        if not items:
            return
        conn = self.connection
        now = self._db.clock()
        rows: dict[str, dict[str, Any]] = {}
        for crm_id, code, message, modstamp, fp in items:  # one letter per record: the last
            rows[crm_id] = _letter_row(conn, crm_id, code, message, modstamp, now, fp)
        statement = self._db.prepared("dead_letters.add", _add_letter)
        with self._db.write(f"dead-letter {len(rows)} CRM records ({conn})", conn) as db:
            db.execute(statement, list(rows.values()))

    def resolve(self, crm_id: str) -> bool:
        """Mark the record's open dead letter resolved; False when there was none."""
        conn = self.connection
        update = (
            sa.update(dead_letters)
            .where(
                dead_letters.c.connection == conn,
                dead_letters.c.crm_id == crm_id,
                dead_letters.c.resolved == sa.false(),
            )
            .values(resolved=True)
        )
        with self._db.write(f"resolve the dead letter of CRM record {crm_id} ({conn})") as db:
            return db.execute(update).rowcount > 0

    def stamps(self, crm_ids: Sequence[str]) -> dict[str, LetterStamp]:
        """How each record was when it was last dead-lettered (open or resolved letter).

        A record read again unchanged since (same CRM stamp, or same content when its
        stamp moved only because the connector wrote its error field) is left alone by
        the engine: a discarded letter stays discarded; an open one is retried on purpose.
        """
        conn = self.connection
        found: dict[str, tuple[int, LetterStamp]] = {}
        unique = list(dict.fromkeys(crm_ids))
        with self._db.read(f"read the dead letters of {len(unique)} records ({conn})") as db:
            for chunk in self._db.chunks(unique):
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

    def open_of(self, crm_ids: Sequence[str]) -> dict[str, DeadLetter]:
        """The open dead letter of each of these records that has one (by CRM id)."""
        conn = self.connection
        found: dict[str, DeadLetter] = {}
        unique = list(dict.fromkeys(crm_ids))
        with self._db.read(f"read the open dead letters of {len(unique)} records ({conn})") as db:
            for chunk in self._db.chunks(unique):
                query = sa.select(dead_letters).where(
                    dead_letters.c.connection == conn,
                    dead_letters.c.crm_id.in_(chunk),
                    dead_letters.c.resolved == sa.false(),
                )
                for row in db.execute(query):
                    letter = letter_of(row)
                    found[letter.crm_id] = letter
        return found

    def recent(
        self,
        include_resolved: bool = False,
        *,
        reason: str | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        """This connection's letters, most recently failed first (see :func:`list_letters`)."""
        return list_letters(self._db, self.connection, include_resolved, reason=reason, limit=limit)

    def count(self, *, include_resolved: bool = False, reason: str | None = None) -> int:
        """How many letters :meth:`recent` would list without a limit."""
        return count_letters(
            self._db, self.connection, include_resolved=include_resolved, reason=reason
        )


# -- store-wide: by letter id, across connections ------------------------------------------


def get(db: Database, dead_letter_id: int) -> DeadLetter | None:
    query = sa.select(dead_letters).where(dead_letters.c.id == dead_letter_id)
    with db.read(f"read dead letter {dead_letter_id}") as connection:
        row = connection.execute(query).first()
    return None if row is None else letter_of(row)


def discard(db: Database, dead_letter_id: int) -> bool:
    """Resolve one open dead letter without retrying it; False when none is open."""
    update = (
        sa.update(dead_letters)
        .where(dead_letters.c.id == dead_letter_id, dead_letters.c.resolved == sa.false())
        .values(resolved=True)
    )
    with db.write(f"discard dead letter {dead_letter_id}") as connection:
        return connection.execute(update).rowcount > 0


def request_retry(db: Database, dead_letter_ids: Sequence[int] | None = None) -> list[DeadLetter]:
    """Mark open dead letters (these ids, or all when None) for the next cycle to retry.

    The reason code becomes ``retry:<code>`` (the engine re-fetches and re-processes
    such records at the start of its next cycle); a new failure then replaces it.
    Returns the letters marked; unknown or resolved ids are ignored.
    """
    query = sa.select(dead_letters).where(dead_letters.c.resolved == sa.false())
    if dead_letter_ids is not None:
        query = query.where(dead_letters.c.id.in_(list(dead_letter_ids)))
    marked: list[DeadLetter] = []
    with db.write("mark dead letters for retry") as connection:
        for row in connection.execute(query).all():
            letter = letter_of(row)
            code = letter.reason_code
            if not code.startswith((RETRY_PREFIX, TRANSIENT_PREFIX)):
                code = (RETRY_PREFIX + code)[:64]
                connection.execute(
                    sa.update(dead_letters)
                    .where(dead_letters.c.id == letter.id)
                    .values(reason_code=code)
                )
            marked.append(replace(letter, reason_code=code))
    return marked


def list_letters(
    db: Database,
    conn: str | None = None,
    include_resolved: bool = False,
    *,
    reason: str | None = None,
    limit: int | None = None,
) -> list[DeadLetter]:
    """Dead letters (of ``conn``, or of every connection), most recently failed first.

    ``reason`` keeps the letters whose reason code contains it (``invalid_record``,
    ``transient:``); ``limit`` keeps the first so many.
    """
    query = sa.select(dead_letters).order_by(
        dead_letters.c.last_seen.desc(), dead_letters.c.id.desc()
    )
    query = _letters_where(query, conn, include_resolved, reason)
    if limit is not None:
        query = query.limit(limit)
    with db.read("list dead letters") as connection:
        return [letter_of(row) for row in connection.execute(query)]


def count_letters(
    db: Database,
    conn: str | None = None,
    *,
    include_resolved: bool = False,
    reason: str | None = None,
) -> int:
    """How many letters :func:`list_letters` would list without a limit."""
    query = _letters_where(
        sa.select(sa.func.count()).select_from(dead_letters), conn, include_resolved, reason
    )
    with db.read("count dead letters") as connection:
        return int(connection.execute(query).scalar_one())


def _letters_where(query: Any, conn: str | None, include_resolved: bool, reason: str | None) -> Any:
    if conn is not None:
        query = query.where(dead_letters.c.connection == conn)
    if not include_resolved:
        query = query.where(dead_letters.c.resolved == sa.false())
    if reason:
        query = query.where(dead_letters.c.reason_code.contains(reason, autoescape=True))
    return query
