"""Every Dataverse HTTP call goes through :class:`DataverseTransport`.

One place decides what an answer means:

::

    answer                         what happens
    ──────────────────────────────────────────────────────────────────────
    2xx, 3xx, 4xx (not 401/429)    returned to the caller, which reads it
    401                            token dropped, asked once more; again → CrmError unauthenticated
    429 + Retry-After              wait Retry-After (injected sleep), retry; a wait past
                                   max_throttle_wait_s (alone or with the run's earlier
                                   ones), or 429s outlasting the attempts → Throttled
    5xx, 408, transport errors     exponential backoff with jitter, bounded attempts
    request budget spent           QuotaExhausted before the request is sent
    5-minute allowance reached     the pacer waits until the window has room, then sends

Concurrency is capped by a semaphore (Dataverse allows 52 concurrent requests per
user; the connector stays well below). The request budget is the run's share of
Dataverse's allowance: a number of requests per run and/or a share of the 6000
requests a 5-minute window allows.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
from tenacity import RetryCallState

from connector.certificates import certificate_rejected, untrusted_message
from connector.crm.base import ApiUsage
from connector.crm.dynamics.auth import DataverseTokens
from connector.crm.dynamics.pacing import (
    RequestBudget,
    RequestPacer,
)
from connector.errors import CrmError, QuotaExhausted, Throttled
from connector.retry import (
    DEFAULT_MAX_THROTTLE_WAIT_S,
    RateGate,
    RetryPolicy,
    exponential_backoff,
    retry_after_seconds,
    retrying,
)

log = logging.getLogger(__name__)

#: Dataverse's concurrent requests per user (service protection)
SERVER_CONCURRENCY = 52

_TRANSIENT = frozenset({408, 500, 502, 503, 504})
_DEFAULT_RETRY_AFTER_S = 5.0
_MAX_SERVER_TEXT = 300


class _Throttled(CrmError):
    """A 429 inside the retry loop (never escapes the transport)."""

    code = "throttled"
    transient = True


class DataverseTransport:
    """Authenticated, budgeted, retried, concurrency-capped requests to one environment."""

    def __init__(
        self,
        *,
        api_url: str,
        http: httpx.Client,
        tokens: DataverseTokens,
        usage: ApiUsage,
        budget: RequestBudget,
        timeout_s: float = 60.0,
        max_concurrency: int = 8,
        max_attempts: int = 5,
        max_throttle_wait_s: float = DEFAULT_MAX_THROTTLE_WAIT_S,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        pacer: RequestPacer | None = None,
    ) -> None:
        if not 1 <= max_concurrency < SERVER_CONCURRENCY:
            raise ValueError(f"max_concurrency must be 1..{SERVER_CONCURRENCY - 1}")
        self.api_url = api_url.rstrip("/")
        self.http = http
        self.tokens = tokens
        self.usage = usage
        self.budget = budget
        #: waits before a send that would pass the 5-minute allowance (None: no pacing)
        self.pacer = pacer
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        self.max_attempts = max_attempts
        self._sleep = sleep
        self._gate = threading.BoundedSemaphore(max_concurrency)
        # After a 429 every thread of this adapter holds back, not only the throttled one;
        # the gate also caps the run's waiting (max_throttle_wait_s).
        self.rate_gate = RateGate(
            max_wait_s=max_throttle_wait_s, system="Dataverse", clock=monotonic, sleep=sleep
        )
        # attempts only bound the retries: the rate gate caps the Retry-After waits
        self._policy = RetryPolicy(
            attempts=max_attempts,
            max_total_seconds=math.inf,
            initial_wait=0.5,
            max_wait=30.0,
            jitter=0.5,
        )
        self._backoff = exponential_backoff(self._policy)
        self._lock = threading.Lock()
        #: seconds spent waiting for Retry-After this run, and how many 429s were seen
        self.throttle_wait_s = 0.0
        self.throttled = 0

    def url(self, path: str) -> str:
        """An absolute URL for an API-relative path, or a server link checked to be ours."""
        if path.startswith(("https://", "http://")):
            if not is_within(path, self.api_url):
                # A link pointing elsewhere would receive our bearer token: refuse it.
                raise CrmError(
                    "Dataverse returned a paging or delta link outside the environment; "
                    "refusing to follow it (check the environment URL setting)",
                    code="foreign_link",
                )
            return path
        return f"{self.api_url}/{path.lstrip('/')}"

    def send(
        self,
        method: str,
        path: str,
        *,
        kind: str,
        what: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """Send one request with retries; see the module table for what comes back."""
        url = self.url(path)
        attempts = retrying(
            self._policy,
            retry=_retryable,
            wait=self._wait,
            sleep=self._sleep_backoff,
            before_sleep=self._before_sleep,
        )
        try:
            return attempts(self._attempt, method, url, kind, what, params, headers, content)
        except _Throttled as exc:
            raise Throttled(
                f"{what}: Dataverse still throttles after {self.max_attempts} attempts; "
                "stopping, the next cycle resumes",
                status=429,
                retry_after=exc.retry_after,
            ) from exc

    def new_run(self) -> None:
        """Reset the per-run request budget and throttle figures."""
        self.budget.reset()
        with self._lock:
            self.throttle_wait_s = 0.0
            self.throttled = 0

    def _attempt(
        self,
        method: str,
        url: str,
        kind: str,
        what: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        content: bytes | None,
    ) -> httpx.Response:
        for refreshed in (False, True):
            token = self.tokens.get()
            response = self._once(method, url, kind, what, params, headers, content, token)
            if response.status_code != 401:
                break
            self.tokens.invalidate(token)
            if refreshed:
                raise CrmError(
                    f"{what}: Dataverse refused a fresh token (401); check that the "
                    "application user exists in the environment and has a security role",
                    code="unauthenticated",
                    status=401,
                )
        if response.status_code == 429:
            wait = retry_after_s(response)
            with self._lock:
                self.throttled += 1
            self.rate_gate.block_for(wait)  # Throttled past max_throttle_wait_s
            with self._lock:
                self.throttle_wait_s += wait
            raise _Throttled(
                f"{what}: throttled by Dataverse", status=429, retry_after=wait, transient=True
            )
        if response.status_code in _TRANSIENT:
            raise error_of(response, what)
        return response

    def _once(
        self,
        method: str,
        url: str,
        kind: str,
        what: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        content: bytes | None,
        token: str,
    ) -> httpx.Response:
        self.rate_gate.wait()
        self.budget.spend()
        all_headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
            **(headers or {}),
        }
        with self._gate:
            if self.pacer is not None:
                # inside the gate, right before the send: a request waiting for a free
                # slot of the gate is not yet counted in the window
                self.pacer.acquire()
            with self._lock:
                self.usage.count(kind)
                if self.budget.max_requests is not None:
                    # The run report's quota share: this run's budget, as used so far.
                    self.usage.used = self.budget.spent
                    self.usage.limit = self.budget.max_requests
                    self.usage.guard_at = self.budget.max_requests
            try:
                return self.http.request(
                    method,
                    url,
                    params=dict(params) if params else None,
                    headers=all_headers,
                    content=content,
                    timeout=self.timeout_s,
                )
            except httpx.TransportError as exc:
                if certificate_rejected(exc):
                    raise CrmError(
                        untrusted_message(what, "crm.ca_file", exc), code="tls"
                    ) from None
                state = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
                raise CrmError(
                    f"{what}: the connection to Dataverse {state} ({type(exc).__name__}); "
                    "it will be retried",
                    code="transport",
                    transient=True,
                ) from exc

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Throttled):
            return 0.0  # the rate gate holds the Retry-After wait, for every thread
        return self._backoff(state)

    def _sleep_backoff(self, seconds: float) -> None:
        if seconds > 0:
            self._sleep(seconds)

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning("dataverse retry %d after %s", state.attempt_number, exc if exc else "an error")


def _retryable(exc: BaseException) -> bool:
    """Transient Dataverse errors, except a spent request budget (the next cycle's)."""
    return isinstance(exc, CrmError) and exc.transient and not isinstance(exc, QuotaExhausted)


def is_within(link: str, api_url: str) -> bool:
    """Whether ``link`` is under ``api_url``: same scheme, host and port, path below it.

    Host names are compared without case (DNS ignores it, and Dataverse answers with the
    host in lower case whatever the environment URL setting's spelling); the path too,
    as both name the same service on that host. The default port may be written or not.
    """
    try:
        target, base = httpx.URL(link), httpx.URL(api_url)
    except httpx.InvalidURL:
        return False
    if (target.scheme, target.host, _port(target)) != (base.scheme, base.host, _port(base)):
        return False  # httpx lower-cases scheme and host
    prefix = base.path.rstrip("/").lower() + "/"
    return target.path.lower().startswith(prefix)


def _port(url: httpx.URL) -> int | None:
    return url.port if url.port is not None else {"https": 443, "http": 80}.get(url.scheme)


def retry_after_s(response: httpx.Response, now: datetime | None = None) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date, with or
    without a zone); a default when it is missing or unreadable."""
    seconds = retry_after_seconds(response.headers.get("Retry-After"), now=now)
    return _DEFAULT_RETRY_AFTER_S if seconds is None else seconds


def body_of(response: httpx.Response, what: str) -> Any:
    """The JSON body with decimals for every non-integer number (money stays exact).

    An answer that holds no JSON (empty, cut short by a proxy, an HTML error page) is a
    classified :class:`CrmError` naming ``what``, never a bare ``JSONDecodeError``:
    nothing of it is used and the caller's run stops with a message.
    """
    if not response.content.strip():
        raise CrmError(
            f"{what}: Dataverse answered {response.status_code} with an empty body where a "
            "JSON answer was expected; nothing was read, the next cycle asks again",
            code="empty_response",
            status=response.status_code,
            transient=True,
        )
    try:
        return json.loads(response.content, parse_float=Decimal)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        kind = response.headers.get("Content-Type", "no content type").split(";")[0]
        raise CrmError(
            f"{what}: Dataverse answered {response.status_code} with a body that is not "
            f"JSON ({kind}, {len(response.content)} bytes); nothing was read, the next cycle "
            "asks again",
            code="malformed_response",
            status=response.status_code,
            transient=True,
        ) from None


def page_of(response: httpx.Response, what: str) -> dict[str, Any]:
    """A JSON object whose ``value``, when present, is a list of objects; else CrmError.

    Read as "no rows", an answer of another shape would silently skip changes.
    """
    body = body_of(response, what)
    rows = body.get("value", []) if isinstance(body, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise CrmError(
            f"{what}: Dataverse answered something that is not an object with a list of "
            "rows; nothing of it was used, the next cycle reads the same changes again",
            code="malformed_response",
            status=response.status_code,
        )
    assert isinstance(body, dict)
    return body


def error_of(response: httpx.Response, what: str) -> CrmError:
    """A CrmError for a failed answer: its code from the body, transient for 5xx/408/429."""
    status = response.status_code
    code, message = _error_body(response)
    if status == 404:
        code = "not_found"
    elif status == 412:
        code = "precondition_failed"
    return CrmError(
        f"{what}: Dataverse answered {status} {code}: {message}",
        code=code,
        status=status,
        transient=status in _TRANSIENT or status == 429,
    )


def _error_body(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        return "http_" + str(response.status_code), response.text[:_MAX_SERVER_TEXT]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return (
            str(error.get("code") or f"http_{response.status_code}"),
            str(error.get("message", ""))[:_MAX_SERVER_TEXT],
        )
    return "http_" + str(response.status_code), str(body)[:_MAX_SERVER_TEXT]
