"""Access tokens for the deal core: the :class:`TokenProvider` seam and its implementations.

- :class:`ClientCredentialsTokens`: app-only tokens (the sandbox; the real Partner
  Center refuses them).
- :class:`RefreshTokenTokens`: app + user tokens renewed from a refresh token kept in
  a cache file only its owner may read (the real Partner Center, where MFA rules out
  anything non-interactive but a refresh token).
- :func:`device_code_login`: the one interactive step that fills that cache file.

Tokens never reach a log line or an error message: every access token, refresh
token and device code is registered for redaction (:mod:`connector.redaction`) the
moment it is read or received, before any request could make a server echo it.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import httpx
from pydantic import SecretStr

from connector.certificates import tls_url_problem
from connector.dealcore.classify import classify_token_response
from connector.errors import ConfigError, CoreError
from connector.redaction import register_token

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], None]

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: renew this long before the access token's stated expiry (clock skew, request time)
EXPIRY_MARGIN_SECONDS = 120.0


class TokenProvider(Protocol):
    """Gives bearer tokens for the deal core.

    ``token()`` returns a currently valid access token (fetching one when needed);
    ``invalidate()`` forgets the cached one, after the API refused it with a 401.
    Implementations are thread-safe.
    """

    def token(self) -> str: ...

    def invalidate(self) -> None: ...


class _CachedAccessToken:
    """An access token and when to stop using it, behind a lock."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.lock = threading.Lock()
        self._value: str | None = None
        self._renew_at = 0.0

    def current(self) -> str | None:
        if self._value is not None and self._clock() < self._renew_at:
            return self._value
        return None

    def store(self, value: str, expires_in: float) -> None:
        margin = min(EXPIRY_MARGIN_SECONDS, expires_in / 10)
        self._value = value
        self._renew_at = self._clock() + expires_in - margin

    def clear(self) -> None:
        self._value = None
        self._renew_at = 0.0


def _post_token_form(
    http: httpx.Client, url: str, form: dict[str, str], what: str
) -> dict[str, Any]:
    """POST a form to a token endpoint; the JSON answer, or a classified CoreError."""
    response = _post_token_form_raw(http, url, form, what)
    error = classify_token_response(response, what=what)
    if error is not None:
        raise error
    data: dict[str, Any] = response.json()
    _register_issued(data)
    return data


def _register_issued(data: Any) -> None:
    """Register the credentials of a token answer before anything uses them."""
    if isinstance(data, dict):
        for name in ("access_token", "refresh_token", "id_token", "device_code"):
            value = data.get(name)
            if isinstance(value, str):
                register_token(value)


def _expires_in(data: dict[str, Any]) -> float:
    try:
        return max(0.0, float(data.get("expires_in", 3600)))
    except (TypeError, ValueError):
        return 3600.0


class ClientCredentialsTokens:
    """App-only tokens (``grant_type=client_credentials``), cached until shortly before expiry."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        scope: str,
        http: httpx.Client,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._http = http
        self._cache = _CachedAccessToken(clock)

    def token(self) -> str:
        with self._cache.lock:
            current = self._cache.current()
            if current is not None:
                return current
            data = _post_token_form(
                self._http,
                self._token_url,
                {
                    "grant_type": "client_credentials",
                    "client_id": self._client_id,
                    "client_secret": self._client_secret.get_secret_value(),
                    "scope": self._scope,
                },
                what=f"client-credentials token for {self._client_id}",
            )
            value = str(data["access_token"])
            self._cache.store(value, _expires_in(data))
            log.debug("new access token, expires_in=%s", data.get("expires_in"))
            return value

    def invalidate(self) -> None:
        with self._cache.lock:
            self._cache.clear()


def _check_private(cache_file: Path) -> None:
    """Refuse a token cache that other users could read (or that is not the caller's)."""
    try:
        info = cache_file.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"no refresh-token cache at {cache_file}; sign in once with the device-code "
            "login to create it"
        ) from None
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"the refresh-token cache {cache_file} is accessible to other users "
            f"(mode {mode:04o}); run `chmod 600 {cache_file}` and start again"
        )
    getuid = getattr(os, "getuid", None)
    if getuid is not None and info.st_uid != getuid():
        raise ConfigError(
            f"the refresh-token cache {cache_file} belongs to another user (uid "
            f"{info.st_uid}); run the connector as that user or sign in again"
        )


def read_refresh_token(cache_file: Path) -> str:
    """The refresh token stored in ``cache_file``, after checking the file is private."""
    _check_private(cache_file)
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"the refresh-token cache {cache_file} cannot be read ({type(exc).__name__}); "
            "sign in again with the device-code login"
        ) from None
    token = data.get("refresh_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise ConfigError(
            f"the refresh-token cache {cache_file} holds no refresh token; "
            "sign in again with the device-code login"
        )
    register_token(token)
    return token


