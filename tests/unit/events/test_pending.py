"""The waiting ids: coalesced, debounced, bounded; a scheduled cycle goes before targeted ones."""

from __future__ import annotations

import threading

from connector.events.notices import Notice
from connector.events.pending import PendingChanges
from connector.events.runner import ConnectionGate, ReadBudget


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _pending(clock: Clock, *, cap: int = 100, debounce: float = 0.5) -> PendingChanges:
    return PendingChanges(max_pending=cap, debounce_s=debounce, clock=clock)


def test_repeats_coalesce_and_wait_the_debounce_from_the_first() -> None:
    clock = Clock()
    pending = _pending(clock)
    pending.add("sf", Notice("salesforce", crm_ids=("a",)))
    clock.now += 0.3
    pending.add("sf", Notice("salesforce", crm_ids=("a", "b")))
    pending.add("sf", Notice("partner_center", referral_ids=("r1",)))
    due, wait = pending.due()
    assert due == [] and wait is not None and abs(wait - 0.2) < 1e-6
    clock.now += 0.2
    assert pending.due()[0] == ["sf"]
    batch = pending.take("sf", limit=10)
    assert batch is not None
    assert batch.crm_ids == ["a", "b"] and batch.referral_ids == ["r1"]
    assert batch.arrivals[("crm", "a")] == (100.0, "salesforce")  # the first arrival counts
    assert pending.due() == ([], None)


def test_a_batch_takes_the_oldest_and_the_rest_is_due_at_once() -> None:
    clock = Clock()
    pending = _pending(clock)
    pending.add("sf", Notice("salesforce", crm_ids=tuple(f"id{i}" for i in range(5)), replay_id=9))
    clock.now += 1
    first = pending.take("sf", limit=3)
    assert first is not None and first.crm_ids == ["id0", "id1", "id2"]
    assert first.replay_id is None  # stored only with the batch that empties the queue
    assert pending.due()[0] == ["sf"]
    rest = pending.take("sf", limit=3)
    assert rest is not None and rest.crm_ids == ["id3", "id4"] and rest.replay_id == 9


def test_a_flood_of_10000_ids_is_capped_and_turns_into_one_full_cycle() -> None:
    clock = Clock()
    pending = _pending(clock, cap=500)
    accepted = [
        pending.add("sf", Notice("partner_center", referral_ids=(f"ref-{i}",)))
        for i in range(10_000)
    ]
    assert pending.most_held <= 500
    assert pending.depth("sf") <= 500
    assert accepted.count(False) == pending.overflows("sf") >= 1
    assert pending.wants_full("sf")
    # the scheduled cycle takes everything with it, the full mark included
    batch = pending.take_all("sf")
    assert batch.full and batch.size <= 500
    assert not pending.wants_full("sf") and pending.depth("sf") == 0


def test_a_failed_scheduled_cycle_gives_its_ids_back() -> None:
    clock = Clock()
    pending = _pending(clock)
    pending.add("dv", Notice("dataverse", crm_ids=("x",), full=True, replay_id=4))
    batch = pending.take_all("dv")
    pending.restore(batch)
    assert pending.depth("dv") == 1 and pending.wants_full("dv")
    clock.now += 1
    assert pending.due()[0] == ["dv"]


def test_a_position_alone_is_due_with_an_empty_batch() -> None:
    clock = Clock()
    pending = _pending(clock)
    pending.add("sf", Notice("salesforce", replay_id=41))
    pending.add("sf", Notice("salesforce", replay_id=40))  # late, older: the newest is kept
    clock.now += 1
    batch = pending.take("sf", limit=10)
    assert batch is not None and batch.size == 0 and batch.replay_id == 41


def test_a_waiting_scheduled_cycle_goes_before_new_targeted_cycles() -> None:
    gate = ConnectionGate()
    assert gate.try_targeted()  # a targeted cycle runs
    ran = threading.Event()

    def scheduled() -> None:
        with gate.scheduled():
            ran.set()

    thread = threading.Thread(target=scheduled)
    thread.start()
    for _ in range(500):  # bounded: until the scheduled cycle waits at the gate
        if gate._scheduled_waiting:
            break
        threading.Event().wait(0.01)
    assert gate._scheduled_waiting == 1 and not ran.is_set()
    gate.release_targeted()
    assert not gate.try_targeted()  # the scheduled cycle goes first
    thread.join(5)
    assert ran.is_set()
    assert gate.try_targeted()  # free again


def test_the_read_budget_refills_at_its_rate_up_to_one_batch() -> None:
    clock = Clock()
    budget = ReadBudget(per_minute=60, capacity=10, clock=clock)
    assert budget.take(10)
    assert not budget.take(1)  # spent
    clock.now += 5
    assert budget.take(5) and not budget.take(1)  # one read a second
    clock.now += 3600
    assert not budget.take(11)  # never more than one batch at once
    assert budget.take(10)
