"""Keeping a connection's lease alive while its cycle runs (several daemon replicas).

Replicas share connections through expiring leases in the state database
(:class:`~connector.state.leases.Lease`). A cycle can outlast the lease's
time to live, and it can stall (a long backoff, a slow query) without reporting
progress, so a :class:`LeaseKeeper` renews the lease on its own thread every third
of the TTL. When a renewal fails (another replica took the lease over after it
expired, or the database cannot be reached before the lease runs out) the keeper's
:attr:`~LeaseKeeper.stop` is set: the engine stops cleanly at a record boundary,
so two replicas never keep working on one connection.

A holder is named ``host:pid``. A process killed outright (SIGKILL, out of memory)
cannot release its lease; a later process on the same host sees that the holder's
process is gone and takes the lease over at once (:func:`acquire`) instead of waiting
for it to expire. A holder on another host is only ever outwaited.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from types import TracebackType

from connector.errors import ConnectorError
from connector.state.store import Store

log = logging.getLogger(__name__)


def process_holder() -> str:
    """This process's name as a lease holder (and as the owner of its create intents)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_gone(holder: str) -> bool:
    """True only when ``holder`` names a process of this host that no longer runs."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def acquire(store: Store, connection: str, holder: str, ttl_s: float) -> bool:
    """Take the lease on ``connection``; a lease left by a dead process of this host is
    taken over at once."""
    lease = store.connection(connection).lease
    if lease.acquire(holder, ttl_s):
        return True
    current = lease.current()
    if current is None:  # expired or released between the two reads
        return lease.acquire(holder, ttl_s)
    if holder_gone(current[0]) and lease.take_over(current[0], holder, ttl_s):
        log.info(
            "%s: took over the lease of %s, a process of this host that is gone",
            connection,
            current[0],
        )
        return True
    return False


class CycleStop(threading.Event):
    """Set for one cycle: by the lease keeper, or when the daemon's own stop is set."""

    def __init__(self, parent: threading.Event) -> None:
        super().__init__()
        self._parent = parent

    def is_set(self) -> bool:
        return super().is_set() or self._parent.is_set()


class LeaseKeeper:
    """Renews ``holder``'s lease on ``connection`` every ``ttl_s / 3`` until closed."""

    def __init__(
        self,
        store: Store,
        connection: str,
        holder: str,
        ttl_s: float,
        parent_stop: threading.Event,
    ) -> None:
        self.store = store
        self.connection = connection
        self._lease = store.connection(connection).lease
        self.holder = holder
        self.ttl_s = ttl_s
        self.stop = CycleStop(parent_stop)
        #: True once a renewal failed: the cycle was told to stop
        self.lost = False
        self.renewals = 0
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._renew_until_done, name=f"lease-{connection}", daemon=True
        )

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join(timeout=self.ttl_s)

    def _renew_until_done(self) -> None:
        interval = self.ttl_s / 3
        held_until = time.monotonic() + self.ttl_s
        while not self._done.wait(interval):
            try:
                renewed = self._lease.renew(self.holder, self.ttl_s)
            except ConnectorError as exc:
                if time.monotonic() + interval < held_until:
                    log.warning(
                        "%s: cannot renew the lease (will try again): %s",
                        self.connection,
                        exc.message,
                    )
                    continue
                renewed = False
            if renewed:
                self.renewals += 1
                held_until = time.monotonic() + self.ttl_s
                continue
            self.lost = True
            self.stop.set()
            log.error(
                "%s: the lease was lost (another replica holds it, or it expired); the "
                "cycle stops after the requests in flight",
                self.connection,
            )
            return
