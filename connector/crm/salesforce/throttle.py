"""Throttled answers from Salesforce, or from a proxy in front of it.

Salesforce documents no 429 (a spent daily allowance is a 403), but a proxy or gateway
between the connector and the org may throttle with 429 (or 503) and ``Retry-After``.
simple-salesforce's exceptions carry no headers, so a response hook on the shared
session remembers the last throttled answer's ``Retry-After`` per thread.
:class:`SalesforceThrottle` turns such a failure into a transient
:class:`~connector.errors.CrmError` carrying that wait, and closes the shared
:class:`~connector.retry.RateGate`: every thread holds back, and a wait past
``max_throttle_wait_s`` stops the run (:class:`~connector.errors.Throttled`).
"""

from __future__ import annotations

import threading
from typing import Any

import requests

from connector.errors import CrmError
from connector.retry import RateGate, Sleep, retry_after_seconds

THROTTLE_STATUSES = frozenset({429, 503})


class SalesforceThrottle:
    """The gate every Salesforce call waits at, and what throttled answers asked for."""

    def __init__(self, session: requests.Session, *, max_wait_s: float, sleep: Sleep) -> None:
        self.gate = RateGate(max_wait_s=max_wait_s, system="Salesforce", sleep=sleep)
        self._answers = threading.local()
        session.hooks["response"].append(self._remember)

    def before_call(self) -> None:
        """Wait while the gate is closed (Throttled past the cap); forget the last answer."""
        self.gate.wait()
        self._answers.retry_after = None

    def classified(self, error: CrmError, what: str) -> CrmError:
        """``error`` as it should be raised: a throttled one carries its Retry-After,
        is transient, and closes the gate for that long (or stops the run)."""
        if error.status not in THROTTLE_STATUSES:
            return error
        retry_after = retry_after_seconds(getattr(self._answers, "retry_after", None))
        if retry_after is not None:
            self.gate.block_for(retry_after)  # Throttled past max_throttle_wait_s
        if error.status == 503:  # already transient (5xx)
            error.retry_after = retry_after
            return error
        wait = f", Retry-After {retry_after:g} s" if retry_after is not None else ""
        return CrmError(
            f"Salesforce (or a proxy in front of it) throttled {what} (HTTP 429{wait}); "
            "it will be retried",
            code="throttled",
            transient=True,
            status=429,
            retry_after=retry_after,
        )

    def _remember(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if response.status_code in THROTTLE_STATUSES:
            self._answers.retry_after = response.headers.get("Retry-After")
