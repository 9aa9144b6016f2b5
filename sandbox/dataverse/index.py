"""Read indexes of the Dataverse sandbox: the rows a paged query walks, kept in order.

A collection query is answered from the sorted keys of its matching rows,
built on its first page and brought up to date from the store's write
journal on later ones, so that a page costs a binary search for the paging
cookie's key plus the rows it returns instead of a filter and sort of the
whole table. Change tracking keeps the sorted ids of the rows changed (or
deleted) since a delta token the same way. An index only finds rows faster:
every page holds the rows as they are when it is served, exactly as a fresh
filter and sort of the table would give them.

A filter that names the values a kept row must have in one column (``eq``,
``or`` of ``eq``, ``In``: see ``sandbox.dataverse.filter.Candidates``) is tested on
those rows only: found by primary key, or through an index of the column's
values kept current from the journal. Lookups of rows by dozens of ids thus
cost what they return, not a pass over the table.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from sandbox.dataverse import schema as s
from sandbox.dataverse.filter import Candidates, Condition, Predicate, normalize
from sandbox.dataverse.query import Query, comparable, ordered_keys, sort_key_function
from sandbox.dataverse.store import DataverseStore

Row = dict[str, Any]
Key = tuple[Any, ...]

#: indexes kept, least recently used dropped first (each holds a key per matching row)
KEPT_INDEXES = 6
#: an index behind by more rows than this (plus 1/32 of its size) is rebuilt instead
CATCH_UP_ROWS = 64


def _row_id(key: Key) -> str:
    # every sort ends with the primary key, ascending and never null: (1, id)
    return str(key[-1][1])


class _Index:
    """The ordered rows of one query as of write ``mark`` of the store's journal."""

    def __init__(self, store: DataverseStore, entity_set: str) -> None:
        self.store = store
        self.entity_set = entity_set
        self.epoch = store.epoch
        self.mark = store.mark

    def size(self) -> int:
        raise NotImplementedError

    def refresh(self, row_id: str) -> None:
        """Place (or drop) one row as it is now."""
        raise NotImplementedError

    def too_far_behind(self, touched: int) -> bool:
        """True when rebuilding is cheaper than placing ``touched`` rows one by one."""
        return touched > CATCH_UP_ROWS + self.size() // 32

    def catch_up(self) -> bool:
        """Apply the writes made since the index was current; False when it must be rebuilt."""
        if self.epoch != self.store.epoch:
            return False
        changes = self.store.changes_since(self.mark)
        if changes is None:
            return False
        touched = {row_id for entity_set, row_id in changes if entity_set == self.entity_set}
        if self.too_far_behind(len(touched)):
            return False
        for row_id in touched:
            self.refresh(row_id)
        self.mark = self.store.mark
        return True


class SortedIndex(_Index):
    """Comparable sort keys (see ``sandbox.dataverse.query.comparable``) of the rows a filter keeps."""

    def __init__(
        self,
        store: DataverseStore,
        table: s.Table,
        keep: Predicate | None,
        sort: tuple[tuple[str, bool], ...],
        candidates: Iterable[Row] | None = None,
    ) -> None:
        """``candidates``: the rows ``keep`` may keep (every row of the table when None)."""
        super().__init__(store, table.entity_set)
        self.keep = keep
        raw, wrap = sort_key_function(sort, table), comparable(sort)
        self.key: Callable[[Row], Key] = lambda row: wrap(raw(row))
        self.wrap = wrap
        rows = store.rows[table.entity_set].values() if candidates is None else candidates
        kept = list(rows) if keep is None else [r for r in rows if keep(r)]
        self.keys = ordered_keys(kept, sort, table)
        self.key_of = {_row_id(k): k for k in self.keys}

    def size(self) -> int:
        return len(self.keys)

    def refresh(self, row_id: str) -> None:
        row = self.store.rows[self.entity_set].get(row_id)
        new = None
        if row is not None and (self.keep is None or self.keep(row)):
            new = self.key(row)
        old = self.key_of.pop(row_id, None)
        if new is not None:
            self.key_of[row_id] = new
        if old == new:
            return
        if old is not None:
            del self.keys[bisect_left(self.keys, old)]
        if new is not None:
            insort(self.keys, new)

    def page(self, after: Key | None, limit: int) -> tuple[list[Row], bool]:
        """Up to ``limit`` rows after the sort key ``after`` (from the start when None), and
        whether more follow."""
        start = 0 if after is None else bisect_right(self.keys, self.wrap(after))
        rows = self.store.rows[self.entity_set]
        page = [rows[_row_id(k)] for k in self.keys[start : start + limit]]
        return page, len(self.keys) - start > limit


