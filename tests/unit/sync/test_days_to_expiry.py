"""The days left before an expiry: whole days on the core's clock (connector.sync.countdown)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connector.mapping.schema import StatusFields
from connector.state.lifecycle_reads import links_to_close, links_with_countdown
from connector.state.store import Link, LinkState, Store
from connector.sync.countdown import SKEW_CURSOR, CoreClock
from connector.sync.mirror import CoreFacts, status_values

FIELDS = StatusFields(referral_id="Ref__c", days_to_expiry="Days__c")
EXPIRY = "2026-05-15T09:30:00Z"


def days(now: datetime, expiry: str = EXPIRY) -> object:
    facts = CoreFacts("r-1", "New", "Pending", "Incoming", "link", expiration=expiry)
    return status_values(facts, FIELDS, now)["Days__c"]


@pytest.mark.parametrize(
    ("now", "left"),
    [
        (datetime(2026, 5, 1, 9, 30, tzinfo=UTC), 14),
        (datetime(2026, 5, 1, 23, 59, 59, tzinfo=UTC), 14),
        (datetime(2026, 5, 2, 0, 0, tzinfo=UTC), 13),
        (datetime(2026, 5, 14, 23, 0, tzinfo=UTC), 1),
        (datetime(2026, 5, 15, 9, 0, tzinfo=UTC), 0),
        (datetime(2026, 5, 20, tzinfo=UTC), 0),
    ],
)
def test_days_left_change_at_midnight_only(now: datetime, left: int) -> None:
    assert days(now) == left


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as opened:
        yield opened


def test_the_core_clock_keeps_its_offset_across_runs(store: Store) -> None:
    local = datetime(2026, 5, 1, 12, tzinfo=UTC)
    clock = CoreClock(store, "c", lambda: local)
    assert clock.now() == local
    clock.saw(local + timedelta(days=3, seconds=5))
    assert clock.now() == local + timedelta(days=3, seconds=5)
    assert store.connection("c").cursors.get(SKEW_CURSOR) == str(3 * 86400 + 5)
    # a later run, before any call to the core, already counts on the core's clock
    again = CoreClock(store, "c", lambda: local + timedelta(hours=1))
    assert again.now() == local + timedelta(days=3, hours=1, seconds=5)
    # a second of jitter in the Date header does not rewrite the cursor
    again.saw(local + timedelta(days=3, hours=1, seconds=6))
    assert store.connection("c").cursors.get(SKEW_CURSOR) == str(3 * 86400 + 5)


def link(crm_id: str, status: str, microsoft: str | None, state: LinkState) -> Link:
    facts = CoreFacts(f"r-{crm_id}", status, None, "Outgoing", "x", microsoft_status=microsoft)
    return Link(
        connection="c",
        crm_id=crm_id,
        state=state,
        referral_id=f"r-{crm_id}",
        status=status,
        direction="Outgoing",
        core_facts=facts.as_json(),
    )


def test_only_deals_waiting_for_an_answer_are_counted_down(store: Store) -> None:
    store.connection("c").links.save_many(
        [
            link("a", "New", None, LinkState.LINKED),  # incoming, not answered
            link("b", "Active", "New/Pending", LinkState.LINKED),  # Microsoft invited
            link("c", "Active", "Active/Accepted", LinkState.LINKED),
            link("d", "Active", None, LinkState.LINKED),
            link("e", "Closed", "New/Pending", LinkState.TERMINAL),
        ],
    )
    assert [k.crm_id for k in links_with_countdown(store, "c")] == ["a", "b"]


def test_only_declined_or_expired_incoming_deals_not_yet_closed_are_to_close(store: Store) -> None:
    def ended(crm_id: str, substatus: str, direction: str, closed: str | None) -> Link:
        facts = CoreFacts(f"r-{crm_id}", "Closed", substatus, direction, "x", crm_closed=closed)
        return Link(
            connection="c",
            crm_id=crm_id,
            state=LinkState.TERMINAL,
            referral_id=f"r-{crm_id}",
            status="Closed",
            substatus=substatus,
            direction=direction,
            core_facts=facts.as_json(),
        )

    store.connection("c").links.save_many(
        [
            ended("a", "Declined", "Incoming", None),
            ended("b", "Expired", "Incoming", None),
            ended("c", "Expired", "Incoming", "Expired"),  # closed already
            ended("d", "Lost", "Incoming", None),
            ended("e", "Declined", "Outgoing", None),
        ],
    )
    assert [k.crm_id for k in links_to_close(store, "c")] == ["a", "b"]
