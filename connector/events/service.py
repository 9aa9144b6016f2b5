"""The event machinery of one daemon: built from the config, checked at start-up, stopped last.

:func:`open_events` returns None unless ``events.enabled``. Every secret is resolved
(and registered for redaction) and every setting checked when the daemon is built,
so a wrong event setting stops ``connector run`` at start-up (exit 4), naming it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import SecretStr

from connector.errors import ConfigError
from connector.events.callbacks import Callbacks, DataverseEndpoint
from connector.events.metrics import EventMetrics
from connector.events.notices import Notice
from connector.events.pending import PendingChanges
from connector.events.receiver import EventReceiver
from connector.events.runner import EventRunner
from connector.events.salesforce_stream import SalesforceSubscriber
from connector.events.verify import SigningCertificates
from connector.mapping.schema import MappingFile
from connector.settings import ConnectionSettings, DataverseSettings, SalesforceSettings
from connector.sync.report import RunReport

if TYPE_CHECKING:
    from connector.daemon import Daemon

log = logging.getLogger(__name__)


def connector_fields(mapping: MappingFile) -> frozenset[str]:
    """The CRM fields only the connector writes: a change of those alone is its own echo."""
    written = {f for f in mapping.status_fields.named().values() if f}
    return frozenset(written - set(mapping.crm_fields()))


class EventService:
    """The receiver, the Salesforce subscribers, the queue and the runner of one daemon."""

    def __init__(self, daemon: Daemon) -> None:
        options = daemon.config.events
        self.daemon = daemon
        self.options = options
        self.metrics = EventMetrics(daemon.metrics.registry)
        self.pending = PendingChanges(
            max_pending=options.max_pending, debounce_s=options.debounce_s
        )
        self.stop_event = threading.Event()
        connections = {
            c.name: c for c in daemon.connections if c.events.partner_center or c.events.crm
        }
        self.runner = EventRunner(daemon, options, self.pending, self.metrics, connections)
        self.subscribers = [
            SalesforceSubscriber(
                conn,
                daemon.settings,
                daemon.store,
                sink=self.accept,
                metrics=self.metrics,
                stop=self.stop_event,
                connector_fields=self._fields_of(conn),
            )
            for conn in connections.values()
            if conn.events.crm and isinstance(conn.crm, SalesforceSettings)
        ]
        self.callbacks = self._callbacks(list(connections.values()))
        self.receiver: EventReceiver | None = None
        if self.callbacks.partner_center or self.callbacks.dataverse:
            self.receiver = EventReceiver(options, self.callbacks)

    def _fields_of(self, conn: ConnectionSettings) -> Callable[[], frozenset[str]]:
        return lambda: connector_fields(self.daemon.current_mapping(conn))

    def _callbacks(self, connections: list[ConnectionSettings]) -> Callbacks:
        secrets_dir = self.daemon.settings.secrets_dir
        partner_center = [c.name for c in connections if c.events.partner_center]
        certificates = None
        token: SecretStr | None = None
        if partner_center:
            pc = self.options.partner_center
            certificates = SigningCertificates(pc)
            if pc.url_token is not None:
                token = pc.url_token.resolve("events.partner_center.url_token", secrets_dir)
        dataverse = {}
        for conn in connections:
            if not (conn.events.crm and isinstance(conn.crm, DataverseSettings)):
                continue
            auth = conn.events.dataverse
            where = f"connections[{conn.name}].events.dataverse"
            assert auth is not None  # checked by check_events
            mapping = self.daemon.current_mapping(conn)
            dataverse[conn.name] = DataverseEndpoint(
                auth, auth.secret.resolve(f"{where}.secret", secrets_dir), connector_fields(mapping)
            )
        return Callbacks(
            metrics=self.metrics,
            sink=self.accept,
            partner_center=partner_center,
            certificates=certificates,
            url_token=token,
            dataverse=dataverse,
        )

    # ------------------------------------------------------------------ the queue

    def accept(self, connection: str, notice: Notice) -> None:
        """Queue what a notice names (the connector's own writes only keep their position)."""
        if notice.own_write:
            self.metrics.ignored.labels(notice.source).inc()
            notice = Notice(notice.source, replay_id=notice.replay_id)
            if notice.replay_id is None:
                return
        self.pending.add(connection, notice)

    def scheduled_cycle(
        self, conn: ConnectionSettings, run: Callable[[ConnectionSettings], RunReport | None]
    ) -> RunReport | None:
        return self.runner.scheduled_cycle(conn, run)

    # ------------------------------------------------------------------ life

    def start(self) -> None:
        self.runner.start()
        if self.receiver is not None:
            self.receiver.start()
        for subscriber in self.subscribers:
            subscriber.start()

    def stop(self, timeout: float) -> bool:
        """Stop taking events; True when the targeted cycles running finished in ``timeout``."""
        deadline = time.monotonic() + timeout
        self.stop_event.set()
        if self.receiver is not None:
            self.receiver.stop()
        for subscriber in self.subscribers:
            subscriber.join(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
        finished = self.runner.stop(max(0.1, deadline - time.monotonic()))
        if self.callbacks.certificates is not None:
            self.callbacks.certificates.close()
        return finished


def check_events(daemon: Daemon) -> None:
    """Start-up checks of the event settings: each problem names its setting."""
    enabled = daemon.config.events.enabled
    for conn in daemon.connections:
        wants = conn.events
        where = f"connections[{conn.name}].events"
        if (wants.partner_center or wants.crm) and not enabled:
            raise ConfigError(
                f"{where}: events are asked for but the receiver is off; set events.enabled: "
                "true (or remove the connection's events)"
            )
        if wants.crm and isinstance(conn.crm, DataverseSettings) and wants.dataverse is None:
            raise ConfigError(
                f"{where}.dataverse: a Dataverse connection's events are webhook posts; give "
                "how they authenticate, e.g. dataverse: {kind: header, name: x-connector-key, "
                "secret: {env: NAME}}"
            )


def open_events(daemon: Daemon) -> EventService | None:
    """The daemon's event service (not started), or None when events are off."""
    check_events(daemon)
    if not daemon.config.events.enabled:
        return None
    return EventService(daemon)
