"""The one retry module: tenacity backoff for transient errors, ``Retry-After``, and the
shared rate gate. Every adapter (the core's client, Salesforce, Dataverse) retries
through it: :func:`call_with_retry`, or :func:`retrying` for a caller that decides
itself what to retry and how long to wait (the Dataverse transport, whose rate gate
holds the ``Retry-After`` waits).

Only :class:`~connector.errors.ConnectorError` instances whose ``transient`` is true
are retried. The wait is exponential with jitter and never shorter than the error's
``retry_after``; attempts and total time are both bounded, and the last error is
re-raised unchanged. No other module sleeps on its own.

:class:`RateGate` is shared by every thread that talks to one API: when one request
is throttled (429/503 with ``Retry-After``), no thread sends another request until
that time has passed, so a pool of pushers backs off together instead of hammering.
It waits at most ``max_wait_s`` (the connection's ``max_throttle_wait_s``) in all, for
one ``Retry-After`` or for all of a run's together: a system asking for more (a day,
an HTTP date decades ahead) ends the run as :class:`~connector.errors.Throttled`
instead of silencing it, and the next cycle tries again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
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

from connector.errors import ConnectorError, RemoteError, Throttled

log = logging.getLogger(__name__)

#: the longest a run waits on a throttling system, in all (``max_throttle_wait_s``)
DEFAULT_MAX_THROTTLE_WAIT_S = 300.0

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


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or bad."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def exponential_backoff(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    """The policy's exponential backoff with jitter, ignoring any ``Retry-After``."""
    # Composed rather than wait_exponential_jitter, whose arguments changed in tenacity 9.
    backoff = wait_exponential(multiplier=policy.initial_wait, max=policy.max_wait) + wait_random(
        0, policy.jitter
    )
    return lambda state: float(backoff(state))


class _WaitAtLeastRetryAfter:
    """Exponential backoff with jitter, raised to the error's ``retry_after`` if longer."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._backoff = exponential_backoff(policy)

    def __call__(self, state: RetryCallState) -> float:
        backoff = self._backoff(state)
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

    return retrying(policy, sleep=sleep)(attempt)


def retrying(
    policy: RetryPolicy,
    *,
    sleep: Sleep = time.sleep,
    retry: Callable[[BaseException], bool] = is_transient,
    wait: Callable[[RetryCallState], float] | None = None,
    before_sleep: Callable[[RetryCallState], None] = _log_retry,
) -> Retrying:
    """The one place a tenacity ``Retrying`` is built: the policy's attempts and total
    time bound it, ``retry`` picks the errors worth another attempt (transient ones by
    default), ``wait`` the pause before each (the policy's backoff raised to the
    error's ``Retry-After`` by default); the last error is re-raised unchanged."""
    return Retrying(
        stop=stop_after_attempt(policy.attempts) | stop_before_delay(policy.max_total_seconds),
        wait=wait if wait is not None else _WaitAtLeastRetryAfter(policy),
        retry=retry_if_exception(retry),
        reraise=True,
        sleep=sleep,
        before_sleep=before_sleep,
    )


class RateGate:
    """A barrier in time shared by every thread calling one API.

    ``block_for(s)`` closes the gate for ``s`` seconds from now (never shortening an
    existing block); ``wait()`` returns once the gate is open. The gate stays closed
    ``max_wait_s`` at most in its life (one run): a block past that raises
    :class:`~connector.errors.Throttled`, and so does every later ``wait()`` or
    ``block_for()``, so that every thread stops instead of sleeping. ``system`` names
    the API in that message. Thread-safe. ``clock`` and ``sleep`` are injectable so
    tests run on a fake clock.
    """

    def __init__(
        self,
        *,
        max_wait_s: float = DEFAULT_MAX_THROTTLE_WAIT_S,
        system: str = "the remote system",
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        if not max_wait_s >= 0:
            raise ValueError("RateGate.max_wait_s must not be negative")
        self.max_wait_s = max_wait_s
        self.system = system
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._open_at = float("-inf")
        #: seconds the gate was closed so far (the extensions of every block)
        self.closed_s = 0.0
        #: why the gate gave up (then every caller gets a Throttled), else None
        self._refusal: tuple[str, float] | None = None

    def wait(self) -> None:
        """Return when no block is in force; sleeps (possibly several times) until then.

        Raises :class:`~connector.errors.Throttled` once the gate gave up.
        """
        while True:
            with self._lock:
                self._raise_if_refused()
                until = self._open_at
                remaining = until - self._clock()
            if remaining <= 0:
                return
            self._sleep(remaining)
            with self._lock:
                self._raise_if_refused()
                if self._open_at <= until:
                    return  # slept the block out and nobody extended it meanwhile

    def block_for(self, seconds: float) -> None:
        """Keep every thread from sending for ``seconds`` from now.

        Raises :class:`~connector.errors.Throttled` (and gives up for good) when the
        gate would then have been closed longer than ``max_wait_s`` in all.
        """
        if not seconds > 0:  # also NaN
            return
        with self._lock:
            self._raise_if_refused()
            now = self._clock()
            start = max(self._open_at, now)
            open_at = max(self._open_at, now + seconds)
            extension = open_at - start
            if seconds > self.max_wait_s or self.closed_s + extension > self.max_wait_s:
                self._refusal = (self._refusal_message(seconds), seconds)
                log.warning("%s", self._refusal[0])
                self._raise_if_refused()
            self.closed_s += extension
            self._open_at = open_at
            log.info("rate gate closed for %.2fs after throttling", seconds)

    def _refusal_message(self, seconds: float) -> str:
        asked = "more than a year" if seconds > 366 * 86400 else f"{seconds:.0f} s"
        if seconds > self.max_wait_s:
            why = f"asked the connector to wait {asked} (Retry-After)"
        else:
            why = (
                f"asked for another {asked} (Retry-After) after {self.closed_s:.0f} s of "
                "waiting in this run"
            )
        return (
            f"{self.system} {why}; a run waits at most {self.max_wait_s:.0f} s for "
            "throttling (max_throttle_wait_s), so it stops here and the next cycle resumes"
        )

    def _raise_if_refused(self) -> None:
        if self._refusal is not None:
            message, seconds = self._refusal
            # a new instance for every caller: threads never share one traceback
            raise Throttled(message, status=429, retry_after=seconds)

    @property
    def blocked_for(self) -> float:
        """Seconds until the gate opens (0 when open): for reports and tests."""
        with self._lock:
            return max(0.0, self._open_at - self._clock())
