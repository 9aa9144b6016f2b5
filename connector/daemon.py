"""``connector run``: the scheduler, signal handling, health and metrics.

One APScheduler job per connection (``max_instances=1``, ``coalesce=True``,
jitter), so a slow cycle is never overlapped. SIGTERM/SIGINT stop scheduling,
let the running cycle finish its current page and commit, and exit 0 within the
grace period. ``/healthz``, ``/readyz`` and ``/metrics`` are served on their own port.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connector.errors import ConnectorError, MappingError
from connector.mapping.load import load_mapping
from connector.mapping.schema import MappingFile
from connector.metrics import Metrics
from connector.runtime import Runtime, open_runtime
from connector.settings import ConfigFile, ConnectionSettings, Settings, state_url
from connector.state.store import Store
from connector.sync.engine import SyncEngine
from connector.sync.report import Outcome, RunReport

log = logging.getLogger(__name__)


@dataclass
class ConnectionHealth:
    last_outcome: str | None = None
    last_finished: float | None = None
    failing_since: float | None = None
    cycles: int = 0
    running: bool = False


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
        lease_ttl_s: float = 120.0,
    ) -> None:
        self.settings = settings
        self.config = config
        self.connections = [c for c in config.connections if c.enabled]
        self.grace_s = grace_s
        self.unready_after_s = unready_after_s
        self.lease_ttl_s = lease_ttl_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.metrics = Metrics()
        self.health: dict[str, ConnectionHealth] = {
            c.name: ConnectionHealth() for c in self.connections
        }
        self.stop_event = threading.Event()
        self.done = threading.Event()
        self._mappings = {c.name: self._watch(c) for c in self.connections}
        self.store = Store.open(state_url(settings, config))
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self._http: ThreadingHTTPServer | None = None
        self._health_addr = (health_host, health_port)

    # ------------------------------------------------------------------ start-up

    def _watch(self, conn: ConnectionSettings) -> _MappingWatch:
        mapping = load_mapping(conn.mapping)  # invalid at start-up: fail fast (caller exits 4)
        return _MappingWatch(conn.mapping, mapping, conn.mapping.stat().st_mtime)

    def start(self) -> None:
        for conn in self.connections:
            self.scheduler.add_job(
                self._cycle,
                trigger=_trigger(conn),
                args=[conn],
                id=conn.name,
                name=conn.name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=datetime.now(UTC),
            )
        self.scheduler.start()
        self._start_http()
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
            watch.mapping = load_mapping(watch.path)
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
        if self.stop_event.is_set():
            return
        health = self.health[conn.name]
        if not self.store.acquire_lease(conn.name, self.holder, self.lease_ttl_s):
            log.info("%s: another replica holds the lease; skipping this cycle", conn.name)
            return
        health.running = True
        try:
            report = self.run_cycle(conn)
        finally:
            health.running = False
            self.store.release_lease(conn.name, self.holder)
        self._record(conn, report)

    def run_cycle(self, conn: ConnectionSettings) -> RunReport:
        mapping = self.current_mapping(conn)
        try:
            with open_runtime(conn, self.settings, mapping=mapping) as rt:
                return self._engine(conn, rt).run()
        except ConnectorError as exc:
            log.error("%s: the cycle could not start: %s", conn.name, exc.message)
            return RunReport(conn.name, outcome=Outcome.FAILED, error=exc.message)

    def _engine(self, conn: ConnectionSettings, rt: Runtime) -> SyncEngine:
        return SyncEngine(
            conn.name,
            crm=rt.crm,
            core=rt.core,
            store=self.store,
            mapping=rt.mapping,
            link_for=rt.link_for,
            concurrency=conn.core.concurrency,
            stop=self.stop_event,
        )

    def _record(self, conn: ConnectionSettings, report: RunReport) -> None:
        health = self.health[conn.name]
        now = time.monotonic()
        health.cycles += 1
        health.last_outcome = report.outcome
        health.last_finished = now
        if report.outcome == Outcome.FAILED:
            health.failing_since = health.failing_since or now
        else:
            health.failing_since = None
        self.metrics.observe(report)
        wall = datetime.now(UTC)
        for cursor in ("crm", "core"):
            self.metrics.set_lag(conn.name, cursor, self.store.get_cursor(conn.name, cursor), wall)
        self.metrics.dead_letters.labels(conn.name).set(
            len(self.store.list_dead_letters(conn.name))
        )

    # ------------------------------------------------------------------ health

    def ready(self) -> tuple[bool, dict[str, Any]]:
        detail: dict[str, Any] = {"connections": {}}
        ok = True
        try:
            self.store.ping()
            detail["state"] = "ok"
        except ConnectorError as exc:
            ok = False
            detail["state"] = exc.message
        now = time.monotonic()
        for name, h in self.health.items():
            failing = h.failing_since is not None and now - h.failing_since >= self.unready_after_s
            watch = self._mappings[name]
            state = {
                "last_outcome": h.last_outcome,
                "cycles": h.cycles,
                "failing": failing,
                "mapping_errors": watch.errors,
            }
            detail["connections"][name] = state
            ok = ok and not failing
        return ok, detail

    def _start_http(self) -> None:
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    alive = daemon.scheduler.running and not daemon.done.is_set()
                    self._send(200 if alive else 503, {"status": "ok" if alive else "stopping"})
                elif self.path == "/readyz":
                    ok, detail = daemon.ready()
                    self._send(200 if ok else 503, {"ready": ok, **detail})
                elif self.path == "/metrics":
                    body = generate_latest(daemon.metrics.registry)
                    self.send_response(200)
                    self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self._send(404, {"error": "not found"})

            def _send(self, status: int, data: dict[str, Any]) -> None:
                body = json.dumps(data, default=str).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._http = ThreadingHTTPServer(self._health_addr, Handler)
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, name="health", daemon=True).start()

    # ------------------------------------------------------------------ shutdown

    def request_stop(self, *_: object) -> None:
        if not self.stop_event.is_set():
            log.info("stop requested: no new cycles; the running cycle finishes its page")
            self.stop_event.set()

    def wait(self) -> int:
        """Block until a stop is requested, then shut down within the grace period."""
        self.stop_event.wait()
        self.scheduler.pause()
        deadline = time.monotonic() + self.grace_s
        while any(h.running for h in self.health.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        clean = not any(h.running for h in self.health.values())
        self.scheduler.shutdown(wait=False)
        self.done.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        self.store.close()
        if not clean:
            log.error("the running cycle did not finish within %.0fs; exiting anyway", self.grace_s)
            return 1
        log.info("daemon stopped cleanly")
        return 0

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)


def _trigger(conn: ConnectionSettings) -> IntervalTrigger | CronTrigger:
    schedule = conn.schedule
    if schedule.cron:
        return CronTrigger.from_crontab(
            schedule.cron, timezone=UTC, jitter=schedule.jitter_s or None
        )
    return IntervalTrigger(seconds=schedule.interval_s or 300, jitter=schedule.jitter_s or None)
