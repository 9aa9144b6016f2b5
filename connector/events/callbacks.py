"""What the receiver does with one request: route, authenticate, read, queue, answer.

No sockets here (:mod:`connector.events.receiver` serves this over HTTP), so that every
refusal can be tested directly. Paths:

- ``POST /events/partner-center``: a Partner Center webhook event, for every
  connection that takes Partner Center events (one registration serves a tenant);
  ``/events/partner-center/{connection}`` for one of them;
- ``POST /events/dataverse/{connection}``: a Dataverse webhook post for that connection.

Every request counts as received; a refused one is counted with its reason and
answered 401 (unauthenticated, forged), 400 (unreadable), 404, 405, 413 or 503; an
accepted one is answered 200 at once, before any cycle runs (Dataverse waits up to
60 s and Partner Center retries, so the answer never waits for the sync).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from pydantic import SecretStr

from connector.events.config import DataverseWebhookAuth
from connector.events.metrics import EventMetrics
from connector.events.notices import (
    DATAVERSE,
    PARTNER_CENTER,
    Notice,
    Unreadable,
    dataverse_notice,
    partner_center_notice,
)
from connector.events.verify import (
    Refused,
    SigningCertificates,
    check_url_token,
    verify_dataverse,
    verify_partner_center,
)

log = logging.getLogger(__name__)

PARTNER_CENTER_PATH = "/events/partner-center"
DATAVERSE_PATH = "/events/dataverse"


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, object]

    def encoded(self) -> bytes:
        return json.dumps(self.body).encode()


@dataclass(frozen=True)
class DataverseEndpoint:
    """One Dataverse connection's service endpoint: its authentication and secret."""

    auth: DataverseWebhookAuth
    secret: SecretStr
    #: the columns only the connector writes (its own writes are not synced again)
    connector_fields: Collection[str]


#: queues a notice for a connection
Sink = Callable[[str, Notice], None]


class Callbacks:
    """Routes and checks callbacks; accepted notices go to ``sink``."""

    def __init__(
        self,
        *,
        metrics: EventMetrics,
        sink: Sink,
        partner_center: Collection[str] = (),
        certificates: SigningCertificates | None = None,
        url_token: SecretStr | None = None,
        dataverse: Mapping[str, DataverseEndpoint] | None = None,
    ) -> None:
        self.metrics = metrics
        self.sink = sink
        self.partner_center = list(partner_center)
        self.certificates = certificates
        self.url_token = url_token
        self.dataverse = dict(dataverse or {})

    @staticmethod
    def source_of(path: str) -> str | None:
        if path == PARTNER_CENTER_PATH or path.startswith(PARTNER_CENTER_PATH + "/"):
            return PARTNER_CENTER
        if path.startswith(DATAVERSE_PATH + "/"):
            return DATAVERSE
        return None

    def refuse(self, source: str | None, refusal: Refused) -> Answer:
        """Count and answer a refusal (also used by the server for size and load limits)."""
        if source is not None:
            self.metrics.rejected.labels(source, refusal.reason).inc()
        log.warning(
            "event refused (%s, %s): %s",
            source or "unknown path",
            refusal.reason,
            refusal.message,
            extra={"event": "event_refused", "source": source, "reason": refusal.reason},
        )
        return Answer(refusal.status, {"error": refusal.reason, "message": refusal.message})

    def handle(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        body: bytes,
    ) -> Answer:
        source = self.source_of(path)
        if source is not None:
            self.metrics.received.labels(source).inc()
        try:
            if source is None:
                raise Refused("not_found", "no such event endpoint", status=404)
            if method != "POST":
                raise Refused("method_not_allowed", "events are POSTed", status=405)
            if source == PARTNER_CENTER:
                return self._partner_center(path, headers, query, body)
            return self._dataverse(path, headers, query, body)
        except Refused as refusal:
            return self.refuse(source, refusal)
        except Unreadable as exc:
            return self.refuse(source, Refused("malformed", exc.message, status=400))

    def _partner_center(
        self, path: str, headers: Mapping[str, str], query: Mapping[str, str], body: bytes
    ) -> Answer:
        name = path[len(PARTNER_CENTER_PATH) :].strip("/")
        targets = [name] if name else self.partner_center
        if (name and name not in self.partner_center) or not targets:
            raise Refused(
                "not_found" if name else "disabled",
                "no connection takes Partner Center events here",
                status=404,
            )
        if self.certificates is None:
            raise Refused("disabled", "Partner Center events are not configured", status=404)
        check_url_token(query, self.url_token)
        verify_partner_center(headers, body, self.certificates)
        notice = partner_center_notice(body)
        self.metrics.accepted.labels(PARTNER_CENTER).inc()
        if notice is None or notice.empty:
            self.metrics.ignored.labels(PARTNER_CENTER).inc()
            return Answer(200, {"accepted": True, "queued": 0})
        for target in targets:
            self.sink(target, notice)
        return Answer(200, {"accepted": True, "queued": len(targets)})

    def _dataverse(
        self, path: str, headers: Mapping[str, str], query: Mapping[str, str], body: bytes
    ) -> Answer:
        name = path[len(DATAVERSE_PATH) :].strip("/")
        endpoint = self.dataverse.get(name)
        if endpoint is None:
            raise Refused("not_found", "no Dataverse connection takes events here", status=404)
        verify_dataverse(endpoint.auth, endpoint.secret, headers, query)
        notice = dataverse_notice(body, connector_fields=endpoint.connector_fields)
        self.metrics.accepted.labels(DATAVERSE).inc()
        if notice is None or notice.empty or notice.own_write:
            self.metrics.ignored.labels(DATAVERSE).inc()
            return Answer(200, {"accepted": True, "queued": 0})
        self.sink(name, notice)
        return Answer(200, {"accepted": True, "queued": 1})