def write_refresh_token(cache_file: Path, refresh_token: str) -> None:
    """Store ``refresh_token`` in ``cache_file`` atomically, readable by its owner only."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"refresh_token": refresh_token, "saved_at": int(time.time())})
    # mkstemp creates the file with mode 0600 in the same directory, so the rename
    # is atomic and the token is never visible under looser permissions.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{cache_file.name}.", dir=cache_file.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.chmod(tmp_name, 0o600)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, cache_file)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


class RefreshTokenTokens:
    """App + user tokens renewed from the refresh token in ``cache_file``.

    Each exchange (``grant_type=refresh_token``) returns a rotated refresh token,
    written back atomically with mode 0600. A cache file that group or others may
    read is refused with the ``chmod`` to run.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        scope: str,
        cache_file: Path,
        http: httpx.Client,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self._token_url = token_url
        self._client_id = client_id
        self._scope = scope
        self._cache_file = cache_file
        self._http = http
        self._cache = _CachedAccessToken(clock)

    def token(self) -> str:
        with self._cache.lock:
            current = self._cache.current()
            if current is not None:
                return current
            refresh = read_refresh_token(self._cache_file)
            try:
                data = _post_token_form(
                    self._http,
                    self._token_url,
                    {
                        "grant_type": "refresh_token",
                        "client_id": self._client_id,
                        "refresh_token": refresh,
                        "scope": self._scope,
                    },
                    what="refresh-token exchange",
                )
            except CoreError as exc:
                if exc.code == "invalid_grant":
                    raise CoreError(
                        f"the refresh token in {self._cache_file} was refused (invalid_grant): "
                        "it expired or was revoked; sign in again with the device-code login",
                        code="unauthenticated",
                        transient=False,
                        status=exc.status,
                    ) from None
                raise
            rotated = data.get("refresh_token")
            if isinstance(rotated, str) and rotated and rotated != refresh:
                write_refresh_token(self._cache_file, rotated)
            value = str(data["access_token"])
            self._cache.store(value, _expires_in(data))
            return value

    def invalidate(self) -> None:
        with self._cache.lock:
            self._cache.clear()


def _with_offline_access(scope: str) -> str:
    # Entra only returns a refresh token when the scope asks for offline access.
    parts = scope.split()
    return scope if "offline_access" in parts else " ".join([*parts, "offline_access"])


def device_code_login(
    devicecode_url: str,
    token_url: str,
    client_id: str,
    scope: str,
    cache_file: Path,
    http: httpx.Client,
    echo: Callable[[str], None],
    *,
    sleep: Sleep = time.sleep,
    clock: Clock = time.monotonic,
) -> None:
    """Sign a user in with the OAuth device-code flow and store their refresh token.

    Shows the endpoint's message (where to go, which code to type) through ``echo``,
    then polls the token endpoint every ``interval`` seconds (longer after
    ``slow_down``) until the user signs in, declines, or ``expires_in`` runs out.
    """
    scope = _with_offline_access(scope)
    start = _post_token_form_raw(
        http, devicecode_url, {"client_id": client_id, "scope": scope}, "device-code request"
    )
    if start.status_code != 200:
        error = classify_token_response(start, what="device-code request")
        raise error or CoreError("device-code request failed", code="device_code")
    grant = start.json()
    _register_issued(grant)
    device_code = grant.get("device_code")
    if not isinstance(device_code, str) or not device_code:
        raise CoreError(
            "device-code request: the answer has no device_code", code="malformed_token_response"
        )
    echo(
        str(
            grant.get("message")
            or f"To sign in, open {grant.get('verification_uri')} and enter the code "
            f"{grant.get('user_code')}"
        )
    )
    interval = float(grant.get("interval") or 5)
    deadline = clock() + float(grant.get("expires_in") or 900)
    form = {"grant_type": DEVICE_CODE_GRANT, "client_id": client_id, "device_code": device_code}
    while clock() < deadline:
        try:
            response = _post_token_form_raw(http, token_url, form, "device-code sign-in")
        except CoreError:  # a network blip: the next poll may well succeed
            sleep(min(interval, max(0.0, deadline - clock())))
            continue
        if response.status_code == 200:
            data = response.json()
            _register_issued(data)
            refresh = data.get("refresh_token") if isinstance(data, dict) else None
            if not isinstance(refresh, str) or not refresh:
                raise CoreError(
                    "device-code sign-in: the token endpoint gave no refresh token; "
                    "make sure the app registration allows offline access",
                    code="no_refresh_token",
                )
            write_refresh_token(cache_file, refresh)
            echo(f"Signed in; the refresh token is stored in {cache_file}")
            return
        error_code = _oauth_error(response)
        if error_code == "authorization_pending":
            pass
        elif error_code == "slow_down":
            interval += 5  # RFC 8628 §3.5
        elif error_code == "expired_token":
            raise CoreError(
                "device-code sign-in: the code expired before the sign-in finished; "
                "run the login again",
                code="expired_token",
            )
        elif error_code in ("authorization_declined", "access_denied"):
            raise CoreError(
                "device-code sign-in: the user declined the sign-in", code="access_denied"
            )
        else:
            error = classify_token_response(response, what="device-code sign-in")
            if error is not None and not error.transient:
                raise error
        sleep(min(interval, max(0.0, deadline - clock())))
    raise CoreError(
        "device-code sign-in: nobody signed in before the code expired; run the login again",
        code="expired_token",
    )


def _post_token_form_raw(
    http: httpx.Client, url: str, form: dict[str, str], what: str
) -> httpx.Response:
    problem = tls_url_problem(url)
    if problem is not None:  # the settings refuse it already; this guards direct use
        raise ConfigError(f"{what}: the token endpoint: {problem}")
    try:
        return http.post(url, data=form, headers={"Accept": "application/json"})
    except httpx.TransportError as exc:
        error = classify_token_response(exc, what=what)
        assert error is not None
        raise error from None


def _oauth_error(response: httpx.Response) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    return str(error) if error else None
