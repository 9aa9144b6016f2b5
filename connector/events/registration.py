"""Partner Center's webhook registration API (``connector webhooks register|list|delete``).

Documented (partner-center-sdk ``develop/partner-center-webhooks.md``): one
registration per tenant at ``https://api.partnercenter.microsoft.com/webhooks/v1/
registration``: ``GET`` reads it (``{WebhookUrl, WebhookEvents}``), ``POST`` creates it
and ``PUT`` updates it (``{WebhookUrl, WebhookEvents, SignatureTokenToMsSignatureHeader}``
→ ``{SubscriberId, WebhookUrl, WebhookEvents}``), with a bearer token for
``https://api.partnercenter.microsoft.com``. ``DELETE`` is not documented; it is sent as
the natural verb, and a refusal is explained (register again with other events, or
remove the URL in Partner Center).
"""

from __future__ import annotations

from typing import Any

import httpx

from connector.dealcore.auth import TokenProvider
from connector.errors import CoreError
from connector.retry import RetryPolicy, call_with_retry


class WebhookRegistration:
    def __init__(self, url: str, tokens: TokenProvider, http: httpx.Client) -> None:
        self.url = url
        self.tokens = tokens
        self.http = http
        self.policy = RetryPolicy(attempts=3, max_total_seconds=30)

    def _send(self, method: str, body: dict[str, Any] | None = None) -> httpx.Response:
        def attempt() -> httpx.Response:
            headers = {
                "Authorization": f"Bearer {self.tokens.token()}",
                "Accept": "application/json",
                "Content-Type": "application/json",
            }
            try:
                response = self.http.request(method, self.url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                raise CoreError(
                    f"the webhook registration API did not answer ({type(exc).__name__})",
                    code="transport",
                    transient=True,
                ) from None
            if response.status_code == 429 or response.status_code >= 500:
                raise CoreError(
                    f"the webhook registration API answered {response.status_code}",
                    code="core_error",
                    transient=True,
                    status=response.status_code,
                )
            return response

        return call_with_retry(attempt, self.policy)

    def current(self) -> dict[str, Any] | None:
        """The tenant's registration, or None when there is none."""
        response = self._send("GET")
        if response.status_code == 404:
            return None
        return _body(response, "reading the registration")

    def register(
        self, webhook_url: str, events: list[str], *, signature_header: bool
    ) -> dict[str, Any]:
        """Create the registration, or update the one there is (POST, else PUT)."""
        body = {
            "WebhookUrl": webhook_url,
            "WebhookEvents": events,
            "SignatureTokenToMsSignatureHeader": signature_header,
        }
        method = "PUT" if self.current() is not None else "POST"
        return _body(self._send(method, body), "registering the webhook")

    def delete(self) -> bool:
        """Remove the registration; False when there was none."""
        response = self._send("DELETE")
        if response.status_code == 404:
            return False
        if response.status_code in (405, 501):
            raise CoreError(
                "Partner Center refused DELETE on the webhook registration (Microsoft documents "
                "no delete): register again with `--event test-created` only, or remove the "
                "webhook in Partner Center",
                code="core_error",
                status=response.status_code,
            )
        if response.status_code >= 300:
            _body(response, "deleting the registration")
        return True


def _body(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code in (401, 403):
        raise CoreError(
            f"{what}: the token was refused ({response.status_code}); the registration API "
            "takes a token for https://api.partnercenter.microsoft.com "
            "(events.partner_center.registration_scope)",
            code="unauthenticated",
            status=response.status_code,
        )
    if response.status_code >= 300:
        raise CoreError(
            f"{what}: Partner Center answered {response.status_code}: {response.text[:200]}",
            code="core_error",
            status=response.status_code,
        )
    try:
        data = response.json()
    except ValueError:
        raise CoreError(f"{what}: the answer is not JSON", code="malformed_response") from None
    if not isinstance(data, dict):
        raise CoreError(f"{what}: the answer is not a JSON object", code="malformed_response")
    return data
