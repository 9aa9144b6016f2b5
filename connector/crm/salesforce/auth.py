"""Signing in to Salesforce and building a ``simple_salesforce.Salesforce`` client.

Three ways in, each a small value object taking plain arguments (no settings import):

- :class:`ClientCredentials`: OAuth 2.0 client credentials against the org's login URL;
- :class:`JwtBearer`: OAuth 2.0 JWT bearer, the assertion signed RS256 with a private key file;
- :class:`ExistingToken`: an access token obtained elsewhere (cannot be renewed).

:class:`SalesforceAuth` posts the grant to ``{login_url}/services/oauth2/token``, checks
the ``instance_url`` the answer names (only https hosts under ``salesforce.com`` /
``force.com``, or the one origin explicitly allowed, e.g. the sandbox), and hands out a
client sharing one ``requests.Session``. Secrets stay in :class:`~pydantic.SecretStr` or
on disk; every token and signed assertion is registered for redaction
(:mod:`connector.redaction`) before it is sent or used, so a server echoing one in an
error cannot carry it into a message. Only ``https://`` login and instance URLs are used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jwt
import requests
from pydantic import SecretStr
from simple_salesforce.api import Salesforce

from connector.certificates import tls_url_problem, untrusted_message
from connector.crm.salesforce.sessions import SalesforceToken, SessionCache, SessionKey
from connector.errors import ConfigError, CrmError
from connector.http_deadline import DEFAULT_REQUEST_DEADLINE_S, DeadlineAdapter
from connector.redaction import register_token

if TYPE_CHECKING:
    from requests.sessions import _Settings

#: the settings key an operator changes to trust another instance origin (the sandbox)
ALLOWED_ORIGIN_SETTING = "salesforce.allowed_instance_origin"
DEFAULT_API_VERSION = "59.0"
JWT_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
LOGIN_AUDIENCE = "https://login.salesforce.com"
TEST_AUDIENCE = "https://test.salesforce.com"
_TRUSTED_HOST_SUFFIXES = (".salesforce.com", ".force.com")
_MAX_SERVER_TEXT = 200


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """OAuth 2.0 client credentials of a connected app (``login_url``: the org's My Domain)."""

    login_url: str
    client_id: str
    client_secret: SecretStr

    def token_form(self, now: float) -> dict[str, str]:
        return {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret.get_secret_value(),
        }


@dataclass(frozen=True, slots=True)
class JwtBearer:
    """OAuth 2.0 JWT bearer: the connected app's consumer key signs in as ``username``.

    The assertion is posted to ``login_url`` (the org's My Domain, or a login host);
    its ``aud`` is ``audience``, a setting of its own, because Salesforce names the
    audiences it takes (``https://login.salesforce.com``, ``https://test.salesforce.com``
    for sandboxes, or an Experience Cloud site URL) and a My Domain URL is not one of
    them. Without a setting: :func:`default_audience` of the login URL.
    """

    login_url: str
    client_id: str
    username: str
    private_key_file: Path
    audience: str | None = None
    lifetime_s: int = 180

    def token_form(self, now: float) -> dict[str, str]:
        claims = {
            "iss": self.client_id,
            "sub": self.username,
            "aud": self.audience or default_audience(self.login_url),
            "exp": int(now) + self.lifetime_s,
        }
        try:
            key = Path(self.private_key_file).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the Salesforce JWT private key file {self.private_key_file} "
                f"({type(exc).__name__}); check the path and its permissions"
            ) from None
        try:
            assertion = jwt.encode(claims, key, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError):
            raise ConfigError(
                f"the Salesforce JWT private key file {self.private_key_file} does not hold "
                "an RSA private key in PEM form; export the connected app's key again"
            ) from None
        register_token(assertion)  # a signed credential, valid for lifetime_s
        return {"grant_type": JWT_GRANT_TYPE, "assertion": assertion}


