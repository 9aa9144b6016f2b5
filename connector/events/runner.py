"""Turning waiting ids into targeted cycles, never beside a connection's scheduled cycle.

One dispatcher thread watches :class:`~connector.events.pending.PendingChanges`; a due
connection's ids go to a pool of ``events.concurrency`` workers, each running one
targeted cycle (:func:`connector.sync.targeted.run_targeted`) under the connection's
lease, as a scheduled cycle does. A :class:`ConnectionGate` per connection lets only
one cycle of it run at a time in this process, and a scheduled cycle that is waiting
goes before any new targeted one, so a stream of events never starves the poll. A
scheduled cycle takes every waiting id with it (it lists everything they name) and
gives them back if it fails. A connection marked for a full cycle (its queue
overflowed, or an event could not name what changed) has its scheduled job run now.

A connection's clients (tokens, HTTP pools) and its stage list are kept between
targeted cycles, and opened again when its mapping is reloaded or a cycle failed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from connector.errors import ConnectorError
from connector.events.config import EventsSettings
from connector.events.metrics import EventMetrics
from connector.events.pending import Batch, PendingChanges
from connector.events.salesforce_stream import REPLAY_CURSOR
from connector.lease import LeaseKeeper
from connector.model import StageInfo
from connector.runtime import Runtime, open_runtime
from connector.settings import ConnectionSettings
from connector.sync.engine import SyncEngine
from connector.sync.report import Outcome, RunReport
from connector.sync.targeted import run_targeted

if TYPE_CHECKING:
    from connector.daemon import Daemon

log = logging.getLogger(__name__)

#: how long a connection's stage list is reused by targeted cycles
STAGES_TTL_S = 300.0
#: the least time between two requests for one connection's full cycle
FULL_CYCLE_EVERY_S = 5.0
#: the dispatcher's longest sleep (it wakes at once when ids arrive)
IDLE_WAIT_S = 1.0
#: its sleep while a due connection waits for its gate or a worker
BUSY_WAIT_S = 0.1


class ConnectionGate:
    """One cycle of a connection at a time; a waiting scheduled cycle goes first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._scheduled_waiting = 0
        self.scheduled_running = False

    @property
    def scheduled_waiting(self) -> bool:
        return self._scheduled_waiting > 0

    @contextlib.contextmanager
    def scheduled(self) -> Iterator[None]:
        with self._cond:
            self._scheduled_waiting += 1
            while self._busy:
                self._cond.wait()
            self._scheduled_waiting -= 1
            self._busy = self.scheduled_running = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = self.scheduled_running = False
                self._cond.notify_all()

    def try_targeted(self) -> bool:
        with self._cond:
            if self._busy or self._scheduled_waiting:
                return False
            self._busy = True
            return True

    def release_targeted(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()


class YieldingStop(threading.Event):
    """A targeted cycle's stop: the daemon stops, or a scheduled cycle waits for the gate.

    The scheduled cycle lists everything the targeted one was reading, so the targeted
    one stops at its next record instead of making it wait.
    """

    def __init__(self, gate: ConnectionGate, parent: threading.Event) -> None:
        super().__init__()
        self._gate = gate
        self._parent = parent

    def is_set(self) -> bool:
        return super().is_set() or self._parent.is_set() or self._gate.scheduled_waiting


class ReadBudget:
    """Reads a connection's targeted cycles may still make: refilled continuously up to
    one batch, so a flood of events cannot spend the CRM's or the core's API allowance."""

    def __init__(
        self, per_minute: int, capacity: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(max(capacity, 1))
        self.tokens = self.capacity
        self._clock = clock
        self._at = clock()

    def take(self, n: int) -> bool:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._at) * self.rate)
        self._at = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True


@dataclass
class _Clients:
    stack: contextlib.ExitStack
    runtime: Runtime
    stages: dict[str, StageInfo] | None = None
    stages_at: float = 0.0


