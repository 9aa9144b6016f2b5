"""The ``links`` table through a connection's handle: saves, lookups in chunks, streamed
listings, mirroring (``@contract``: SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from state_contract import RUN, FakeClock, MakeStore, contract, link_fields, linked

from connector.errors import StateError
from connector.state import ConnectionState, Link, LinkState, Store


@contract
def test_save_link_upserts_every_field(sf: ConnectionState, clock: FakeClock) -> None:
    sf.links.save(linked("006A", "R-1"))
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
    sf.links.save(newer)
    link = sf.links.get("006A")
    assert link is not None
    assert link == Link(**{**link_fields(newer), "updated": clock.now})
    # stored in UTC, returned aware
    assert link.crm_modstamp == datetime(2025, 2, 2, 8, 0, tzinfo=UTC)
    assert link.crm_modstamp is not None and link.crm_modstamp.tzinfo is not None
    assert sf.links.count() == {
        LinkState.PENDING_CREATE: 0,
        LinkState.LINKED: 0,
        LinkState.TERMINAL: 1,
    }


@contract
def test_one_referral_cannot_link_two_records(store: Store, sf: ConnectionState) -> None:
    sf.links.save(linked("006A", "R-1"))
    with pytest.raises(StateError) as caught:
        sf.links.save(linked("006B", "R-1"))
    message = str(caught.value)
    assert caught.value.code == "state_conflict"
    assert "006B" in message and "006A" in message and "R-1" in message
    assert sf.links.get("006B") is None
    # the same referral id on another connection is another referral
    store.connection("d365").links.save(linked("006B", "R-1", connection="d365"))


@contract
def test_batch_with_a_duplicate_referral_saves_nothing(sf: ConnectionState) -> None:
    with pytest.raises(StateError) as caught:
        sf.links.save_many([linked("006A", "R-1"), linked("006B", "R-1")])
    assert "006A" in str(caught.value) and "006B" in str(caught.value)
    assert sf.links.get_many(["006A", "006B"]) == {}


@contract
def test_invalid_row_rolls_back_the_whole_batch(sf: ConnectionState) -> None:
    batch = [linked("006A", "R-1"), linked("006B", "R-2", direction="Sideways")]
    with pytest.raises(StateError, match=r"save 2 links"):
        sf.links.save_many(batch)
    assert sf.links.get("006A") is None


@contract
def test_link_of_another_connection_is_refused(sf: ConnectionState) -> None:
    with pytest.raises(StateError, match="d365"):
        sf.links.save(linked("006A", "R-1", connection="d365"))


@contract
def test_naive_datetimes_are_refused(sf: ConnectionState) -> None:
    with pytest.raises(StateError, match="naive"):
        sf.links.save(linked("006A", "R-1", crm_modstamp=datetime(2025, 1, 1)))
    with pytest.raises(StateError, match=r"006A.*not JSON serializable"):
        sf.links.save(linked("006A", "R-1", sent_body={"when": object()}))
    assert sf.links.get("006A") is None


@contract
def test_batch_lookups(make_store: MakeStore, clock: FakeClock) -> None:
    store = make_store(clock, lookup_chunk=3)  # force several chunks
    sf = store.connection("sf")
    sf.links.save_many([linked(f"006{i:02}", f"R-{i}") for i in range(10)])
    store.connection("d365").links.save(linked("00600", "R-0", connection="d365", etag='"other"'))
    sf.links.mark_pending("006P", "fp", {"name": "pending"}, holder=RUN)

    wanted = ["00601", "00609", "nope", "00601", "006P", "00604", "00605", "00600"]
    found = sf.links.get_many(wanted)
    assert sorted(found) == ["00600", "00601", "00604", "00605", "00609", "006P"]
    assert found["00600"].etag == '"1"'  # not the d365 one
    assert sf.links.get_many([]) == {}

    by_referral = sf.links.by_referrals(["R-3", "R-7", "R-missing"])
    assert {k: v.crm_id for k, v in by_referral.items()} == {"R-3": "00603", "R-7": "00607"}


@contract
def test_etags_by_referral_answers_only_links_that_hold_the_cores_facts(
    make_store: MakeStore, clock: FakeClock
) -> None:
    """The pull-back's fast path: a listed eTag equal to this one means nothing changed."""
    store = make_store(clock, lookup_chunk=2)  # force several chunks
    sf = store.connection("sf")
    facts = {"referral_id": "R", "status": "Active"}
    sf.links.save_many(
        [
            linked("006A", "R-A", etag='"a1"', core_facts=facts),
            linked("006B", "R-B", etag='"b1"', core_facts=facts),
            linked("006C", "R-C", etag='"c1"'),  # no facts: never mirrored, must be read
            linked("006D", "R-D", etag=None, core_facts=facts),
        ],
    )
    store.connection("d365").links.save(linked("006E", "R-E", connection="d365", core_facts=facts))
    sf.links.mark_pending("006P", "fp", {"name": "pending"}, holder=RUN)
    found = sf.links.etags_by_referral(["R-A", "R-B", "R-C", "R-D", "R-E", "R-A", "nope"])
    assert found == {"R-A": '"a1"', "R-B": '"b1"'}
    assert sf.links.etags_by_referral([]) == {}


