"""The adapters' lookup by referral id (what makes creating incoming deals idempotent)."""

from __future__ import annotations

from pathlib import Path

from lifecycle_world import DynamicsWorld, LifecycleWorld, salesforce_world

from connector.runtime import open_runtime
from connector.settings import Settings, load_config


def lookup(world: LifecycleWorld, field: str, ids: list[str]) -> dict[str, str]:
    cfg = load_config(world.config_path)
    (conn,) = cfg.connections
    with open_runtime(conn, Settings(state_url=world.state_url, config=world.config_path)) as rt:
        return rt.crm.find_by_referral_ids(field, ids)


def test_salesforce_finds_live_records_by_referral_id(tmp_path: Path) -> None:
    with salesforce_world(tmp_path) as world:
        first = world.new_deal(Referral_Identifier__c="ref-1")
        second = world.new_deal(Referral_Identifier__c="ref-'2")  # quoted safely
        gone = world.new_deal(Referral_Identifier__c="ref-3")
        world.admin.delete(f"/_sandbox/salesforce/opportunities/{gone}").raise_for_status()
        ids = ["ref-1", "ref-'2", "ref-3", "absent"] + [f"x-{n}" for n in range(450)]
        found = lookup(world, "Referral_Identifier__c", ids)
        assert found == {"ref-1": first, "ref-'2": second}


def test_dataverse_finds_rows_by_referral_id(dynamics: DynamicsWorld) -> None:
    rows = dynamics.rows()[:2]
    dynamics.edit_row(rows[0]["opportunityid"], cosell_referralid="ref-1")
    dynamics.edit_row(rows[1]["opportunityid"], cosell_referralid="ref-'2")
    ids = ["ref-1", "ref-'2", "absent"] + [f"x-{n}" for n in range(120)]
    found = lookup(dynamics, "cosell_referralid", ids)
    assert found == {"ref-1": rows[0]["opportunityid"], "ref-'2": rows[1]["opportunityid"]}
