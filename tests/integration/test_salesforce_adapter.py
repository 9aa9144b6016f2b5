"""SalesforceOpportunities over HTTPS against the sandbox's imitation of Salesforce."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr, TypeAdapter

pytest.importorskip("sandbox.salesforce.part", reason="the sandbox Salesforce part")

from connector.crm.base import NewOpportunity
from connector.crm.salesforce import SalesforceOpportunities
from connector.crm.salesforce_auth import ClientCredentials, JwtBearer, SalesforceAuth
from connector.dealcore.retry import RetryPolicy
from connector.errors import CrmError, QuotaExhausted
from connector.mapping.filters import Filter
from connector.model import CrmStatusUpdate
from sandbox.harness import SandboxServer

SEEDED = 450
SELECT = TypeAdapter(Filter).validate_python(
    {"field": "Sync_with_Partner_Center__c", "op": "eq", "value": True}
)
FIELDS = [
    "Name",
    "Amount",
    "CurrencyIsoCode",
    "CloseDate",
    "StageName",
    "Sync_with_Partner_Center__c",
    "CoSell_Status__c",
    "Account.Name",
    "Account.BillingCountryCode",
    "Owner.Email",
    "Primary_Contact__r.Email",
]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(opportunities=SEEDED, seed=11) as sb:
        yield sb


def connect(sandbox: SandboxServer) -> SalesforceOpportunities:
    auth = SalesforceAuth(
        ClientCredentials(sandbox.url, "sandbox", SecretStr("sandbox")),
        ca_file=sandbox.ca_file,
        allowed_origin=sandbox.url,
    )
    return SalesforceOpportunities(
        auth, batch_size=200, timeout=10, retry=RetryPolicy(attempts=2, initial_wait=0.01)
    )


@pytest.fixture
def adapter(sandbox: SandboxServer) -> Iterator[SalesforceOpportunities]:
    crm = connect(sandbox)
    yield crm
    crm.close()


def admin(sandbox: SandboxServer, method: str, path: str, body: Any = None) -> Any:
    response = requests.request(
        method, f"{sandbox.url}{path}", json=body, verify=str(sandbox.ca_file), timeout=10
    )
    response.raise_for_status()
    return response.json() if response.content else None


def sandbox_now(sandbox: SandboxServer) -> datetime:
    return datetime.fromisoformat(admin(sandbox, "GET", "/_sandbox/clock")["now"])


def as_cursor(stamp: datetime) -> str:
    return stamp.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def selected_ids(sandbox: SandboxServer) -> set[str]:
    """What the org holds, read through the sandbox's admin API (not through the adapter)."""
    rows = admin(
        sandbox, "GET", "/_sandbox/salesforce/opportunities?Sync_with_Partner_Center__c=true"
    )
    return {r["Id"] for r in rows["records"]}


def pull_all(
    crm: SalesforceOpportunities, cursor: str | None, select: Filter | None = SELECT
) -> tuple[list[Any], str | None]:
    records = []
    for page in crm.pull_changes(cursor, fields=FIELDS, select=select):
        records.extend(page.records)
        cursor = page.cursor or cursor
    return records, cursor


def test_a_full_pull_returns_every_selected_record_page_by_page(
    sandbox: SandboxServer, adapter: SalesforceOpportunities
) -> None:
    before = sandbox_now(sandbox)
    pages = list(adapter.pull_changes(None, fields=FIELDS, select=SELECT))
    after = sandbox_now(sandbox)
    *pages, last = pages
    records = [r for p in pages for r in p.records]
    assert len(pages) >= 2  # 200 a page
    assert adapter.usage.by_kind["query_more"] == len(pages) - 1
    assert {r.id for r in records if not r.deleted} == selected_ids(sandbox)
    assert len(records) == len({r.id for r in records})
    stamps = [(r.modstamp, r.id) for r in records]
    assert stamps == sorted(stamps)
    for record in records:
        assert record.fields["Sync_with_Partner_Center__c"] is True
        assert record.modstamp.tzinfo is not None
        amount = record.fields["Amount"]
        assert amount is None or isinstance(amount, Decimal)
        assert "Account.BillingCountryCode" in record.fields
    assert any(isinstance(r.fields["Account.Name"], str) for r in records)
    newest = max(r.modstamp for r in records)
    assert pages[-1].cursor == as_cursor(newest)
    # every page was read: a last page without records moves the cursor up to the
    # sandbox clock when the query ran (its Date, to the second), minus the margin
    margin = timedelta(seconds=5)
    assert last.records == []
    assert last.cursor is not None
    final = datetime.fromisoformat(last.cursor)
    assert final > newest
    assert before.replace(microsecond=0) - margin <= final <= after - margin
    assert adapter.usage.limit is not None and adapter.usage.used is not None


