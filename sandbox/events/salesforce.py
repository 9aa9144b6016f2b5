"""Salesforce Change Data Capture in the sandbox, served over the Streaming API (CometD).

Each committed Opportunity becomes an ``OpportunityChangeEvent`` (message structure of
the Change Data Capture guide: ``{schema, payload: {ChangeEventHeader, changed
fields…}, event: {replayId}}``) on ``/data/OpportunityChangeEvent``, kept for replay.
``POST /cometd/{version}`` speaks Bayeux: ``/meta/handshake`` (advertising the replay
extension), ``/meta/subscribe`` with ``ext.replay`` (a replay id: the events after it;
``-1``: new ones; ``-2``: every retained one; an id older than what is retained is
refused with Salesforce's ``400::The replayId … was invalid`` error), ``/meta/connect``
held until events come or ``hold_s`` passes, ``/meta/disconnect``. A client that has
not connected for a minute is forgotten (``403::Unknown client``, advice handshake).
Events are published from the first handshake on (or ``PUT /_sandbox/events``
``{"salesforce": {"enabled": true}}``): an org that nobody subscribes to costs nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.events.bus import EventBus

CHANNEL = "/data/OpportunityChangeEvent"
CHANNELS = (CHANNEL, "/data/ChangeEvents")
#: events kept for replay (Salesforce keeps 72 hours)
RETENTION = 100_000
#: events one connect answer carries at most
CONNECT_BATCH = 500
#: seconds after its last connect a client is forgotten
CLIENT_IDLE_S = 60.0
MAX_CLIENTS = 256
_SKIPPED_FIELDS = frozenset({"SystemModstamp", "attributes"})


@dataclass
class _Client:
    position: int | None = None  # the next log position to deliver
    channels: set[str] = field(default_factory=set)
    seen: float = field(default_factory=time.monotonic)
    delivered: list[int] = field(default_factory=list)


class ChangeStream:
    """The retained change events and the CometD clients reading them."""

    def __init__(self, bus: EventBus, now_ms: Callable[[], int]) -> None:
        self.bus = bus
        self._now_ms = now_ms
        self.hold_s = 10.0
        self._lock = threading.Lock()
        #: (position, replay id, message)
        self._log: deque[tuple[int, int, dict[str, Any]]] = deque(maxlen=RETENTION)
        self._positions = itertools.count(1)
        self._replay_ids = itertools.count(1)
        self._clients: dict[str, _Client] = {}
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._commits = itertools.count(10_650_000_000)
        #: (client id, channel, replay asked for) of every subscription, for the tests
        self.subscriptions: deque[tuple[str, str, int | None]] = deque(maxlen=1000)
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True
        self.bus.senders["salesforce"] = self._build

    # ------------------------------------------------------------------ publishing

    def _build(
        self, kind: str, record_id: str, record: dict[str, Any]
    ) -> Callable[[], bool] | None:
        return None  # Salesforce events come from change(), which knows the old record

    def change(self, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        """An Opportunity was committed: publish its change event (through the bus's faults)."""
        if not self.enabled:
            return
        if old is None:
            change_type, fields = "CREATE", [k for k in new if k not in _SKIPPED_FIELDS]
        elif new.get("IsDeleted") and not old.get("IsDeleted"):
            change_type, fields = "DELETE", []
        elif old.get("IsDeleted") and not new.get("IsDeleted"):
            change_type, fields = "UNDELETE", []
        else:
            change_type = "UPDATE"
            keys = set(old) | set(new)
            fields = sorted(
                k for k in keys if k not in _SKIPPED_FIELDS and old.get(k) != new.get(k)
            )
        header = {
            "entityName": "Opportunity",
            "recordIds": [new["Id"]],
            "changeType": change_type,
            "changeOrigin": "com/salesforce/api/rest/59.0",
            "transactionKey": str(uuid.uuid4()),
            "sequenceNumber": 1,
            "commitTimestamp": self._now_ms(),
            "commitNumber": next(self._commits),
            "commitUser": "005000000000001AAA",
            "changedFields": fields if change_type == "UPDATE" else [],
        }
        payload: dict[str, Any] = {"ChangeEventHeader": header}
        if change_type in ("CREATE", "UPDATE"):
            payload.update({k: new.get(k) for k in fields if k != "Id"})
        message = {"schema": "sandbox-opportunity-change-event", "payload": payload}
        self.bus.submit("salesforce", lambda: self._append(message))

    def _append(self, message: dict[str, Any]) -> bool:
        with self._lock:
            replay = message.setdefault("event", {}).get("replayId")
            if replay is None:  # a duplicate delivery repeats the same replay id
                replay = next(self._replay_ids)
                message["event"] = {"replayId": replay}
            self._log.append((next(self._positions), replay, message))
            waiters = list(self._waiters)
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)
        return True

    # ------------------------------------------------------------------ Bayeux

    def routes(self, check_token: Callable[[Request], bool]) -> list[BaseRoute]:
        async def cometd(request: Request) -> Response:
            if not check_token(request):
                return JSONResponse(
                    [{"error": "401::Authentication invalid", "successful": False}], status_code=401
                )
            try:
                messages = await request.json()
            except ValueError:
                return JSONResponse(
                    [{"successful": False, "error": "400::Bad JSON"}], status_code=400
                )
            if isinstance(messages, dict):
                messages = [messages]
            replies: list[dict[str, Any]] = []
            for message in messages if isinstance(messages, list) else []:
                if isinstance(message, dict):
                    replies.extend(await self._handle(message))
            return JSONResponse(replies)

        return [Route("/cometd/{version}", cometd, methods=["POST"])]

    async def _handle(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        channel = message.get("channel")
        reply: dict[str, Any] = {"channel": channel}
        if "id" in message:
            reply["id"] = message["id"]
        if channel == "/meta/handshake":
            return [self._handshake(reply)]
        client_id = str(message.get("clientId") or "")
        with self._lock:
            client = self._clients.get(client_id)
        if client is None:
            reply.update(
                successful=False, error="403::Unknown client", advice={"reconnect": "handshake"}
            )
            return [reply]
        client.seen = time.monotonic()
        reply["clientId"] = client_id
        if channel == "/meta/subscribe":
            return [self._subscribe(client_id, client, message, reply)]
        if channel == "/meta/connect":
            events = await self._wait_for_events(client)
            reply.update(
                successful=True,
                advice={"reconnect": "retry", "interval": 0, "timeout": int(self.hold_s * 1000)},
            )
            return [*events, reply]
        if channel == "/meta/disconnect":
            with self._lock:
                self._clients.pop(client_id, None)
            reply["successful"] = True
            return [reply]
        reply.update(successful=False, error=f"400::Unknown channel {channel}")
        return [reply]

    def _handshake(self, reply: dict[str, Any]) -> dict[str, Any]:
        # a subscriber's first handshake turns publishing on (Change Data Capture selected)
        self.enable()
        now = time.monotonic()
        with self._lock:
            for key in [k for k, c in self._clients.items() if now - c.seen > CLIENT_IDLE_S]:
                del self._clients[key]
            if len(self._clients) >= MAX_CLIENTS:
                reply.update(
                    successful=False,
                    error="503::Too many clients",
                    advice={"reconnect": "retry", "interval": 1000},
                )
                return reply
            client_id = secrets.token_urlsafe(12)
            self._clients[client_id] = _Client()
        reply.update(
            successful=True,
            version="1.0",
            minimumVersion="1.0",
            clientId=client_id,
            supportedConnectionTypes=["long-polling"],
            ext={"replay": True, "payload.format": True},
            advice={"reconnect": "retry", "interval": 0, "timeout": int(self.hold_s * 1000)},
        )
        return reply

    def _subscribe(
        self, client_id: str, client: _Client, message: dict[str, Any], reply: dict[str, Any]
    ) -> dict[str, Any]:
        channel = message.get("subscription")
        reply["subscription"] = channel
        if channel not in CHANNELS:
            reply.update(successful=False, error=f"404::The channel {channel} does not exist")
            return reply
        ext = message.get("ext")
        replay_map = ext.get("replay") if isinstance(ext, dict) else None
        asked = replay_map.get(channel) if isinstance(replay_map, dict) else None
        replay = asked if isinstance(asked, int) and not isinstance(asked, bool) else -1
        with self._lock:
            oldest = self._log[0][1] if self._log else None
            newest_position = self._log[-1][0] if self._log else 0
            if replay == -1:
                position = newest_position + 1
            elif replay == -2:
                position = self._log[0][0] if self._log else 1
            elif oldest is not None and replay < oldest - 1:
                reply.update(
                    successful=False,
                    error=f"400::The replayId {{{replay}}} you provided was invalid.  Please "
                    "provide a valid ID, -2 to replay all events, or -1 to replay only new events.",
                )
                return reply
            else:
                later = [p for p, r, _ in self._log if r > replay]
                position = later[0] if later else newest_position + 1
            client.position = position
            client.channels.add(str(channel))
            self.subscriptions.append(
                (client_id, str(channel), asked if isinstance(asked, int) else None)
            )
        reply["successful"] = True
        return reply

    async def _wait_for_events(self, client: _Client) -> list[dict[str, Any]]:
        deadline = time.monotonic() + self.hold_s
        loop = asyncio.get_running_loop()
        while True:
            found = self._take(client)
            left = deadline - time.monotonic()
            if found or left <= 0 or not client.channels:
                return found
            event = asyncio.Event()
            waiter = (loop, event)
            with self._lock:
                self._waiters.add(waiter)
            try:
                if self._take_ready(client):
                    continue
                await asyncio.wait_for(event.wait(), timeout=left)
            except TimeoutError:
                return []
            finally:
                with self._lock:
                    self._waiters.discard(waiter)

    def _take_ready(self, client: _Client) -> bool:
        with self._lock:
            return (
                bool(self._log)
                and client.position is not None
                and self._log[-1][0] >= client.position
            )

    def _take(self, client: _Client) -> list[dict[str, Any]]:
        with self._lock:
            if client.position is None or not self._log:
                return []
            first = self._log[0][0]
            start = max(0, client.position - first)
            chosen = list(itertools.islice(self._log, start, start + CONNECT_BATCH))
            if chosen:
                client.position = chosen[-1][0] + 1
        out = []
        for _, replay, message in chosen:
            client.delivered.append(replay)
            del client.delivered[:-1000]
            out.append({"channel": CHANNEL, "data": message})
        return out

    def delivered(self) -> dict[str, list[int]]:
        """Replay ids delivered to each live client (the newest thousand)."""
        with self._lock:
            return {k: list(c.delivered) for k, c in self._clients.items()}