class EventRunner:
    """The dispatcher and its workers, for the daemon's connections."""

    def __init__(
        self,
        daemon: Daemon,
        options: EventsSettings,
        pending: PendingChanges,
        metrics: EventMetrics,
        connections: Mapping[str, ConnectionSettings],
    ) -> None:
        self.daemon = daemon
        self.options = options
        self.pending = pending
        self.metrics = metrics
        self.connections = dict(connections)
        self.gates = {name: ConnectionGate() for name in self.connections}
        self.budgets = {
            name: ReadBudget(options.max_reads_per_minute, options.batch_size)
            for name in self.connections
        }
        self._clients: dict[str, _Clients] = {}
        self._clients_lock = threading.Lock()
        self._active = 0
        self._full_requested: dict[str, float] = {}
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(
            max_workers=options.concurrency, thread_name_prefix="targeted"
        )
        self._thread = threading.Thread(target=self._dispatch, name="event-dispatch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """No new targeted cycle; True when the running ones finished within ``timeout``
        (their clients are then closed), False when one still runs."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        with self.pending.changed:
            self.pending.changed.notify_all()
        self._thread.join(timeout=timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self.pending.changed:
            while self._active and time.monotonic() < deadline:
                self.pending.changed.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            if self._active:
                return False
        with self._clients_lock:
            for name in list(self._clients):
                self._close_clients(name)
        return True

    # ------------------------------------------------------------------ scheduled cycles

    def scheduled_cycle(
        self, conn: ConnectionSettings, run: Callable[[ConnectionSettings], RunReport | None]
    ) -> RunReport | None:
        """Run the daemon's scheduled cycle of ``conn`` through its gate (see the module)."""
        gate = self.gates.get(conn.name)
        if gate is None:
            return run(conn)
        with gate.scheduled():
            batch = self.pending.take_all(conn.name)
            self._full_requested.pop(conn.name, None)
            report = run(conn)
            if report is None or report.outcome == Outcome.FAILED:
                self.pending.restore(batch)
            else:
                self._synced(conn.name, batch)
            return report

    # ------------------------------------------------------------------ dispatching

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self._dispatch_once()
            except Exception:  # the dispatcher must outlive a bug: log, go on
                log.exception("event dispatcher: unexpected error")
                wait = IDLE_WAIT_S
            with self.pending.changed:
                if not self._stop.is_set():
                    self.pending.changed.wait(wait)

    def _dispatch_once(self) -> float:
        due, next_due = self.pending.due()
        blocked = False
        for name in due:
            gate = self.gates.get(name)
            if gate is None:  # not one of ours (a stale path): drop it
                self.pending.take_all(name)
                continue
            depth = self.pending.depth(name)
            if self.pending.wants_full(name) or depth > self.options.batch_size:
                # a flood: one scheduled cycle lists it all for less than a call per id
                self._request_full(name)
                blocked = True
                continue
            if self._active >= self.options.concurrency or not gate.try_targeted():
                blocked = True
                continue
            if not self.budgets[name].take(depth):
                # more reads than events.max_reads_per_minute: the scheduled cycle instead
                gate.release_targeted()
                self._request_full(name)
                blocked = True
                continue
            batch = self.pending.take(name, self.options.batch_size)
            if batch is None or batch.size == 0:
                gate.release_targeted()
                if batch is not None:
                    self._synced(name, batch)  # only a replay position to keep
                continue
            with self.pending.changed:
                self._active += 1
            self._pool.submit(self._work, self.connections[name], batch, gate)
        for name in self.connections:
            self.metrics.pending.labels(name).set(self.pending.depth(name))
        if blocked:
            return BUSY_WAIT_S
        return min(next_due, IDLE_WAIT_S) if next_due is not None else IDLE_WAIT_S

    def _request_full(self, name: str) -> None:
        """Have the connection's scheduled job run now (at most every few seconds)."""
        now = time.monotonic()
        if now - self._full_requested.get(name, -FULL_CYCLE_EVERY_S) < FULL_CYCLE_EVERY_S:
            return
        self._full_requested[name] = now
        self.metrics.overflows.labels(name).inc()
        log.warning(
            "%s: more changes than events.max_pending (or changes no event could name): "
            "running the scheduled cycle now",
            name,
        )
        try:
            self.daemon.scheduler.modify_job(name, next_run_time=datetime.now(UTC))
        except Exception as exc:  # the scheduler stopped, or the job is gone
            log.warning("%s: cannot run the scheduled cycle now: %s", name, exc)

    def _work(self, conn: ConnectionSettings, batch: Batch, gate: ConnectionGate) -> None:
        try:
            report = self._targeted(conn, batch, gate)
            if report is None:  # another replica holds the connection: try again soon
                self.pending.restore(batch)
                return
            self.metrics.cycles.labels(conn.name, report.outcome).inc()
            self.metrics.observe_records(
                self.daemon.metrics.records, self.daemon.metrics.api_calls, report
            )
            # a failed cycle is not retried here: the scheduled poll catches what it missed
            self._synced(conn.name, batch)
        except Exception:
            log.exception("%s: the targeted cycle failed unexpectedly", conn.name)
        finally:
            gate.release_targeted()
            with self.pending.changed:
                self._active -= 1
                self.pending.changed.notify_all()

    def _synced(self, name: str, batch: Batch) -> None:
        """What a finished cycle covered: the latency of each id, the replay position."""
        now = time.monotonic()
        for arrived, source in batch.arrivals.values():
            self.metrics.latency.labels(name, source).observe(max(0.0, now - arrived))
        if batch.replay_id is not None:
            try:
                self.daemon.store.connection(name).cursors.set(REPLAY_CURSOR, str(batch.replay_id))
            except ConnectorError as exc:  # replayed again after a restart: harmless
                log.warning("%s: cannot store the replay id: %s", name, exc.message)

    # ------------------------------------------------------------------ one targeted cycle

    def _targeted(
        self, conn: ConnectionSettings, batch: Batch, gate: ConnectionGate
    ) -> RunReport | None:
        daemon = self.daemon
        try:
            lease = daemon.store.connection(conn.name).lease
            if not lease.acquire(daemon.holder, daemon.lease_ttl_s):
                return None
        except ConnectorError as exc:
            return RunReport(conn.name, outcome=Outcome.FAILED, error=exc.message)
        try:
            stop = YieldingStop(gate, daemon.stop_event)
            with LeaseKeeper(
                daemon.store, conn.name, daemon.holder, daemon.lease_ttl_s, stop
            ) as keeper:
                clients = self._clients_of(conn)
                engine = SyncEngine(
                    conn.name,
                    crm=clients.runtime.crm,
                    core=clients.runtime.core,
                    store=daemon.store,
                    mapping=clients.runtime.mapping,
                    link_for=clients.runtime.link_for,
                    concurrency=conn.core.concurrency,
                    stop=keeper.stop,
                    history=daemon.config.history,
                )
                if clients.stages is None or time.monotonic() - clients.stages_at > STAGES_TTL_S:
                    clients.stages = engine.stages()
                    clients.stages_at = time.monotonic()
                report = run_targeted(
                    engine,
                    crm_ids=batch.crm_ids,
                    referral_ids=batch.referral_ids,
                    stages=clients.stages,
                )
        except ConnectorError as exc:
            log.error("%s: the targeted cycle could not start: %s", conn.name, exc.message)
            report = RunReport(conn.name, outcome=Outcome.FAILED, error=exc.message)
        except Exception as exc:
            log.exception("%s: the targeted cycle failed unexpectedly", conn.name)
            report = RunReport(
                conn.name, outcome=Outcome.FAILED, error=f"unexpected {type(exc).__name__}"
            )
        finally:
            try:
                lease.release(daemon.holder)
            except ConnectorError as exc:
                log.warning("%s: cannot release the lease: %s", conn.name, exc.message)
        if report.outcome == Outcome.FAILED:
            with self._clients_lock:
                self._close_clients(conn.name)  # opened afresh next time
        return report

    def _clients_of(self, conn: ConnectionSettings) -> _Clients:
        mapping = self.daemon.current_mapping(conn)
        with self._clients_lock:
            clients = self._clients.get(conn.name)
            if clients is not None and clients.runtime.mapping is mapping:
                return clients
            self._close_clients(conn.name)
        stack = contextlib.ExitStack()
        runtime = stack.enter_context(
            open_runtime(
                conn,
                self.daemon.settings,
                mapping=mapping,
                sessions=self.daemon.salesforce_sessions,
            )
        )
        clients = _Clients(stack, runtime)
        with self._clients_lock:
            self._clients[conn.name] = clients
        return clients

    def _close_clients(self, name: str) -> None:
        clients = self._clients.pop(name, None)
        if clients is not None:
            try:
                clients.stack.close()
            except Exception as exc:  # closing sockets: nothing left to do about it
                log.debug("%s: closing the event clients: %s", name, exc)
