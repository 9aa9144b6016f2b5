"""The record history and run details tables: written, read by record and by run, bounded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connector.state import Store
from connector.state.history import HistoryEntry, RecordHistory

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path}/state.db", clock=clock) as opened:
        yield opened


def entry(crm_id: str, run_id: int, kind: str = "updated", **more: object) -> HistoryEntry:
    return HistoryEntry("sf", crm_id, run_id, T0, kind, **more)  # type: ignore[arg-type]


def test_entries_read_back_newest_first_per_record_and_in_order_per_run(store: Store) -> None:
    history = RecordHistory(store)
    history.add([entry("A", 1, "created", sent={"name": "x"}), entry("B", 1, "rejected")])
    history.add([entry("A", 2, answer={"status": "Active"})])
    assert [(e.run_id, e.kind) for e in history.of_record("sf", "A")] == [
        (2, "updated"),
        (1, "created"),
    ]
    newest = history.of_record("sf", "A")[0]
    assert newest.answer == {"status": "Active"} and newest.sent is None
    assert [e.crm_id for e in history.of_run(1)] == ["A", "B"]
    assert [e.crm_id for e in history.of_run(1, kind="rejected")] == ["B"]
    first = history.of_run(1, limit=1)
    assert [e.crm_id for e in history.of_run(1, after=first[0].id)] == ["B"]
    assert history.of_record("sf", "A", before=newest.id)[0].run_id == 1


def test_trimming_keeps_the_newest_entries_of_each_record(store: Store) -> None:
    history = RecordHistory(store)
    history.add([entry("A", run) for run in range(1, 8)] + [entry("B", 1)])
    assert history.trim_records("sf", ["A", "B"], keep=3) == 4
    assert [e.run_id for e in history.of_record("sf", "A")] == [7, 6, 5]
    assert len(history.of_record("sf", "B")) == 1


def test_old_runs_lose_their_entries(store: Store, clock: Clock) -> None:
    history = RecordHistory(store)
    old = store.connection("sf").runs.start()
    clock.now = T0 + timedelta(days=100)
    new = store.connection("sf").runs.start()
    history.add([entry("A", old), entry("A", new)])
    assert history.drop_runs_before("sf", T0 + timedelta(days=10)) == 1
    assert [e.run_id for e in history.of_record("sf", "A")] == [new]
    assert history.drop_runs_before("sf", T0 + timedelta(days=10)) == 0


def test_run_details_are_saved_once_per_run(store: Store) -> None:
    history = RecordHistory(store)
    run = store.connection("sf").runs.start()
    history.save_run_details(run, {"outbound": 1.5}, {"salesforce": 0.1})
    history.save_run_details(run, {"outbound": 2.0}, {})
    details = history.run_details([run, 999])
    assert list(details) == [run]
    assert details[run].phases == {"outbound": 2.0} and details[run].quota == {}


def test_a_disabled_history_writes_nothing_but_still_drops_old_runs(
    store: Store, clock: Clock
) -> None:
    from connector.settings import HistorySettings
    from connector.state.store import Link, LinkState
    from connector.sync.history import HistoryRecorder
    from connector.sync.outcome import RecordOutcome

    history = RecordHistory(store)
    old = store.connection("sf").runs.start()
    history.add([entry("A", old)])
    clock.now = T0 + timedelta(days=200)
    recorder = HistoryRecorder(store, "sf", HistorySettings(enabled=False))
    recorder.begin(store.connection("sf").runs.start(), clock.now)
    link = Link("sf", "B", LinkState.LINKED, referral_id="R-B", core_facts={"status": "Active"})
    recorder.record([RecordOutcome("B", "created", link=link)], {}, clock.now)
    assert history.of_record("sf", "A") == [] and history.of_record("sf", "B") == []
    enabled = HistoryRecorder(store, "sf")
    enabled.begin(store.connection("sf").runs.start(), clock.now)
    enabled.record([RecordOutcome("B", "created", link=link)], {}, clock.now)
    assert [e.kind for e in history.of_record("sf", "B")] == ["created"]
