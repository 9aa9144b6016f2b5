"""Every Salesforce call of the adapter: sign-in, the daily API allowance, throttling, retries.

:class:`SalesforceCalls` is what :class:`~connector.crm.salesforce.adapter.SalesforceOpportunities`
is built on: ``_call`` runs one request against the signed-in client (the session an
earlier cycle of the daemon signed in with, when it keeps one), signs in again once
when the session expired, counts it (``usage``), stops before the org's allowance
share is passed (:class:`~connector.errors.QuotaExhausted`), classifies failures into
:class:`~connector.errors.CrmError`, and retries transient ones through
:mod:`connector.retry` (creates excepted: they are not idempotent).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceExpiredSession

from connector.crm.base import ApiUsage
from connector.crm.salesforce.errors import crm_error_from
from connector.crm.salesforce.throttle import SalesforceThrottle
from connector.errors import QuotaExhausted
from connector.retry import DEFAULT_MAX_THROTTLE_WAIT_S, RetryPolicy, Sleep, call_with_retry

log = logging.getLogger(__name__)

T = TypeVar("T")


class SalesforceLogin(Protocol):
    """What the adapter needs of :class:`~connector.crm.salesforce.auth.SalesforceAuth`."""

    session: requests.Session

    @property
    def fetches_tokens(self) -> bool: ...

    def login(self) -> Salesforce: ...

    def reuse(self) -> Salesforce | None: ...

    def forget(self, client: Salesforce) -> None: ...

    def close(self) -> None: ...


class SalesforceCalls:
    """Counted, guarded, retried calls to one Salesforce org."""

    def __init__(
        self,
        auth: SalesforceLogin,
        *,
        max_quota_share: float | None = None,
        retry: RetryPolicy | None = None,
        max_throttle_wait_s: float = DEFAULT_MAX_THROTTLE_WAIT_S,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.auth = auth
        self.max_quota_share = max_quota_share
        self.retry = retry or RetryPolicy()
        self.usage = ApiUsage()
        self._sleep = sleep
        self._sf: Salesforce | None = None
        #: the first client may be the session an earlier cycle signed in with
        self._reuse = True
        self._server_time: datetime | None = None
        #: after a throttled answer every thread holds back (writes run on two threads)
        self.throttle = SalesforceThrottle(
            auth.session, max_wait_s=max_throttle_wait_s, sleep=sleep
        )
        auth.session.hooks["response"].append(self._remember_server_time)

    def quota_share(self) -> float | None:
        """``used / limit`` of the org's daily API allowance as last reported, else None."""
        if self.usage.used is None or not self.usage.limit:
            return None
        return self.usage.used / self.usage.limit

    def close(self) -> None:
        self.auth.close()

    def _call(
        self, kind: str, request: Callable[[Salesforce], T], *, what: str, retry: bool = True
    ) -> T:
        def once() -> T:
            return self._call_once(kind, request, what)

        if not retry:
            # Creates are not idempotent: a retried POST after a lost answer would
            # duplicate records, so a failure goes back to the engine instead.
            return once()
        return call_with_retry(once, self.retry, sleep=self._sleep)

    def _call_once(self, kind: str, request: Callable[[Salesforce], T], what: str) -> T:
        for renewed in (False, True):
            self._guard_quota(what)
            sf = self._client(what)
            self.throttle.before_call()
            self.usage.count(kind)
            self._server_time = None
            try:
                return request(sf)
            except SalesforceExpiredSession as exc:
                if renewed or not self.auth.fetches_tokens:
                    raise crm_error_from(exc, what) from None
                log.info("salesforce session expired during %s; signing in again", what)
                self.auth.forget(sf)
                self._sf = None
            except (SalesforceError, requests.RequestException) as exc:
                raise self.throttle.classified(crm_error_from(exc, what), what) from None
            finally:
                self._record_usage(sf)
        raise AssertionError("unreachable: the loop returns or raises")

    def _client(self, what: str) -> Salesforce:
        if self._sf is None and self._reuse:
            self._reuse = False  # once: a session that expires is not taken again
            self._sf = self.auth.reuse()
        if self._sf is None:
            if self.auth.fetches_tokens:
                self._guard_quota(what)
                self.usage.count("token")
            self._sf = self.auth.login()
        return self._sf

    def _guard_quota(self, what: str) -> None:
        share = self.quota_share()
        if share is None or self.max_quota_share is None or share < self.max_quota_share:
            return
        raise QuotaExhausted(
            f"Salesforce API usage is {self.usage.used}/{self.usage.limit} ({share:.1%}), at "
            f"or above the configured share of {self.max_quota_share:.0%}; {what} was not "
            "sent. The run stops and resumes next cycle (or raise the quota share setting)",
            transient=False,
        )

    def _record_usage(self, sf: Salesforce) -> None:
        usage = getattr(sf, "api_usage", {}).get("api-usage")
        if usage is not None:
            self.usage.used = int(usage.used)
            self.usage.limit = int(usage.total)
            if self.max_quota_share is not None:
                self.usage.guard_at = math.ceil(self.max_quota_share * self.usage.limit)

    def _remember_server_time(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        header = response.headers.get("Date")
        if not header:
            return
        try:
            stamp = parsedate_to_datetime(header)
            stamp = stamp.astimezone(UTC) if stamp.tzinfo else stamp.replace(tzinfo=UTC)
        except (TypeError, ValueError, OverflowError):
            return
        self._server_time = stamp
