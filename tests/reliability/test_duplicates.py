"""Never a duplicate referral: two runs at once, and state lost, restored or moved.

Each test ends by reading the core's referrals one by one against the CRM records
(:func:`ledger`): a referral naming a CRM record (``externalReferenceId``) is the only
one naming it and is the one the record carries (``Referral_Identifier__c`` or
``cosell_referralid``); a record carrying a referral id names a referral that exists.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from guard_world import CONNECTION, GuardWorld, guard_world
from reliability_world import connector_env
from rich.console import Console

from connector.runtime import open_runtime
from connector.settings import Settings, load_config
from connector.state.store import Link, LinkState, Store
from connector.sync.engine import SyncEngine
from connector.sync.existing import CLAIMED
from connector.sync.oneshot import run_once
from connector.sync.report import RunReport

OPPORTUNITIES = 150
CLI = [sys.executable, "-m", "connector"]
#: the CRM's id column and the field holding the referral id, per CRM
ID_FIELD = {"salesforce": "Id", "dynamics": "opportunityid"}
LINK_FIELD = {"salesforce": "Referral_Identifier__c", "dynamics": "cosell_referralid"}
SELECT_FIELD = {
    "salesforce": "Sync_with_Partner_Center__c",
    "dynamics": "cosell_syncwithpartnercenter",
}


@dataclass
class Ledger:
    """The core's referrals read one by one against the CRM records."""

    #: CRM id -> the referral ids naming it (``externalReferenceId``)
    referrals: dict[str, list[str]]
    problems: list[str]

    @property
    def created(self) -> int:
        return sum(len(ids) for ids in self.referrals.values())

    @property
    def duplicates(self) -> dict[str, list[str]]:
        return {crm_id: ids for crm_id, ids in self.referrals.items() if len(ids) > 1}


def crm_records(world: GuardWorld, kind: str) -> dict[str, dict[str, Any]]:
    rows = world.sf_opportunities() if kind == "salesforce" else world.dv_opportunities()
    return {str(row[ID_FIELD[kind]]): row for row in rows}


def read_only(record: dict[str, Any]) -> bool:
    """A won or lost Dataverse row: it takes no status write, so it carries no referral id."""
    return record.get("statecode") not in (None, 0)


def ledger(world: GuardWorld, kind: str) -> Ledger:
    records = crm_records(world, kind)
    data = world.get("/_sandbox/core/referrals")
    every = data["value"] if isinstance(data, dict) else data
    by_id = {r["id"]: r for r in every}
    naming: dict[str, list[str]] = {}
    for referral in every:
        external = str(referral.get("externalReferenceId") or "")
        if external in records:
            naming.setdefault(external, []).append(referral["id"])
    problems = []
    for crm_id, ids in sorted(naming.items()):
        carried = records[crm_id].get(LINK_FIELD[kind])
        if len(ids) > 1:
            problems.append(f"{crm_id}: {len(ids)} referrals name it ({', '.join(sorted(ids))})")
        elif carried != ids[0] and not (carried is None and read_only(records[crm_id])):
            problems.append(f"{crm_id}: the CRM carries {carried!r}, the core's is {ids[0]}")
    for crm_id, record in sorted(records.items()):
        carried = record.get(LINK_FIELD[kind])
        if not carried:
            continue
        referral = by_id.get(carried)
        if referral is None:
            problems.append(f"{crm_id}: carries {carried}, which the core does not have")
        elif str(referral.get("externalReferenceId") or crm_id) != crm_id:
            problems.append(f"{crm_id}: carries {carried}, which names another record")
    return Ledger(naming, problems)


def assert_clean(book: Ledger) -> None:
    assert book.duplicates == {}
    assert book.problems == []


@pytest.fixture
def world(tmp_path: Path) -> Iterator[GuardWorld]:
    with guard_world(tmp_path, opportunities=OPPORTUNITIES) as w:
        yield w


