"""``connector run``: the scheduler, signal handling, health and metrics.

One APScheduler job per connection (``max_instances=1``, ``coalesce=True``,
jitter), so a slow cycle is never overlapped. SIGTERM/SIGINT stop scheduling; the
running cycle hands no more records to its push pool, lets the requests in flight
finish, saves their links, commits the CRM cursor up to the last page handled in full,
and the daemon exits 0 (within the grace period). ``/healthz``, ``/readyz`` and ``/metrics`` are served on their own port.

Everything a cycle needs from the configuration (mapping files, secret references,
the mapping's CRM matching the connection's) is checked when the daemon is built, so a
broken configuration stops the process at start-up (``connector run`` exits 4) rather
than failing every cycle.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from connector.crm.salesforce.sessions import SessionCache
from connector.daemon.health import bind_health_server
from connector.daemon.schedule import check_connection, schedule_trigger
from connector.errors import ConnectorError, MappingError
from connector.lease import LeaseKeeper, acquire, process_holder
from connector.mapping.load import load_mapping
from connector.mapping.schema import MappingFile
from connector.metrics import Metrics
from connector.readiness import DEFAULT_STALLED_AFTER_S, ConnectionHealth
from connector.runtime import Runtime, open_runtime
from connector.settings import (
    PARALLEL_CYCLES,
    ConfigFile,
    ConnectionSettings,
    Settings,
    state_url,
)
from connector.state.store import Store
from connector.sync.engine import SyncEngine
from connector.sync.report import Outcome, RunReport

if TYPE_CHECKING:
    from connector.console import ConsoleServer
    from connector.events.service import EventService

log = logging.getLogger(__name__)

#: how many of the latest run reports the daemon keeps (``Daemon.reports``)
REPORT_HISTORY = 100


@dataclass
class _MappingWatch:
    path: Path
    mapping: MappingFile
    mtime: float
    errors: list[str] = field(default_factory=list)


class Daemon:
    """Runs every enabled connection on its schedule until asked to stop."""

    def __init__(
        self,
        settings: Settings,
        config: ConfigFile,
        *,
        health_host: str = "127.0.0.1",
        health_port: int = 9464,
        grace_s: float = 30.0,
        unready_after_s: float = 0.0,
        stalled_after_s: float = DEFAULT_STALLED_AFTER_S,
        lease_ttl_s: float = 120.0,
        report_history: int = REPORT_HISTORY,
        parallel_cycles: int = PARALLEL_CYCLES,
    ) -> None:
        self.settings = settings
        self.config = config
        self.connections = [c for c in config.connections if c.enabled]
        self.grace_s = grace_s
        self.unready_after_s = unready_after_s
        self.stalled_after_s = stalled_after_s
        self.lease_ttl_s = lease_ttl_s
        self.holder = process_holder()
        self.metrics = Metrics()
        self.health: dict[str, ConnectionHealth] = {
            c.name: ConnectionHealth() for c in self.connections
        }
        self.stop_event = threading.Event()
        self.done = threading.Event()
        #: the latest run reports, oldest first (what the metrics were fed from)
        self.reports: deque[RunReport] = deque(maxlen=report_history)
        #: connections whose cycle is running now; guarded by ``_lock`` with ``stop_event``
        self._running: set[str] = set()
        self._lock = threading.RLock()  # re-entrant: request_stop may run in a signal handler
        #: set when a stop gave up waiting: a cycle thread may still be using the store
        self.abandoned = False
        #: the stop of each running cycle: the daemon's, or the loss of its lease
        self._cycle_stops: dict[str, threading.Event] = {}
        #: connections whose lease this daemon holds now; guarded by ``_lock``
        self._leases: set[str] = set()
        self._started = False
        self._mappings = {c.name: self._watch(c) for c in self.connections}
        #: each connection's Salesforce session, kept across its cycles (memory only)
        self.salesforce_sessions = SessionCache()
        for conn in self.connections:
            check_connection(conn, self._mappings[conn.name].mapping, settings)
        for c in self.connections:  # export the series at 0, so alerts can use increase()
            self.metrics.mapping_errors.labels(c.name)
        self.store = Store.open(state_url(settings, config))
        # One worker per cycle running at once: the cap on the cycles (and so on the push
        # pools, CRM pages and clients) held in memory together, whatever the number of
        # connections; a due cycle past it queues for the first free worker.
        self.scheduler = BackgroundScheduler(
            timezone=UTC, executors={"default": ThreadPoolExecutor(parallel_cycles)}
        )
        try:  # bound now: a port in use is a start-up error (OSError), not a dead daemon
            self._http: ThreadingHTTPServer | None = self._bind_http(health_host, health_port)
        except OSError:
            self.store.close()
            raise
        self.console = self._open_console()
        self.events = self._open_events()

    # ------------------------------------------------------------------ start-up

    def _watch(self, conn: ConnectionSettings) -> _MappingWatch:
        try:  # invalid at start-up: fail fast (the caller exits 4)
            mapping = load_mapping(conn.mapping, max_bytes=self.settings.max_yaml_bytes)
        except MappingError as exc:
            raise MappingError(
                f"connections[{conn.name}].mapping: {exc.message}", exc.problems
            ) from None
        return _MappingWatch(conn.mapping, mapping, conn.mapping.stat().st_mtime)

    def _open_console(self) -> ConsoleServer | None:
        """The admin console on its own port when the config enables it (bound now)."""
        if not self.config.console.enabled:
            return None
        from connector.console import open_console
        from connector.console.live import DaemonLive

        try:
            return open_console(self.config, self.settings, self.store, DaemonLive(self))
        except BaseException:
            if self._http is not None:
                self._http.server_close()
            self.store.close()
            raise

    def _open_events(self) -> EventService | None:
        """Near-real-time sync when the config enables it (its port bound now)."""
        from connector.events.service import open_events

        try:
            return open_events(self)
        except BaseException:
            if self._http is not None:
                self._http.server_close()
            if self.console is not None:
                self.console.stop()
            self.store.close()
            raise

    def trigger(self, conn: ConnectionSettings) -> IntervalTrigger | CronTrigger:
        """When ``conn`` runs: its interval or cron schedule, with jitter."""
        return schedule_trigger(conn)

    def start(self) -> None:
        """Schedule every connection (the first cycle at once) and open the health port."""
        for conn in self.connections:
            self.scheduler.add_job(
                self._cycle,
                trigger=self.trigger(conn),
                args=[conn],
                id=conn.name,
                name=conn.name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=datetime.now(UTC),
            )
        self.scheduler.start()
        self._started = True
        assert self._http is not None
        threading.Thread(target=self._http.serve_forever, name="health", daemon=True).start()
        if self.console is not None:
            self.console.start()
        if self.events is not None:
            self.events.start()
        log.info(
            "daemon started: %d connection(s), health on %s:%d",
            len(self.connections),
            *self.health_address,
        )

    @property
    def health_address(self) -> tuple[str, int]:
        assert self._http is not None
        host, port = self._http.server_address[:2]
        return str(host), int(port)

    # ------------------------------------------------------------------ cycles

    def current_mapping(self, conn: ConnectionSettings) -> MappingFile:
        """The mapping to use now: reloaded when the file changed, the last valid one if broken."""
        watch = self._mappings[conn.name]
        try:
            mtime = watch.path.stat().st_mtime
        except OSError:
            return watch.mapping
        if mtime == watch.mtime:
            return watch.mapping
        watch.mtime = mtime
        try:
            watch.mapping = load_mapping(watch.path, max_bytes=self.settings.max_yaml_bytes)
            watch.errors = []
            log.info("%s: mapping %s reloaded", conn.name, watch.path)
        except MappingError as exc:
            watch.errors = exc.problems
            self.metrics.mapping_errors.labels(conn.name).inc()
            log.error(
                "%s: the edited mapping is invalid; keeping the last valid one:\n%s",
                conn.name,
                exc.message,
            )
        return watch.mapping

    def _cycle(self, conn: ConnectionSettings) -> None:
        """The scheduled job: one cycle under the connection's lease, never after a stop."""
        with self._lock:  # a stop and the start of a cycle never interleave
            if self.stop_event.is_set():
                return
            self._running.add(conn.name)
        health = self.health[conn.name]
        health.started(time.monotonic())
        try:
            if self.events is not None:  # events wait while it runs, and it covers theirs
                report = self.events.scheduled_cycle(conn, self._leased_cycle)
            else:
                report = self._leased_cycle(conn)
        finally:
            health.stopped()
            with self._lock:
                self._running.discard(conn.name)
        if report is not None:
            self._record(conn, report)

    def _leased_cycle(self, conn: ConnectionSettings) -> RunReport | None:
        try:
            leased = acquire(self.store, conn.name, self.holder, self.lease_ttl_s)
        except ConnectorError as exc:
            log.error("%s: cannot take the connection's lease: %s", conn.name, exc.message)
            return RunReport(conn.name, outcome=Outcome.FAILED, error=exc.message)
        if not leased:
            log.info("%s: another replica holds the lease; skipping this cycle", conn.name)
            return None
        with self._lock:
            self._leases.add(conn.name)
        try:
            # renewed on its own thread (a stalled cycle keeps it too); lost: stop at a page
            with LeaseKeeper(
                self.store, conn.name, self.holder, self.lease_ttl_s, self.stop_event
            ) as keeper:
                self._cycle_stops[conn.name] = keeper.stop
                return self.run_cycle(conn)
        finally:
            self._cycle_stops.pop(conn.name, None)
            self._release_lease(conn.name)

    def _release_lease(self, name: str) -> None:
        """Give up this daemon's lease on ``name`` (once; later calls do nothing)."""
        with self._lock:
            if name not in self._leases:
                return
            self._leases.discard(name)
        try:
            self.store.connection(name).lease.release(self.holder)
        except ConnectorError as exc:  # it expires by itself after lease_ttl_s
            log.warning("%s: cannot release the lease: %s", name, exc.message)

    def release_leases(self) -> None:
        """Give up every lease this daemon holds (a cycle it abandons keeps none)."""
        with self._lock:
            held = sorted(self._leases)
        for name in held:
            self._release_lease(name)

    def run_cycle(self, conn: ConnectionSettings) -> RunReport:
        """One cycle of ``conn``; every failure becomes a failed report, never an exception."""
        mapping = self.current_mapping(conn)
        stop = self._cycle_stops.get(conn.name, self.stop_event)
        try:
            with open_runtime(
                conn, self.settings, mapping=mapping, sessions=self.salesforce_sessions
            ) as rt:
                return self._engine(conn, rt, stop).run()
        except ConnectorError as exc:
            log.error("%s: the cycle could not start: %s", conn.name, exc.message)
            return RunReport(conn.name, outcome=Outcome.FAILED, error=exc.message)
        except Exception as exc:  # a bug must not kill the job: report it, try next time
            log.exception("%s: the cycle failed unexpectedly", conn.name)
            return RunReport(
                conn.name, outcome=Outcome.FAILED, error=f"unexpected {type(exc).__name__}"
            )

    def _engine(self, conn: ConnectionSettings, rt: Runtime, stop: threading.Event) -> SyncEngine:
        health = self.health[conn.name]
        return SyncEngine(
            conn.name,
            crm=rt.crm,
            core=rt.core,
            store=self.store,
            mapping=rt.mapping,
            link_for=rt.link_for,
            concurrency=conn.core.concurrency,
            stop=stop,
            history=self.config.history,
            holder=self.holder,
            progress=lambda kind, n: health.progressed(time.monotonic()),
        )

    def _record(self, conn: ConnectionSettings, report: RunReport) -> None:
        self.reports.append(report)
        self.health[conn.name].finished(report.outcome, time.monotonic())
        self.metrics.observe(report)
        try:
            wall = datetime.now(UTC)
            for cursor in ("crm", "core"):
                value = self.store.connection(conn.name).cursors.get(cursor)
                self.metrics.set_lag(conn.name, cursor, value, wall)
            self.metrics.dead_letters.labels(conn.name).set(
                len(self.store.list_dead_letters(conn.name))
            )
        except ConnectorError as exc:  # /readyz reports the store; keep the last values
            log.warning("%s: cannot read cursors for the metrics: %s", conn.name, exc.message)

    # ------------------------------------------------------------------ health

    def alive(self) -> bool:
        """The process serves and the scheduler thread runs (``/healthz``)."""
        thread = getattr(self.scheduler, "_thread", None)
        thread_alive = thread is None or thread.is_alive()
        return bool(self.scheduler.running) and thread_alive and not self.done.is_set()

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Ready when the state store answers and no connection failing or stalled.

        ``unready_after_s`` is how long a connection's cycles may keep failing or being
        throttled before the daemon reports unready (0: at the first such cycle);
        ``stalled_after_s`` how long a running cycle may go without moving a record (see
        :mod:`connector.readiness`). A stopping daemon is unready.
        """
        detail: dict[str, Any] = {"connections": {}}
        ok = not self.stop_event.is_set()
        if not ok:
            detail["stopping"] = True
        try:
            self.store.ping()
            detail["state"] = "ok"
        except ConnectorError as exc:
            ok = False
            detail["state"] = exc.message
        now = time.monotonic()
        for name, h in self.health.items():
            state = h.state(
                now, unready_after_s=self.unready_after_s, stalled_after_s=self.stalled_after_s
            )
            state["mapping_errors"] = self._mappings[name].errors
            detail["connections"][name] = state
            ok = ok and not state["failing"] and not state["stalled"]
        return ok, detail

    def _bind_http(self, host: str, port: int) -> ThreadingHTTPServer:
        return bind_health_server(host, port, self)

    # ------------------------------------------------------------------ shutdown

    def request_stop(self, *_: object) -> None:
        """Stop scheduling; safe from a signal handler (it only sets an event)."""
        with self._lock:
            self.stop_event.set()

    def running(self) -> set[str]:
        """The connections whose cycle is running now."""
        with self._lock:
            return set(self._running)

    def wait(self) -> int:
        """Block until a stop is requested, then shut down within the grace period.

        Returns 0 when every running cycle finished (its last page committed) in time,
        130 when the grace period ran out first; ``abandoned`` is then True, the leases
        of the unfinished cycles are released and the store is left open for the cycle
        thread (the caller should exit the process). Whatever way the wait ends, no
        lease outlives it.
        """
        try:
            return self._shut_down()
        except BaseException:
            self.abandoned = True
            self.release_leases()
            raise

    def _shut_down(self) -> int:
        while not self.stop_event.wait(1.0):
            pass
        log.info(
            "stop requested: no new cycles; running cycles finish the requests in flight "
            "(grace %.0fs)",
            self.grace_s,
        )
        if self.scheduler.running:
            self.scheduler.pause()
        deadline = time.monotonic() + self.grace_s
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        still = sorted(self.running())
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.events is not None and not self.events.stop(max(0.1, deadline - time.monotonic())):
            still.append("a targeted cycle")
        self.done.set()
        if self._http is not None:
            if self._started:
                self._http.shutdown()
            self._http.server_close()
        if self.console is not None:
            self.console.stop()
        if still:
            self.abandoned = True
            # The process exits now with the cycle unfinished: its lease goes with it, or a
            # restart (or another replica) would skip the connection until the lease expired.
            self.release_leases()
            log.error(
                "the cycle of %s did not finish within the grace period of %.0fs; exiting "
                "anyway (the committed cursor is safe: at most one page is replayed; the "
                "lease is released)",
                ", ".join(still),
                self.grace_s,
            )
            return 130
        self.store.close()
        log.info("daemon stopped cleanly")
        return 0

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
