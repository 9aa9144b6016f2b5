"""A bounded memory of recently seen keys, for de-duplicating paged reads.

A paged read repeats an item only near a page boundary (a tie on the sort key moving
across it), so remembering the last few pages' keys is enough; remembering every key of
a 100,000-record read would make memory grow with the org.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


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
