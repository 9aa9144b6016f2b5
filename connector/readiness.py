"""What the daemon knows of each connection's health, and whether that makes it unready.

A connection makes ``/readyz`` answer 503 when its cycles keep failing or being
throttled (for ``unready_after_s``; 0: at the first such cycle), or when its running
cycle has made no progress (no record pulled, pushed or mirrored) for
``stalled_after_s``: a connection that stopped cycling must not look ready.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connector.sync.report import Outcome

#: outcomes after which the connection counts as failing until a cycle ends otherwise
UNHEALTHY_OUTCOMES = frozenset({Outcome.FAILED, Outcome.THROTTLED})
#: how long a running cycle may go without progress before the connection is unready
DEFAULT_STALLED_AFTER_S = 1800.0


@dataclass
class ConnectionHealth:
    """One connection's cycles as the daemon saw them (times are ``time.monotonic()``)."""

    last_outcome: str | None = None
    last_finished: float | None = None
    failing_since: float | None = None
    cycles: int = 0
    running: bool = False
    #: when the running cycle started, and when it last moved a record
    running_since: float | None = None
    last_progress: float | None = None

    def started(self, now: float) -> None:
        self.running = True
        self.running_since = now
        self.last_progress = None

    def progressed(self, now: float) -> None:
        self.last_progress = now

    def stopped(self) -> None:
        self.running = False
        self.running_since = None

    def finished(self, outcome: str, now: float) -> None:
        self.cycles += 1
        self.last_outcome = outcome
        self.last_finished = now
        if outcome in UNHEALTHY_OUTCOMES:
            self.failing_since = self.failing_since or now
        else:
            self.failing_since = None

    def state(
        self, now: float, *, unready_after_s: float, stalled_after_s: float
    ) -> dict[str, Any]:
        """``failing`` and ``stalled`` (either makes the daemon unready), with the facts."""
        failing = self.failing_since is not None and now - self.failing_since >= unready_after_s
        stalled = False
        if self.running and self.running_since is not None and stalled_after_s > 0:
            moved = max(self.running_since, self.last_progress or self.running_since)
            stalled = now - moved >= stalled_after_s
        return {
            "last_outcome": self.last_outcome,
            "cycles": self.cycles,
            "failing": failing,
            "stalled": stalled,
        }