def config_with_state(world: GuardWorld, kind: str, state_url: str, name: str) -> Path:
    path = world.config(kind, name=name)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["state_url"] = state_url
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def sync_on(world: GuardWorld, config: Path, state_url: str) -> RunReport:
    """One ``sync --once`` in this process, on the given state store."""
    cfg = load_config(config)
    settings = Settings(state_url=state_url, config=config)
    out = Console(file=io.StringIO(), width=200)
    (report,) = run_once(settings, cfg, cfg.connections, dry_run=False, full=False, console=out)
    return report


def cli_sync(config: Path, folder: Path, *extra: str) -> subprocess.Popen[bytes]:
    log = (folder / f"sync-{uuid.uuid4().hex[:6]}.log").open("wb")
    try:
        return subprocess.Popen(
            [*CLI, "sync", "--once", "--config", str(config), *extra],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=connector_env(),
        )
    finally:
        log.close()


def set_selected(world: GuardWorld, kind: str, crm_ids: list[str], selected: bool) -> None:
    where = "salesforce" if kind == "salesforce" else "dataverse"
    for crm_id in crm_ids:
        world.post(f"/_sandbox/{where}/opportunities/{crm_id}", {SELECT_FIELD[kind]: selected})


# --------------------------------------------------------------------- two runs at once


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_two_sync_once_started_together_create_each_referral_once(
    world: GuardWorld, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    state_url = world.state_url if backend == "sqlite" else request.getfixturevalue("pg_state")
    Store.open(state_url).close()  # migrated once, before the two runs race for it
    config = config_with_state(world, "salesforce", state_url, "together.yaml")
    world.put("/_sandbox/latency", {"core": 5})  # both runs are still pushing when they meet
    runs = [
        cli_sync(config, tmp_path, "--report-json", str(tmp_path / f"run-{n}.json"))
        for n in range(2)
    ]
    codes = [run.wait(timeout=240) for run in runs]
    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("sync-*.log"))
    assert all(code in (0, 1) for code in codes), logs
    reports = [json.loads((tmp_path / f"run-{n}.json").read_text()) for n in range(2)]
    assert all(not r["failed"] for r in reports), [r["failed"] for r in reports]

    book = ledger(world, "salesforce")
    assert_clean(book)
    assert book.created == sum(r["created"] for r in reports) > 50
    with Store.open(state_url) as store:
        first, second = sorted(store.recent_runs(), key=lambda run: run.started)
    assert first.finished is not None and first.finished <= second.started  # one at a time
    print(f"two runs at once ({backend}): {book.created} referrals, duplicates 0")


def test_sync_once_beside_a_run_holding_the_lease_waits_then_stops(
    world: GuardWorld, tmp_path: Path
) -> None:
    config = world.config("salesforce", name="held.yaml")
    with Store.open(world.state_url) as store:
        assert store.connection(CONNECTION["salesforce"]).lease.acquire("daemon-host:4242", 300)
    run = cli_sync(config, tmp_path, "--lease-wait-s", "1")
    code = run.wait(timeout=120)
    output = "".join(p.read_text(errors="replace") for p in tmp_path.glob("sync-*.log"))
    assert code == 5, output
    assert "daemon-host:4242" in output and "--lease-wait-s" in output
    assert ledger(world, "salesforce").created == 0


# --------------------------------------------------------------------- state lost, old or new


@pytest.mark.parametrize("kind", ["salesforce", "dynamics"])
def test_state_deleted_creates_nothing_again(world: GuardWorld, kind: str) -> None:
    config = world.config(kind)
    first = world.sync(config)
    before = ledger(world, kind)
    assert_clean(before)
    assert before.created == first.created > 20

    world.state_file.unlink()
    again = world.sync(config)
    after = ledger(world, kind)
    assert_clean(after)
    assert after.referrals == before.referrals
    assert again.created == 0 and not again.failed


