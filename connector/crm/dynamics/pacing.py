"""Dataverse's service protection limits, kept on the client's side: the run's request
budget (a share of the allowance, QuotaExhausted when spent) and the pacer that keeps one
user's requests under 6,000 per sliding 5 minutes by waiting before a send."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from connector.errors import QuotaExhausted

log = logging.getLogger(__name__)

#: Dataverse's service protection limits, per user and 5-minute sliding window
WINDOW_S = 300.0
WINDOW_REQUESTS = 6000


class RequestBudget:
    """How many requests this run may still send; raises QuotaExhausted when spent."""

    def __init__(
        self,
        *,
        max_requests: int | None = None,
        window_share: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_share is not None and not 0 < window_share <= 1:
            raise ValueError("window_share is a fraction of Dataverse's allowance, in (0, 1]")
        self.max_requests = max_requests
        self.window_limit = int(WINDOW_REQUESTS * window_share) if window_share else None
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._sent: deque[float] = deque()
        self.spent = 0

    def reset(self) -> None:
        """Start a new run (the 5-minute window keeps its history)."""
        with self._lock:
            self.spent = 0

    def spend(self) -> None:
        with self._lock:
            if self.max_requests is not None and self.spent >= self.max_requests:
                raise QuotaExhausted(
                    f"Dataverse: this run used its budget of {self.max_requests} requests; "
                    "the rest waits for the next cycle (raise the budget to do more per run)",
                    transient=True,
                )
            now = self._monotonic()
            if self.window_limit is not None:
                while self._sent and self._sent[0] <= now - WINDOW_S:
                    self._sent.popleft()
                if len(self._sent) >= self.window_limit:
                    raise QuotaExhausted(
                        f"Dataverse: {self.window_limit} requests in 5 minutes is this "
                        "connection's share of the allowance; the rest waits for the next cycle",
                        transient=True,
                    )
                self._sent.append(now)
            self.spent += 1


#: the pacer's window is this much longer than Dataverse's: it times a request when it
#: is sent, Dataverse when it arrives (a little later, later still on a busy machine)
PACING_MARGIN_S = 3.0


class RequestPacer:
    """Keeps one Dataverse user's requests under ``limit`` per sliding ``window_s``.

    Dataverse's service protection allows 6000 requests per user in any 5 minutes; past
    that it answers 429 with a Retry-After that can outlast ``max_throttle_wait_s`` and
    stop the run (the rest spilling into the next cycle). The pacer waits before a send
    that would exceed the window instead, so a large first sync (100,000 rows make about
    7,400 requests) slows down inside one run rather than being throttled. It remembers
    the send time of the last ``limit`` requests; thread-safe, ``clock`` and ``sleep``
    injectable. One pacer is shared by every transport of the same user in the process
    (:func:`shared_pacer`), as the limit is the user's and the runtime (and with it the
    transport) is rebuilt every cycle.
    """

    def __init__(
        self,
        limit: int = WINDOW_REQUESTS,
        window_s: float = WINDOW_S + PACING_MARGIN_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("the pacer needs a limit of at least 1 and a positive window")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._sent: deque[float] = deque()
        #: seconds the callers waited in all, and how many waits (figures for reports)
        self.waited_s = 0.0
        self.waits = 0

    def acquire(self) -> float:
        """Count one request, first waiting until the window has room; the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._forget(now)
                if len(self._sent) < self.limit:
                    self._sent.append(now)
                    if waited:
                        self.waited_s += waited
                        self.waits += 1
                    return waited
                # at least a millisecond: a float sum may land a hair short of the end
                wait = max(self._sent[0] + self.window_s - now, 0.001)
            log.debug("dataverse pacing: waiting %.1f s for the 5-minute window", wait)
            self._sleep(wait)
            waited += wait

    def in_window(self) -> int:
        """Requests counted in the current window."""
        with self._lock:
            self._forget(self._clock())
            return len(self._sent)

    def _forget(self, now: float) -> None:
        """Drop the sends that left the window (the same sum as the wait's)."""
        while self._sent and self._sent[0] + self.window_s <= now:
            self._sent.popleft()


_PACERS: dict[tuple[str, str, int], RequestPacer] = {}
_PACERS_LOCK = threading.Lock()


def shared_pacer(environment: str, user: str, limit: int) -> RequestPacer:
    """The process's pacer for ``user`` (the application's client id) on ``environment``."""
    key = (environment.rstrip("/").lower(), user, limit)
    with _PACERS_LOCK:
        pacer = _PACERS.get(key)
        if pacer is None:
            pacer = _PACERS[key] = RequestPacer(limit)
        return pacer


__all__ = [
    "PACING_MARGIN_S",
    "WINDOW_REQUESTS",
    "WINDOW_S",
    "RequestBudget",
    "RequestPacer",
    "shared_pacer",
]
