"""The state store on SQLite, and the contract every backend must meet.

Tests decorated with ``@contract`` only talk to the ``make_store`` / ``store``
fixtures; ``tests/integration/test_state_postgres.py`` collects the very same
functions with its own PostgreSQL ``make_store``. The undecorated tests at the
end are about SQLite itself (WAL, pragmas, files) or about opening the store.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from connector.errors import StateError
from connector.state import Link, LinkState, Store, database
from connector.state import store as store_module
from connector.state.migrations import alembic_config
from connector.state.schema import metadata

CONTRACT: list[Callable[..., None]] = []
HEAD = "0004_dead_letter_fingerprint"


def contract(test: Callable[..., None]) -> Callable[..., None]:
    """Mark a backend-independent test (run on SQLite here, on PostgreSQL elsewhere)."""
    CONTRACT.append(test)
    return test


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


MakeStore = Callable[..., Store]


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[MakeStore]:
    """Open (again) this test's SQLite database; every store is closed afterwards."""
    opened: list[Store] = []

    def factory(clock: Callable[[], datetime] | None = None, migrate: bool = True) -> Store:
        url = f"sqlite:///{tmp_path}/deep/state.db"
        store = Store.open(url, clock=clock or FakeClock(), migrate=migrate)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(make_store: MakeStore, clock: FakeClock) -> Store:
    return make_store(clock)


#: the lease holder of the run writing create intents in these tests
RUN = "host-a:100"


def linked(crm_id: str, referral_id: str | None, **changes: Any) -> Link:
    values: dict[str, Any] = {
        "connection": "sf",
        "crm_id": crm_id,
        "state": LinkState.LINKED,
        "referral_id": referral_id,
        "engagement_id": f"eng-{referral_id}",
        "etag": '"1"',
        "fingerprint": f"fp-{crm_id}",
        "sent_body": {"name": f"Deal {crm_id}", "value": 1000},
        "status": "Active",
        "substatus": "Accepted",
        "crm_modstamp": datetime(2025, 2, 1, 8, 30, 15, 123000, tzinfo=UTC),
    }
    values.update(changes)
    return Link(**values)


# -- migrations ----------------------------------------------------------------------------


@contract
def test_opening_twice_keeps_data_and_schema(make_store: MakeStore) -> None:
    first = make_store()
    first.set_cursor("sf", "crm", "2025-01-01T00:00:00Z")
    second = make_store()
    assert first.revision == second.revision == HEAD
    assert second.upgrade() == HEAD
    assert second.get_cursor("sf", "crm") == "2025-01-01T00:00:00Z"


@contract
def test_upgrade_from_the_first_revision_keeps_links(make_store: MakeStore) -> None:
    old = make_store(migrate=False)
    assert old.revision is None
    with old.database.engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(
            sa.text("INSERT INTO connections (name, created) VALUES ('sf', '2025-01-01')")
        )
        connection.execute(  # a pending create written before intents had a time
            sa.text(
                "INSERT INTO links (connection, crm_id, state, direction, updated) "
                "VALUES ('sf', '006P', 'pending_create', 'Outgoing', :updated)"
            ),
            {"updated": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)},
        )
    assert old.upgrade() == HEAD
    pending = old.get_link("sf", "006P")
    assert pending is not None and pending.intent_by is None
    assert pending.intent_at == pending.updated == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    old.save_link("sf", linked("006A", "R-1", core_facts={"status": "Active"}))
    link = old.get_link("sf", "006A")
    assert link is not None and link.core_facts == {"status": "Active"}


@contract
def test_migrations_build_exactly_the_declared_schema(store: Store) -> None:
    with store.database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


@contract
def test_concurrent_opens_migrate_once(make_store: MakeStore) -> None:
    errors: list[BaseException] = []
    revisions: list[str | None] = []

    def open_store() -> None:
        try:
            revisions.append(make_store().revision)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert revisions == [HEAD] * 4


@contract
def test_database_from_a_newer_connector_is_refused(make_store: MakeStore) -> None:
    store = make_store()
    with store.database.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(StateError) as caught:
        make_store()
    assert caught.value.code == "state_schema"
    assert "9999" in str(caught.value) and "upgrade the connector" in str(caught.value)


# -- cursors -------------------------------------------------------------------------------