def test_an_incremental_pull_sees_an_edit(
    sandbox: SandboxServer, adapter: SalesforceOpportunities
) -> None:
    full, cursor = pull_all(adapter, None)
    target = sorted(selected_ids(sandbox))[0]
    admin(sandbox, "POST", f"/_sandbox/salesforce/opportunities/{target}", {"Name": "Edited ü'\\"})
    changed, later = pull_all(adapter, cursor)
    assert target in {r.id for r in changed}
    edited = next(r for r in changed if r.id == target)
    assert edited.fields["Name"] == "Edited ü'\\"
    assert len(changed) < len(full)
    assert later is not None and cursor is not None and later >= cursor


def test_a_late_commit_inside_the_overlap_window_is_not_lost(
    sandbox: SandboxServer, adapter: SalesforceOpportunities
) -> None:
    _, cursor = pull_all(adapter, None)
    assert cursor is not None
    stamp = datetime.fromisoformat(cursor) - timedelta(seconds=60)
    late = sorted(selected_ids(sandbox))[5]
    admin(
        sandbox,
        "POST",
        f"/_sandbox/salesforce/opportunities/{late}",
        {"Name": "Committed late", "SystemModstamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.000+0000")},
    )
    changed, _ = pull_all(adapter, cursor)
    assert "Committed late" in {r.fields["Name"] for r in changed if r.id == late}


def test_an_idle_pull_once_the_overlap_has_passed_reads_nothing_in_one_call() -> None:
    # its own sandbox: the test moves the clock and needs no other recent change
    with SandboxServer(opportunities=SEEDED, seed=12) as sandbox:
        crm = connect(sandbox)
        try:
            _, cursor = pull_all(crm, None, None)
            # 250 records changed now: reading them takes two query pages of 200
            rows = admin(sandbox, "GET", "/_sandbox/salesforce/opportunities?limit=250")
            changed = [r["Id"] for r in rows["records"]]
            assert len(changed) == 250
            results = crm.write_status(
                [CrmStatusUpdate(i, {"CoSell_Sync_Error__c": "checked"}) for i in changed]
            )
            assert all(r.ok for r in results)
            records, cursor = pull_all(crm, cursor, None)
            assert set(changed) <= {r.id for r in records}
            # Past the overlap (300 s) and the margin (5 s), the first pull still reads
            # the changes again, as its cursor dates from when they were made; it moves
            # the cursor up to its query's server time, so the pull after it does not.
            admin(sandbox, "POST", "/_sandbox/clock", {"seconds": 400})
            before = sandbox_now(sandbox)
            calls = dict(crm.usage.by_kind)
            records, cursor = pull_all(crm, cursor, None)
            assert set(changed) <= {r.id for r in records}
            assert crm.usage.by_kind["query_more"] > calls.get("query_more", 0)
            assert cursor is not None
            query_time = before.replace(microsecond=0)  # the Date header has whole seconds
            assert datetime.fromisoformat(cursor) >= query_time - timedelta(seconds=5)
            calls = dict(crm.usage.by_kind)
            records, idle = pull_all(crm, cursor, None)
            assert records == []
            spent = {k: n - calls.get(k, 0) for k, n in crm.usage.by_kind.items()}
            assert {k: n for k, n in spent.items() if n} == {"query": 1}
            assert idle is not None and idle >= cursor
            # and a change after the idle pull is still seen
            admin(
                sandbox, "POST", f"/_sandbox/salesforce/opportunities/{changed[0]}", {"Name": "New"}
            )
            records, _ = pull_all(crm, idle, None)
            assert [r.fields["Name"] for r in records if r.id == changed[0]] == ["New"]
        finally:
            crm.close()


def test_a_soft_deleted_record_comes_back_marked_deleted(
    sandbox: SandboxServer, adapter: SalesforceOpportunities
) -> None:
    _, cursor = pull_all(adapter, None)
    victim = sorted(selected_ids(sandbox))[-1]
    admin(sandbox, "DELETE", f"/_sandbox/salesforce/opportunities/{victim}")
    changed, _ = pull_all(adapter, cursor)
    assert [r.deleted for r in changed if r.id == victim] == [True]


def test_write_status_round_trip(sandbox: SandboxServer, adapter: SalesforceOpportunities) -> None:
    target, other = sorted(selected_ids(sandbox))[1:3]
    synced = datetime(2026, 5, 1, 12, 0, 1, tzinfo=UTC)
    results = adapter.write_status(
        [
            CrmStatusUpdate(
                target, {"CoSell_Status__c": "Active/Accepted", "CoSell_Last_Sync__c": synced}
            ),
            CrmStatusUpdate("006000000000000XYZ", {"CoSell_Status__c": "Active"}),
            CrmStatusUpdate(other, {"CoSell_Sync_Error__c": 'O\'Brien said "no"'}),
        ]
    )
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error_code
    back = adapter.fetch(target, fields=["CoSell_Status__c", "CoSell_Last_Sync__c"])
    assert back is not None
    assert back.fields["CoSell_Status__c"] == "Active/Accepted"
    assert back.fields["CoSell_Last_Sync__c"] == synced
    again = adapter.fetch(other, fields=["CoSell_Sync_Error__c"])
    assert again is not None and again.fields["CoSell_Sync_Error__c"] == 'O\'Brien said "no"'


