"""What every part of the sandbox shares: the clock, call statistics, latency and faults."""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

#: the names of the imitated systems, as used in stats, faults and latency settings
APIS = ("core", "salesforce", "dataverse", "entra")

SANDBOX_CLIENT_ID = "sandbox"
SANDBOX_CLIENT_SECRET = "sandbox"


class Clock:
    """The sandbox's clock: real time plus an offset that the admin API advances."""

    def __init__(self) -> None:
        self._offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def advance(self, delta: timedelta) -> None:
        self._offset += delta

    @property
    def offset_seconds(self) -> float:
        return self._offset.total_seconds()


@dataclass
class FaultSettings:
    """Fault rates for one API, each a probability between 0 and 1."""

    rate_429: float = 0.0
    retry_after_s: float = 1.0
    #: how a 429 (and a 503 with ``retry_after_on_503``) says when to come back:
    #: ``seconds``, ``http_date`` (on the sandbox clock, as the ``Date`` header), or ``none``
    retry_after_format: str = "seconds"
    retry_after_on_503: bool = False
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_reset: float = 0.0
    rate_slow: float = 0.0
    slow_ms: float = 2000.0
    rate_token_expiry: float = 0.0
    # Servers that lie (sandbox.corrupt): the request is served, its 200 rewritten.
    rate_malformed_json: float = 0.0
    rate_truncated: float = 0.0
    rate_error_in_200: float = 0.0
    rate_wrong_types: float = 0.0
    rate_missing_fields: float = 0.0
    #: the lying kinds hit only requests whose path contains this (empty: every request)
    corrupt_path: str = ""
    #: ... and only this HTTP method (empty: every method)
    corrupt_method: str = ""

    def corrupts(self, method: str, path: str) -> bool:
        """Whether a lying answer drawn for this request applies to it."""
        return (not self.corrupt_path or self.corrupt_path in path) and (
            not self.corrupt_method or self.corrupt_method.upper() == method
        )


@dataclass
class Arrival:
    api: str
    method: str
    path: str
    at: float  # time.monotonic()
    token: str | None
    fault: str | None = None


#: how long after a 429 was answered other requests of the same client may still have
#: been on their way (sent by other threads before the client read the 429)
IN_FLIGHT_GRACE_S = 0.2


@dataclass(frozen=True)
class Throttle:
    """A 429 given to one client: nothing may follow before ``not_before``.

    A request arriving before then is an early retry when it repeats the throttled
    request (same method, path, query and body: the retry of that call), or when it
    arrives more than :data:`IN_FLIGHT_GRACE_S` after the 429 was answered (another
    thread that knew and did not wait). Requests merely in flight are not counted.
    """

    not_before: float
    answered_at: float
    request: str

    def is_early(self, at: float, request: str) -> bool:
        if at + 0.005 >= self.not_before:  # 5 ms of slack for clock granularity
            return False
        return request == self.request or at >= self.answered_at + IN_FLIGHT_GRACE_S


