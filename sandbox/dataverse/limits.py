"""Dataverse's service protection limits, per token: requests per 5-minute window, concurrency.

The window slides on the sandbox clock, so a test can spend the budget and
then advance the clock instead of waiting five minutes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sandbox.context import Clock
from sandbox.dataverse.errors import (
    TOO_MANY_CONCURRENT,
    TOO_MANY_REQUESTS,
    DataverseError,
)

WINDOW = timedelta(minutes=5)


@dataclass
class Limits:
    """Settings changed with ``PUT /_sandbox/dataverse/limits``."""

    requests_per_5min: int = 6000
    concurrency: int = 52
    #: simulated server execution time per request, so concurrency can be reached on loopback
    execution_ms: float = 0.0
    #: change-tracking tokens older than this are refused
    delta_token_max_age_days: float = 7.0


class ServiceProtection:
    """Counts each token's requests and requests in flight; raises 429 past a limit."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.limits = Limits()
        self._recent: dict[str, deque[float]] = {}
        self._in_flight: dict[str, int] = {}

    def configure(self, settings: dict[str, Any]) -> None:
        for key, value in settings.items():
            if key not in Limits.__dataclass_fields__:
                raise ValueError(f"unknown limit {key!r}")
            current = getattr(self.limits, key)
            setattr(self.limits, key, type(current)(value))

    def admit(self, token: str) -> None:
        """Count one request of ``token``, or raise 429 with the seconds until it may retry."""
        now = self.clock.now().timestamp()
        window = WINDOW.total_seconds()
        recent = self._recent.setdefault(token, deque())
        while recent and recent[0] <= now - window:
            recent.popleft()
        if len(recent) >= self.limits.requests_per_5min:
            wait = recent[0] + window - now if recent else window
            raise DataverseError(
                429,
                TOO_MANY_REQUESTS,
                f"Number of requests exceeded the limit of {self.limits.requests_per_5min} "
                "over time window of 300 seconds. Wait for the Retry-After seconds and retry.",
                retry_after=max(wait, 1.0),
            )
        if self._in_flight.get(token, 0) >= self.limits.concurrency:
            raise DataverseError(
                429,
                TOO_MANY_CONCURRENT,
                f"Number of concurrent requests exceeded the limit of {self.limits.concurrency}. "
                "Send fewer requests in parallel.",
                retry_after=1.0,
            )
        recent.append(now)

    def enter(self, token: str) -> None:
        self._in_flight[token] = self._in_flight.get(token, 0) + 1

    def leave(self, token: str) -> None:
        self._in_flight[token] = max(0, self._in_flight.get(token, 0) - 1)

    def prune(self) -> None:
        """Forget windows that emptied (called when the clock moves)."""
        cutoff = self.clock.now().timestamp() - WINDOW.total_seconds()
        for token in list(self._recent):
            recent = self._recent[token]
            while recent and recent[0] <= cutoff:
                recent.popleft()
            if not recent:
                del self._recent[token]

    def reset(self) -> None:
        # in place: the Web API holds a reference to these settings
        vars(self.limits).update(vars(Limits()))
        self._recent.clear()
        self._in_flight.clear()