class TrackedIndex(_Index):
    """Ids, in order, of the rows changed since row version ``since`` (every row when None)
    and of the rows deleted since then."""

    def __init__(self, store: DataverseStore, entity_set: str, since: int | None) -> None:
        super().__init__(store, entity_set)
        self.since = since
        live = store.rows[entity_set]
        ids = [i for i, r in live.items() if since is None or r["versionnumber"] > since]
        if since is not None:
            gone = store.deleted[entity_set].items()
            ids += [i for i, version in gone if version > since and i not in live]
        ids.sort()
        self.ids = ids
        self.members = set(ids)

    def size(self) -> int:
        return len(self.ids)

    def refresh(self, row_id: str) -> None:
        row = self.store.rows[self.entity_set].get(row_id)
        if row is not None:
            member = self.since is None or row["versionnumber"] > self.since
        else:
            member = self.since is not None and self.store.deleted_since(
                self.entity_set, row_id, self.since
            )
        if member == (row_id in self.members):
            return
        if member:
            insort(self.ids, row_id)
            self.members.add(row_id)
        else:
            del self.ids[bisect_left(self.ids, row_id)]
            self.members.discard(row_id)

    def page(self, after: str, limit: int) -> tuple[list[tuple[str, Row | None]], bool]:
        """Up to ``limit`` (id, row) after id ``after`` (row None: deleted), and whether more
        follow."""
        start = bisect_right(self.ids, after)
        rows = self.store.rows[self.entity_set]
        page = [(i, rows.get(i)) for i in self.ids[start : start + limit]]
        return page, len(self.ids) - start > limit


class ValueIndex(_Index):
    """Ids of a table's rows by the value of one column, in comparison form (see
    ``sandbox.dataverse.filter.normalize``; None for null)."""

    def __init__(self, store: DataverseStore, entity_set: str, column: str, kind: str) -> None:
        super().__init__(store, entity_set)
        self.column = column
        self.kind = kind
        self.value_of: dict[str, Any] = {}
        self.ids: dict[Any, set[str]] = {}
        for row_id, row in store.rows[entity_set].items():
            self._add(row_id, normalize(kind, row.get(column)))

    def _add(self, row_id: str, value: Any) -> None:
        self.value_of[row_id] = value
        self.ids.setdefault(value, set()).add(row_id)

    def size(self) -> int:
        return len(self.value_of)

    def too_far_behind(self, touched: int) -> bool:
        return touched > self.size()  # placing a row costs a dictionary update

    def refresh(self, row_id: str) -> None:
        if row_id in self.value_of:
            old = self.value_of.pop(row_id)
            same = self.ids[old]
            same.discard(row_id)
            if not same:
                del self.ids[old]
        row = self.store.rows[self.entity_set].get(row_id)
        if row is not None:
            self._add(row_id, normalize(self.kind, row.get(self.column)))

    def rows(self, values: Iterable[Any]) -> list[Row]:
        """The rows whose column holds one of ``values``."""
        rows = self.store.rows[self.entity_set]
        return [rows[i] for v in values for i in self.ids.get(v, ())]


class QueryIndexes:
    """The indexes of the queries being paged through, least recently used dropped first.

    An index is kept only once a page leaves rows for a next one, so one-page
    queries (lookups, ``$top``) cost what a plain filter and sort costs.
    """

    def __init__(self, store: DataverseStore) -> None:
        self.store = store
        self._kept: OrderedDict[Hashable, _Index] = OrderedDict()
        #: value indexes of the columns filters looked rows up by (a few per table at most)
        self._values: dict[Hashable, ValueIndex] = {}

    def _current(self, key: Hashable) -> _Index | None:
        index = self._kept.get(key)
        if index is None:
            return None
        if not index.catch_up():
            del self._kept[key]
            return None
        self._kept.move_to_end(key)
        return index

    def _keep(self, key: Hashable, index: _Index) -> None:
        self._kept[key] = index
        self._kept.move_to_end(key)
        while len(self._kept) > KEPT_INDEXES:
            self._kept.popitem(last=False)

    def page(
        self, table: s.Table, query: Query, after: Key | None, limit: int
    ) -> tuple[list[Row], bool]:
        """Rows of ``query`` in its order after the sort key ``after``, and whether more follow."""
        key = ("rows", table.entity_set, query.raw.get("$filter"), query.sort)
        index = self._current(key)
        if not isinstance(index, SortedIndex):
            candidates = None
            if isinstance(query.filter, Condition) and query.filter.candidates is not None:
                candidates = self._candidates(table, query.filter.candidates)
            index = SortedIndex(self.store, table, query.filter, query.sort, candidates)
        rows, more = index.page(after, limit)
        if more and query.top is None:
            self._keep(key, index)
        return rows, more

    def _candidates(self, table: s.Table, wanted: Candidates) -> list[Row]:
        """The rows whose ``wanted.column`` holds one of ``wanted.values``."""
        rows = self.store.rows[table.entity_set]
        if wanted.column == table.primary_id:
            # stored keys are lower-case GUIDs, the form GUID comparisons use
            found = (rows.get(v) for v in wanted.values if isinstance(v, str))
            return [r for r in found if r is not None]
        key = ("values", table.entity_set, wanted.column)
        index = self._values.get(key)
        if index is None or index.kind != wanted.kind or not index.catch_up():
            index = ValueIndex(self.store, table.entity_set, wanted.column, wanted.kind)
            self._values[key] = index
        return index.rows(wanted.values)

    def changes(
        self, table: s.Table, since: int | None, after: str, limit: int
    ) -> tuple[list[tuple[str, Row | None]], bool]:
        """Changed rows (and deleted ids) since ``since`` after id ``after``, in id order."""
        key = ("changes", table.entity_set, since)
        index = self._current(key)
        if not isinstance(index, TrackedIndex):
            index = TrackedIndex(self.store, table.entity_set, since)
        page, more = index.page(after, limit)
        if more:
            self._keep(key, index)
        return page, more
