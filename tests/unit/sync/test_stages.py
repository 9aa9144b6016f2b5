"""The sync's stages through the engine's constructor, against in-memory fakes with
failure knobs: a failing create, a 412 re-plan, a 429, batching by the Tuning."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fakes.core import FakeCore
from fakes.crm import FakeCrm

from connector.errors import CoreError, CrmError, Throttled
from connector.mapping.load import load_mapping
from connector.state.links import Links
from connector.state.store import TRANSIENT_PREFIX, Store
from connector.sync.engine import SyncEngine
from connector.sync.report import Outcome
from connector.sync.seen import SeenEtags
from connector.sync.tuning import Tuning

ROOT = Path(__file__).parents[3]
CONN = "acme"
MAPPING = load_mapping(ROOT / "mappings" / "salesforce.yaml")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=10)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[Store]:
    opened = Store.open(f"sqlite:///{tmp_path / 'state.db'}", clock=clock)
    yield opened
    opened.close()


def engine(
    store: Store, crm: FakeCrm, core: FakeCore, clock: Clock, tuning: Tuning = Tuning()
) -> SyncEngine:
    return SyncEngine(
        CONN,
        crm=crm,
        core=core,
        store=store,
        mapping=MAPPING,
        link_for=lambda referral_id: f"https://partner.example/{referral_id}",
        concurrency=2,
        clock=clock,
        tuning=tuning,
    )


def world(clock: Clock, records: int = 3) -> tuple[FakeCrm, FakeCore]:
    crm, core = FakeCrm(clock=clock), FakeCore(clock=clock)
    for n in range(records):
        crm.add(f"006{n:015d}")
    return crm, core


def test_records_are_created_mirrored_and_a_second_cycle_sends_nothing(
    store: Store, clock: Clock
) -> None:
    crm, core = world(clock)
    report = engine(store, crm, core, clock).run()
    assert report.outcome == Outcome.OK, report.error
    assert report.created == 3 and core.calls["POST"] == 3
    field = MAPPING.status_fields.referral_id
    assert {crm.records[i][field] for i in crm.records} == set(core.referrals)
    core.calls.clear()
    again = engine(store, crm, core, clock).run()
    assert again.created == again.updated == 0
    assert core.calls["POST"] == core.calls["PATCH"] == 0  # no echo


def test_a_failing_create_is_dead_lettered_and_created_by_a_later_cycle(
    store: Store, clock: Clock
) -> None:
    crm, core = world(clock, records=1)
    core.fail_next = [CoreError("503 Service Unavailable", status=503, transient=True)]
    report = engine(store, crm, core, clock).run()
    assert report.created == 0 and sum(report.failed.values()) == 1
    (letter,) = store.list_dead_letters(CONN)
    assert letter.reason_code.startswith(TRANSIENT_PREFIX)
    again = engine(store, crm, core, clock).run()  # transient letters are retried
    assert again.created == 1 and len(core.referrals) == 1
    assert store.list_dead_letters(CONN) == []


def test_a_412_re_reads_re_plans_and_patches_once_more(store: Store, clock: Clock) -> None:
    crm, core = world(clock, records=1)
    engine(store, crm, core, clock).run()
    (crm_id,) = crm.records
    crm.add(crm_id, Amount=Decimal("75000"))
    core.conflict_next = 1
    core.calls.clear()
    report = engine(store, crm, core, clock).run()
    assert report.updated == 1 and sum(report.failed.values()) == 0
    assert core.calls["PATCH"] == 2  # the 412, then the re-planned patch
    (referral,) = core.referrals.values()
    assert Decimal(str(referral["details"]["dealValue"])) == Decimal("75000")


def test_a_won_deal_after_a_412_is_closed_by_the_re_plan(store: Store, clock: Clock) -> None:
    crm, core = world(clock, records=1)
    engine(store, crm, core, clock).run()
    (crm_id,) = crm.records
    crm.add(crm_id, StageName="Closed Won", IsWon=True, IsClosed=True)
    core.conflict_next = 1
    report = engine(store, crm, core, clock).run()
    assert report.closed == 1
    (referral,) = core.referrals.values()
    assert (referral["status"], referral["substatus"]) == ("Closed", "Won")


def test_a_429_fails_the_record_for_now_and_a_long_throttle_stops_the_run(
    store: Store, clock: Clock
) -> None:
    crm, core = world(clock, records=2)
    core.throttle_probability = 1.0
    report = engine(store, crm, core, clock).run()
    assert report.failed["throttled"] == 2 and report.created == 0
    assert all(d.reason_code.startswith(TRANSIENT_PREFIX) for d in store.list_dead_letters(CONN))
    core.throttle_probability = 0.0
    core.fail_next = [Throttled("wait of 3600 s asked", status=429)]
    stopped = engine(store, crm, core, clock).run()
    assert stopped.outcome == Outcome.THROTTLED
    assert engine(store, crm, core, clock).run().created == 2


def test_status_writes_go_in_batches_of_the_tunings_size(store: Store, clock: Clock) -> None:
    crm, core = world(clock, records=5)
    engine(store, crm, core, clock, Tuning(write_batch=2)).run()
    assert crm.usage.by_kind["write"] >= 3  # 5 records, 2 a batch
    assert len({u.crm_id for u in crm.written}) == 5


def test_the_first_page_goes_to_the_pool_in_parts_and_its_cursor_after_the_last(
    store: Store, clock: Clock
) -> None:
    crm, core = world(clock, records=40)
    crm.page_size = 30
    sync = engine(store, crm, core, clock, Tuning(first_part=2))
    handed: list[int] = []
    start = sync.pusher.start

    def counting(actions: Any, links: Any) -> Any:
        handed.append(len(actions))
        return start(actions, links)

    sync.pusher.start = counting  # type: ignore[method-assign]
    last_stamp = max(crm.stamps.values())  # status writes move the stamps afterwards
    report = sync.run()
    assert report.outcome == Outcome.OK, report.error
    # the first page: 2 records, 4 times as many, the rest; the next page whole
    assert handed == [2, 8, 20, 10]
    assert report.created == 40 and core.calls["POST"] == 40
    assert store.connection(CONN).cursors.get("crm") == last_stamp.isoformat()


def test_a_pull_failing_after_a_first_page_in_parts_commits_that_pages_cursor(
    store: Store, clock: Clock
) -> None:
    crm, core = world(clock, records=40)
    crm.page_size = 30
    pages = crm.pull_changes

    def failing_second(cursor: str | None, **kwargs: Any) -> Iterator[Any]:
        listed = pages(cursor, **kwargs)
        yield next(listed)
        raise CrmError("503 Service Unavailable", status=503, transient=True)

    crm.pull_changes = failing_second  # type: ignore[method-assign]
    first_page_end = sorted(crm.stamps.values())[29]
    report = engine(store, crm, core, clock, Tuning(first_part=2)).run()
    assert report.outcome == Outcome.FAILED
    assert report.created == 30 and len(core.referrals) == 30  # every part of page one
    assert store.connection(CONN).cursors.get("crm") == first_page_end.isoformat()
    crm.pull_changes = pages  # type: ignore[method-assign]
    again = engine(store, crm, core, clock, Tuning(first_part=2)).run()
    assert again.created == 10 and len(core.referrals) == 40


def test_the_pull_back_asks_the_store_nothing_of_what_the_run_wrote_and_mirrors_a_change(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    crm, core = world(clock, records=5)
    asked: list[str] = []
    etags_of = Links.etags_by_referral

    def spying(self: Links, referral_ids: Any) -> dict[str, str]:
        asked.extend(referral_ids)
        return etags_of(self, referral_ids)

    monkeypatch.setattr(Links, "etags_by_referral", spying)
    listing = core.list_changed

    def changed_meanwhile(since: Any, **kwargs: Any) -> Iterator[Any]:
        # someone closes one deal in the core between the pushes and the pull-back
        raw = core.referrals["ref-2"]
        raw["status"], raw["substatus"] = "Closed", "Won"
        core._touch(raw)
        return listing(since, **kwargs)

    monkeypatch.setattr(core, "list_changed", changed_meanwhile)
    report = engine(store, crm, core, clock).run()
    assert report.outcome == Outcome.OK, report.error
    # the four unchanged referrals were not looked up: only the changed one
    assert asked == ["ref-2"]
    links = store.connection(CONN).links.by_referrals(["ref-2"])
    assert links["ref-2"].status == "Closed"
    assert report.mirrored >= 1


def test_seen_etags_hold_a_bounded_number_and_trust_only_the_same_etag() -> None:
    seen = SeenEtags(limit=2)
    seen.add("a", "1")
    seen.add("b", "1")
    seen.add("c", "1")  # over the bound: the store answers for it
    seen.add("a", "2")  # a known referral's newer eTag still replaces the old one
    seen.add(None, "1")
    seen.add("d", None)
    assert len(seen) == 2
    assert seen.unchanged("a", "2") and not seen.unchanged("a", "1")
    assert not seen.unchanged("c", "1") and not seen.unchanged("b", None)
    seen.clear()
    assert not seen.unchanged("a", "2") and len(seen) == 0
