"""An in-memory deal core (the :class:`~connector.dealcore.base.DealCore` protocol).

Referrals live in a dict; a create gives an id, an engagement and an eTag; a PATCH
applies its JSON-patch ops (``replace``/``add`` of top-level or nested paths), checks
``If-Match`` (a stale eTag is a 412) and moves the eTag. Knobs:

- ``fail_next``: errors raised by the next writes (POST, PATCH), in order;
- ``fail_probability``: the share of writes that fail with a transient 503;
- ``throttle_probability``: the share of writes answered 429 (a transient failure);
- ``conflict_next``: how many PATCHes meet a 412 as if someone changed the referral.

Random knobs use ``seed``, so a test is repeatable.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from connector.dealcore.options import DEFAULT_OPTIONS, CoreOptions
from connector.dealcore.parse import parse_referral
from connector.dealcore.retry import RetryPolicy
from connector.errors import CoreError, NotFound, PreconditionFailed
from connector.model import ReferralState


class FakeCore:
    def __init__(
        self,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        options: CoreOptions = DEFAULT_OPTIONS,
        fail_probability: float = 0.0,
        throttle_probability: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.options = options
        self.clock = clock
        self.referrals: dict[str, dict[str, Any]] = {}
        self.fail_next: list[Exception] = []
        self.fail_probability = fail_probability
        self.throttle_probability = throttle_probability
        self.conflict_next = 0
        self.random = random.Random(seed)
        self.calls: Counter[str] = Counter()
        self.server_time: datetime | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ knobs

    def _knobs(self, method: str, *, write: bool) -> None:
        self.calls[method] += 1
        self.server_time = self.clock()
        if write and self.fail_next:
            raise self.fail_next.pop(0)
        if write and self.random.random() < self.throttle_probability:
            raise CoreError("429 Too Many Requests", code="throttled", status=429, transient=True)
        if write and self.random.random() < self.fail_probability:
            raise CoreError(
                "503 Service Unavailable", code="unavailable", status=503, transient=True
            )

    def _state(self, referral_id: str) -> ReferralState:
        return parse_referral(self.referrals[referral_id])

    # ------------------------------------------------------------------ the protocol

    @property
    def match_margin(self) -> timedelta:
        return timedelta(minutes=5)

    def core_time(self, local: datetime) -> datetime:
        return local

    def create(self, body: dict[str, Any]) -> ReferralState:
        with self._lock:
            self._knobs("POST", write=True)
            n = next(self._ids)
            raw = {
                **body,
                "id": f"ref-{n}",
                "engagementId": f"eng-{n}",
                "eTag": f"etag-{n}-1",
                "direction": "Outgoing",
                "createdDateTime": self.clock().isoformat(),
                "updatedDateTime": self.clock().isoformat(),
            }
            self.referrals[raw["id"]] = raw
            return self._state(raw["id"])

    def get(self, referral_id: str) -> ReferralState:
        with self._lock:
            self._knobs("GET", write=False)
            if referral_id not in self.referrals:
                raise NotFound(f"referral {referral_id} not found", status=404)
            return self._state(referral_id)

    def patch(self, referral_id: str, ops: list[dict[str, Any]], etag: str | None) -> ReferralState:
        with self._lock:
            self._knobs("PATCH", write=True)
            raw = self.referrals.get(referral_id)
            if raw is None:
                raise NotFound(f"referral {referral_id} not found", status=404)
            if self.conflict_next:
                self.conflict_next -= 1
                self._touch(raw)  # someone else changed it
                raise PreconditionFailed("412 Precondition Failed", status=412)
            if etag is not None and etag != raw["eTag"]:
                raise PreconditionFailed("412 Precondition Failed", status=412)
            for op in ops:
                _apply(raw, op)
            self._touch(raw)
            return self._state(referral_id)

    def _touch(self, raw: dict[str, Any]) -> None:
        base, _, n = str(raw["eTag"]).rpartition("-")
        raw["eTag"] = f"{base}-{int(n) + 1}"
        raw["updatedDateTime"] = self.clock().isoformat()

    def find_created(
        self, external_id: str, since: datetime | None, *, policy: RetryPolicy | None = None
    ) -> ReferralState | None:
        for referral in self.list_recent(since, policy=policy):
            if referral.external_reference_id == external_id:
                return referral
        return None

    def list_recent(
        self,
        since: datetime | None,
        *,
        select: Sequence[str] | None = None,
        policy: RetryPolicy | None = None,
    ) -> Iterator[ReferralState]:
        self._knobs("GET", write=False)
        found = [parse_referral(raw) for raw in list(self.referrals.values())]
        found.sort(key=lambda r: r.updated or datetime.min.replace(tzinfo=UTC), reverse=True)
        yield from (r for r in found if since is None or (r.updated and r.updated >= since))

    def list_changed(
        self,
        since: datetime | None,
        *,
        until: datetime | None = None,
        extra_filter: str | None = None,
        select: Sequence[str] | None = None,
    ) -> Iterator[ReferralState]:
        self._knobs("GET", write=False)
        found = [parse_referral(raw) for raw in list(self.referrals.values())]
        found.sort(key=lambda r: r.updated or datetime.min.replace(tzinfo=UTC))
        for r in found:
            if since is not None and (r.updated is None or r.updated < since):
                continue
            if until is not None and r.updated is not None and r.updated > until:
                continue
            yield r

    def invite_microsoft(self, engagement_id: str, body: dict[str, Any]) -> ReferralState:
        raise NotImplementedError("the fake core does not play Microsoft")

    def create_in_engagement(
        self,
        engagement_id: str,
        body: dict[str, Any],
        already: Callable[[ReferralState], bool],
    ) -> ReferralState:
        raise NotImplementedError("the fake core has one referral per engagement")


def _apply(raw: dict[str, Any], op: dict[str, Any]) -> None:
    """A JSON-patch ``replace``/``add``/``remove`` of ``op["path"]`` in ``raw``."""
    parts = [p for p in str(op["path"]).split("/") if p]
    target = raw
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    if op["op"] == "remove":
        target.pop(parts[-1], None)
    else:
        target[parts[-1]] = op["value"]
