"""Before any create: the CRM's link, the local link, then the core (connector.sync.existing).

A real SQLite store and a fake core that records what it was asked: which evidence is
trusted in which order, how far back the core is listed, and how often.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connector.errors import CoreError, NotFound
from connector.model import CrmOpportunity, ReferralState, Status, Substatus
from connector.state.store import Link, LinkState, Store
from connector.sync.existing import ExistingReferrals

CONN = "sf"
ME = "host-me:1"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MARGIN = timedelta(seconds=60)
OVERLAP = timedelta(seconds=60)


def referral(rid: str, crm_id: str | None, updated: datetime = NOW) -> ReferralState:
    return ReferralState(
        id=rid,
        engagement_id=f"eng-{rid}",
        etag='"1"',
        status=Status.ACTIVE,
        substatus=Substatus.ACCEPTED,
        direction="Outgoing",
        updated=updated,
        external_reference_id=crm_id,
        raw={"id": rid, "externalReferenceId": crm_id},
    )


class FakeCore:
    """The core as :class:`ExistingReferrals` uses it; records every question."""

    match_margin = MARGIN

    def __init__(self, referrals: Sequence[ReferralState] = ()) -> None:
        self.referrals = {r.id: r for r in referrals}
        self.listings: list[datetime | None] = []
        self.found: list[tuple[str, datetime | None]] = []
        self.gets: list[str] = []
        self.failing: set[str] = set()

    def core_time(self, local: datetime) -> datetime:
        return local

    def list_recent(
        self, since: datetime | None, *, select: Sequence[str] | None = None
    ) -> Iterator[ReferralState]:
        self.listings.append(since)
        newest = sorted(self.referrals.values(), key=lambda r: r.updated or NOW, reverse=True)
        for item in newest:
            if since is not None and item.updated is not None and item.updated < since:
                return
            yield item

    def find_created(self, external_id: str, since: datetime | None) -> ReferralState | None:
        self.found.append((external_id, since))
        return next(
            (
                r
                for r in self.referrals.values()
                if r.external_reference_id == external_id
                and (since is None or (r.updated or NOW) >= since)
            ),
            None,
        )

    def get(self, referral_id: str) -> ReferralState:
        self.gets.append(referral_id)
        if referral_id in self.failing:
            raise CoreError("the core is down", code="serviceNotAvailable", transient=True)
        if referral_id not in self.referrals:
            raise NotFound(f"no referral {referral_id}", code="itemNotFound")
        return self.referrals[referral_id]


def linked(
    link: Link | None,
    found: ReferralState,
    fingerprint: str | None,
    body: Mapping[str, Any] | None,
    *,
    crm_id: str | None = None,
) -> Link:
    base = link or Link(connection=CONN, crm_id=crm_id or "", state=LinkState.LINKED)
    return replace(
        base,
        state=LinkState.LINKED,
        referral_id=found.id,
        fingerprint=fingerprint,
        sent_body=dict(body) if body is not None else None,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path}/state.db", clock=lambda: NOW) as opened:
        yield opened


def existing(store: Store, core: FakeCore, started: datetime = NOW) -> ExistingReferrals:
    found = ExistingReferrals(
        CONN,
        store=store,
        core=core,  # type: ignore[arg-type]
        holder=ME,
        link_field="Referral_Identifier__c",
        linked=linked,
        overlap=OVERLAP,
        concurrency=4,
    )
    found.start(started)
    return found


def record(crm_id: str, carried: str | None = None) -> CrmOpportunity:
    return CrmOpportunity(crm_id, NOW, {"Referral_Identifier__c": carried})


def pending(store: Store, crm_id: str, holder: str, at: datetime) -> Link:
    link = Link(
        connection=CONN,
        crm_id=crm_id,
        state=LinkState.PENDING_CREATE,
        fingerprint="fp",
        sent_body={},
        intent_at=at,
        intent_by=holder,
    )
    store.connection(CONN).links.save(link)
    stored = store.connection(CONN).links.get(crm_id)
    assert stored is not None
    return stored


# --------------------------------------------------------------------- the CRM's link


def test_the_crm_records_referral_id_is_trusted_first(store: Store) -> None:
    core = FakeCore([referral("R-1", "006A"), referral("R-2", None), referral("R-3", "006Z")])
    core.failing.add("R-4")
    records = [
        record("006A", "R-1"),  # names this record: linked
        record("006B", "R-2"),  # names none (the core may send it back empty): linked
        record("006C", "R-3"),  # names another record: a copied field, not linked
        record("006D", "R-missing"),  # not in the core: not linked
        record("006E", "R-4"),  # the core failing: not created now
        record("006F"),  # nothing carried: nothing asked
    ]
    settled = existing(store, core).settle(records, {})
    assert {k: v.referral_id for k, v in settled.links.items()} == {"006A": "R-1", "006B": "R-2"}
    assert set(settled.failed) == {"006E"} and settled.claimed == set()
    assert sorted(core.gets) == ["R-1", "R-2", "R-3", "R-4", "R-missing"]
    assert core.listings == []  # the CRM's link costs no listing
    saved = store.connection(CONN).links.get_many(["006A", "006B"])
    assert {k: v.referral_id for k, v in saved.items()} == {"006A": "R-1", "006B": "R-2"}


def test_a_referral_linked_to_another_record_is_not_taken(store: Store) -> None:
    store.connection(CONN).links.save(Link(CONN, "006A", LinkState.LINKED, referral_id="R-1"))
    core = FakeCore([referral("R-1", None)])
    settled = existing(store, core).settle([record("006COPY", "R-1")], {})
    assert settled.links == {} and core.gets == []


# --------------------------------------------------------------------- pending links


def test_a_live_runs_pending_records_are_left_to_it(store: Store) -> None:
    assert store.connection(CONN).lease.acquire("host-live:2", 300)
    theirs = pending(store, "006A", "host-live:2", NOW)
    dead = pending(store, "006B", "host-gone:3", NOW - timedelta(minutes=5))
    core = FakeCore()
    settled = existing(store, core, started=NOW + timedelta(minutes=1)).settle(
        [record("006A"), record("006B")], {"006A": theirs, "006B": dead}
    )
    assert settled.claimed == {"006A"}
    assert "006B" not in settled.links  # taken over: planned as a create
    taken = store.connection(CONN).links.get("006B")
    assert taken is not None and taken.intent_by == ME


def test_a_dead_runs_pending_create_is_found_in_the_runs_listing(store: Store) -> None:
    store.connection(CONN).cursors.set("core", (NOW - timedelta(hours=1)).isoformat())
    intent = NOW - timedelta(minutes=10)
    dead = pending(store, "006A", "host-gone:3", intent)
    core = FakeCore([referral("R-A", "006A", updated=intent + timedelta(seconds=2))])
    found = existing(store, core)
    settled = found.settle([record("006A")], {"006A": dead})
    assert settled.links["006A"].referral_id == "R-A"
    assert settled.links["006A"].fingerprint is None  # planned against what the core holds
    assert core.listings == [NOW - timedelta(hours=1) - OVERLAP] and core.found == []


def test_an_intent_older_than_the_cursor_is_looked_for_on_its_own(store: Store) -> None:
    """A create that kept failing for days: its own listing back to its time, not the
    run's, which stays as short as the store's cursor allows."""
    store.connection(CONN).cursors.set("core", (NOW - timedelta(hours=1)).isoformat())
    intent = NOW - timedelta(days=3)
    dead = pending(store, "006A", ME, intent)
    core = FakeCore()
    found = existing(store, core)
    settled = found.settle([record("006A")], {"006A": dead})
    assert "006A" not in settled.links  # nothing in the core: created again
    assert core.found == [("006A", intent - MARGIN)] and core.listings == []
    found.before_create(["006A", "006B"], settled.links)
    assert core.listings == [NOW - timedelta(hours=1) - OVERLAP]


def test_an_intent_of_this_run_is_looked_for_on_its_own(store: Store) -> None:
    mine = pending(store, "006A", ME, NOW + timedelta(seconds=5))
    core = FakeCore([referral("R-A", "006A", updated=NOW + timedelta(seconds=6))])
    settled = existing(store, core).settle([record("006A")], {"006A": mine})
    assert settled.links["006A"].referral_id == "R-A"
    assert core.found == [("006A", NOW + timedelta(seconds=5) - MARGIN)]


# --------------------------------------------------------------------- the core


def test_one_listing_per_run_back_to_the_cursor(store: Store) -> None:
    cursor = NOW - timedelta(hours=2)
    store.connection(CONN).cursors.set("core", cursor.isoformat())
    core = FakeCore(
        [
            referral("R-A", "006A", updated=NOW - timedelta(minutes=30)),
            referral("R-OLD", "006B", updated=cursor - timedelta(days=1)),  # the store knew
        ]
    )
    found = existing(store, core)
    links: dict[str, Link] = {}
    first = found.before_create(["006A", "006B"], links)
    second = found.before_create(["006C"], links)
    assert {k: v.referral_id for k, v in first.links.items()} == {"006A": "R-A"}
    assert not second.failed and core.listings == [cursor - OVERLAP]


def test_a_new_store_lists_the_whole_core_and_nothing_when_nothing_is_created(
    store: Store,
) -> None:
    core = FakeCore([referral("R-A", "006A", updated=NOW - timedelta(days=400))])
    found = existing(store, core)
    assert found.before_create([], {}).links == {} and core.listings == []
    links = found.before_create(["006A"], {}).links
    assert links["006A"].referral_id == "R-A" and core.listings == [None]


def test_a_pending_create_whose_match_is_another_records_is_created(store: Store) -> None:
    """The core's referral naming the record is already another record's link: it is not
    taken, and the intent is taken over to create one (never left pending for good)."""
    store.connection(CONN).links.save(Link(CONN, "006Z", LinkState.LINKED, referral_id="R-A"))
    dead = pending(store, "006A", "host-gone:3", NOW - timedelta(minutes=1))
    core = FakeCore([referral("R-A", "006A")])
    settled = existing(store, core).settle([record("006A")], {"006A": dead})
    assert "006A" not in settled.links and settled.claimed == set()
    taken = store.connection(CONN).links.get("006A")
    assert taken is not None and taken.intent_by == ME
