"""The quota guard: a run stops at the configured share of a CRM's API allowance,
says so (outcome ``quota_stopped``, ``RunReport.quota``, exit code 3), leaves nothing
half-written, and the next cycle with a raised allowance completes everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from guard_world import GuardWorld, guard_world

from connector.state.store import Store
from connector.sync.report import Outcome

OPPORTUNITIES = 450
CLI = [sys.executable, "-m", "connector"]


@pytest.fixture
def world(tmp_path: Path) -> Any:
    with guard_world(tmp_path, opportunities=OPPORTUNITIES) as w:
        yield w


def assert_nothing_half_written(world: GuardWorld, connection: str, status_ids: set[str]) -> None:
    """Every referral in the core is linked in the state store; every referral id the
    CRM shows names a referral that exists; no CRM record has two referrals."""
    referrals = world.referrals()
    per_record = Counter(r["externalReferenceId"] for r in referrals)
    assert all(n == 1 for n in per_record.values()), per_record.most_common(3)
    store = Store.open(world.state_url)
    try:
        links = store.connection(connection).links.get_many(list(per_record))
    finally:
        store.close()
    by_id = {r["id"] for r in referrals}
    unlinked = [
        crm_id for crm_id in per_record if crm_id not in links or not links[crm_id].referral_id
    ]
    assert unlinked == []
    assert status_ids <= by_id, status_ids - by_id


def sf_status_ids(world: GuardWorld) -> set[str]:
    return {
        o["Referral_Identifier__c"]
        for o in world.sf_opportunities()
        if o.get("Referral_Identifier__c")
    }


def dv_status_ids(world: GuardWorld) -> set[str]:
    return {o["cosell_referralid"] for o in world.dv_opportunities() if o.get("cosell_referralid")}


def test_salesforce_run_stops_at_the_share_and_resumes_next_cycle(world: GuardWorld) -> None:
    config = world.config("salesforce", crm={"batch_size": 200, "max_quota_share": 0.8})
    # 4 calls left below 80 % of 1000: the first page (stages, query, the describe its
    # dates are read by, one status write) is handled, then the guard stops the run
    # before the second page is asked for.
    world.put("/_sandbox/salesforce/limits", {"max": 1000, "used": 796})

    first = world.sync(config)

    assert first.outcome == Outcome.QUOTA
    assert first.error is not None and "80%" in first.error and "next cycle" in first.error
    assert first.quota["salesforce"] >= 0.8
    assert first.as_json()["quota"] == first.quota
    assert world.get("/_sandbox/salesforce/limits")["used"] == 800  # no call past the share
    assert first.created > 0
    store = Store.open(world.state_url)
    try:
        assert (
            store.connection("sandbox-salesforce").cursors.get("crm") is not None
        )  # page 1 is safe
    finally:
        store.close()
    assert_nothing_half_written(world, "sandbox-salesforce", sf_status_ids(world))
    done_first = {r["externalReferenceId"] for r in world.referrals()}

    world.put("/_sandbox/salesforce/limits", {"max": 100_000, "used": 0})
    second = world.sync(config)

    assert second.outcome in {Outcome.OK, Outcome.PARTIAL}
    assert second.quota["salesforce"] < 0.8
    referrals = {r["externalReferenceId"]: r["id"] for r in world.referrals()}
    assert set(referrals) > done_first  # the rest was created, nothing twice
    assert first.created + second.created == len(referrals)
    # Every created referral's id is written back to its record: nothing lost.
    status = {o["Id"]: o.get("Referral_Identifier__c") for o in world.sf_opportunities()}
    assert all(status[crm_id] == ref for crm_id, ref in referrals.items())
    assert_nothing_half_written(world, "sandbox-salesforce", sf_status_ids(world))

    # The same run from a full sync would have created exactly these: compare with a
    # third cycle that finds nothing left to do.
    third = world.sync(config)
    assert third.created == 0 and third.outcome in {Outcome.OK, Outcome.PARTIAL}


def test_dataverse_run_stops_at_its_request_budget_and_resumes(world: GuardWorld) -> None:
    config = world.config("dynamics", crm={"page_size": 100, "max_requests_per_run": 20})

    first = world.sync(config)

    assert first.outcome == Outcome.QUOTA
    assert first.error is not None and "20 requests" in first.error
    assert first.quota == {"dataverse": 1.0}
    assert first.api_calls["dataverse"] <= 20
    assert_nothing_half_written(world, "sandbox-dynamics", dv_status_ids(world))
    done_first = {r["externalReferenceId"] for r in world.referrals()}

    bigger = world.config("dynamics", crm={"page_size": 100, "max_requests_per_run": 500})
    second = world.sync(bigger)

    assert second.outcome in {Outcome.OK, Outcome.PARTIAL}
    assert 0 < second.quota["dataverse"] < 1
    referrals = {r["externalReferenceId"]: r["id"] for r in world.referrals()}
    assert set(referrals) >= done_first and len(referrals) > len(done_first)
    status = {o["opportunityid"]: o for o in world.dv_opportunities()}
    written = {
        crm_id
        for crm_id, ref in referrals.items()
        if status[crm_id].get("cosell_referralid") == ref
    }
    # Closed (won/lost) rows are read-only in Dataverse: only they may lack the id.
    missing = [c for c in set(referrals) - written if status[c]["statecode"] == 0]
    assert missing == []
    assert_nothing_half_written(world, "sandbox-dynamics", dv_status_ids(world))


def test_cli_exits_3_when_the_quota_guard_stops_the_run(world: GuardWorld, tmp_path: Path) -> None:
    config = world.config("salesforce", crm={"max_quota_share": 0.5})
    world.put("/_sandbox/salesforce/limits", {"max": 1000, "used": 600})
    report = tmp_path / "run.json"
    env = {**os.environ, "CONNECTOR_STATE_URL": world.state_url, "CONNECTOR_LOG_FORMAT": "json"}
    done = subprocess.run(
        [*CLI, "sync", "--once", "--config", str(config), "--report-json", str(report)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3, done.stderr[-2000:]
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["outcome"] == "quota_stopped"
    assert data["quota"]["salesforce"] >= 0.5
    assert world.referrals() == []  # stopped before anything was sent to the core
