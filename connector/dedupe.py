"""Bounded memories for paged reads: recently seen keys, and a cache of related rows.

A paged read repeats an item only near a page boundary (a tie on the sort key moving
across it), so remembering the last few pages' keys is enough; remembering every key of
a 100,000-record read would make memory grow with the org. The same holds for rows
looked up for a page (accounts, contacts): the cache keeps the most recently used.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RecentKeys:
    """The last ``size`` distinct keys added; older ones are forgotten first."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("RecentKeys needs room for at least one key")
        self.size = size
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def add(self, key: Hashable) -> bool:
        """Remember ``key``; False when it was already remembered (a repeat)."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self.size:
            self._keys.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._keys)


class RecentCache(Mapping[K, V]):
    """A mapping that keeps the ``size`` most recently used entries.

    A caller that needs a set of keys at once calls :meth:`touch` on those it has
    before adding the missing ones, so that (with ``size`` at least the set's size)
    none of them is evicted before it is read.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("RecentCache needs room for at least one entry")
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def __getitem__(self, key: K) -> V:
        return self._items[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __setitem__(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def touch(self, keys: Iterable[K]) -> None:
        """Mark these keys (those present) as just used."""
        for key in keys:
            if key in self._items:
                self._items.move_to_end(key)
