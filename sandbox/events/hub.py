"""Wiring the sandbox's change events: store hooks, the outgoing HTTP client, the routes.

``PUT /_sandbox/events`` configures what the three systems send (besides the faults
and the change log of :class:`~sandbox.events.bus.EventBus`)::

    {"partner_center": {"url": "https://127.0.0.1:9466/events/partner-center",
                        "events": [...], "signature_header": "authorization"},
     "dataverse": {"url": "https://…/events/dataverse/NAME",
                   "auth": {"kind": "header", "name": "x-connector-key", "secret": "…"}},
     "salesforce": {"enabled": true, "hold_s": 10}}

Partner Center's callback can also be registered through its documented registration
API (``/webhooks/v1/registration``), as ``connector webhooks register`` does. Callbacks
are trusted over https with the sandbox's own CA (which issues the certificate the
connector's receiver serves in the sandbox configs) and the public roots.
"""

from __future__ import annotations

import ssl
import threading
from typing import Any

import certifi
import httpx
from starlette.requests import Request
from starlette.routing import BaseRoute

from sandbox.context import SandboxContext
from sandbox.events.bus import EventBus
from sandbox.events.dataverse import DataverseWebhook
from sandbox.events.partner_center import EVENTS, PartnerCenterEvents
from sandbox.events.salesforce import ChangeStream

ORGANIZATION = "sandbox.crm.dynamics.com"


class SandboxEvents:
    """Every event source of one sandbox app."""

    def __init__(self, ctx: SandboxContext, parts: dict[str, Any]) -> None:
        self.ctx = ctx
        self.bus = EventBus(ctx.seed)
        self._trust: list[bytes] = []
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        self.partner_center = PartnerCenterEvents(self.bus, self.http, ctx.clock.now)
        self.dataverse = DataverseWebhook(self.bus, self.http, ORGANIZATION)
        self.salesforce = ChangeStream(self.bus, lambda: int(ctx.clock.now().timestamp() * 1000))
        self._hook(parts)

    def _hook(self, parts: dict[str, Any]) -> None:
        bus = self.bus
        if "core" in parts:
            parts["core"].store.on_change = lambda kind, referral: bus.changed(
                "core", kind, str(referral["id"]), referral
            )
        if "salesforce" in parts:

            def salesforce_change(old: dict[str, Any] | None, new: dict[str, Any]) -> None:
                bus.changed("salesforce", "created" if old is None else "updated", new["Id"], new)
                self.salesforce.change(old, new)

            parts["salesforce"].org.on_change = salesforce_change
        if "dataverse" in parts:
            store = parts["dataverse"].store

            def dataverse_change(
                kind: str, entity_set: str, row_id: str, columns: dict[str, Any]
            ) -> None:
                if entity_set != "opportunities":
                    return
                row = store.rows[entity_set].get(row_id) or columns
                bus.changed("dataverse", kind, row_id, columns, logged=row)

            store.on_change = dataverse_change

    def use_ca(self, ca_cert_pem: bytes, ca_key_pem: bytes) -> None:
        """The sandbox's CA: it signs Partner Center events and is trusted for callbacks."""
        self.partner_center.use_ca(ca_cert_pem, ca_key_pem)
        self._trust.append(ca_cert_pem)

    def http(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                context = ssl.create_default_context(cafile=certifi.where())
                for pem in self._trust:
                    context.load_verify_locations(cadata=pem.decode())
                self._client = httpx.Client(verify=context, timeout=10.0, follow_redirects=False)
            return self._client

    def configure(self, body: dict[str, Any], request: Request) -> str | None:
        origin = str(request.base_url).rstrip("/")
        pc = body.get("partner_center")
        if isinstance(pc, dict):
            if pc.get("url") is None:
                self.partner_center.unregister()
            else:
                self.partner_center.register(
                    {
                        "WebhookUrl": pc["url"],
                        "WebhookEvents": pc.get("events") or list(EVENTS),
                        "SignatureTokenToMsSignatureHeader": pc.get("signature_header")
                        == "x-ms-signature",
                    },
                    origin,
                )
        dv = body.get("dataverse")
        if isinstance(dv, dict):
            problem = self.dataverse.configure(dv)
            if problem is not None:
                return problem
        sf = body.get("salesforce")
        if isinstance(sf, dict):
            if "hold_s" in sf:
                self.salesforce.hold_s = float(sf["hold_s"])
            if sf.get("enabled", True):
                self.salesforce.enable()
        return None

    def routes(self) -> list[BaseRoute]:
        def core_token(request: Request) -> bool:
            header = request.headers.get("authorization")
            return self.ctx.tokens.check(header, "partnercenter") or self.ctx.tokens.check(
                header, "core"
            )

        def salesforce_token(request: Request) -> bool:
            return self.ctx.tokens.check(request.headers.get("authorization"), "salesforce")

        return [
            *self.bus.routes(self.configure),
            *self.partner_center.routes(core_token),
            *self.salesforce.routes(salesforce_token),
        ]

    def close(self) -> None:
        self.bus.close()
        with self._client_lock:
            if self._client is not None:
                self._client.close()