@contract
def test_cursor_round_trip(store: Store) -> None:
    assert store.get_cursor("sf", "crm") is None
    store.set_cursor("sf", "crm", "2025-01-01T00:00:00Z|006A")
    store.set_cursor("sf", "crm", "2025-01-02T00:00:00Z|006B")
    store.set_cursor("sf", "core", "2025-01-03T00:00:00Z")
    store.set_cursor("d365", "crm", "delta-token")
    assert store.get_cursor("sf", "crm") == "2025-01-02T00:00:00Z|006B"
    assert store.get_cursor("sf", "core") == "2025-01-03T00:00:00Z"
    assert store.get_cursor("d365", "crm") == "delta-token"


# -- links ---------------------------------------------------------------------------------


@contract
def test_pending_then_linked(store: Store, clock: FakeClock) -> None:
    assert store.get_link("sf", "006A") is None
    pending = store.mark_pending("sf", "006A", "fp1", {"name": "Contoso", "value": 10}, holder=RUN)
    assert pending.state is LinkState.PENDING_CREATE
    assert pending.referral_id is None
    assert pending.direction == "Outgoing"
    assert pending.updated == pending.intent_at == clock.now
    assert pending.intent_by == RUN

    # a retry of the same create by the same run may re-mark it with a newer body
    clock.advance(5)
    again = store.mark_pending("sf", "006A", "fp2", {"name": "Contoso", "value": 20}, holder=RUN)
    assert (again.fingerprint, again.sent_body) == ("fp2", {"name": "Contoso", "value": 20})
    assert again.updated == again.intent_at == clock.now

    store.save_link("sf", linked("006A", "R-1", fingerprint="fp2"))
    link = store.get_link("sf", "006A")
    assert link is not None
    assert link.state is LinkState.LINKED
    assert link.referral_id == "R-1"
    assert store.link_by_referral("sf", "R-1") == link
    assert store.link_by_referral("other", "R-1") is None