def test_create_opportunities_round_trip(adapter: SalesforceOpportunities) -> None:
    results = adapter.create_opportunities(
        [
            NewOpportunity(
                "ref-1",
                {
                    "Name": "Incoming from Microsoft",
                    "StageName": "Prospecting",
                    "CloseDate": datetime(2026, 9, 30).date(),
                    "Amount": Decimal("2500.50"),
                    "Referral_Identifier__c": "ref-1",
                },
            )
        ]
    )
    assert results[0].ok, results[0]
    assert results[0].crm_id is not None
    created = adapter.fetch(results[0].crm_id, fields=["Name", "Amount", "Referral_Identifier__c"])
    assert created is not None
    assert created.fields["Amount"] == Decimal("2500.5")
    assert created.fields["Referral_Identifier__c"] == "ref-1"


def test_stage_metadata(adapter: SalesforceOpportunities) -> None:
    stages = adapter.stage_metadata()
    labels = [s.label for s in stages]
    assert labels[0] == "Prospecting"
    assert {"Closed Won", "Closed Lost", "Technical Win", "Verbal Commit"} <= set(labels)
    won = next(s for s in stages if s.label == "Closed Won")
    assert (won.is_closed, won.is_won, won.probability) == (True, True, Decimal(100))
    tech = next(s for s in stages if s.label == "Technical Win")
    assert (tech.is_closed, tech.probability) == (False, Decimal(65))
    assert [s.sort_order for s in stages] == sorted(s.sort_order for s in stages)


def test_the_quota_guard_stops_on_the_sandbox_figures(sandbox: SandboxServer) -> None:
    saved = admin(sandbox, "GET", "/_sandbox/salesforce/limits")
    admin(sandbox, "PUT", "/_sandbox/salesforce/limits", {"max": 1000, "used": 900})
    auth = SalesforceAuth(
        ClientCredentials(sandbox.url, "sandbox", SecretStr("sandbox")),
        ca_file=sandbox.ca_file,
        allowed_origin=sandbox.url,
    )
    crm = SalesforceOpportunities(auth, max_quota_share=0.8)
    try:
        crm.stage_metadata()
        share = crm.quota_share()
        assert share is not None and share >= 0.9
        with pytest.raises(QuotaExhausted, match="/1000"):
            crm.stage_metadata()
        assert crm.usage.by_kind == {"token": 1, "query": 1}
    finally:
        admin(sandbox, "PUT", "/_sandbox/salesforce/limits", saved)
        crm.close()


def test_jwt_bearer_sign_in(sandbox: SandboxServer, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "connected-app.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for audience in (None, "https://test.salesforce.com"):
        # posted to the org's own URL, the assertion names Salesforce's login audience
        auth = SalesforceAuth(
            JwtBearer(
                sandbox.url, "sandbox", "integration@partner.example", key_file, audience=audience
            ),
            ca_file=sandbox.ca_file,
            allowed_origin=sandbox.url,
        )
        crm = SalesforceOpportunities(auth)
        try:
            assert len(crm.stage_metadata()) >= 12
            assert crm.usage.by_kind["token"] == 1
        finally:
            crm.close()
    refused = SalesforceAuth(
        JwtBearer(sandbox.url, "sandbox", "u@x", key_file, audience="https://else.example"),
        ca_file=sandbox.ca_file,
        allowed_origin=sandbox.url,
    )
    with pytest.raises(CrmError, match="audience is invalid"):
        refused.login()
    refused.close()


def test_a_nested_filter_with_hostile_values_is_accepted_and_applied(
    sandbox: SandboxServer, adapter: SalesforceOpportunities
) -> None:
    select = TypeAdapter(Filter).validate_python(
        {
            "all": [
                {"field": "Sync_with_Partner_Center__c", "op": "eq", "value": True},
                {
                    "not": {
                        "field": "StageName",
                        "op": "in",
                        "value": ["Closed Lost", "x' OR Id != null --"],
                    }
                },
                {
                    "any": [
                        {"field": "Amount", "op": "ge", "value": 0},
                        {"field": "Amount", "op": "eq", "value": None},
                    ]
                },
                {"field": "Name", "op": "ne", "value": "\\' OR Name LIKE '%"},
            ]
        }
    )
    records = [
        r for p in adapter.pull_changes(None, fields=FIELDS, select=select) for r in p.records
    ]
    assert records
    assert all(r.fields["StageName"] != "Closed Lost" for r in records)
    # soft-deleted rows come too (marked), so compare the live ones
    assert {r.id for r in records if not r.deleted} < selected_ids(sandbox)
