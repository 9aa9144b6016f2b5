"""The ids waiting for a targeted cycle, per connection: coalesced, debounced, bounded.

Events name records; many events naming one record become one id (a repeat costs
nothing). A connection's ids become *due* ``debounce_s`` after the first of them
arrived, so a burst is synced together, and a steady stream never postpones the
first one for ever. At most ``max_pending`` ids wait per connection: beyond that the
ids are dropped and the connection is marked for a *full* cycle instead (a flood
costs one scheduled cycle, and memory stays flat). A Salesforce replay id is kept as
one number per connection (the newest), handed out with the batch that empties the
queue, and stored by the caller once that batch is synced.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from connector.events.notices import Notice

#: (kind, id): kind "crm" for a CRM record, "core" for a referral
Key = tuple[str, str]


@dataclass
class Batch:
    """Ids taken from the queue for one cycle, with when each first arrived."""

    connection: str
    crm_ids: list[str] = field(default_factory=list)
    referral_ids: list[str] = field(default_factory=list)
    #: (first arrival, source) per id, for the event → synced latency
    arrivals: dict[Key, tuple[float, str]] = field(default_factory=dict)
    full: bool = False
    replay_id: int | None = None

    @property
    def size(self) -> int:
        return len(self.arrivals)


@dataclass
class _Queue:
    ids: OrderedDict[Key, tuple[float, str]] = field(default_factory=OrderedDict)
    first_at: float | None = None
    full: bool = False
    replay_id: int | None = None
    overflows: int = 0


class PendingChanges:
    """Every connection's waiting ids; thread-safe, waited on by the dispatcher."""

    def __init__(
        self,
        *,
        max_pending: int,
        debounce_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_pending = max_pending
        self.debounce_s = debounce_s
        self._clock = clock
        self._queues: dict[str, _Queue] = {}
        self.changed = threading.Condition()
        #: the most ids one connection ever held at once (a bound the tests check)
        self.most_held = 0

    def _queue(self, connection: str) -> _Queue:
        queue = self._queues.get(connection)
        if queue is None:
            queue = self._queues[connection] = _Queue()
        return queue

    def add(self, connection: str, notice: Notice, *, at: float | None = None) -> bool:
        """Queue what ``notice`` names; False when the queue overflowed (a full cycle is due)."""
        now = self._clock() if at is None else at
        with self.changed:
            queue = self._queue(connection)
            if notice.replay_id is not None:
                queue.replay_id = max(queue.replay_id or notice.replay_id, notice.replay_id)
            if notice.full:
                queue.full = True
            keys = [("crm", i) for i in notice.crm_ids] + [("core", i) for i in notice.referral_ids]
            overflowed = False
            for key in keys:
                if key in queue.ids:
                    continue
                if len(queue.ids) >= self.max_pending:
                    # a flood: a full cycle covers every id, none is kept
                    queue.ids.clear()
                    queue.full = True
                    queue.overflows += 1
                    overflowed = True
                    break
                queue.ids[key] = (now, notice.source)
            self.most_held = max(self.most_held, len(queue.ids))
            if queue.first_at is None and (queue.ids or queue.full or notice.replay_id is not None):
                queue.first_at = now
            self.changed.notify_all()
            return not overflowed

    def depth(self, connection: str) -> int:
        with self.changed:
            queue = self._queues.get(connection)
            return len(queue.ids) if queue else 0

    def overflows(self, connection: str) -> int:
        with self.changed:
            queue = self._queues.get(connection)
            return queue.overflows if queue else 0

    def due(self) -> tuple[list[str], float | None]:
        """Connections whose ids have waited long enough (oldest first), and how long until
        the next one is due (None when nothing waits)."""
        now = self._clock()
        ready: list[tuple[float, str]] = []
        wait: float | None = None
        with self.changed:
            for name, queue in self._queues.items():
                if queue.first_at is None:
                    continue
                left = queue.first_at + self.debounce_s - now
                if left <= 0:
                    ready.append((queue.first_at, name))
                else:
                    wait = left if wait is None else min(wait, left)
        return [name for _, name in sorted(ready)], wait

    def wants_full(self, connection: str) -> bool:
        with self.changed:
            queue = self._queues.get(connection)
            return bool(queue and queue.full)

    def take(self, connection: str, limit: int) -> Batch | None:
        """Up to ``limit`` ids of ``connection``, oldest first (None when none wait)."""
        with self.changed:
            queue = self._queues.get(connection)
            if queue is None or queue.first_at is None:
                return None
            batch = Batch(connection)
            while queue.ids and batch.size < limit:
                key, arrival = queue.ids.popitem(last=False)
                batch.arrivals[key] = arrival
                (batch.crm_ids if key[0] == "crm" else batch.referral_ids).append(key[1])
            if not queue.ids:
                batch.replay_id, queue.replay_id = queue.replay_id, None
                if not queue.full:
                    queue.first_at = None
            else:
                # the rest is due at once: it has waited its debounce already
                queue.first_at = self._clock() - self.debounce_s
            return batch

    def take_all(self, connection: str) -> Batch:
        """Everything waiting, and the full-cycle mark (a scheduled cycle starts: it covers them)."""
        with self.changed:
            queue = self._queue(connection)
            batch = Batch(connection, full=queue.full, replay_id=queue.replay_id)
            for key, arrival in queue.ids.items():
                batch.arrivals[key] = arrival
                (batch.crm_ids if key[0] == "crm" else batch.referral_ids).append(key[1])
            queue.ids.clear()
            queue.full = False
            queue.replay_id = None
            queue.first_at = None
            return batch

    def restore(self, batch: Batch) -> None:
        """Put a batch back (its cycle could not run, or failed): its ids wait again."""
        with self.changed:
            queue = self._queue(batch.connection)
            if batch.full:
                queue.full = True
            if batch.replay_id is not None:
                queue.replay_id = max(queue.replay_id or batch.replay_id, batch.replay_id)
            for key, arrival in batch.arrivals.items():
                if len(queue.ids) >= self.max_pending:
                    queue.ids.clear()
                    queue.full = True
                    queue.overflows += 1
                    break
                queue.ids.setdefault(key, arrival)
            if queue.first_at is None and (queue.ids or queue.full or queue.replay_id is not None):
                queue.first_at = self._clock()
            self.changed.notify_all()