@contract
def test_iter_links_streams_pages_and_filters(make_store: MakeStore, clock: FakeClock) -> None:
    store = make_store(clock, iter_page=3)
    sf = store.connection("sf")
    reads: list[str] = []

    def count_select(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM links" in statement:
            reads.append(statement)

    sf.links.save_many([linked(f"006{i:02}", f"R-{i}") for i in range(7)])
    sf.links.save(linked("00607", "R-7", state=LinkState.TERMINAL))
    sf.links.mark_pending("00608", "fp", {}, holder=RUN)
    store.connection("d365").links.save(linked("x", "R-x", connection="d365"))

    sa.event.listen(store.database.engine, "before_cursor_execute", count_select)
    try:
        assert [link.crm_id for link in sf.links.iterate()] == [f"006{i:02}" for i in range(9)]
    finally:
        sa.event.remove(store.database.engine, "before_cursor_execute", count_select)
    assert len(reads) == 4  # pages of 3, the last one empty
    assert [link.crm_id for link in sf.links.iterate(LinkState.LINKED)] == [
        f"006{i:02}" for i in range(7)
    ]
    assert [link.crm_id for link in sf.links.iterate(LinkState.TERMINAL)] == ["00607"]
    assert list(store.connection("nobody").links.iterate()) == []
    assert sf.links.count() == {
        LinkState.PENDING_CREATE: 1,
        LinkState.LINKED: 7,
        LinkState.TERMINAL: 1,
    }


def test_a_stream_without_bodies_reads_every_field_but_the_sent_body(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store(clock, iter_page=2)
    sf = store.connection("sf")
    sf.links.save_many([linked(f"006{i:02}", f"R-{i}") for i in range(3)])
    whole = list(sf.links.stream("test"))
    light = list(sf.links.stream("test", bodies=False))
    assert all(link.sent_body is not None for link in whole)
    assert [link.sent_body for link in light] == [None, None, None]
    assert [replace(link, sent_body=None) for link in whole] == light


@contract
def test_concurrent_writers_from_worker_threads(sf: ConnectionState) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(20):
                crm_id = f"w{n}-{i}"
                sf.links.mark_pending(crm_id, "fp", {"i": i}, holder=RUN)
                sf.links.save(linked(crm_id, f"R-{crm_id}"))
                sf.cursors.set(f"worker-{n}", str(i))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sf.links.count()[LinkState.LINKED] == 160
    assert all(sf.cursors.get(f"worker-{n}") == "19" for n in range(8))


@contract
def test_a_link_marked_unmirrored_is_listed_to_mirror(sf: ConnectionState) -> None:
    sf.links.save(linked("006A", "R-1", core_facts={"status": "Active"}))
    sf.links.set_mirrored({"006A": "written"})
    assert sf.links.to_mirror() == []
    sf.links.set_mirrored({"006A": None})
    assert [link.crm_id for link in sf.links.to_mirror()] == ["006A"]


@contract
def test_bulk_writes_are_one_transaction_and_reads_are_chunked(
    store: Store, sf: ConnectionState
) -> None:
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
        sf.links.save_many(batch)
        assert len(commits) <= 2  # one transaction (plus registering the connection)
        found = sf.links.get_many([link.crm_id for link in batch])
        assert len(selects) <= 3  # chunks of 5,000 ids
    finally:
        sa.event.remove(engine, "commit", count_commit)
        sa.event.remove(engine, "before_cursor_execute", count_select)
    assert len(found) == 10_000


@contract
def test_lookups_of_every_size_use_few_statements_and_find_exactly_what_exists(
    store: Store,
    sf: ConnectionState,
) -> None:
    """Each length of an ``IN`` list is a statement the driver prepares and keeps: lookups
    of 1 to 300 ids must share a handful of them (a run grew by 25 MB without this)."""
    sf.links.save_many([linked(f"006{i:04}", f"R-{i}") for i in range(300)])
    statements: set[str] = set()

    def remember(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "IN (" in statement.upper():
            statements.add(statement)

    sa.event.listen(store.database.engine, "before_cursor_execute", remember)
    try:
        for n in range(1, 301):
            wanted = [f"006{i:04}" for i in range(0, 2 * n, 2)]  # half of them exist
            found = sf.links.get_many(wanted)
            assert sorted(found) == [w for w in wanted if int(w[3:]) < 300]
            assert sf.dead_letters.stamps(wanted) == {}
    finally:
        sa.event.remove(store.database.engine, "before_cursor_execute", remember)
    assert len(statements) <= 2 * 10, len(statements)  # two queries, 1..512 in powers of two
