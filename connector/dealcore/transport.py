"""The referrals API's plumbing: every request of :class:`~connector.dealcore.client.ReferralsClient`.

Every request carries the bearer token, JSON headers, a fresh ``client-request-id`` and
the run's ``MS-CorrelationId``; waits at the shared :class:`RateGate`; is classified
by :func:`connector.dealcore.classify.classify`; and is retried by
:func:`connector.retry.call_with_retry` when the error is transient.
A 401 invalidates the token and tries once more with a fresh one. Listings follow
``@odata.nextLink`` through :mod:`connector.dealcore.paging` (same host, https, page
cap, loop guard).
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from connector.dealcore.auth import TokenProvider
from connector.dealcore.classify import Expect, classify
from connector.dealcore.options import DEFAULT_OPTIONS, CoreOptions
from connector.dealcore.paging import PageGuard, next_page_url
from connector.fastjson import dumps_body, loads
from connector.retry import RateGate, RetryPolicy, Sleep, call_with_retry

log = logging.getLogger(__name__)

#: statuses after which a POST may or may not have been applied: look before re-posting
_AMBIGUOUS_STATUSES = frozenset({None, 500, 502, 504})
_THROTTLE_STATUSES = frozenset({429, 503})
#: how far before a create began (on the core's clock) its referral is looked for when
#: the POST's outcome is unknown: the core stamps ``updatedDateTime`` on servers other
#: than the one answering ``Date``, and clocks drift (setting ``create_match_margin_s``)
DEFAULT_MATCH_MARGIN = timedelta(seconds=60)


class CallState:
    """What one logical call remembers across its attempts."""

    __slots__ = ("ambiguous", "refreshed")

    def __init__(self) -> None:
        self.refreshed = False
        self.ambiguous = False


class CoreTransport:
    """Authenticated, classified, retried requests to the referrals API.

    ``calls`` counts the HTTP requests sent, by method (retries included), for the
    run's report. Thread-safe: one client serves the whole pool of pushers, and
    they all respect the same ``gate``.
    """

    def __init__(
        self,
        base_url: str,
        tokens: TokenProvider,
        *,
        http: httpx.Client,
        correlation_id: str,
        retry_policy: RetryPolicy | None = None,
        gate: RateGate | None = None,
        sleep: Sleep = time.sleep,
        options: CoreOptions = DEFAULT_OPTIONS,
        match_margin: timedelta = DEFAULT_MATCH_MARGIN,
    ) -> None:
        #: the connector's choices where the API is not documented (read by the planner)
        self.options = options
        self._base = httpx.URL(base_url.rstrip("/") + "/")
        self._referrals = base_url.rstrip("/") + "/referrals"
        self._tokens = tokens
        self._http = http
        self._correlation_id = correlation_id
        self._policy = retry_policy or RetryPolicy()
        self._sleep = sleep
        self.gate = gate or RateGate(sleep=sleep)
        self.calls: Counter[str] = Counter()
        #: referrals skipped while listing because they could not be parsed
        self.malformed_skipped = 0
        #: the core's clock, from the last response's ``Date`` header (cursor safety)
        self.server_time: datetime | None = None
        #: the core refused ``$select`` once: listings ask for whole referrals from then on
        self.select_refused = False
        #: the core's clock minus ours, at least (see :meth:`core_time`)
        self._skew: timedelta | None = None
        self._match_margin = match_margin
        self._lock = threading.Lock()
        self._lookups = threading.Lock()

    def _items(
        self,
        params: dict[str, str],
        what: str,
        policy: RetryPolicy,
        on_page: Callable[[], None] | None = None,
    ) -> Iterator[Any]:
        """The items of every page, following ``@odata.nextLink`` (see :mod:`.paging`).

        ``on_page`` is called after each page is read (to count, or to stop a listing).
        """
        url: str | httpx.URL = self._referrals
        query: dict[str, str] | None = params
        guard = PageGuard(what, self.options.max_pages)
        while True:
            response = self._request(
                "GET", url, what=what, expect="list", params=query, policy=policy
            )
            data = loads(response.content)
            if on_page is not None:
                on_page()
            yield from data["value"]
            next_link = data.get("@odata.nextLink")
            if not next_link:
                return
            url = next_page_url(str(next_link), self._base, what)
            guard.check(url)
            query = None

    def _request(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        what: str,
        expect: Expect,
        params: dict[str, str] | None = None,
        json_body: Any = None,
        extra_headers: dict[str, str] | None = None,
        policy: RetryPolicy | None = None,
    ) -> httpx.Response:
        state = CallState()

        def attempt() -> httpx.Response:
            return self._attempt(
                method,
                url,
                state,
                what=what,
                expect=expect,
                params=params,
                json_body=json_body,
                extra_headers=extra_headers,
            )

        return call_with_retry(attempt, policy or self._policy, sleep=self._sleep)

    def _attempt(
        self,
        method: str,
        url: str | httpx.URL,
        state: CallState,
        *,
        what: str,
        expect: Expect,
        params: dict[str, str] | None = None,
        json_body: Any = None,
        extra_headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One try (two when a 401 calls for a fresh token); raises the classified error."""
        while True:
            self.gate.wait()
            headers = self._headers(extra_headers)
            started = time.monotonic()
            try:
                response = self._http.request(
                    method,
                    url,
                    params=params,
                    content=None if json_body is None else dumps_body(json_body),
                    headers=headers,
                )
            except httpx.TransportError as exc:
                self._count(method)
                state.ambiguous = True
                log.info("core %s %s failed: %s", method, httpx.URL(url).path, type(exc).__name__)
                error = classify(exc, what=what)
                assert error is not None
                raise error from None
            self._count(method)
            server_time = self._note_server_time(response)
            log.debug(
                "core %s %s -> %d in %.0f ms (client-request-id %s)",
                method,
                response.request.url.path,
                response.status_code,
                (time.monotonic() - started) * 1000,
                headers["client-request-id"],
            )
            # An HTTP-date Retry-After counts from the server's clock, not this host's.
            error = classify(response, what=what, expect=expect, now=server_time)
            if error is None:
                return response
            if error.code == "unauthenticated" and error.status == 401 and not state.refreshed:
                state.refreshed = True
                self._tokens.invalidate()
                continue
            if error.status in _THROTTLE_STATUSES and error.retry_after is not None:
                self.gate.block_for(error.retry_after)
            state.ambiguous = state.ambiguous or error.status in _AMBIGUOUS_STATUSES
            raise error

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._tokens.token()}",
            "Accept": "application/json",
            "Content-Type": "application/json",
            "client-request-id": str(uuid.uuid4()),
            "MS-CorrelationId": self._correlation_id,
        }
        if extra:
            headers.update(extra)
        return headers

    def _note_server_time(self, response: httpx.Response) -> datetime | None:
        """The response's ``Date`` (remembered as :attr:`server_time`), or None."""
        date = response.headers.get("date")
        if not date:
            return None
        try:
            when = email.utils.parsedate_to_datetime(date)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        self.server_time = when
        self._skew = when - datetime.now(UTC)
        return when

    def _count(self, method: str) -> None:
        with self._lock:
            self.calls[method] += 1
