"""The ``runs`` table: one row per sync cycle, written when it starts and when it ends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row

from connector.errors import StateError
from connector.redaction import scrub, scrub_data
from connector.state.database import Database
from connector.state.records import Run
from connector.state.schema import runs


def run_of(row: Row[Any]) -> Run:
    return Run(**row._asdict())


def finish(
    db: Database,
    run_id: int,
    outcome: str,
    counts: Mapping[str, Any],
    api_calls: Mapping[str, Any],
    duration_s: float,
    error: str | None = None,
) -> None:
    """Record the end of run ``run_id`` (whichever connection it belongs to)."""
    update = (
        sa.update(runs)
        .where(runs.c.id == run_id)
        .values(
            finished=db.clock(),
            outcome=outcome,
            counts=scrub_data(dict(counts)),
            api_calls=dict(api_calls),
            duration_s=duration_s,
            error=scrub(error) if error else error,  # no secret kept, whoever wrote it
        )
    )
    with db.write(f"record the end of run {run_id}") as connection:
        if connection.execute(update).rowcount == 0:
            raise StateError(
                f"run {run_id} does not exist; finish only a run returned by start_run",
                code="state_conflict",
            )


def recent(db: Database, conn: str | None = None, limit: int = 10) -> list[Run]:
    """The latest runs (of ``conn``, or of every connection), newest first."""
    query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
    if conn is not None:
        query = query.where(runs.c.connection == conn)
    with db.read("list recent runs") as connection:
        return [run_of(row) for row in connection.execute(query)]


class Runs:
    """One connection's sync cycles."""

    def __init__(self, db: Database, conn: str) -> None:
        self._db = db
        self.connection = conn

    def start(self) -> int:
        """Record the start of a sync cycle; returns the run id for :meth:`finish`."""
        conn = self.connection
        insert = (
            sa.insert(runs).values(connection=conn, started=self._db.clock()).returning(runs.c.id)
        )
        with self._db.write(f"record the start of a run of connection {conn!r}", conn) as db:
            return int(db.execute(insert).scalar_one())

    def finish(
        self,
        run_id: int,
        outcome: str,
        counts: Mapping[str, Any],
        api_calls: Mapping[str, Any],
        duration_s: float,
        error: str | None = None,
    ) -> None:
        """Record the end of a run :meth:`start` returned (``error`` is scrubbed)."""
        finish(self._db, run_id, outcome, counts, api_calls, duration_s, error)

    def last(self, outcomes: Sequence[str] | None = None) -> Run | None:
        """The latest run (with one of ``outcomes`` when given), or None."""
        conn = self.connection
        query = sa.select(runs).where(runs.c.connection == conn).order_by(runs.c.id.desc())
        if outcomes is not None:
            query = query.where(runs.c.outcome.in_(list(outcomes)))
        with self._db.read(f"read the last run of connection {conn!r}") as db:
            row = db.execute(query.limit(1)).first()
        return None if row is None else run_of(row)

    def recent(self, limit: int = 10) -> list[Run]:
        """The latest runs, newest first."""
        return recent(self._db, self.connection, limit)
