"""The Dataverse sandbox's rows: tables in memory, a row-version counter, deletion tombstones.

Every write takes the next value of one environment-wide counter as the row's
``versionnumber`` (Dataverse's rowversion), which is what change tracking
compares delta tokens with. ``begin``/``rollback`` undo the writes of a
``$batch`` change set that failed half-way.
"""

from __future__ import annotations

import copy
import threading
from datetime import datetime
from typing import Any

from connector.sandbox import dataverse_schema as s
from connector.sandbox.context import Clock

Row = dict[str, Any]

#: versionnumber of the first write: large, like the real service's rowversions
FIRST_VERSION = 1_000_000


def stamp(moment: datetime) -> str:
    """Dataverse's datetime text: UTC, whole seconds."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class DataverseStore:
    """Rows of every table, keyed by lower-case GUID; tombstones of deleted rows."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.rows: dict[str, dict[str, Row]] = {name: {} for name in s.TABLES}
        #: entity set → [(versionnumber at deletion, id, deleted on)]
        self.tombstones: dict[str, list[tuple[int, str, str]]] = {name: [] for name in s.TABLES}
        self.version = FIRST_VERSION
        self._undo: list[tuple[str, str, Row | None]] | None = None
        self._tomb_marks: dict[str, int] = {}

    # --- reading ---------------------------------------------------------------------------

    def get(self, entity_set: str, row_id: str | None) -> Row | None:
        if row_id is None:
            return None
        return self.rows[entity_set].get(row_id.lower())

    def all(self, entity_set: str) -> list[Row]:
        return list(self.rows[entity_set].values())

    def now(self) -> str:
        return stamp(self.clock.now())

    # --- writing ---------------------------------------------------------------------------

    def _next_version(self) -> int:
        self.version += 1
        return self.version

    def _remember(self, entity_set: str, row_id: str) -> None:
        if self._undo is not None:
            before = self.rows[entity_set].get(row_id)
            self._undo.append((entity_set, row_id, copy.deepcopy(before)))

    def insert(self, entity_set: str, row: Row, *, at: str | None = None) -> Row:
        """Store a new row (its key column must be set); stamps created/modified/version."""
        table = s.TABLES[entity_set]
        row_id = str(row[table.primary_id]).lower()
        when = at or self.now()
        full = dict.fromkeys(table.columns)
        full.update(row)
        full[table.primary_id] = row_id
        full["createdon"] = row.get("createdon") or when
        full["modifiedon"] = when
        full["versionnumber"] = self._next_version()
        _derive(table, full)
        self._remember(entity_set, row_id)
        self.rows[entity_set][row_id] = full
        return full

    def update(self, entity_set: str, row_id: str, changes: Row, *, at: str | None = None) -> Row:
        """Apply ``changes`` to an existing row; bumps modifiedon and versionnumber."""
        table = s.TABLES[entity_set]
        row_id = row_id.lower()
        self._remember(entity_set, row_id)
        row = self.rows[entity_set][row_id]
        row.update(changes)
        row["modifiedon"] = at or self.now()
        row["versionnumber"] = self._next_version()
        _derive(table, row)
        return row

    def delete(self, entity_set: str, row_id: str) -> bool:
        row_id = row_id.lower()
        if row_id not in self.rows[entity_set]:
            return False
        self._remember(entity_set, row_id)
        del self.rows[entity_set][row_id]
        self.tombstones[entity_set].append((self._next_version(), row_id, self.now()))
        return True

    def clear(self) -> None:
        for table in self.rows.values():
            table.clear()
        for tombs in self.tombstones.values():
            tombs.clear()

    # --- change sets -----------------------------------------------------------------------

    def begin(self) -> None:
        self._undo = []
        self._tomb_marks = {name: len(ts) for name, ts in self.tombstones.items()}

    def commit(self) -> None:
        self._undo = None

    def rollback(self) -> None:
        """Undo every write since ``begin`` (version numbers are not reused, as in SQL)."""
        undo, self._undo = self._undo or [], None
        for entity_set, row_id, before in reversed(undo):
            if before is None:
                self.rows[entity_set].pop(row_id, None)
            else:
                self.rows[entity_set][row_id] = before
        for name, mark in self._tomb_marks.items():
            del self.tombstones[name][mark:]

    # --- persistence -----------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "rows": {name: list(rows.values()) for name, rows in self.rows.items()},
            "tombstones": {name: [list(t) for t in ts] for name, ts in self.tombstones.items()},
        }

    def load(self, data: dict[str, Any]) -> None:
        self.clear()
        self.version = int(data.get("version", FIRST_VERSION))
        for name, rows in data.get("rows", {}).items():
            if name in self.rows:
                table = s.TABLES[name]
                self.rows[name] = {str(r[table.primary_id]).lower(): dict(r) for r in rows}
        for name, tombs in data.get("tombstones", {}).items():
            if name in self.tombstones:
                self.tombstones[name] = [(int(v), str(i), str(at)) for v, i, at in tombs]


def _derive(table: s.Table, row: Row) -> None:
    """Columns Dataverse computes: ``fullname`` of people."""
    if "fullname" in table.columns:
        row["fullname"] = " ".join(p for p in (row.get("firstname"), row.get("lastname")) if p)
