"""The parallel pull-back listing: every referral once, errors raised, threads stopped."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from connector.errors import CoreError
from connector.model import ReferralState, Status, Substatus
from connector.sync.pullback import merged as _merged


def referral(i: int, etag: str = "e1") -> ReferralState:
    return ReferralState(
        id=f"R-{i}",
        engagement_id=f"E-{i}",
        etag=etag,
        status=Status.ACTIVE,
        substatus=Substatus.ACCEPTED,
        direction="Outgoing",
        updated=datetime(2026, 1, 1, tzinfo=UTC),
    )


def listing(items: list[ReferralState]) -> Iterator[ReferralState]:
    yield from items


def test_every_referral_of_every_slice_comes_once() -> None:
    slices = [
        [referral(i) for i in range(0, 1500)],
        [referral(1499), *(referral(i) for i in range(1500, 3000))],  # a boundary tie
        [referral(3000), referral(3000, etag="e2")],  # changed while listed: both states
    ]
    out = list(_merged([lambda s=s: listing(s) for s in slices]))
    keys = [(r.id, r.etag) for r in out]
    assert len(keys) == len(set(keys)) == 3002
    assert {r.id for r in out} == {f"R-{i}" for i in range(3001)}


def test_an_error_in_one_slice_is_raised_after_what_was_listed() -> None:
    def failing() -> Iterator[ReferralState]:
        yield referral(1)
        raise CoreError("the core answered 500", code="server_error", transient=True)

    seen: list[str] = []
    with pytest.raises(CoreError, match="500"):
        for r in _merged([lambda: listing([referral(2)]), failing]):
            seen.append(r.id)
    assert "R-1" in seen


def test_leaving_early_stops_the_listing_threads() -> None:
    stopped = threading.Event()

    def endless() -> Iterator[ReferralState]:
        try:
            for i in range(1_000_000):  # bounded, but far more than the queue holds
                yield referral(i)
        finally:
            stopped.set()

    merged = _merged([endless])
    assert next(merged).id == "R-0"
    merged.close()
    assert stopped.wait(10)
    assert not [t for t in threading.enumerate() if t.name.startswith("pull-")]


def test_with_boundaries_only_referrals_on_a_boundary_second_are_remembered() -> None:
    cut = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
    on_cut = replace(referral(1), updated=cut)
    inside = replace(referral(2), updated=cut.replace(microsecond=500_000))  # same second
    elsewhere = replace(referral(3), updated=datetime(2026, 1, 1, 12, 0, 9, tzinfo=UTC))
    slices = [[on_cut, elsewhere], [on_cut, inside]]
    out = list(_merged([lambda s=s: listing(s) for s in slices], boundaries=frozenset({cut})))
    assert sorted(r.id for r in out) == ["R-1", "R-2", "R-3"]