@pytest.mark.parametrize("kind", ["salesforce", "dynamics"])
def test_state_restored_from_an_older_copy_creates_nothing_again(
    world: GuardWorld, kind: str, tmp_path: Path
) -> None:
    config = world.config(kind)
    selected = [
        crm_id
        for crm_id, record in crm_records(world, kind).items()
        if record.get(SELECT_FIELD[kind])
    ]
    later = selected[::2]  # shared only after the backup was taken
    set_selected(world, kind, later, False)
    world.sync(config)
    backup = tmp_path / "state-backup.db"
    shutil.copy(world.state_file, backup)
    older = ledger(world, kind)

    set_selected(world, kind, later, True)
    second = world.sync(config)
    assert second.created > 10
    before = ledger(world, kind)
    assert_clean(before)
    assert before.created > older.created

    for suffix in ("-wal", "-shm"):
        Path(f"{world.state_file}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, world.state_file)
    restored = world.sync(config)
    after = ledger(world, kind)
    assert_clean(after)
    assert after.referrals == before.referrals
    assert restored.created == 0 and not restored.failed


@pytest.mark.postgres
def test_state_moved_to_a_new_store_creates_nothing_again(world: GuardWorld, pg_state: str) -> None:
    world.sync(world.config("salesforce"))
    before = ledger(world, "salesforce")
    assert_clean(before)

    report = sync_on(world, world.config("salesforce"), pg_state)
    after = ledger(world, "salesforce")
    assert_clean(after)
    assert after.referrals == before.referrals
    assert report.created == 0 and not report.failed


def test_crm_link_cleared_and_state_lost_the_core_is_asked(world: GuardWorld) -> None:
    """The CRM's field is gone too (an admin cleared it, a write never landed): the
    core's own referrals, matched on ``externalReferenceId``, are trusted before a create."""
    config = world.config("salesforce")
    world.sync(config)
    before = ledger(world, "salesforce")
    assert_clean(before)
    for crm_id in before.referrals:
        world.post(f"/_sandbox/salesforce/opportunities/{crm_id}", {"Referral_Identifier__c": None})
    world.state_file.unlink()

    again = world.sync(config)
    after = ledger(world, "salesforce")
    assert_clean(after)  # the CRM carries each referral id again
    assert after.referrals == before.referrals
    assert again.created == 0 and not again.failed


# --------------------------------------------------------------------- a crash's pending links


def pending_as_a_dead_run_left_it(link: Link, intent_at: datetime) -> Link:
    """The link as a run killed between its POST and its bookkeeping left it."""
    return Link(
        connection=link.connection,
        crm_id=link.crm_id,
        state=LinkState.PENDING_CREATE,
        fingerprint=link.fingerprint,
        sent_body=link.sent_body,
        intent_at=intent_at,
        intent_by="host-gone:1",
    )


def test_a_crash_between_post_and_bookkeeping_is_resolved_in_the_core(world: GuardWorld) -> None:
    """Pending links whose POST went through, the CRM never told: found in the core by
    ``externalReferenceId`` back to the intent's time, linked, never created again."""
    config = world.config("salesforce")
    started = datetime.now(UTC)
    world.sync(config)
    before = ledger(world, "salesforce")
    crashed = sorted(before.referrals)[:15]
    with Store.open(world.state_url) as store:
        sf_links = store.connection(CONNECTION["salesforce"]).links
        links = sf_links.get_many(crashed)
        sf_links.save_many(
            [pending_as_a_dead_run_left_it(links[crm_id], started) for crm_id in crashed],
        )
    for crm_id in crashed:
        world.post(f"/_sandbox/salesforce/opportunities/{crm_id}", {"Referral_Identifier__c": None})

    again = world.sync(config)
    after = ledger(world, "salesforce")
    assert_clean(after)
    assert after.referrals == before.referrals
    assert again.created == 0 and not again.failed
    with Store.open(world.state_url) as store:
        resolved = store.connection(CONNECTION["salesforce"]).links.get_many(crashed)
    assert {crm_id: [link.referral_id] for crm_id, link in resolved.items()} == {
        crm_id: before.referrals[crm_id] for crm_id in crashed
    }


def test_a_crash_before_the_post_creates_once(world: GuardWorld) -> None:
    """Pending links whose POST never left: nothing in the core, so the intent is taken
    over and the referral created, once."""
    config = world.config("salesforce")
    selected = [
        crm_id
        for crm_id, record in crm_records(world, "salesforce").items()
        if record.get(SELECT_FIELD["salesforce"])
    ]
    never_sent = selected[:20]
    set_selected(world, "salesforce", never_sent, False)
    world.sync(config)
    with Store.open(world.state_url) as store:
        store.connection(CONNECTION["salesforce"]).links.mark_pending_many(
            [(crm_id, "fp", {}) for crm_id in never_sent],
            holder="host-gone:1",
        )
    set_selected(world, "salesforce", never_sent, True)

    again = world.sync(config)
    book = ledger(world, "salesforce")
    assert_clean(book)
    created = {crm_id for crm_id in never_sent if crm_id in book.referrals}
    assert again.created == len(created) > 10  # the defective ones are rejected instead
    assert not again.failed


def test_records_another_live_run_is_creating_are_left_to_it(world: GuardWorld) -> None:
    """An engine run beside a live run (it holds the lease: this one does not): that run's
    pending records are skipped, not failed, and not created here."""
    kind = "salesforce"
    conn = CONNECTION[kind]
    config = world.config(kind)
    selected = [
        crm_id for crm_id, record in crm_records(world, kind).items() if record[SELECT_FIELD[kind]]
    ]
    theirs = selected[:10]
    with Store.open(world.state_url) as store:
        assert store.connection(conn).lease.acquire("host-live:2", 300)
        store.connection(conn).links.mark_pending_many(
            [(crm_id, "fp", {}) for crm_id in theirs], holder="host-live:2"
        )
        cfg = load_config(config)
        with open_runtime(cfg.connections[0], Settings(config=config)) as rt:
            report = SyncEngine(
                conn,
                crm=rt.crm,
                core=rt.core,
                store=store,
                mapping=rt.mapping,
                link_for=rt.link_for,
                holder="host-here:3",
            ).run()
        letters = {letter.crm_id for letter in store.list_dead_letters(conn)}
    book = ledger(world, kind)
    assert_clean(book)
    assert not set(theirs) & set(book.referrals)
    assert report.skipped[CLAIMED] == len(theirs)
    assert not set(theirs) & letters and not report.failed
    assert report.created > 50


@pytest.mark.parametrize("state", ["kept", "lost"])
def test_a_cloned_record_carrying_anothers_referral_id_gets_its_own(
    world: GuardWorld, state: str
) -> None:
    """A copied opportunity copies its referral id field (Salesforce's Clone does): that
    referral is linked to the original, or (the state lost) names the original in
    ``externalReferenceId``, so the copy is not linked to it; it gets its own referral,
    and the original keeps its own."""
    config = world.config("salesforce")
    world.sync(config)
    before = ledger(world, "salesforce")
    original_id = sorted(before.referrals)[0]
    original = crm_records(world, "salesforce")[original_id]
    system = ("Id", "SystemModstamp", "CreatedDate", "LastModifiedDate", "IsDeleted")
    copied = {k: v for k, v in original.items() if k not in system and v is not None}
    assert copied["Referral_Identifier__c"] == before.referrals[original_id][0]
    clone = world.post("/_sandbox/salesforce/opportunities", copied)["Id"]
    if state == "lost":
        world.state_file.unlink()

    again = world.sync(config)
    after = ledger(world, "salesforce")
    assert_clean(after)
    assert again.created == 1 and not again.failed
    assert after.referrals[original_id] == before.referrals[original_id]
    assert after.referrals[clone] != before.referrals[original_id]
