"""Microsoft Entra ID client-credentials tokens for the Dataverse Web API.

Each token is registered for redaction (:mod:`connector.redaction`) as it arrives;
the token endpoint must be ``https://`` (the secret travels in the form).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from connector.certificates import certificate_rejected, tls_url_problem, untrusted_message
from connector.errors import ConfigError, CrmError
from connector.redaction import register_token

log = logging.getLogger(__name__)

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at: float  # monotonic seconds


class DataverseTokens:
    """Client-credentials tokens, cached until ``refresh_margin_s`` before they expire.

    ``invalidate()`` drops the cached token (the adapter calls it on a 401 and
    asks once more; a second 401 is a failure). Thread-safe: parallel requests
    share one token and at most one of them fetches a new one.
    """

    def __init__(
        self,
        *,
        environment_url: str,
        tenant: str,
        client_id: str,
        client_secret: SecretStr | str,
        http: httpx.Client,
        authority: str = DEFAULT_AUTHORITY,
        timeout_s: float = 30.0,
        refresh_margin_s: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        problem = tls_url_problem(authority)
        if problem is not None:  # the settings refuse it already; this guards direct use
            raise ConfigError(f"crm.authority: {problem}")
        self.token_url = f"{authority.rstrip('/')}/{tenant}/oauth2/v2.0/token"
        self.scope = f"{environment_url.rstrip('/')}/.default"
        self._client_id = client_id
        self._secret = (
            client_secret if isinstance(client_secret, SecretStr) else SecretStr(client_secret)
        )
        self._http = http
        self._timeout = timeout_s
        self._margin = refresh_margin_s
        self._monotonic = monotonic
        self._token: _Token | None = None
        self._lock = threading.Lock()
        #: how many tokens were fetched (for tests and run figures)
        self.fetched = 0

    def get(self) -> str:
        """A valid access token, fetching a new one when the cached one is (nearly) expired."""
        with self._lock:
            token = self._token
            if token is None or self._monotonic() >= token.expires_at:
                token = self._fetch()
                self._token = token
            return token.value

    def invalidate(self, rejected: str | None = None) -> None:
        """Forget the cached token (only if it is still ``rejected``, when given)."""
        with self._lock:
            if rejected is None or (self._token is not None and self._token.value == rejected):
                self._token = None

    def _fetch(self) -> _Token:
        data = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._secret.get_secret_value(),
            "scope": self.scope,
        }
        try:
            response = self._http.post(self.token_url, data=data, timeout=self._timeout)
        except httpx.TransportError as exc:
            if certificate_rejected(exc):
                raise CrmError(
                    untrusted_message("Dataverse sign-in", "crm.ca_file", exc), code="tls"
                ) from None
            raise CrmError(
                f"Dataverse sign-in: the token endpoint did not answer ({type(exc).__name__}); "
                "check the authority URL and the network",
                code="auth_unreachable",
                transient=True,
            ) from exc
        if response.status_code != 200:
            raise CrmError(
                f"Dataverse sign-in failed ({response.status_code} {_oauth_error(response)}); "
                f"check the tenant, client id {self._client_id!r} and its secret",
                code="auth_failed",
                transient=response.status_code >= 500,
                status=response.status_code,
            )
        body = response.json()
        register_token(str(body.get("access_token") or ""))
        lifetime = float(body.get("expires_in", 3600))
        # A short-lived token is refreshed at half its life rather than never used.
        margin = min(self._margin, lifetime / 2)
        self.fetched += 1
        log.info("dataverse token acquired, valid %.0f s", lifetime)
        return _Token(str(body["access_token"]), self._monotonic() + lifetime - margin)


def _oauth_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return "no error body"
    if isinstance(body, dict):
        return str(body.get("error", "unknown error"))
    return "unknown error"
