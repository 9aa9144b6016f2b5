"""A Salesforce connection's Change Data Capture subscriber, resumed from its replay id.

One thread per connection: sign in as the connection does, open a CometD session
(:mod:`connector.events.cometd`), subscribe to the channel from the replay id stored
in the state store (cursor ``salesforce_replay``, written once the records an event
named are synced), and hand every event's notice to the queue. After a restart the
subscription starts right after the last synced event, so the events published while
the daemon was down are delivered then. A replay id Salesforce no longer retains
(about 72 hours) is answered by subscribing to new events and running a full cycle,
which lists whatever changed meanwhile.

Why the Streaming API and not the Pub/Sub API: the Pub/Sub API is gRPC with Avro
payloads (grpcio, the generated stubs and an Avro decoder as dependencies), and no
Python client for either API is kept up on PyPI; CometD long polling is JSON over
the https the connector already speaks (httpx, the same TLS settings and proxy
rules), and Salesforce documents it for Change Data Capture with the same replay ids.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection

import httpx

from connector.crm.factory import build_salesforce
from connector.crm.salesforce_auth import SalesforceAuth, check_instance_url
from connector.errors import ConnectorError
from connector.events.cometd import NEW_EVENTS, CometdSession, ReplayRefused, SessionLost
from connector.events.metrics import EventMetrics
from connector.events.notices import SALESFORCE, Notice, Unreadable, salesforce_notice
from connector.runtime import tls_context
from connector.settings import ConnectionSettings, SalesforceSettings, Settings
from connector.state.store import Store

log = logging.getLogger(__name__)

REPLAY_CURSOR = "salesforce_replay"


def entity_of(channel: str) -> str:
    """The object a change event channel is about (``Thing__ChangeEvent`` → ``Thing__c``)."""
    name = channel.removeprefix("/data/").removesuffix("ChangeEvent")
    return name + "c" if name.endswith("__") else name


class SalesforceSubscriber:
    """Keeps one connection subscribed until ``stop`` is set."""

    def __init__(
        self,
        conn: ConnectionSettings,
        settings: Settings,
        store: Store,
        *,
        sink: Callable[[str, Notice], None],
        metrics: EventMetrics,
        stop: threading.Event,
        connector_fields: Callable[[], Collection[str]],
    ) -> None:
        assert isinstance(conn.crm, SalesforceSettings)
        self.conn = conn
        self.crm: SalesforceSettings = conn.crm
        self.settings = settings
        self.store = store
        self.sink = sink
        self.metrics = metrics
        self.stop = stop
        self.connector_fields = connector_fields
        self.options = conn.events.salesforce
        self.entity = entity_of(self.options.channel)
        #: set while subscribed (tests wait on it)
        self.subscribed = threading.Event()
        #: the replay id the last subscription started from (None: new events only)
        self.started_from: int | None = None
        self.sessions = 0
        self._http: httpx.Client | None = None
        self._thread = threading.Thread(target=self._run, name=f"cdc-{conn.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the thread (``stop`` set); a long poll in progress is cut short."""
        http = self._http
        if http is not None:
            http.close()
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        quick_retry = True
        while not self.stop.is_set():
            try:
                self._session()
                quick_retry = True
            except SessionLost as exc:
                log.info(
                    "%s: streaming session ended (%s); signing in again",
                    self.conn.name,
                    exc.message,
                )
                if quick_retry:
                    quick_retry = False
                    continue
            except ConnectorError as exc:
                if self.stop.is_set():
                    break  # the daemon stops: the long poll was cut short on purpose
                log.warning(
                    "%s: Change Data Capture unavailable (%s); trying again in %.0fs; "
                    "the scheduled cycles go on",
                    self.conn.name,
                    exc.message,
                    self.options.reconnect_s,
                )
            except Exception:
                if self.stop.is_set():
                    break
                log.exception("%s: the Change Data Capture subscriber failed", self.conn.name)
            finally:
                self.subscribed.clear()
            self.stop.wait(self.options.reconnect_s)

    def _stored_replay(self) -> int | None:
        value = self.store.connection(self.conn.name).cursors.get(REPLAY_CURSOR)
        try:
            return int(value) if value is not None else None
        except ValueError:
            log.warning(
                "%s: the stored replay id %r is not a number; ignored", self.conn.name, value
            )
            return None

    def _session(self) -> None:
        where = f"connections[{self.conn.name}]"
        adapter = build_salesforce(self.crm, where, self.settings.secrets_dir)
        auth: SalesforceAuth = adapter.auth  # type: ignore[attr-defined]
        try:
            token = auth.token()
            origin = check_instance_url(token.instance_url, self.crm.allowed_instance_origin)
            with httpx.Client(verify=tls_context(self.crm.ca_file), follow_redirects=False) as http:
                self._http = http
                session = CometdSession(
                    http,
                    origin,
                    token.access_token,
                    api_version=self.crm.api_version,
                    poll_timeout_s=self.options.poll_timeout_s,
                )
                self.sessions += 1
                session.handshake()
                self._subscribe(session)
                try:
                    while not self.stop.is_set():
                        for message in session.connect():
                            self._deliver(message)
                finally:
                    if not self.stop.is_set():
                        session.disconnect()
        finally:
            self._http = None
            adapter.close()

    def _subscribe(self, session: CometdSession) -> None:
        stored = self._stored_replay()
        channel = self.options.channel
        try:
            session.subscribe(channel, stored if stored is not None else NEW_EVENTS)
            self.started_from = stored
        except ReplayRefused as exc:
            log.warning(
                "%s: %s; subscribing to new events, and a full cycle lists what changed",
                self.conn.name,
                exc.message,
            )
            session.subscribe(channel, NEW_EVENTS)
            self.started_from = None
            self.sink(self.conn.name, Notice(SALESFORCE, full=True))
        self.subscribed.set()
        log.info(
            "%s: subscribed to %s from %s",
            self.conn.name,
            channel,
            "replay id " + str(stored) if self.started_from is not None else "new events",
        )

    def _deliver(self, message: dict[str, object]) -> None:
        self.metrics.received.labels(SALESFORCE).inc()
        if message.get("channel") != self.options.channel:
            self.metrics.ignored.labels(SALESFORCE).inc()
            return
        try:
            notice = salesforce_notice(
                message, entity=self.entity, connector_fields=self.connector_fields()
            )
        except Unreadable as exc:
            self.metrics.rejected.labels(SALESFORCE, exc.reason).inc()
            log.warning("%s: a change event could not be read: %s", self.conn.name, exc.message)
            return
        self.metrics.accepted.labels(SALESFORCE).inc()
        if notice is None:
            self.metrics.ignored.labels(SALESFORCE).inc()
            return
        self.sink(self.conn.name, notice)
