"""The one retry module: tenacity backoff for transient errors, and the shared rate gate.

Only :class:`~connector.errors.ConnectorError` instances whose ``transient`` is true
are retried. The wait is exponential with jitter and never shorter than the error's
``retry_after``; attempts and total time are both bounded, and the last error is
re-raised unchanged. No other module sleeps on its own.

:class:`RateGate` is shared by every thread that talks to one API: when one request
is throttled (429/503 with ``Retry-After``), no thread sends another request until
that time has passed, so a pool of pushers backs off together instead of hammering.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
    wait_random,
)

from connector.errors import ConnectorError, RemoteError

log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], None]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to retry one call.

    ``attempts`` counts the first try. ``max_total_seconds`` bounds the time spent
    waiting between attempts: a retry whose wait would cross it is not made (the error
    is raised at once, and the next sync cycle tries again).
    """

    attempts: int = 6
    max_total_seconds: float = 120.0
    initial_wait: float = 0.5
    max_wait: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.max_total_seconds < 0 or self.initial_wait < 0 or self.max_wait < 0:
            raise ValueError("RetryPolicy waits must not be negative")


def is_transient(exc: BaseException) -> bool:
    """True for the errors worth another attempt (decided where they were classified)."""
    return isinstance(exc, ConnectorError) and exc.transient


class _WaitAtLeastRetryAfter:
    """Exponential backoff with jitter, raised to the error's ``retry_after`` if longer."""

    def __init__(self, policy: RetryPolicy) -> None:
        # Composed rather than wait_exponential_jitter, whose arguments changed in tenacity 9.
        self._backoff = wait_exponential(
            multiplier=policy.initial_wait, max=policy.max_wait
        ) + wait_random(0, policy.jitter)

    def __call__(self, state: RetryCallState) -> float:
        backoff = float(self._backoff(state))
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, RemoteError) and exc.retry_after is not None:
            return max(backoff, exc.retry_after)
        return backoff


def _log_retry(state: RetryCallState) -> None:
    outcome = state.outcome
    exc = outcome.exception() if outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    log.info(
        "retrying after a transient error: attempt=%d wait=%.2fs code=%s",
        state.attempt_number,
        wait,
        getattr(exc, "code", type(exc).__name__),
    )


def call_with_retry(fn: Callable[[], T], policy: RetryPolicy, *, sleep: Sleep = time.sleep) -> T:
    """Call ``fn`` until it succeeds, raises a permanent error, or the policy is spent.

    The first attempt runs without the retry machinery (almost every call succeeds at
    once, and a push pool makes thousands of them); a transient failure hands over to
    tenacity as that first attempt's outcome, so waits, logs and limits are the same.
    """
    try:
        return fn()
    except Exception as exc:
        if policy.attempts <= 1 or not is_transient(exc):
            raise
        first: Exception | None = exc

    def attempt() -> T:
        nonlocal first
        if first is not None:
            failed, first = first, None
            raise failed
        return fn()

    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts) | stop_before_delay(policy.max_total_seconds),
        wait=_WaitAtLeastRetryAfter(policy),
        retry=retry_if_exception(is_transient),
        reraise=True,
        sleep=sleep,
        before_sleep=_log_retry,
    )
    return retrying(attempt)


class RateGate:
    """A barrier in time shared by every thread calling one API.

    ``block_for(s)`` closes the gate for ``s`` seconds from now (never shortening an
    existing block); ``wait()`` returns once the gate is open. Thread-safe. ``clock``
    and ``sleep`` are injectable so tests run on a fake clock.
    """

    def __init__(self, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._open_at = float("-inf")

    def wait(self) -> None:
        """Return when no block is in force; sleeps (possibly several times) until then."""
        while True:
            with self._lock:
                remaining = self._open_at - self._clock()
            if remaining <= 0:
                return
            # Re-check after sleeping: another thread may have extended the block.
            self._sleep(remaining)

    def block_for(self, seconds: float) -> None:
        """Keep every thread from sending for ``seconds`` from now."""
        if seconds <= 0:
            return
        with self._lock:
            self._open_at = max(self._open_at, self._clock() + seconds)
            log.info("rate gate closed for %.2fs after throttling", seconds)

    @property
    def blocked_for(self) -> float:
        """Seconds until the gate opens (0 when open): for reports and tests."""
        with self._lock:
            return max(0.0, self._open_at - self._clock())