@dataclass(frozen=True, slots=True)
class ExistingToken:
    """An access token and the instance it belongs to, obtained outside the connector."""

    instance_url: str
    access_token: SecretStr


Grant = ClientCredentials | JwtBearer | ExistingToken


def default_audience(login_url: str) -> str:
    """The JWT audience for a login URL: the test login host for a sandbox org's URLs
    (``test.salesforce.com``, ``<org>--<sandbox>.sandbox.my.salesforce.com``), else the
    production login host, whatever My Domain the assertion is posted to."""
    host = (urlsplit(login_url.strip()).hostname or "").lower()
    if host == "test.salesforce.com" or host.endswith(".sandbox.my.salesforce.com"):
        return TEST_AUDIENCE
    return LOGIN_AUDIENCE


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-cased, default port dropped."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    port = parts.port
    scheme = parts.scheme.lower()
    default = {"https": 443, "http": 80}.get(scheme)
    netloc = host if port in (None, default) else f"{host}:{port}"
    return f"{scheme}://{netloc}"


def check_instance_url(instance_url: str, allowed_origin: str | None) -> str:
    """The instance origin when it may receive the token, else :class:`ConfigError`."""
    origin = origin_of(instance_url)
    parts = urlsplit(instance_url.strip())
    host = (parts.hostname or "").lower()
    secure = tls_url_problem(instance_url) is None
    if secure and allowed_origin is not None and origin == origin_of(allowed_origin):
        return origin
    if secure and host.endswith(_TRUSTED_HOST_SUFFIXES):
        return origin
    raise ConfigError(
        f"Salesforce named the instance host {host or '(none)'!r} ({parts.scheme or 'no'} "
        "scheme), which is not an https host under salesforce.com or force.com; the "
        f"connector will not send its token there. If you trust it (e.g. the sandbox), set "
        f"{ALLOWED_ORIGIN_SETTING} to {origin!r}"
    )


class CaFileSession(requests.Session):
    """A session whose own CA file wins over ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``.

    requests lets those variables override ``Session.verify`` (psf/requests#3829), so
    a configured CA file (the sandbox's) would silently be ignored where they are set.
    Proxy variables are still honoured.
    """

    def merge_environment_settings(
        self,
        url: str | bytes | None,
        proxies: Any,
        stream: Any,
        verify: Any,
        cert: Any,
    ) -> _Settings:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and isinstance(self.verify, str):
            settings["verify"] = self.verify
        return settings