@contract
def test_many_records_are_marked_pending_in_one_go_and_linked_ones_refused(
    store: Store, clock: FakeClock
) -> None:
    store.save_link("sf", linked("006L", "R-L"))
    store.save_link("sf", linked("006T", "R-T", state=LinkState.TERMINAL))
    # this run's own intent from an earlier attempt (say its POST was throttled)
    store.mark_pending("sf", "006P", "old", {"v": 0}, holder=RUN)
    refused = store.mark_pending_many(
        "sf",
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
        link = store.get_link("sf", crm_id)
        assert link is not None and link.state is LinkState.PENDING_CREATE
        assert (link.fingerprint, link.sent_body, link.updated) == (fp, body, clock.now)
    untouched = store.get_link("sf", "006L")
    assert untouched is not None and untouched.state is LinkState.LINKED
    assert untouched.referral_id == "R-L"
    assert store.mark_pending_many("sf", [], holder=RUN) == {}


@contract
def test_a_second_runs_intent_for_a_pending_record_is_refused(
    store: Store, clock: FakeClock
) -> None:
    store.mark_pending("sf", "006P", "fp-first", {"v": 1}, holder=RUN)
    clock.advance(3)
    refused = store.mark_pending_many(
        "sf", [("006P", "fp-second", {"v": 2}), ("006N", "fp-new", {"v": 3})], holder="host-b:7"
    )
    assert set(refused) == {"006P"}
    assert refused["006P"].code == "state_conflict"
    assert "being created by another run" in str(refused["006P"]) and RUN in str(refused["006P"])
    first = store.get_link("sf", "006P")
    assert first is not None and first.state is LinkState.PENDING_CREATE
    assert (first.intent_by, first.fingerprint, first.sent_body) == (RUN, "fp-first", {"v": 1})
    assert first.intent_at == clock.now - timedelta(seconds=3)
    fresh = store.get_link("sf", "006N")
    assert fresh is not None and (fresh.intent_by, fresh.intent_at) == ("host-b:7", clock.now)
    with pytest.raises(StateError, match="being created by another run"):
        store.mark_pending("sf", "006P", "fp", {}, holder="host-b:7")


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
            refused[holder] = set(store.mark_pending_many("sf", items, holder=holder))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=mark, args=pair) for pair in zip(runs, stores, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    links = stores[0].get_links("sf", [crm_id for crm_id, _, _ in items])
    for crm_id, _, _ in items:
        accepted = [holder for holder in runs if crm_id not in refused[holder]]
        assert accepted == [links[crm_id].intent_by], crm_id


@contract
def test_an_intent_is_taken_over_only_as_it_was_read(store: Store, clock: FakeClock) -> None:
    dead = store.mark_pending("sf", "006P", "fp", {"v": 1}, holder="host-gone:1")
    store.mark_pending("sf", "006Q", "fp", {"v": 1}, holder="host-gone:1")
    clock.advance(30)
    assert store.take_over_intents("sf", [dead], RUN) == {"006P"}
    assert store.take_over_intents("sf", [dead], "host-c:3") == set()  # RUN has it now
    taken = store.get_link("sf", "006P")
    assert taken is not None and (taken.intent_by, taken.intent_at) == (RUN, dead.intent_at)
    # now RUN's intent: marked again by RUN before its POST, refused to the others
    assert store.mark_pending_many("sf", [("006P", "fp2", {"v": 2})], holder=RUN) == {}
    assert "006P" in store.mark_pending_many("sf", [("006P", "fp", {})], holder="host-c:3")
    store.save_link("sf", linked("006Q", "R-Q"))  # linked meanwhile: nothing to take over
    stale = replace(dead, crm_id="006Q")
    assert store.take_over_intents("sf", [stale], RUN) == set()
    assert store.take_over_intents("sf", [], RUN) == set()


@contract
def test_linked_record_cannot_be_marked_pending_again(store: Store) -> None:
    store.save_link("sf", linked("006A", "R-1"))
    with pytest.raises(StateError) as caught:
        store.mark_pending("sf", "006A", "fp", {"name": "x"}, holder=RUN)
    assert caught.value.code == "state_conflict"
    assert "006A" in str(caught.value)
    assert "R-1" in str(caught.value)
    link = store.get_link("sf", "006A")
    assert link is not None and link.state is LinkState.LINKED


@contract
def test_save_link_upserts_every_field(store: Store, clock: FakeClock) -> None:
    store.save_link("sf", linked("006A", "R-1"))
    clock.advance(60)
    newer = linked(
        "006A",
        "R-1",
        etag='"2"',
        state=LinkState.TERMINAL,
        status="Closed",
        substatus="Won",
        sent_body={"name": "Deal", "nested": {"team": ["a", "b"]}, "ünïcode": "ok"},
        mirrored_fingerprint="mirror-1",
        core_facts={"status": "Closed", "expiration": None},
        crm_modstamp=datetime(2025, 2, 2, 10, 0, tzinfo=timezone(timedelta(hours=2))),
        direction="Incoming",
    )
    store.save_link("sf", newer)
    link = store.get_link("sf", "006A")
    assert link is not None
    assert link == Link(**{**_fields(newer), "updated": clock.now})
    # stored in UTC, returned aware
    assert link.crm_modstamp == datetime(2025, 2, 2, 8, 0, tzinfo=UTC)
    assert link.crm_modstamp is not None and link.crm_modstamp.tzinfo is not None
    assert store.count_links("sf") == {
        LinkState.PENDING_CREATE: 0,
        LinkState.LINKED: 0,
        LinkState.TERMINAL: 1,
    }


@contract
def test_one_referral_cannot_link_two_records(store: Store) -> None:
    store.save_link("sf", linked("006A", "R-1"))
    with pytest.raises(StateError) as caught:
        store.save_link("sf", linked("006B", "R-1"))
    message = str(caught.value)
    assert caught.value.code == "state_conflict"
    assert "006B" in message and "006A" in message and "R-1" in message
    assert store.get_link("sf", "006B") is None
    # the same referral id on another connection is another referral
    store.save_link("d365", linked("006B", "R-1", connection="d365"))


@contract
def test_batch_with_a_duplicate_referral_saves_nothing(store: Store) -> None:
    with pytest.raises(StateError) as caught:
        store.save_links("sf", [linked("006A", "R-1"), linked("006B", "R-1")])
    assert "006A" in str(caught.value) and "006B" in str(caught.value)
    assert store.get_links("sf", ["006A", "006B"]) == {}


@contract
def test_invalid_row_rolls_back_the_whole_batch(store: Store) -> None:
    batch = [linked("006A", "R-1"), linked("006B", "R-2", direction="Sideways")]
    with pytest.raises(StateError, match=r"save 2 links"):
        store.save_links("sf", batch)
    assert store.get_link("sf", "006A") is None


@contract
def test_link_of_another_connection_is_refused(store: Store) -> None:
    with pytest.raises(StateError, match="d365"):
        store.save_link("sf", linked("006A", "R-1", connection="d365"))


@contract
def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(StateError, match="naive"):
        store.save_link("sf", linked("006A", "R-1", crm_modstamp=datetime(2025, 1, 1)))
    with pytest.raises(StateError, match=r"006A.*not JSON serializable"):
        store.save_link("sf", linked("006A", "R-1", sent_body={"when": object()}))
    assert store.get_link("sf", "006A") is None


@contract
def test_batch_lookups(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "LOOKUP_CHUNK", 3)  # force several chunks
    store.save_links("sf", [linked(f"006{i:02}", f"R-{i}") for i in range(10)])
    store.save_link("d365", linked("00600", "R-0", connection="d365", etag='"other"'))
    store.mark_pending("sf", "006P", "fp", {"name": "pending"}, holder=RUN)

    wanted = ["00601", "00609", "nope", "00601", "006P", "00604", "00605", "00600"]
    found = store.get_links("sf", wanted)
    assert sorted(found) == ["00600", "00601", "00604", "00605", "00609", "006P"]
    assert found["00600"].etag == '"1"'  # not the d365 one
    assert store.get_links("sf", []) == {}

    by_referral = store.links_by_referral("sf", ["R-3", "R-7", "R-missing"])
    assert {k: v.crm_id for k, v in by_referral.items()} == {"R-3": "00603", "R-7": "00607"}


@contract
def test_etags_by_referral_answers_only_links_that_hold_the_cores_facts(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pull-back's fast path: a listed eTag equal to this one means nothing changed."""
    monkeypatch.setattr(store_module, "LOOKUP_CHUNK", 2)  # force several chunks
    facts = {"referral_id": "R", "status": "Active"}
    store.save_links(
        "sf",
        [
            linked("006A", "R-A", etag='"a1"', core_facts=facts),
            linked("006B", "R-B", etag='"b1"', core_facts=facts),
            linked("006C", "R-C", etag='"c1"'),  # no facts: never mirrored, must be read
            linked("006D", "R-D", etag=None, core_facts=facts),
        ],
    )
    store.save_link("d365", linked("006E", "R-E", connection="d365", core_facts=facts))
    store.mark_pending("sf", "006P", "fp", {"name": "pending"}, holder=RUN)
    found = store.etags_by_referral("sf", ["R-A", "R-B", "R-C", "R-D", "R-E", "R-A", "nope"])
    assert found == {"R-A": '"a1"', "R-B": '"b1"'}
    assert store.etags_by_referral("sf", []) == {}


@contract
def test_iter_links_streams_pages_and_filters(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "ITER_PAGE", 3)
    store.save_links("sf", [linked(f"006{i:02}", f"R-{i}") for i in range(7)])
    store.save_link("sf", linked("00607", "R-7", state=LinkState.TERMINAL))
    store.mark_pending("sf", "00608", "fp", {}, holder=RUN)
    store.save_link("d365", linked("x", "R-x", connection="d365"))

    assert [link.crm_id for link in store.iter_links("sf")] == [f"006{i:02}" for i in range(9)]
    assert [link.crm_id for link in store.iter_links("sf", LinkState.LINKED)] == [
        f"006{i:02}" for i in range(7)
    ]
    assert [link.crm_id for link in store.iter_links("sf", LinkState.TERMINAL)] == ["00607"]
    assert list(store.iter_links("nobody")) == []
    assert store.count_links("sf") == {
        LinkState.PENDING_CREATE: 1,
        LinkState.LINKED: 7,
        LinkState.TERMINAL: 1,
    }


@contract
def test_concurrent_writers_from_worker_threads(store: Store) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(20):
                crm_id = f"w{n}-{i}"
                store.mark_pending("sf", crm_id, "fp", {"i": i}, holder=RUN)
                store.save_link("sf", linked(crm_id, f"R-{crm_id}"))
                store.set_cursor("sf", f"worker-{n}", str(i))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert store.count_links("sf")[LinkState.LINKED] == 160
    assert all(store.get_cursor("sf", f"worker-{n}") == "19" for n in range(8))


@contract
def test_releasing_create_intents_drops_only_pending_links(store: Store) -> None:
    store.mark_pending("sf", "006A", "fp", {"name": "a"}, holder="run-1")
    store.mark_pending("sf", "006B", "fp", {"name": "b"}, holder="run-1")
    store.mark_pending("sf", "006D", "fp", {"name": "d"}, holder="run-2")
    store.save_link("sf", linked("006C", "R-3"))
    store.release_pending("sf", ["006A", "006C", "006D", "006Z"], holder="run-1")
    # another run's intent stays: only the releasing run's own are dropped
    assert set(store.get_links("sf", ["006A", "006B", "006C", "006D"])) == {"006B", "006C", "006D"}
    store.release_pending("sf", [])


@contract
def test_a_link_marked_unmirrored_is_listed_to_mirror(store: Store) -> None:
    store.save_link("sf", linked("006A", "R-1", core_facts={"status": "Active"}))
    store.set_mirrored("sf", {"006A": "written"})
    assert store.links_to_mirror("sf") == []
    store.set_mirrored("sf", {"006A": None})
    assert [link.crm_id for link in store.links_to_mirror("sf")] == ["006A"]


def test_opening_an_existing_store_only_refuses_one_without_connector_state(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with Store.open(url) as store:
        store.set_cursor("sf", "crm", "x")
    with Store.open(url, existing=True) as store:
        assert store.get_cursor("sf", "crm") == "x"
    empty = sa.create_engine(f"sqlite:///{tmp_path / 'other.db'}")  # a database, no tables
    empty.connect().close()
    empty.dispose()
    with pytest.raises(StateError) as caught:
        Store.open(f"sqlite:///{tmp_path / 'other.db'}", existing=True)
    assert caught.value.code == "state_missing"
    typo = tmp_path / "sate.db"
    with pytest.raises(StateError) as caught:
        Store.open(f"sqlite:///{typo}", existing=True)
    assert caught.value.code == "state_missing"
    assert (
        "no sync has run" in caught.value.message and "CONNECTOR_STATE_URL" in caught.value.message
    )
    assert not typo.exists()  # nothing created


# -- dead letters --------------------------------------------------------------------------


@contract
def test_dead_letter_attempts_increment_until_resolved(store: Store, clock: FakeClock) -> None:
    first_seen = clock.now
    stamp = datetime(2025, 2, 1, tzinfo=UTC)
    first = store.add_dead_letter("sf", "006A", "invalid_record", "no close date", stamp)
    assert (first.attempts, first.resolved, first.crm_modstamp) == (1, False, stamp)

    clock.advance(300)
    second = store.add_dead_letter("sf", "006A", "unmapped_stage", "stage 'Zeta' unmapped")
    assert second.id == first.id
    assert second.attempts == 2
    assert (second.reason_code, second.message) == ("unmapped_stage", "stage 'Zeta' unmapped")
    assert (second.first_seen, second.last_seen) == (first_seen, clock.now)
    store.add_dead_letter("sf", "006B", "invalid_record", "no name")
    store.add_dead_letter("d365", "006A", "invalid_record", "other connection")

    assert [d.crm_id for d in store.list_dead_letters("sf")] == ["006B", "006A"]
    assert len(store.list_dead_letters()) == 3
    assert store.get_dead_letter(first.id) == second

    assert store.resolve_dead_letter("sf", "006A") is True
    assert store.resolve_dead_letter("sf", "006A") is False
    assert [d.crm_id for d in store.list_dead_letters("sf")] == ["006B"]
    resolved = store.get_dead_letter(first.id)
    assert resolved is not None and resolved.resolved is True

    # failing again after resolution opens a new letter; the old one stays as history
    third = store.add_dead_letter("sf", "006A", "invalid_record", "again")
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
    store: Store, clock: FakeClock
) -> None:
    stamp = datetime(2025, 2, 1, tzinfo=UTC)
    first = store.add_dead_letter("sf", "006A", "invalid_record", "no close date")
    clock.advance(60)
    store.add_dead_letters(
        "sf",
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
    store.add_dead_letters("sf", [])
    assert len(store.list_dead_letters("sf")) == 3


@contract
def test_the_last_letter_of_a_record_tells_how_it_was_even_once_discarded(store: Store) -> None:
    stamp = datetime(2025, 2, 1, tzinfo=UTC)
    first = store.add_dead_letter("sf", "006A", "invalid_record", "no date", stamp, "fp-1")
    store.add_dead_letter("sf", "006B", "invalid_record", "no name", stamp)  # before 0002
    store.add_dead_letter("sf", "006C", "invalid_record", "no name")  # nothing to compare
    assert store.discard_dead_letter(first.id)
    found = store.dead_letter_stamps("sf", ["006A", "006B", "006C", "006D"])
    assert found == {"006A": (stamp, "fp-1"), "006B": (stamp, None)}
    later = datetime(2025, 3, 1, tzinfo=UTC)
    store.add_dead_letter("sf", "006A", "invalid_record", "no date", later, "fp-2")
    assert store.dead_letter_stamps("sf", ["006A"]) == {"006A": (later, "fp-2")}


@contract
def test_open_dead_letters_of_some_records(store: Store) -> None:
    store.add_dead_letter("sf", "006A", "invalid_record", "no name")
    store.add_dead_letter("sf", "006B", "invalid_record", "no date")
    store.add_dead_letter("d365", "006A", "invalid_record", "other connection")
    store.resolve_dead_letter("sf", "006B")
    found = store.open_dead_letters("sf", ["006A", "006B", "006C", "006A"])
    assert list(found) == ["006A"]
    assert found["006A"].message == "no name"
    assert store.open_dead_letters("sf", []) == {}


# -- runs ----------------------------------------------------------------------------------


@contract
def test_runs_are_recorded_newest_first(store: Store, clock: FakeClock) -> None:
    first = store.start_run("sf")
    clock.advance(10)
    store.finish_run(first, "ok", {"created": 3, "skipped": 7}, {"core": 4, "crm": 2}, 9.5)
    second = store.start_run("sf")
    other = store.start_run("d365")
    store.finish_run(other, "failed", {}, {}, 0.1, error="core unreachable")

    runs = store.recent_runs("sf")
    assert [run.id for run in runs] == [second, first]
    assert runs[0].outcome is None and runs[0].finished is None
    done = runs[1]
    assert (done.outcome, done.duration_s, done.error) == ("ok", 9.5, None)
    assert done.counts == {"created": 3, "skipped": 7}
    assert done.api_calls == {"core": 4, "crm": 2}
    assert done.finished == done.started + timedelta(seconds=10)

    assert [run.id for run in store.recent_runs()] == [other, second, first]
    assert [run.id for run in store.recent_runs(limit=1)] == [other]
    assert store.recent_runs("d365")[0].error == "core unreachable"
    with pytest.raises(StateError, match="run 999999 does not exist"):
        store.finish_run(999_999, "ok", {}, {}, 1.0)


# -- leases --------------------------------------------------------------------------------


@contract
def test_lease_is_exclusive_until_it_expires(store: Store, clock: FakeClock) -> None:
    assert store.acquire_lease("sf", "replica-a", ttl_s=30) is True
    assert store.acquire_lease("sf", "replica-b", ttl_s=30) is False
    assert store.acquire_lease("d365", "replica-b", ttl_s=30) is True  # per connection
    assert store.acquire_lease("sf", "replica-a", ttl_s=30) is True  # holder re-acquires

    clock.advance(20)
    assert store.renew_lease("sf", "replica-a", ttl_s=30) is True
    clock.advance(20)  # 40 s after the start, 20 s after the renewal: still held
    assert store.acquire_lease("sf", "replica-b", ttl_s=30) is False

    clock.advance(11)  # expired
    assert store.acquire_lease("sf", "replica-b", ttl_s=30) is True
    assert store.renew_lease("sf", "replica-a", ttl_s=30) is False
    assert store.release_lease("sf", "replica-a") is False
    assert store.acquire_lease("sf", "replica-a", ttl_s=30) is False

    assert store.current_lease("sf") == ("replica-b", clock.now + timedelta(seconds=30))
    assert store.release_lease("sf", "replica-b") is True
    assert store.current_lease("sf") is None
    assert store.acquire_lease("sf", "replica-a", ttl_s=30) is True
    clock.advance(31)
    assert store.current_lease("sf") is None  # expired: nobody holds it


@contract
def test_only_one_replica_wins_a_lease_race(make_store: MakeStore, clock: FakeClock) -> None:
    replicas = [make_store(clock) for _ in range(3)]
    start = threading.Barrier(12)
    wins: list[str] = []
    errors: list[BaseException] = []

    def contend(holder: str, replica: Store) -> None:
        try:
            start.wait(timeout=30)
            if replica.acquire_lease("sf", holder, ttl_s=60):
                wins.append(holder)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=contend, args=(f"holder-{n}", replicas[n % 3])) for n in range(12)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(wins) == 1


@contract
def test_bulk_writes_are_one_transaction_and_reads_are_chunked(store: Store) -> None:
    """A guard against per-row transactions and per-row queries (counted, not timed)."""
    batch = [linked(f"006{i:06}", f"R-{i}") for i in range(10_000)]
    commits: list[int] = []
    selects: list[str] = []
    engine = store.database.engine

    def count_commit(conn: Any) -> None:
        commits.append(1)

    sa.event.listen(engine, "commit", count_commit)

    def count_select(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count_select)
    try:
        store.save_links("sf", batch)
        assert len(commits) <= 2  # one transaction (plus registering the connection)
        found = store.get_links("sf", [link.crm_id for link in batch])
        assert len(selects) <= 3  # chunks of 5,000 ids
    finally:
        sa.event.remove(engine, "commit", count_commit)
        sa.event.remove(engine, "before_cursor_execute", count_select)
    assert len(found) == 10_000


@contract
def test_lookups_of_every_size_use_few_statements_and_find_exactly_what_exists(
    store: Store,
) -> None:
    """Each length of an ``IN`` list is a statement the driver prepares and keeps: lookups
    of 1 to 300 ids must share a handful of them (a run grew by 25 MB without this)."""
    store.save_links("sf", [linked(f"006{i:04}", f"R-{i}") for i in range(300)])
    statements: set[str] = set()

    def remember(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "IN (" in statement.upper():
            statements.add(statement)

    sa.event.listen(store.database.engine, "before_cursor_execute", remember)
    try:
        for n in range(1, 301):
            wanted = [f"006{i:04}" for i in range(0, 2 * n, 2)]  # half of them exist
            found = store.get_links("sf", wanted)
            assert sorted(found) == [w for w in wanted if int(w[3:]) < 300]
            assert store.dead_letter_stamps("sf", wanted) == {}
    finally:
        sa.event.remove(store.database.engine, "before_cursor_execute", remember)
    assert len(statements) <= 2 * 10, len(statements)  # two queries, 1..512 in powers of two


# -- SQLite and opening ---------------------------------------------------------------------


def test_sqlite_file_is_created_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    with Store.open(f"sqlite:///{path}") as store:
        store.set_cursor("sf", "crm", "x")
        with store.database.engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA busy_timeout").scalar() == 30_000
        assert Path(f"{path}-wal").exists()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # persistent


def test_sqlite_enforces_foreign_keys(store: Store) -> None:
    with pytest.raises(sa.exc.IntegrityError), store.database.engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO cursors (connection, name, value, updated) "
            "VALUES ('ghost', 'crm', 'x', '2025-01-01 00:00:00.000000')"
        )


def test_in_memory_database_is_shared_between_threads() -> None:
    with Store.open("sqlite://") as store:
        thread = threading.Thread(target=store.set_cursor, args=("sf", "crm", "x"))
        thread.start()
        thread.join(timeout=10)
        assert store.get_cursor("sf", "crm") == "x"


def test_unreachable_database_error_hides_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StateError) as caught:
        Store.open("postgresql://agent:s3cr3t-pw@127.0.0.1:1/state?connect_timeout=2")
    message = str(caught.value)
    assert caught.value.transient is True
    assert "s3cr3t-pw" not in message
    assert "agent:***@127.0.0.1:1/state" in message
    assert "s3cr3t-pw" not in caplog.text


def test_invalid_url_is_not_echoed() -> None:
    with pytest.raises(StateError) as caught:
        Store.open("not a url with s3cr3t")
    assert caught.value.code == "config"
    assert "s3cr3t" not in str(caught.value)
    with pytest.raises(StateError, match="mysql"):
        Store.open("mysql://user:pw@localhost/db")


def test_repr_masks_the_password() -> None:
    url = database.parse_url("postgresql://agent:s3cr3t-pw@db.example/state")
    store = Store(database.create_state_engine(url), url)  # lazy: nothing connects
    try:
        assert repr(store) == "Store(postgresql+psycopg://agent:***@db.example/state, schema=None)"
    finally:
        store.close()


# -- small helpers -------------------------------------------------------------------------


def _fields(link: Link) -> dict[str, Any]:
    return {name: getattr(link, name) for name in Link.__slots__}
