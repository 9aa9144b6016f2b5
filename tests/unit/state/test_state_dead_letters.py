"""The ``dead_letters`` table: one connection's letters and the store-wide operations
(``@contract``: SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

from state_contract import FakeClock, contract

from connector.state import ConnectionState, Store


@contract
def test_dead_letter_attempts_increment_until_resolved(
    store: Store, sf: ConnectionState, clock: FakeClock
) -> None:
    first_seen = clock.now
    stamp = datetime(2025, 2, 1, tzinfo=UTC)
    first = sf.dead_letters.add("006A", "invalid_record", "no close date", stamp)
    assert (first.attempts, first.resolved, first.crm_modstamp) == (1, False, stamp)

    clock.advance(300)
    second = sf.dead_letters.add("006A", "unmapped_stage", "stage 'Zeta' unmapped")
    assert second.id == first.id
    assert second.attempts == 2
    assert (second.reason_code, second.message) == ("unmapped_stage", "stage 'Zeta' unmapped")
    assert (second.first_seen, second.last_seen) == (first_seen, clock.now)
    sf.dead_letters.add("006B", "invalid_record", "no name")
    store.connection("d365").dead_letters.add("006A", "invalid_record", "other connection")

    assert [d.crm_id for d in store.list_dead_letters("sf")] == ["006B", "006A"]
    assert len(store.list_dead_letters()) == 3
    assert store.get_dead_letter(first.id) == second

    assert sf.dead_letters.resolve("006A") is True
    assert sf.dead_letters.resolve("006A") is False
    assert [d.crm_id for d in store.list_dead_letters("sf")] == ["006B"]
    resolved = store.get_dead_letter(first.id)
    assert resolved is not None and resolved.resolved is True

    # failing again after resolution opens a new letter; the old one stays as history
    third = sf.dead_letters.add("006A", "invalid_record", "again")
    assert third.id != first.id and third.attempts == 1
    history = store.list_dead_letters("sf", include_resolved=True)
    assert sorted((d.crm_id, d.resolved) for d in history) == [
        ("006A", False),
        ("006A", True),
        ("006B", False),
    ]
    assert store.get_dead_letter(999_999) is None


@contract
def test_dead_letters_added_in_one_go_open_or_count_like_one_by_one(
    store: Store, sf: ConnectionState, clock: FakeClock
) -> None:
    stamp = datetime(2025, 2, 1, tzinfo=UTC)
    first = sf.dead_letters.add("006A", "invalid_record", "no close date")
    clock.advance(60)
    sf.dead_letters.add_many(
        [
            ("006A", "unmapped_stage", "stage 'Zeta' unmapped", stamp, "fp-a"),
            ("006B", "invalid_record", "no name", None, None),
            ("006C", "invalid_record", "first word", None, None),
            ("006C", "invalid_record", "last word", stamp, "fp-c"),  # one letter per record
        ],
    )
    letters = {d.crm_id: d for d in store.list_dead_letters("sf")}
    assert set(letters) == {"006A", "006B", "006C"}
    again = letters["006A"]
    assert (again.id, again.attempts, again.reason_code) == (first.id, 2, "unmapped_stage")
    assert (again.first_seen, again.last_seen, again.crm_modstamp) == (
        first.first_seen,
        clock.now,
        stamp,
    )
    assert (letters["006B"].attempts, letters["006B"].message) == (1, "no name")
    assert (letters["006C"].attempts, letters["006C"].message) == (1, "last word")
    assert (again.crm_fingerprint, letters["006C"].crm_fingerprint) == ("fp-a", "fp-c")
    sf.dead_letters.add_many([])
    assert len(store.list_dead_letters("sf")) == 3


@contract
def test_the_last_letter_of_a_record_tells_how_it_was_even_once_discarded(
    store: Store, sf: ConnectionState
) -> None:
    stamp = datetime(2025, 2, 1, tzinfo=UTC)
    first = sf.dead_letters.add("006A", "invalid_record", "no date", stamp, "fp-1")
    sf.dead_letters.add("006B", "invalid_record", "no name", stamp)  # before 0002
    sf.dead_letters.add("006C", "invalid_record", "no name")  # nothing to compare
    assert store.discard_dead_letter(first.id)
    found = sf.dead_letters.stamps(["006A", "006B", "006C", "006D"])
    assert found == {"006A": (stamp, "fp-1"), "006B": (stamp, None)}
    later = datetime(2025, 3, 1, tzinfo=UTC)
    sf.dead_letters.add("006A", "invalid_record", "no date", later, "fp-2")
    assert sf.dead_letters.stamps(["006A"]) == {"006A": (later, "fp-2")}


@contract
def test_open_dead_letters_of_some_records(store: Store, sf: ConnectionState) -> None:
    sf.dead_letters.add("006A", "invalid_record", "no name")
    sf.dead_letters.add("006B", "invalid_record", "no date")
    store.connection("d365").dead_letters.add("006A", "invalid_record", "other connection")
    sf.dead_letters.resolve("006B")
    found = sf.dead_letters.open_of(["006A", "006B", "006C", "006A"])
    assert list(found) == ["006A"]
    assert found["006A"].message == "no name"
    assert sf.dead_letters.open_of([]) == {}


@contract
def test_a_connections_letters_are_listed_and_counted_like_the_stores(
    store: Store, sf: ConnectionState, clock: FakeClock
) -> None:
    sf.dead_letters.add("006A", "invalid_record", "no name")
    clock.advance(1)
    sf.dead_letters.add("006B", "transient:core_unavailable", "503 after retries")
    clock.advance(1)
    sf.dead_letters.add("006C", "invalid_record", "no date")
    store.connection("d365").dead_letters.add("006A", "invalid_record", "other connection")
    sf.dead_letters.resolve("006C")

    assert [d.crm_id for d in sf.dead_letters.recent()] == ["006B", "006A"]
    assert sf.dead_letters.recent() == store.list_dead_letters("sf")
    assert [d.crm_id for d in sf.dead_letters.recent(True)] == ["006C", "006B", "006A"]
    assert [d.crm_id for d in sf.dead_letters.recent(reason="transient:")] == ["006B"]
    assert [d.crm_id for d in sf.dead_letters.recent(limit=1)] == ["006B"]
    assert sf.dead_letters.count() == 2 == store.count_dead_letters("sf")
    assert sf.dead_letters.count(include_resolved=True) == 3
    assert sf.dead_letters.count(reason="invalid") == 1
    assert store.count_dead_letters() == 3

    marked = store.request_retry()
    assert sorted((d.connection, d.crm_id, d.reason_code) for d in marked) == [
        ("d365", "006A", "retry:invalid_record"),
        ("sf", "006A", "retry:invalid_record"),
        ("sf", "006B", "transient:core_unavailable"),
    ]
    letter = sf.dead_letters.open_of(["006A"])["006A"]
    assert store.discard_dead_letter(letter.id) is True
    assert store.discard_dead_letter(letter.id) is False
    assert [d.crm_id for d in sf.dead_letters.recent()] == ["006B"]
