"""What the admin console reads from the state store: pages of runs and dead letters,
a connection's overview, and the audit trail of console actions.

Every list is a page (keyset pagination on the id, newest first) read through an index
(``connector.state.schema``), so a page costs the same with 10 runs or 10,000.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from connector.state.dead_letters import letter_of
from connector.state.records import DeadLetter, LinkState, Run
from connector.state.runs import run_of
from connector.state.schema import console_audit, cursors, dead_letters, leases, links, runs
from connector.state.store import Store

#: runs shown in a connection's sparkline
SPARKLINE_RUNS = 30


@dataclass(frozen=True, slots=True)
class CursorState:
    name: str
    value: str
    updated: datetime


@dataclass(frozen=True, slots=True)
class LeaseState:
    holder: str
    expires: datetime


@dataclass
class ConnectionOverview:
    """One connection as the store knows it (the daemon adds its schedule)."""

    name: str
    last_run: Run | None = None
    #: the latest runs, oldest first (the sparkline)
    recent: list[Run] = field(default_factory=list)
    cursors: dict[str, CursorState] = field(default_factory=dict)
    links: dict[LinkState, int] = field(default_factory=dict)
    open_dead_letters: int = 0
    lease: LeaseState | None = None
    #: cycles started in the last 24 hours
    polls_24h: int = 0


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    session: str | None
    address: str | None
    action: str
    target: str | None
    outcome: str
    detail: str | None


class ConsoleReads:
    """Read-only queries of the console (and its audit trail), over one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self._db = store.database

    # -- connections -------------------------------------------------------------------

    def overview(self, conn: str, now: datetime) -> ConnectionOverview:
        out = ConnectionOverview(conn)
        recent = (
            sa.select(runs)
            .where(runs.c.connection == conn)
            .order_by(runs.c.id.desc())
            .limit(SPARKLINE_RUNS)
        )
        day_ago = now - timedelta(days=1)
        polls = (
            sa.select(sa.func.count())
            .select_from(runs)
            .where(runs.c.connection == conn, runs.c.started >= day_ago)
        )
        counts = (
            sa.select(links.c.state, sa.func.count())
            .where(links.c.connection == conn)
            .group_by(links.c.state)
        )
        # the open letters are exactly the partial unique index: counted from it
        letters = (
            sa.select(sa.func.count())
            .select_from(dead_letters)
            .where(dead_letters.c.connection == conn, dead_letters.c.resolved == sa.false())
        )
        with self._db.read(f"read the overview of connection {conn!r}") as db:
            out.recent = [run_of(row) for row in db.execute(recent)][::-1]
            out.last_run = out.recent[-1] if out.recent else None
            out.polls_24h = _recent_count(db, conn, day_ago, out.recent, polls)
            out.links = dict.fromkeys(LinkState, 0)
            for state, count in db.execute(counts):
                out.links[LinkState(state)] = count
            out.open_dead_letters = int(db.execute(letters).scalar_one())
            for row in db.execute(sa.select(cursors).where(cursors.c.connection == conn)):
                out.cursors[row.name] = CursorState(row.name, row.value, row.updated)
            lease = db.execute(sa.select(leases).where(leases.c.connection == conn)).first()
            if lease is not None:
                out.lease = LeaseState(lease.holder, lease.expires)
        return out

    # -- runs --------------------------------------------------------------------------

    def runs(self, conn: str | None, *, before: int | None = None, limit: int = 50) -> list[Run]:
        """Runs newest first; ``before`` is a run id (the next page starts below it)."""
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if conn is not None:
            query = query.where(runs.c.connection == conn)
        if before is not None:
            query = query.where(runs.c.id < before)
        with self._db.read("list runs") as db:
            return [run_of(row) for row in db.execute(query)]

    def run(self, run_id: int) -> Run | None:
        with self._db.read(f"read run {run_id}") as db:
            row = db.execute(sa.select(runs).where(runs.c.id == run_id)).first()
        return None if row is None else run_of(row)

    # -- dead letters ------------------------------------------------------------------

    def dead_letters(
        self,
        conn: str | None,
        *,
        reason: str | None = None,
        resolved: bool = False,
        before: int | None = None,
        limit: int = 50,
    ) -> list[DeadLetter]:
        """Open (or resolved) letters, newest first, optionally of one reason code."""
        query = (
            sa.select(dead_letters)
            .where(dead_letters.c.resolved == (sa.true() if resolved else sa.false()))
            .order_by(dead_letters.c.id.desc())
            .limit(limit)
        )
        if conn is not None:
            query = query.where(dead_letters.c.connection == conn)
        if reason is not None:
            query = query.where(dead_letters.c.reason_code == reason)
        if before is not None:
            query = query.where(dead_letters.c.id < before)
        with self._db.read("list dead letters") as db:
            return [letter_of(row) for row in db.execute(query)]

    def dead_letter_reasons(self, conn: str | None) -> list[tuple[str, int]]:
        """The reason codes of open letters, with how many of each (the filter's choices)."""
        query = (
            sa.select(dead_letters.c.reason_code, sa.func.count())
            .where(dead_letters.c.resolved == sa.false())
            .group_by(dead_letters.c.reason_code)
            .order_by(dead_letters.c.reason_code)
        )
        if conn is not None:
            query = query.where(dead_letters.c.connection == conn)
        with self._db.read("count dead letters by reason") as db:
            return [(str(code), int(n)) for code, n in db.execute(query)]

    # -- audit -------------------------------------------------------------------------

    def audit(
        self,
        *,
        at: datetime,
        actor: str,
        session: str | None,
        address: str | None,
        action: str,
        target: str | None = None,
        outcome: str = "ok",
        detail: str | None = None,
    ) -> None:
        """Record one console action (never a credential: callers pass what was done)."""
        row: dict[str, Any] = {
            "at": at,
            "actor": actor[:32],
            "session": session,
            "address": (address or "")[:64] or None,
            "action": action[:32],
            "target": None if target is None else target[:200],
            "outcome": outcome[:16],
            "detail": detail,
        }
        with self._db.write(f"audit the console action {action!r}") as db:
            db.execute(sa.insert(console_audit).values(**row))

    def audit_entries(self, *, before: int | None = None, limit: int = 50) -> list[AuditEntry]:
        query = sa.select(console_audit).order_by(console_audit.c.id.desc()).limit(limit)
        if before is not None:
            query = query.where(console_audit.c.id < before)
        with self._db.read("read the console's audit trail") as db:
            return [AuditEntry(**row._asdict()) for row in db.execute(query)]


def _recent_count(
    db: sa.Connection, conn: str, since: datetime, recent: Sequence[Run], count: sa.Select[Any]
) -> int:
    """Runs started since ``since``: from the sparkline's runs when they reach back that far."""
    if len(recent) < SPARKLINE_RUNS or (recent and recent[0].started < since):
        return sum(1 for r in recent if r.started >= since)
    return int(db.execute(count).scalar_one())
