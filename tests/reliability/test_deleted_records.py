"""Records deleted or purged in the CRM: nothing fails every cycle, no referral is forgotten.

A Salesforce record deleted while its sync was under way once left an Active referral
and an ``ENTITY_IS_DELETED`` failure in every later cycle (its status write was tried
again and again); a record purged from the recycle bin during an outage was never seen
again. Now the status write to a gone record is settled, and the reconciliation finds
every linked record that no longer exists and handles its referral as the mapping says.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from guard_world import ROOT, GuardWorld, guard_world

from connector.runtime import open_runtime
from connector.settings import Settings, load_config
from connector.state.store import LinkState, Store
from connector.sync.engine import SyncEngine
from connector.sync.report import RunReport

EVERY_CYCLE = {"reconcile_interval_s": 0}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[GuardWorld]:
    with guard_world(tmp_path, opportunities=40) as w:
        yield w


def mapping_with(world: GuardWorld, crm: str, on_record_deleted: str) -> Path:
    data = yaml.safe_load((ROOT / "mappings" / f"{crm}.yaml").read_text(encoding="utf-8"))
    data["on_record_deleted"] = on_record_deleted
    path = world.folder / f"{crm}-{on_record_deleted}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def sync_deleting(world: GuardWorld, config: Path, delete_path: str) -> RunReport:
    """One cycle that deletes a record (admin API) once the first push has come back,
    that is after the pull read it and before its status is written."""
    cfg = load_config(config)
    (conn,) = cfg.connections
    deleted: list[str] = []

    def progress(kind: str, n: int) -> None:
        if kind == "pushed" and not deleted:
            world.admin.delete(delete_path).raise_for_status()
            deleted.append(delete_path)

    store = Store.open(world.state_url)
    try:
        with open_runtime(conn, Settings(state_url=world.state_url, config=config)) as rt:
            engine = SyncEngine(
                conn.name,
                crm=rt.crm,
                core=rt.core,
                store=store,
                mapping=rt.mapping,
                link_for=rt.link_for,
                progress=progress,
            )
            report = engine.run()
    finally:
        store.close()
    assert deleted, "the cycle pushed nothing"
    return report


def healthy_salesforce_record(world: GuardWorld) -> str:
    defects = world.get("/_sandbox/salesforce/defects")["defects"]
    return str(
        next(
            o["Id"]
            for o in world.sf_opportunities()
            if o["Sync_with_Partner_Center__c"]
            and o["Id"] not in defects
            and o["Primary_Contact__c"]
            and not o["IsClosed"]
        )
    )


def referral_of(world: GuardWorld, crm_id: str) -> dict[str, Any]:
    (referral,) = [r for r in world.referrals() if r["externalReferenceId"] == crm_id]
    return referral


def letters(world: GuardWorld, connection: str) -> dict[str, Any]:
    store = Store.open(world.state_url)
    try:
        return {d.crm_id: d for d in store.list_dead_letters(connection, include_resolved=True)}
    finally:
        store.close()


def test_a_record_deleted_mid_sync_fails_no_cycle_and_its_referral_is_flagged(
    world: GuardWorld,
) -> None:
    victim = healthy_salesforce_record(world)
    config = world.config("salesforce", crm=EVERY_CYCLE)

    first = sync_deleting(world, config, f"/_sandbox/salesforce/opportunities/{victim}")

    assert not any(k.startswith("crm_write") for k in first.failed), first.failed
    assert first.skipped["deleted"] == 1  # its status write: the record is gone, settled
    assert referral_of(world, victim)["status"] == "Active"

    second = world.sync(config)  # the reconciliation finds it gone: flagged for an operator

    assert second.failed == {"record_deleted": 1}, second.failed
    letter = letters(world, "sandbox-salesforce")[victim]
    assert letter.reason_code == "record_deleted" and not letter.resolved
    assert referral_of(world, victim)["id"] in letter.message
    assert "on_record_deleted: close_lost" in letter.message
    assert referral_of(world, victim)["status"] == "Active"  # flag writes nothing to the core

    third = world.sync(config)

    assert third.failed == {} and third.skipped["record_deleted"] == 1  # flagged once


def test_close_lost_closes_the_referral_of_a_record_deleted_mid_sync(world: GuardWorld) -> None:
    victim = healthy_salesforce_record(world)
    mapping = mapping_with(world, "salesforce", "close_lost")
    config = world.config("salesforce", crm=EVERY_CYCLE, mapping=mapping)

    sync_deleting(world, config, f"/_sandbox/salesforce/opportunities/{victim}")
    second = world.sync(config)

    assert second.failed == {} and second.closed == 1
    referral = referral_of(world, victim)
    assert (referral["status"], referral["substatus"]) == ("Closed", "Lost")
    store = Store.open(world.state_url)
    try:
        link = store.connection("sandbox-salesforce").links.get(victim)
    finally:
        store.close()
    assert link is not None and link.state == LinkState.TERMINAL
    third = world.sync(config)
    assert third.failed == {} and third.closed == 0


def test_a_record_purged_during_an_outage_is_found_and_closed(world: GuardWorld) -> None:
    mapping = mapping_with(world, "salesforce", "close_lost")
    config = world.config("salesforce", crm=EVERY_CYCLE, mapping=mapping)
    world.sync(config)
    victim = next(r["externalReferenceId"] for r in world.referrals() if r["status"] == "Active")
    # deleted and purged from the recycle bin while the connector was not running:
    # queryAll no longer returns it, no pull will ever see it
    world.admin.delete(
        f"/_sandbox/salesforce/opportunities/{victim}", params={"purge": "true"}
    ).raise_for_status()

    after = world.sync(config)

    assert after.closed == 1 and after.failed == {}
    assert referral_of(world, victim)["substatus"] == "Lost"


def test_a_dataverse_row_deleted_while_read_by_modifiedon_is_found_and_closed(
    world: GuardWorld,
) -> None:
    mapping = mapping_with(world, "dynamics", "close_lost")
    config = world.config(
        "dynamics", crm={**EVERY_CYCLE, "change_tracking": "off"}, mapping=mapping
    )
    world.sync(config)
    victim = next(r["externalReferenceId"] for r in world.referrals() if r["status"] == "Active")
    world.admin.delete(f"/_sandbox/dataverse/opportunities/{victim}").raise_for_status()

    after = world.sync(config)

    assert after.closed == 1 and after.failed == {}
    assert referral_of(world, victim)["substatus"] == "Lost"


def test_without_a_due_reconciliation_nothing_is_asked(world: GuardWorld) -> None:
    config = world.config("salesforce")  # the default interval: six hours
    world.sync(config)
    victim = next(r["externalReferenceId"] for r in world.referrals() if r["status"] == "Active")
    world.admin.delete(f"/_sandbox/salesforce/opportunities/{victim}").raise_for_status()

    again = world.sync(config)

    assert again.failed == {} and again.closed == 0
    assert victim not in letters(world, "sandbox-salesforce")
