"""The Dataverse sandbox's rows: tables in memory, a row-version counter, deletion tombstones.

Every write takes the next value of one environment-wide counter as the row's
``versionnumber`` (Dataverse's rowversion), which is what change tracking
compares delta tokens with. ``begin``/``rollback`` undo the writes of a
``$batch`` change set that failed half-way. A journal lists the rows each
write touched, so that read indexes (dataverse_index) can catch up with
the writes made since they were built instead of being rebuilt.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sandbox.context import Clock
from sandbox.dataverse import schema as s

Row = dict[str, Any]

#: versionnumber of the first write: large, like the real service's rowversions
FIRST_VERSION = 1_000_000
#: journal length at which its older half is dropped (an index that far behind is rebuilt)
JOURNAL_LIMIT = 65_536


def stamp(moment: datetime) -> str:
    """Dataverse's datetime text: UTC, whole seconds."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class DataverseStore:
    """Rows of every table, keyed by lower-case GUID; tombstones of deleted rows."""

    def __init__(self, clock: Clock, *, journal_limit: int = JOURNAL_LIMIT) -> None:
        self.clock = clock
        #: changes the journal keeps before dropping its older half
        self.journal_limit = journal_limit
        self.lock = threading.RLock()
        self.rows: dict[str, dict[str, Row]] = {name: {} for name in s.TABLES}
        #: entity set → [(versionnumber at deletion, id, deleted on)]
        self.tombstones: dict[str, list[tuple[int, str, str]]] = {name: [] for name in s.TABLES}
        #: entity set → {id: versionnumber of its latest deletion}
        self.deleted: dict[str, dict[str, int]] = {name: {} for name in s.TABLES}
        self.version = FIRST_VERSION
        #: bumped when every row is replaced at once (clear, load): indexes start again
        self.epoch = 0
        #: (entity set, id) of each write since the last clear; ``mark`` counts writes
        self.journal: list[tuple[str, str]] = []
        self._journal_start = 0
        self._undo: list[tuple[str, str, Row | None]] | None = None
        self._tomb_marks: dict[str, int] = {}
        #: told of every write (kind, entity set, id, the columns written): webhook steps;
        #: writes of a change set are told when it commits
        self.on_change: Callable[[str, str, str, Row], None] | None = None
        self._held: list[tuple[str, str, str, Row]] | None = None

    # --- reading ---------------------------------------------------------------------------

    def get(self, entity_set: str, row_id: str | None) -> Row | None:
        if row_id is None:
            return None
        return self.rows[entity_set].get(row_id.lower())

    def all(self, entity_set: str) -> list[Row]:
        return list(self.rows[entity_set].values())

    def now(self) -> str:
        return stamp(self.clock.now())

    @property
    def mark(self) -> int:
        """The number of writes so far (since the store was created)."""
        return self._journal_start + len(self.journal)

    def changes_since(self, mark: int) -> list[tuple[str, str]] | None:
        """(entity set, id) of the writes after ``mark``; None when the journal no longer
        reaches back that far."""
        if mark < self._journal_start or mark > self.mark:
            return None
        return self.journal[mark - self._journal_start :]

    def deleted_since(self, entity_set: str, row_id: str, version: int) -> bool:
        """True when a tombstone of ``row_id`` is newer than ``version``."""
        return self.deleted[entity_set].get(row_id, version) > version

    # --- writing ---------------------------------------------------------------------------

    def _next_version(self) -> int:
        self.version += 1
        return self.version

    def _journal(self, entity_set: str, row_id: str) -> None:
        self.journal.append((entity_set, row_id))
        if len(self.journal) > self.journal_limit:
            drop = len(self.journal) - self.journal_limit // 2
            del self.journal[:drop]
            self._journal_start += drop

    def _remember(self, entity_set: str, row_id: str) -> None:
        self._journal(entity_set, row_id)
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
        self._type_codes(table, full)
        self._remember(entity_set, row_id)
        self.rows[entity_set][row_id] = full
        self._changed("created", entity_set, row_id, full)
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
        self._type_codes(table, row)
        self._changed("updated", entity_set, row_id, {**changes, "modifiedon": row["modifiedon"]})
        return row

    def _type_codes(self, table: s.Table, row: Row) -> None:
        """A connection's ``record1objecttypecode`` / ``record2objecttypecode``: the type of
        the record each end points to, as Dataverse fills them in."""
        if table is not s.CONNECTION:
            return
        for end in ("record1", "record2"):
            target = row.get(f"_{end}id_value")
            column = table.columns[f"_{end}id_value"]
            row[f"{end}objecttypecode"] = next(
                (
                    s.OBJECT_TYPE_CODES[name]
                    for name in column.targets
                    if target is not None and target in self.rows[name]
                ),
                None,
            )

    def delete(self, entity_set: str, row_id: str) -> bool:
        row_id = row_id.lower()
        if row_id not in self.rows[entity_set]:
            return False
        self._remember(entity_set, row_id)
        del self.rows[entity_set][row_id]
        version = self._next_version()
        self.tombstones[entity_set].append((version, row_id, self.now()))
        self.deleted[entity_set][row_id] = version
        self._changed("deleted", entity_set, row_id, {})
        return True

    def _changed(self, kind: str, entity_set: str, row_id: str, columns: Row) -> None:
        if self.on_change is None:
            return
        if self._held is not None:
            self._held.append((kind, entity_set, row_id, dict(columns)))
        else:
            self.on_change(kind, entity_set, row_id, columns)

    def clear(self) -> None:
        for table in self.rows.values():
            table.clear()
        for tombs in self.tombstones.values():
            tombs.clear()
        for deleted in self.deleted.values():
            deleted.clear()
        self.epoch += 1
        self._journal_start = self.mark
        self.journal = []

    def _index_tombstones(self, entity_set: str) -> None:
        deleted: dict[str, int] = {}
        for version, row_id, _ in self.tombstones[entity_set]:
            deleted[row_id] = max(version, deleted.get(row_id, version))
        self.deleted[entity_set] = deleted

    # --- change sets -----------------------------------------------------------------------

    def begin(self) -> None:
        self._undo = []
        self._held = []
        self._tomb_marks = {name: len(ts) for name, ts in self.tombstones.items()}

    def commit(self) -> None:
        self._undo = None
        held, self._held = self._held or [], None
        for change in held:
            self._changed(*change)

    def rollback(self) -> None:
        """Undo every write since ``begin`` (version numbers are not reused, as in SQL)."""
        undo, self._undo = self._undo or [], None
        self._held = None  # nothing of the change set happened
        for entity_set, row_id, before in reversed(undo):
            if before is None:
                self.rows[entity_set].pop(row_id, None)
            else:
                self.rows[entity_set][row_id] = before
        # the journal already lists the undone rows: indexes look at them again
        for name, mark in self._tomb_marks.items():
            if len(self.tombstones[name]) > mark:
                del self.tombstones[name][mark:]
                self._index_tombstones(name)

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
                self._index_tombstones(name)


def _derive(table: s.Table, row: Row) -> None:
    """Columns Dataverse computes: ``fullname`` of people."""
    if "fullname" in table.columns:
        row["fullname"] = " ".join(p for p in (row.get("firstname"), row.get("lastname")) if p)
