"""The state store as a whole: opening, migrating, SQLite itself, and its URL.

The tests of each table are in ``test_state_*.py`` beside this file; those decorated
with ``@contract`` (here and there) only talk to the ``make_store`` / ``store``
fixtures, and ``tests/integration/test_state_postgres.py`` collects the very same
functions with its own PostgreSQL ``make_store``. The undecorated tests are about
SQLite itself (WAL, pragmas, files) or about opening the store.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from state_contract import HEAD, RUN, FakeClock, MakeStore, contract, linked

from connector.errors import StateError
from connector.state import Store, database
from connector.state.migrations import alembic_config
from connector.state.schema import metadata


@contract
def test_opening_twice_keeps_data_and_schema(make_store: MakeStore) -> None:
    first = make_store()
    first.connection("sf").cursors.set("crm", "2025-01-01T00:00:00Z")
    second = make_store()
    assert first.revision == second.revision == HEAD
    assert second.upgrade() == HEAD
    assert second.connection("sf").cursors.get("crm") == "2025-01-01T00:00:00Z"


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
    pending = old.connection("sf").links.get("006P")
    assert pending is not None and pending.intent_by is None
    assert pending.intent_at == pending.updated == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    old.connection("sf").links.save(linked("006A", "R-1", core_facts={"status": "Active"}))
    link = old.connection("sf").links.get("006A")
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


def test_opening_an_existing_store_only_refuses_one_without_connector_state(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with Store.open(url) as store:
        store.connection("sf").cursors.set("crm", "x")
    with Store.open(url, existing=True) as store:
        assert store.connection("sf").cursors.get("crm") == "x"
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


def test_sqlite_file_is_created_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    with Store.open(f"sqlite:///{path}") as store:
        store.connection("sf").cursors.set("crm", "x")
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
        thread = threading.Thread(target=store.connection("sf").cursors.set, args=("crm", "x"))
        thread.start()
        thread.join(timeout=10)
        assert store.connection("sf").cursors.get("crm") == "x"


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


# -- the per-connection handle and the transition delegates ---------------------------------


@contract
def test_a_connections_handle_is_shared_and_bound_to_its_name(store: Store) -> None:
    sf = store.connection("sf")
    assert store.connection("sf") is sf
    assert sf.name == sf.links.connection == sf.dead_letters.connection == "sf"
    assert (sf.cursors.connection, sf.runs.connection, sf.lease.connection) == ("sf",) * 3
    assert store.connection("d365") is not sf
    assert repr(sf) == "ConnectionState('sf')"


@contract
def test_the_transition_delegates_answer_like_the_handle(store: Store, clock: FakeClock) -> None:
    """``Store``'s per-connection methods (kept for connector/sync until it moves to
    ``Store.connection``) write and read the same rows as the handle."""
    sf = store.connection("sf")
    store.set_cursor("sf", "crm", "x")
    assert sf.cursors.get("crm") == store.get_cursor("sf", "crm") == "x"
    store.save_links("sf", [linked("006A", "R-1"), linked("006B", "R-2")])
    store.mark_pending("sf", "006P", "fp", {"v": 1}, holder=RUN)
    assert store.get_link("sf", "006A") == sf.links.get("006A")
    assert store.get_links("sf", ["006A", "006B"]) == sf.links.get_many(["006A", "006B"])
    assert store.link_by_referral("sf", "R-1") == sf.links.by_referral("R-1")
    assert store.links_by_referral("sf", ["R-2"]) == sf.links.by_referrals(["R-2"])
    assert store.links_by_engagement("sf", "eng-R-1") == sf.links.by_engagement("eng-R-1")
    assert store.links_by_engagements("sf", ["eng-R-2"]) == sf.links.by_engagements(["eng-R-2"])
    assert list(store.iter_links("sf")) == list(sf.links.iterate())
    assert store.count_links("sf") == sf.links.count()
    store.set_mirrored("sf", {"006A": None})
    assert store.links_to_mirror("sf") == sf.links.to_mirror()
    assert store.etags_by_referral("sf", ["R-1"]) == sf.links.etags_by_referral(["R-1"])
    assert store.take_over_intents("sf", [], RUN) == set()
    assert store.mark_pending_many("sf", [("006P", "fp", {"v": 2})], holder=RUN) == {}
    store.release_pending("sf", ["006P"], holder=RUN)
    store.save_link("sf", linked("006C", "R-3"))
    assert sf.links.get("006P") is None and sf.links.get("006C") is not None

    letter = store.add_dead_letter("sf", "006X", "invalid_record", "no name")
    store.add_dead_letters("sf", [("006Y", "invalid_record", "no date", None, "fp")])
    assert store.open_dead_letters("sf", ["006X", "006Y"]) == sf.dead_letters.open_of(
        ["006X", "006Y"]
    )
    assert store.dead_letter_stamps("sf", ["006Y"]) == sf.dead_letters.stamps(["006Y"])
    assert store.resolve_dead_letter("sf", "006X") is True
    assert sf.dead_letters.open_of(["006X"]) == {} and letter.connection == "sf"

    run_id = store.start_run("sf")
    store.finish_run(run_id, "ok", {}, {}, 1.0)
    assert store.last_run("sf") == sf.runs.last() and sf.runs.recent()[0].id == run_id

    assert store.acquire_lease("sf", "a", ttl_s=30) is True
    assert (
        store.current_lease("sf") == sf.lease.current() == ("a", clock.now + timedelta(seconds=30))
    )
    assert store.renew_lease("sf", "a", ttl_s=60) is True
    assert store.take_over_lease("sf", "a", "b", ttl_s=30) is True
    assert store.release_lease("sf", "b") is True
    assert sf.lease.current() is None


def test_batch_sizes_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Store.open(f"sqlite:///{tmp_path / 'state.db'}", lookup_chunk=0)