@dataclass
class Stats:
    """Call counts per API and method, and recent arrivals for the fault tests."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    faults: Counter[tuple[str, str]] = field(default_factory=Counter)
    arrivals: deque[Arrival] = field(default_factory=lambda: deque(maxlen=200_000))
    #: (api, token) → the throttle that client was given (until when, for which request)
    retry_not_before: dict[tuple[str, str | None], Throttle] = field(default_factory=dict)
    #: requests that arrived before the Retry-After the same client was given had passed
    early_retries: int = 0

    def as_json(self) -> dict[str, Any]:
        by_api: dict[str, dict[str, int]] = {}
        for (api, method), n in sorted(self.counts.items()):
            by_api.setdefault(api, {})[method] = n
        totals = {api: sum(m.values()) for api, m in by_api.items()}
        fault_counts: dict[str, dict[str, int]] = {}
        for (api, kind), n in sorted(self.faults.items()):
            fault_counts.setdefault(api, {})[kind] = n
        return {
            "calls": by_api,
            "totals": totals,
            "faults": fault_counts,
            "early_retries": self.early_retries,
        }

    def reset(self) -> None:
        self.counts.clear()
        self.faults.clear()
        self.arrivals.clear()
        self.retry_not_before.clear()
        self.early_retries = 0


class Persistent(Protocol):
    """A part of the sandbox whose data survives a restart with ``--state FILE``."""

    def dump(self) -> dict[str, Any]: ...

    def load(self, data: dict[str, Any]) -> None: ...

    def seed(self, n: int, seed: int) -> None: ...


@dataclass
class Token:
    value: str
    audience: str
    expires_at: datetime


class Tokens:
    """Bearer tokens issued by the sandbox's token endpoints, by audience."""

    def __init__(self, clock: Clock, lifetime: timedelta = timedelta(hours=1)) -> None:
        self._clock = clock
        self._lifetime = lifetime
        self._tokens: dict[str, Token] = {}
        self._lock = threading.Lock()

    def issue(self, audience: str) -> Token:
        token = Token(secrets.token_urlsafe(24), audience, self._clock.now() + self._lifetime)
        with self._lock:
            self._tokens[token.value] = token
        return token

    def check(self, header: str | None, audience: str) -> bool:
        """True when ``header`` is ``Bearer <token>`` for a live token of ``audience``."""
        if not header or not header.startswith("Bearer "):
            return False
        token = self._tokens.get(header[7:].strip())
        return (
            token is not None
            and token.audience == audience
            and token.expires_at > self._clock.now()
        )

    def revoke(self, header: str | None) -> None:
        if header and header.startswith("Bearer "):
            with self._lock:
                self._tokens.pop(header[7:].strip(), None)

    def revoke_all(self) -> None:
        with self._lock:
            self._tokens.clear()


class SandboxContext:
    """Shared by every part of the sandbox app."""

    def __init__(self, seed: int = 1, latency_ms: float = 0.0) -> None:
        self.clock = Clock()
        self.stats = Stats()
        self.tokens = Tokens(self.clock)
        #: one fault sequence per API, so the faults one API draws do not depend on
        #: how its calls interleave with another API's (a seed replays them)
        self._fault_rngs = {api: random.Random(f"{seed}:{api}") for api in APIS}
        self._fault_lock = threading.Lock()
        self.seed = seed
        self.latency_ms: dict[str, float] = dict.fromkeys(APIS, latency_ms)
        #: settle the heap after POST /_sandbox/seed (only where the sandbox has its
        #: process to itself: ``connector sandbox``)
        self.settle_heap_after_seed = False
        self.faults: dict[str, FaultSettings] = {api: FaultSettings() for api in APIS}
        #: client secrets the token endpoints accept (PUT /_sandbox/secrets adds long ones,
        #: so a secret scan has a distinctive value to look for)
        self.client_secrets: set[str] = {SANDBOX_CLIENT_SECRET}
        #: parts registered by name ("core", "salesforce", "dataverse")
        self.parts: dict[str, Persistent] = {}
        self.started = time.monotonic()

    def pick_fault(self, api: str) -> str | None:
        """Draw which fault (if any) the next request of ``api`` suffers."""
        f = self.faults.get(api)
        if f is None:
            return None
        with self._fault_lock:
            r = self._fault_rngs[api].random() if api in self._fault_rngs else 1.0
        for name, rate in (
            ("429", f.rate_429),
            ("500", f.rate_500),
            ("503", f.rate_503),
            ("reset", f.rate_reset),
            ("token_expiry", f.rate_token_expiry),
            ("slow", f.rate_slow),
            ("malformed_json", f.rate_malformed_json),
            ("truncated", f.rate_truncated),
            ("error_in_200", f.rate_error_in_200),
            ("wrong_types", f.rate_wrong_types),
            ("missing_fields", f.rate_missing_fields),
        ):
            if r < rate:
                return name
            r -= rate
        return None
