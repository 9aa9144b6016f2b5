"""Dataverse webhook posts in the sandbox: a registered step on the ``opportunity`` table.

As documented (powerapps-docs ``use-webhooks.md``, ``register-web-hook.md``): a POST of
the ``RemoteExecutionContext`` JSON for every Create, Update and Delete, with the
``x-ms-dynamics-organization``, ``x-ms-dynamics-entity-name``,
``x-ms-dynamics-request-name`` and ``x-ms-correlation-request-id`` headers, and the
service endpoint's authentication: ``HttpHeader`` (a header), ``WebhookKey``
(``?code=``) or ``HttpQueryString`` (a query parameter). The ``Target`` input
parameter holds the attributes the request set. A key is never sent over plain http.
Writes inside a ``$batch`` change set are posted once the change set commits.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from sandbox.events.bus import EventBus

ORGANIZATION_ID = "4ef5b371-e89e-e711-8122-000d3aa2331c"
USER_ID = "75c2dd85-e89e-e711-8122-000d3aa2331c"
_MESSAGES = {"created": "Create", "updated": "Update", "deleted": "Delete"}


class DataverseWebhook:
    """One registered webhook step (URL and authentication) and the posts it makes."""

    def __init__(self, bus: EventBus, http: Callable[[], httpx.Client], organization: str) -> None:
        self.bus = bus
        self._http = http
        self.organization = organization
        self.url: str | None = None
        self.auth: dict[str, str] = {}
        #: posts answered, by status
        self.answers: list[int] = []

    def configure(self, settings: dict[str, Any]) -> str | None:
        url = settings.get("url")
        if url is None:
            self.url = None
            self.bus.senders.pop("dataverse", None)
            return None
        auth = settings.get("auth") or {}
        kind = auth.get("kind", "header")
        if kind not in ("header", "webhook_key", "query"):
            return "dataverse.auth.kind is header, webhook_key or query"
        if auth.get("secret") and urlsplit(str(url)).scheme != "https":
            return "dataverse.url must be https: the key would travel in clear"
        self.url = str(url)
        self.auth = {k: str(v) for k, v in auth.items()}
        self.bus.senders["dataverse"] = self._build
        return None

    def _build(self, kind: str, row_id: str, changes: dict[str, Any]) -> Callable[[], bool] | None:
        if self.url is None or kind not in _MESSAGES:
            return None
        message = _MESSAGES[kind]
        body = json.dumps(self.context(message, row_id, changes), default=str).encode()
        headers = {
            "Content-Type": "application/json",
            "x-ms-dynamics-organization": self.organization,
            "x-ms-dynamics-entity-name": "opportunity",
            "x-ms-dynamics-request-name": message,
            "x-ms-correlation-request-id": str(uuid.uuid4()),
        }
        url = self.url
        kind_of_auth = self.auth.get("kind", "header")
        secret = self.auth.get("secret")
        if secret:
            if kind_of_auth == "header":
                headers[self.auth.get("name", "x-connector-key")] = secret
            else:
                name = "code" if kind_of_auth == "webhook_key" else self.auth.get("name", "key")
                url += ("&" if "?" in url else "?") + urlencode({name: secret})

        def deliver() -> bool:
            response = self._http().post(url, content=body, headers=headers)
            self.answers.append(response.status_code)
            return response.status_code < 300

        return deliver

    def context(self, message: str, row_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """A ``RemoteExecutionContext`` of an asynchronous post-operation step."""
        if message == "Delete":
            target: dict[str, Any] = {
                "__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts",
                "Id": row_id,
                "KeyAttributes": [],
                "LogicalName": "opportunity",
                "Name": None,
                "RowVersion": None,
            }
        else:
            target = {
                "__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts",
                "Attributes": [{"key": k, "value": v} for k, v in changes.items()],
                "EntityState": None,
                "FormattedValues": [],
                "Id": row_id,
                "KeyAttributes": [],
                "LogicalName": "opportunity",
                "RelatedEntities": [],
                "RowVersion": None,
            }
        return {
            "BusinessUnitId": "e2b9dd85-e89e-e711-8122-000d3aa2331c",
            "CorrelationId": str(uuid.uuid4()),
            "Depth": 1,
            "InitiatingUserId": USER_ID,
            "InputParameters": [{"key": "Target", "value": target}],
            "IsExecutingOffline": False,
            "IsInTransaction": False,
            "IsOfflinePlayback": False,
            "IsolationMode": 1,
            "MessageName": message,
            "Mode": 1,
            "OperationCreatedOn": f"/Date({int(time.time() * 1000)})/",
            "OperationId": str(uuid.uuid4()),
            "OrganizationId": ORGANIZATION_ID,
            "OrganizationName": self.organization,
            "OutputParameters": [],
            "OwningExtension": {
                "Id": "75417616-4ea2-e711-8122-000d3aa2331c",
                "KeyAttributes": [],
                "LogicalName": "sdkmessageprocessingstep",
                "Name": None,
                "RowVersion": None,
            },
            "ParentContext": None,
            "PostEntityImages": [],
            "PreEntityImages": [],
            "PrimaryEntityId": row_id,
            "PrimaryEntityName": "opportunity",
            "RequestId": None,
            "SecondaryEntityName": "none",
            "SharedVariables": [],
            "Stage": 40,
            "UserId": USER_ID,
        }
