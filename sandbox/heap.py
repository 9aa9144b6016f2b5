"""Keeping the collector's full collections short in a sandbox process of its own.

A copy of the connector's ``settle_heap`` (the sandbox imports nothing from the
connector, so that it can be installed, tested and left out on its own).
"""

from __future__ import annotations

import gc


def settle_heap() -> int:
    """Freeze what is alive now; returns how many objects are frozen.

    Every full collection of the cyclic garbage collector would otherwise walk the
    seeded data again, holding the GIL throughout, so every request in flight would
    stand still meanwhile. Calling it again first unfreezes what an earlier call froze,
    so an object frozen then and dropped since is collected like any other.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
