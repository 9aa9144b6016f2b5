"""Per-record sync history and run details in the state store.

The sync engine writes one :class:`HistoryEntry` per record outcome (through
:class:`connector.sync.history.HistoryRecorder`); the console reads a record's
entries and a run's. Every method is its own short transaction on the
:class:`~connector.state.database.Database` of a :class:`~connector.state.store.Store`,
with its error handling.

The table is bounded: :meth:`RecordHistory.trim_records` keeps the newest entries of
the records a page touched, :meth:`RecordHistory.drop_runs_before` deletes the entries
of old runs (both through indexes, see ``connector.state.schema``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row

from connector.state.schema import record_history, run_details, runs
from connector.state.store import Store


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One sync of one CRM record: what was sent, what came back, both sides' status."""

    connection: str
    crm_id: str
    run_id: int
    at: datetime
    kind: str
    reason: str | None = None
    message: str | None = None
    referral_id: str | None = None
    core_status: str | None = None
    core_substatus: str | None = None
    sent: Any = None
    answer: Mapping[str, Any] | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class RunDetails:
    run_id: int
    phases: Mapping[str, float]
    quota: Mapping[str, float]


class _BulkInsert:
    """``INSERT INTO record_history``, compiled once; rows are encoded by the column types."""

    def __init__(self, dialect: sa.Dialect) -> None:
        compiled = sa.insert(record_history).compile(
            dialect=dialect, column_keys=[c.name for c in record_history.c if c.name != "id"]
        )
        self.sql = str(compiled)
        self._positional = compiled.positiontup is not None
        self._names: list[str] = list(compiled.positiontup or compiled.binds)
        self._processors = [
            record_history.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in self._names
        ]

    def parameters(self, entries: Sequence[HistoryEntry]) -> list[Any]:
        columns = list(zip(self._names, self._processors, strict=True))
        rows: list[Any] = []
        for entry in entries:
            values = [
                getattr(entry, name) if process is None else process(getattr(entry, name))
                for name, process in columns
            ]
            rows.append(
                tuple(values) if self._positional else dict(zip(self._names, values, strict=True))
            )
        return rows


def _entry(row: Row[Any]) -> HistoryEntry:
    return HistoryEntry(**row._asdict())


class RecordHistory:
    """The ``record_history`` and ``run_details`` tables, over one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self._db = store.database
        self._insert = _BulkInsert(store.database.engine.dialect)

    # -- writes ------------------------------------------------------------------------

    def add(self, entries: Sequence[HistoryEntry]) -> None:
        """Insert entries in one transaction: one compiled statement fed the driver's rows.

        Written at every page boundary of a sync, on its main thread: SQLAlchemy's per-row
        parameter handling cost as much as SQLite's own work (see ``connector.state.link_rows.BulkLinkUpsert``).
        """
        if not entries:
            return
        conn = entries[0].connection
        what = f"record the history of {len(entries)} records ({conn})"
        with self._db.write(what, conn) as db:
            db.exec_driver_sql(self._insert.sql, self._insert.parameters(entries))

    def trim_records(self, conn: str, crm_ids: Sequence[str], keep: int) -> int:
        """Delete all but the newest ``keep`` entries of these records; returns how many."""
        deleted = 0
        unique = list(dict.fromkeys(crm_ids))
        with self._db.write(f"trim the history of {len(unique)} records ({conn})") as db:
            for chunk in self._db.chunks(unique):
                over = db.execute(
                    sa.select(record_history.c.crm_id)
                    .where(record_history.c.connection == conn, record_history.c.crm_id.in_(chunk))
                    .group_by(record_history.c.crm_id)
                    .having(sa.func.count() > keep)
                ).scalars()
                for crm_id in list(over):
                    oldest_kept = (
                        sa.select(record_history.c.id)
                        .where(
                            record_history.c.connection == conn,
                            record_history.c.crm_id == crm_id,
                        )
                        .order_by(record_history.c.id.desc())
                        .offset(keep - 1)
                        .limit(1)
                        .scalar_subquery()
                    )
                    deleted += db.execute(
                        sa.delete(record_history).where(
                            record_history.c.connection == conn,
                            record_history.c.crm_id == crm_id,
                            record_history.c.id < oldest_kept,
                        )
                    ).rowcount
        return deleted

    def drop_runs_before(self, conn: str, before: datetime) -> int:
        """Delete the entries of ``conn``'s runs that started before ``before``."""
        first_kept = (
            sa.select(sa.func.min(runs.c.id))
            .where(runs.c.connection == conn, runs.c.started >= before)
            .scalar_subquery()
        )
        with self._db.write(f"delete the old history of connection {conn!r}") as db:
            newest_old = db.execute(
                sa.select(sa.func.max(runs.c.id)).where(
                    runs.c.connection == conn, runs.c.started < before
                )
            ).scalar_one_or_none()
            if newest_old is None:
                return 0
            # a run id bound: the (run_id, id) index does the work, not a scan of ``at``
            bound = sa.func.coalesce(first_kept, newest_old + 1)
            return int(
                db.execute(
                    sa.delete(record_history).where(
                        record_history.c.connection == conn, record_history.c.run_id < bound
                    )
                ).rowcount
            )

    def save_run_details(
        self, run_id: int, phases: Mapping[str, float], quota: Mapping[str, float]
    ) -> None:
        insert = self._db.insert(run_details).values(
            run_id=run_id, phases=dict(phases), quota=dict(quota)
        )
        upsert = insert.on_conflict_do_update(
            index_elements=[run_details.c.run_id],
            set_={"phases": insert.excluded.phases, "quota": insert.excluded.quota},
        )
        with self._db.write(f"record the details of run {run_id}") as db:
            db.execute(upsert)

    # -- reads -------------------------------------------------------------------------

    def of_record(
        self, conn: str, crm_id: str, *, limit: int = 50, before: int | None = None
    ) -> list[HistoryEntry]:
        """The record's entries, newest first (``before``: an entry id, for the next page)."""
        query = (
            sa.select(record_history)
            .where(record_history.c.connection == conn, record_history.c.crm_id == crm_id)
            .order_by(record_history.c.id.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(record_history.c.id < before)
        with self._db.read(f"read the history of CRM record {crm_id} ({conn})") as db:
            return [_entry(row) for row in db.execute(query)]

    def of_run(
        self, run_id: int, *, limit: int = 50, after: int | None = None, kind: str | None = None
    ) -> list[HistoryEntry]:
        """The records a run touched, in the order it touched them."""
        query = (
            sa.select(record_history)
            .where(record_history.c.run_id == run_id)
            .order_by(record_history.c.id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(record_history.c.id > after)
        if kind is not None:
            query = query.where(record_history.c.kind == kind)
        with self._db.read(f"read the records of run {run_id}") as db:
            return [_entry(row) for row in db.execute(query)]

    def run_details(self, run_ids: Sequence[int]) -> dict[int, RunDetails]:
        if not run_ids:
            return {}
        query = sa.select(run_details).where(run_details.c.run_id.in_(list(run_ids)))
        with self._db.read(f"read the details of {len(run_ids)} runs") as db:
            return {
                row.run_id: RunDetails(row.run_id, row.phases or {}, row.quota or {})
                for row in db.execute(query)
            }
