"""The ``links`` table: which referral each CRM record is linked to, and how it stands.

:class:`Links` is one connection's links: lookups in chunks (by CRM id, referral,
engagement), streamed listings, bulk saves (one transaction, one compiled upsert),
the create intents written before a POST (``pending_create``), and what was mirrored
back to the CRM. The rows and statements are in :mod:`connector.state.link_rows`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.errors import StateError
from connector.state.database import Database
from connector.state.link_rows import (
    LINK_COLUMNS,
    BulkLinkUpsert,
    link_of,
    link_row,
    mark_pending_statement,
    pending_row,
)
from connector.state.records import Link, LinkState
from connector.state.schema import links

#: ``(crm_id, fingerprint, body)`` of a create intent
PendingItem = tuple[str, str, Mapping[str, Any]]

#: the sent body's column, and what stands for it when a reader leaves bodies out
_BODY = links.c.sent_body
_NO_BODY = sa.null().label("sent_body")


class Links:
    """One connection's links."""

    def __init__(self, db: Database, conn: str) -> None:
        self._db = db
        self.connection = conn

    # -- reads -------------------------------------------------------------------------

    def get(self, crm_id: str) -> Link | None:
        with self._db.read(f"read the link of CRM record {crm_id} ({self.connection})") as db:
            return self._link_of(db, crm_id)

    def get_many(self, crm_ids: Sequence[str]) -> dict[str, Link]:
        """Links of these CRM records, by CRM id (absent ids have no link)."""
        return self._where_in(links.c.crm_id, crm_ids, key="crm_id")

    def by_referral(self, referral_id: str) -> Link | None:
        conn = self.connection
        query = sa.select(*LINK_COLUMNS).where(
            links.c.connection == conn, links.c.referral_id == referral_id
        )
        with self._db.read(f"find the link of referral {referral_id} ({conn})") as db:
            row = db.execute(query).first()
        return None if row is None else link_of(row)

    def by_referrals(self, referral_ids: Sequence[str]) -> dict[str, Link]:
        """Links of these referrals, by referral id."""
        return self._where_in(links.c.referral_id, referral_ids, key="referral_id")

    def etags_by_referral(self, referral_ids: Sequence[str]) -> dict[str, str]:
        """The eTag each referral had when last written or read, by referral id.

        Only links that hold the core's facts and an eTag are answered: a referral listed
        with that eTag has not changed since, and needs no work. Reads two columns
        instead of whole links (the pull-back after a large run checks every referral).
        """
        conn = self.connection
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(referral_ids))
        with self._db.read(f"read the eTags of {len(unique)} referrals ({conn})") as db:
            for chunk in self._db.chunks(unique):
                query = sa.select(links.c.referral_id, links.c.etag).where(
                    links.c.connection == conn,
                    links.c.referral_id.in_(chunk),
                    links.c.core_facts.is_not(None),
                    links.c.etag.is_not(None),
                )
                for referral_id, etag in db.execute(query).all():
                    found[referral_id] = etag
        return found

    def by_engagement(self, engagement_id: str) -> list[Link]:
        """Links of the referrals in one engagement (the partner's side of a co-sell deal)."""
        return list(self._where_in(links.c.engagement_id, [engagement_id], key="crm_id").values())

    def by_engagements(self, engagement_ids: Sequence[str]) -> list[Link]:
        """Links of the referrals in any of the engagements, in one query per chunk."""
        return list(self._where_in(links.c.engagement_id, engagement_ids, key="crm_id").values())

    def iterate(self, state: LinkState | None = None) -> Iterator[Link]:
        """Every link (optionally in one state), ordered by CRM id.

        Streamed in pages, each its own short read, so no connection is held
        between pages and concurrent writes are never blocked.
        """
        conditions = [] if state is None else [links.c.state == state.value]
        return self.stream(f"list the links of connection {self.connection!r}", *conditions)

    def stream(
        self, what: str, *conditions: sa.ColumnElement[bool], bodies: bool = True
    ) -> Iterator[Link]:
        """The links meeting ``conditions``, ordered by CRM id, read a page at a time.

        ``bodies=False`` leaves every link's ``sent_body`` out (None): for readers that
        only write status fields, never for a link that is saved again.
        """
        page_size = self._db.iter_page
        after: str | None = None
        columns = LINK_COLUMNS if bodies else [_NO_BODY if c is _BODY else c for c in LINK_COLUMNS]
        while True:
            query = (
                sa.select(*columns)
                .where(links.c.connection == self.connection, *conditions)
                .order_by(links.c.crm_id)
                .limit(page_size)
            )
            if after is not None:
                query = query.where(links.c.crm_id > after)
            with self._db.read(what) as db:
                page = [link_of(row) for row in db.execute(query)]
            yield from page
            if len(page) < page_size:
                return
            after = page[-1].crm_id

    def to_mirror(self, limit: int = 5000) -> list[Link]:
        """Links whose core facts were never written to the CRM (after a crash, say)."""
        conn = self.connection
        query = (
            sa.select(*LINK_COLUMNS)
            .where(
                links.c.connection == conn,
                links.c.core_facts.is_not(None),
                links.c.mirrored_fingerprint.is_(None),
            )
            .order_by(links.c.crm_id)
            .limit(limit)
        )
        with self._db.read(f"list the links to mirror of connection {conn!r}") as db:
            return [link_of(row) for row in db.execute(query)]

    def count(self) -> dict[LinkState, int]:
        """Number of links per state (every state present, zero when none)."""
        conn = self.connection
        query = (
            sa.select(links.c.state, sa.func.count())
            .where(links.c.connection == conn)
            .group_by(links.c.state)
        )
        counts = dict.fromkeys(LinkState, 0)
        with self._db.read(f"count the links of connection {conn!r}") as db:
            for state, count in db.execute(query):
                counts[LinkState(state)] = count
        return counts

    # -- writes ------------------------------------------------------------------------

    def save(self, link: Link) -> None:
        """Insert or replace one link (keyed by connection and CRM id)."""
        self.save_many([link])

    def save_many(self, items: Sequence[Link]) -> None:
        """Insert or replace many links in one transaction (all or none)."""
        if not items:
            return
        conn = self.connection
        now = self._db.clock()
        rows: dict[str, dict[str, Any]] = {}
        for link in items:  # the last word on a CRM id wins, like sequential saves
            if link.connection != conn:
                raise StateError(
                    f"link of CRM record {link.crm_id} belongs to connection "
                    f"{link.connection!r}, not {conn!r}; save it under its own connection",
                    code="state_conflict",
                )
            rows[link.crm_id] = link_row(link, now)
        what = (
            f"save the link of CRM record {items[0].crm_id} ({conn})"
            if len(rows) == 1
            else f"save {len(rows)} links ({conn})"
        )
        bulk = self._db.prepared("links.bulk_upsert", BulkLinkUpsert.of)
        try:
            params = bulk.parameters(rows.values())
        except (TypeError, ValueError) as exc:  # naive datetime, body that is not JSON
            raise StateError(f"could not {what}: {exc}", code="state_invalid") from exc
        try:
            with self._db.write(what, conn) as db:
                db.exec_driver_sql(bulk.sql, params)
        except StateError as exc:
            if exc.code == "state_conflict":
                raise self._explain_conflict(list(rows.values()), exc) from exc
            raise

    def set_mirrored(self, fingerprints: Mapping[str, str | None]) -> None:
        """Record which status values were written to each CRM record (one transaction).

        None marks a record whose status is still to be written (:meth:`to_mirror`).
        """
        if not fingerprints:
            return
        statement = (
            links.update()
            .where(
                links.c.connection == self.connection, links.c.crm_id == sa.bindparam("b_crm_id")
            )
            .values(mirrored_fingerprint=sa.bindparam("b_fp"))
        )
        rows = [{"b_crm_id": crm_id, "b_fp": fp} for crm_id, fp in fingerprints.items()]
        with self._db.write(f"record mirrored status of {len(rows)} links", self.connection) as db:
            db.execute(statement, rows)

    # -- create intents ----------------------------------------------------------------

    def mark_pending(
        self, crm_id: str, fingerprint: str, body: Mapping[str, Any], *, holder: str
    ) -> Link:
        """Record ``holder``'s intent to create a referral, *before* the POST.

        Refuses (:class:`StateError`, code ``state_conflict``) when the record is
        already linked or terminal, or pending under another run's intent: a second
        POST would duplicate its referral.
        """
        refused = self.mark_pending_many([(crm_id, fingerprint, body)], holder=holder)
        if crm_id in refused:
            raise refused[crm_id]
        link = self.get(crm_id)
        assert link is not None
        return link

    def mark_pending_many(
        self, items: Sequence[PendingItem], *, holder: str
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
        conn = self.connection
        now = self._db.clock()
        what = f"mark {len(items)} CRM records ({conn}) as pending"
        ids = [crm_id for crm_id, _, _ in items]
        statement = self._db.prepared("links.mark_pending", mark_pending_statement)
        with self._db.write(what, conn) as db:
            db.execute(
                statement,
                [pending_row(conn, crm_id, fp, body, now, holder) for crm_id, fp, body in items],
            )
            refused: dict[str, StateError] = {}
            for chunk in self._db.chunks(ids):
                rows = db.execute(
                    sa.select(*LINK_COLUMNS).where(
                        links.c.connection == conn,
                        links.c.crm_id.in_(chunk),
                        sa.or_(
                            links.c.state != LinkState.PENDING_CREATE.value,
                            links.c.intent_by.is_distinct_from(holder),
                        ),
                    )
                )
                for row in rows:
                    link = link_of(row)
                    refused[link.crm_id] = self._not_pending(link.crm_id, link)
        return refused

    def take_over_intents(self, items: Sequence[Link], holder: str) -> set[str]:
        """Make these pending links ``holder``'s intents, if they are still as read.

        For intents left by a run that is gone (a crash, a lost lease), once the core
        has been searched for their referral in vain. A compare-and-set on the intent's
        holder and time: a link another run took over or linked meanwhile stays as it
        is. Returns the CRM ids taken over.
        """
        taken: set[str] = set()
        if not items:
            return taken
        conn = self.connection
        with self._db.write(f"take over {len(items)} create intents ({conn})", conn) as db:
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
                    .values(intent_by=holder, updated=self._db.clock())
                )
                if db.execute(update).rowcount:
                    taken.add(link.crm_id)
        return taken

    def release_pending(self, crm_ids: Sequence[str], *, holder: str | None = None) -> None:
        """Drop the create intents of these records: their POST was never sent.

        Only links still pending are deleted (and, given ``holder``, only the intents
        that run wrote); a record linked meanwhile keeps its link.
        """
        if not crm_ids:
            return
        conn = self.connection
        with self._db.write(f"release {len(crm_ids)} create intents ({conn})", conn) as db:
            for chunk in self._db.chunks(list(crm_ids)):
                db.execute(
                    sa.delete(links).where(
                        links.c.connection == conn,
                        links.c.crm_id.in_(chunk),
                        links.c.state == LinkState.PENDING_CREATE.value,
                        *([links.c.intent_by == holder] if holder is not None else []),
                    )
                )

    # -- plumbing ----------------------------------------------------------------------

    def _link_of(self, db: Connection, crm_id: str) -> Link | None:
        query = sa.select(*LINK_COLUMNS).where(
            links.c.connection == self.connection, links.c.crm_id == crm_id
        )
        row = db.execute(query).first()
        return None if row is None else link_of(row)

    def _where_in(self, column: sa.Column[Any], ids: Sequence[str], *, key: str) -> dict[str, Link]:
        conn = self.connection
        found: dict[str, Link] = {}
        unique = list(dict.fromkeys(ids))
        with self._db.read(f"read {len(unique)} links ({conn})") as db:
            for chunk in self._db.chunks(unique):
                query = sa.select(*LINK_COLUMNS).where(
                    links.c.connection == conn, column.in_(chunk)
                )
                for row in db.execute(query).all():
                    link = link_of(row)
                    found[getattr(link, key)] = link
        return found

    def _not_pending(self, crm_id: str, existing: Link | None) -> StateError:
        conn = self.connection
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

    def _explain_conflict(self, rows: list[dict[str, Any]], exc: StateError) -> StateError:
        """Name the record that already owns a referral id, when that is the conflict."""
        conn = self.connection
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
        owners = self.by_referrals(referral_ids) if referral_ids else {}
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
