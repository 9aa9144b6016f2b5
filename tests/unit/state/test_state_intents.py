"""Create intents in the ``links`` table: pending links written before a POST, refused,
taken over and released (``@contract``: SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

import pytest
from state_contract import RUN, FakeClock, MakeStore, contract, linked

from connector.errors import StateError
from connector.state import ConnectionState, LinkState, Store


@contract
def test_pending_then_linked(store: Store, sf: ConnectionState, clock: FakeClock) -> None:
    assert sf.links.get("006A") is None
    pending = sf.links.mark_pending("006A", "fp1", {"name": "Contoso", "value": 10}, holder=RUN)
    assert pending.state is LinkState.PENDING_CREATE
    assert pending.referral_id is None
    assert pending.direction == "Outgoing"
    assert pending.updated == pending.intent_at == clock.now
    assert pending.intent_by == RUN

    # a retry of the same create by the same run may re-mark it with a newer body
    clock.advance(5)
    again = sf.links.mark_pending("006A", "fp2", {"name": "Contoso", "value": 20}, holder=RUN)
    assert (again.fingerprint, again.sent_body) == ("fp2", {"name": "Contoso", "value": 20})
    assert again.updated == again.intent_at == clock.now

    sf.links.save(linked("006A", "R-1", fingerprint="fp2"))
    link = sf.links.get("006A")
    assert link is not None
    assert link.state is LinkState.LINKED
    assert link.referral_id == "R-1"
    assert sf.links.by_referral("R-1") == link
    assert store.connection("other").links.by_referral("R-1") is None


@contract
def test_many_records_are_marked_pending_in_one_go_and_linked_ones_refused(
    sf: ConnectionState, clock: FakeClock
) -> None:
    sf.links.save(linked("006L", "R-L"))
    sf.links.save(linked("006T", "R-T", state=LinkState.TERMINAL))
    # this run's own intent from an earlier attempt (say its POST was throttled)
    sf.links.mark_pending("006P", "old", {"v": 0}, holder=RUN)
    refused = sf.links.mark_pending_many(
        [
            ("006A", "fpA", {"v": 1}),
            ("006L", "fpL", {"v": 2}),
            ("006P", "fpP", {"v": 3}),
            ("006T", "fpT", {"v": 4}),
        ],
        holder=RUN,
    )
    assert set(refused) == {"006L", "006T"}
    assert all(e.code == "state_conflict" for e in refused.values())
    assert "R-L" in str(refused["006L"]) and "terminal" in str(refused["006T"])
    for crm_id, fp, body in (("006A", "fpA", {"v": 1}), ("006P", "fpP", {"v": 3})):
        link = sf.links.get(crm_id)
        assert link is not None and link.state is LinkState.PENDING_CREATE
        assert (link.fingerprint, link.sent_body, link.updated) == (fp, body, clock.now)
    untouched = sf.links.get("006L")
    assert untouched is not None and untouched.state is LinkState.LINKED
    assert untouched.referral_id == "R-L"
    assert sf.links.mark_pending_many([], holder=RUN) == {}


@contract
def test_a_second_runs_intent_for_a_pending_record_is_refused(
    sf: ConnectionState, clock: FakeClock
) -> None:
    sf.links.mark_pending("006P", "fp-first", {"v": 1}, holder=RUN)
    clock.advance(3)
    refused = sf.links.mark_pending_many(
        [("006P", "fp-second", {"v": 2}), ("006N", "fp-new", {"v": 3})], holder="host-b:7"
    )
    assert set(refused) == {"006P"}
    assert refused["006P"].code == "state_conflict"
    assert "being created by another run" in str(refused["006P"]) and RUN in str(refused["006P"])
    first = sf.links.get("006P")
    assert first is not None and first.state is LinkState.PENDING_CREATE
    assert (first.intent_by, first.fingerprint, first.sent_body) == (RUN, "fp-first", {"v": 1})
    assert first.intent_at == clock.now - timedelta(seconds=3)
    fresh = sf.links.get("006N")
    assert fresh is not None and (fresh.intent_by, fresh.intent_at) == ("host-b:7", clock.now)
    with pytest.raises(StateError, match="being created by another run"):
        sf.links.mark_pending("006P", "fp", {}, holder="host-b:7")


@contract
def test_runs_racing_for_the_same_records_each_get_a_record_once(
    make_store: MakeStore, clock: FakeClock
) -> None:
    """Two runs marking the same page at once (their own connections to the database):
    every record is accepted for exactly one of them and refused to the others."""
    runs = [f"host-{n}:{n}" for n in range(4)]
    stores = [make_store(clock) for _ in runs]
    items = [(f"006{i:03}", "fp", {"i": i}) for i in range(60)]
    start = threading.Barrier(len(runs))
    refused: dict[str, set[str]] = {}
    errors: list[BaseException] = []

    def mark(holder: str, store: Store) -> None:
        try:
            start.wait(timeout=30)
            refused[holder] = set(
                store.connection("sf").links.mark_pending_many(items, holder=holder)
            )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=mark, args=pair) for pair in zip(runs, stores, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    links = stores[0].connection("sf").links.get_many([crm_id for crm_id, _, _ in items])
    for crm_id, _, _ in items:
        accepted = [holder for holder in runs if crm_id not in refused[holder]]
        assert accepted == [links[crm_id].intent_by], crm_id


@contract
def test_an_intent_is_taken_over_only_as_it_was_read(sf: ConnectionState, clock: FakeClock) -> None:
    dead = sf.links.mark_pending("006P", "fp", {"v": 1}, holder="host-gone:1")
    sf.links.mark_pending("006Q", "fp", {"v": 1}, holder="host-gone:1")
    clock.advance(30)
    assert sf.links.take_over_intents([dead], RUN) == {"006P"}
    assert sf.links.take_over_intents([dead], "host-c:3") == set()  # RUN has it now
    taken = sf.links.get("006P")
    assert taken is not None and (taken.intent_by, taken.intent_at) == (RUN, dead.intent_at)
    # now RUN's intent: marked again by RUN before its POST, refused to the others
    assert sf.links.mark_pending_many([("006P", "fp2", {"v": 2})], holder=RUN) == {}
    assert "006P" in sf.links.mark_pending_many([("006P", "fp", {})], holder="host-c:3")
    sf.links.save(linked("006Q", "R-Q"))  # linked meanwhile: nothing to take over
    stale = replace(dead, crm_id="006Q")
    assert sf.links.take_over_intents([stale], RUN) == set()
    assert sf.links.take_over_intents([], RUN) == set()


@contract
def test_linked_record_cannot_be_marked_pending_again(sf: ConnectionState) -> None:
    sf.links.save(linked("006A", "R-1"))
    with pytest.raises(StateError) as caught:
        sf.links.mark_pending("006A", "fp", {"name": "x"}, holder=RUN)
    assert caught.value.code == "state_conflict"
    assert "006A" in str(caught.value)
    assert "R-1" in str(caught.value)
    link = sf.links.get("006A")
    assert link is not None and link.state is LinkState.LINKED


@contract
def test_releasing_create_intents_drops_only_pending_links(sf: ConnectionState) -> None:
    sf.links.mark_pending("006A", "fp", {"name": "a"}, holder="run-1")
    sf.links.mark_pending("006B", "fp", {"name": "b"}, holder="run-1")
    sf.links.mark_pending("006D", "fp", {"name": "d"}, holder="run-2")
    sf.links.save(linked("006C", "R-3"))
    sf.links.release_pending(["006A", "006C", "006D", "006Z"], holder="run-1")
    # another run's intent stays: only the releasing run's own are dropped
    assert set(sf.links.get_many(["006A", "006B", "006C", "006D"])) == {"006B", "006C", "006D"}
    sf.links.release_pending([])