class SalesforceAuth:
    """Obtains tokens for one grant and builds clients that share one HTTP session.

    ``ca_file`` is the CA bundle to trust (the sandbox's), else the system store;
    ``allowed_origin`` the one non-Salesforce instance origin accepted. ``timeout``
    bounds one socket read (simple-salesforce passes it per call); a session made here
    also ends each request after ``request_deadline_s`` in all, however slowly the
    answer trickles in. With ``sessions`` (the daemon's), every token fetched is kept
    there under ``connection`` and who signs in, for :meth:`reuse` by the next cycle.
    """

    def __init__(
        self,
        grant: Grant,
        *,
        ca_file: str | Path | None = None,
        allowed_origin: str | None = None,
        api_version: str = DEFAULT_API_VERSION,
        timeout: float = 30.0,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        request_deadline_s: float = DEFAULT_REQUEST_DEADLINE_S,
        sessions: SessionCache | None = None,
        connection: str = "",
    ) -> None:
        self.grant = grant
        self.sessions = sessions
        self.connection = connection
        self.allowed_origin = allowed_origin
        self.api_version = api_version
        self.timeout = timeout
        if session is None:
            session = CaFileSession()
            session.mount("https://", DeadlineAdapter(request_deadline_s))
        self.session = session
        self.session.verify = str(ca_file) if ca_file else True
        self._clock = clock

    @property
    def fetches_tokens(self) -> bool:
        """True when :meth:`login` calls the token endpoint (and so can renew a token)."""
        return not isinstance(self.grant, ExistingToken)

    def token(self) -> SalesforceToken:
        """A token for the grant: one POST to the token endpoint, or the existing token."""
        grant = self.grant
        if isinstance(grant, ExistingToken):
            return SalesforceToken(grant.access_token, grant.instance_url)
        problem = tls_url_problem(grant.login_url)
        if problem is not None:  # the settings refuse it already; this guards direct use
            raise ConfigError(f"crm.login_url: {problem}")
        form = grant.token_form(self._clock())
        url = origin_of(grant.login_url) + "/services/oauth2/token"
        try:
            response = self.session.post(url, data=form, timeout=self.timeout)
        except requests.exceptions.SSLError as exc:
            host = urlsplit(url).hostname
            raise CrmError(
                untrusted_message(f"Salesforce sign-in at {host}", "crm.ca_file", exc),
                code="tls",
                transient=False,
            ) from None
        except requests.RequestException as exc:
            raise CrmError(
                f"the Salesforce login host {urlsplit(url).hostname} did not answer "
                f"({type(exc).__name__}); it will be retried",
                code="connection",
                transient=True,
            ) from None
        return _token_from(response, grant)

    def login(self) -> Salesforce:
        """Sign in and build a client on the shared session (instance URL checked first)."""
        token = self.token()
        client = self._client(token)
        if self.sessions is not None and self.fetches_tokens:
            self.sessions.put(self._session_key(), token)
        return client

    def reuse(self) -> Salesforce | None:
        """A client on the session the connection last signed in with (``sessions``),
        without a call; None when there is none to reuse."""
        if self.sessions is None or not self.fetches_tokens:
            return None
        token = self.sessions.get(self._session_key())
        return None if token is None else self._client(token)

    def forget(self, client: Salesforce) -> None:
        """Salesforce said ``client``'s session expired: the next cycle does not reuse it."""
        if self.sessions is not None:
            self.sessions.drop(self._session_key(), str(client.session_id))

    def _session_key(self) -> SessionKey:
        grant = self.grant
        if isinstance(grant, ExistingToken):  # never kept: nothing to sign in with
            return (self.connection, "token", origin_of(grant.instance_url), "", "")
        user = grant.username if isinstance(grant, JwtBearer) else ""
        kind = type(grant).__name__
        return (self.connection, kind, origin_of(grant.login_url), grant.client_id, user)

    def _client(self, token: SalesforceToken) -> Salesforce:
        origin = check_instance_url(token.instance_url, self.allowed_origin)
        return Salesforce(
            instance_url=origin,
            session_id=token.access_token.get_secret_value(),
            session=self.session,
            version=self.api_version,
            parse_float=Decimal,  # money stays exact
            object_pairs_hook=dict,
        )

    def close(self) -> None:
        self.session.close()


def _token_from(
    response: requests.Response, grant: ClientCredentials | JwtBearer
) -> SalesforceToken:
    body: Any
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400 or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else None
        described = body.get("error_description") if isinstance(body, dict) else None
        detail = ": ".join(str(x) for x in (error, described) if x)[:_MAX_SERVER_TEXT]
        transient = response.status_code >= 500 or response.status_code == 429
        action = (
            "it will be retried"
            if transient
            else f"check the client id, secret or key and the login URL for {grant.client_id!r}"
        )
        raise CrmError(
            f"Salesforce refused the sign-in (HTTP {response.status_code}"
            f"{', ' + detail if detail else ''}); {action}",
            code=str(error or "token_refused"),
            transient=transient,
            status=response.status_code,
        )
    access_token = body.get("access_token")
    instance_url = body.get("instance_url")
    if isinstance(access_token, str):
        register_token(access_token)
    if not isinstance(access_token, str) or not isinstance(instance_url, str):
        raise CrmError(
            "the Salesforce token answer has no access_token or instance_url; "
            "check the login URL points at a Salesforce org",
            code="bad_token_response",
            transient=False,
            status=response.status_code,
        )
    return SalesforceToken(SecretStr(access_token), instance_url)
