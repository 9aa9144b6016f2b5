"""DataverseOpportunities over real HTTPS against the sandbox's Dataverse."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter

from connector.crm.base import NewOpportunity
from connector.crm.dynamics import DataverseOpportunities
from connector.errors import ConfigError, Throttled
from connector.mapping.filters import Filter
from connector.model import CrmStatusUpdate

server = pytest.importorskip("sandbox.harness")
pytest.importorskip("sandbox.dataverse.part")

N = 60
FIELDS = [
    "name",
    "estimatedvalue",
    "estimatedclosedate",
    "salesstage@label",
    "cosell_syncwithpartnercenter",
    "cosell_referralid",
    "parentaccountid.name",
    "parentaccountid.cosell_countrycode",
    "ownerid.internalemailaddress",
    "transactioncurrencyid.isocurrencycode",
]
SYNCED: Filter = TypeAdapter(Filter).validate_python(
    {"field": "cosell_syncwithpartnercenter", "value": True}
)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    with server.SandboxServer(opportunities=N, seed=7) as sb:
        yield sb


@pytest.fixture
def admin(sandbox: Any) -> Iterator[httpx.Client]:
    with sandbox.client(10) as client:
        client.post(
            "/_sandbox/dataverse/reset", json={"opportunities": N, "seed": 7}
        ).raise_for_status()
        yield client


@pytest.fixture
def make(sandbox: Any, admin: httpx.Client) -> Iterator[Any]:
    made: list[DataverseOpportunities] = []

    def factory(**options: Any) -> DataverseOpportunities:
        adapter = DataverseOpportunities.connect(
            environment_url=sandbox.url,
            tenant="sandbox-tenant",
            client_id="sandbox",
            client_secret="sandbox",
            authority=sandbox.url,
            ca_file=sandbox.ca_file,
            timeout_s=10,
            **options,
        )
        made.append(adapter)
        return adapter

    yield factory
    for adapter in made:
        adapter.close()


def all_rows(admin: httpx.Client) -> list[dict[str, Any]]:
    return list(admin.get("/_sandbox/dataverse/opportunities").json()["value"])


def test_initial_pull_then_delta_with_changes_and_deletions(make: Any, admin: httpx.Client) -> None:
    adapter = make(page_size=25)
    pages = list(adapter.pull_changes(None, fields=FIELDS, select=None))
    records = [r for p in pages for r in p.records]
    assert len(pages) == 3 and len(records) == N
    assert len({r.id for r in records}) == N
    cursor = pages[-1].cursor
    assert cursor is not None and cursor.startswith("delta:")
    assert all(p.cursor is None for p in pages[:-1])
    sample = next(r for r in records if r.fields.get("parentaccountid"))
    assert sample.fields["parentaccountid.name"]
    assert sample.etag and isinstance(sample.modstamp, datetime) and sample.modstamp.tzinfo
    with_value = next(r for r in records if r.fields.get("estimatedvalue") is not None)
    assert isinstance(with_value.fields["estimatedvalue"], Decimal)
    open_row = next(r for r in records if not r.fields["is_closed"])
    assert open_row.fields["stage"] in {"Qualify", "Develop", "Propose", "Close"}
    # related rows come from one query per lookup and page, never one per record
    assert adapter.usage.by_kind["related"] <= 3 * len(pages)

    changed, deleted = records[0].id, records[1].id
    admin.post(
        f"/_sandbox/dataverse/opportunities/{changed}", json={"name": "Renamed deal"}
    ).raise_for_status()
    admin.delete(f"/_sandbox/dataverse/opportunities/{deleted}").raise_for_status()
    delta_pages = list(adapter.pull_changes(cursor, fields=FIELDS, select=None))
    assert [(r.id, r.fields["name"]) for p in delta_pages for r in p.records] == [
        (changed, "Renamed deal")
    ]
    assert [d for p in delta_pages for d in p.deleted_ids] == [deleted]
    assert delta_pages[-1].cursor != cursor

    # nothing changed since: an empty delta
    quiet = list(adapter.pull_changes(delta_pages[-1].cursor, fields=FIELDS, select=None))
    assert [r for p in quiet for r in p.records] == []


def test_expired_delta_token_resyncs_everything(make: Any, admin: httpx.Client) -> None:
    adapter = make()
    cursor = list(adapter.pull_changes(None, fields=["name"], select=None))[-1].cursor
    admin.post("/_sandbox/dataverse/expire-delta-tokens").raise_for_status()
    pages = list(adapter.pull_changes(cursor, fields=["name"], select=None))
    assert sum(len(p.records) for p in pages) == N
    assert pages[-1].cursor not in (None, cursor)


def test_select_is_the_same_in_both_modes(make: Any, admin: httpx.Client) -> None:
    expected = {
        r["opportunityid"] for r in all_rows(admin) if r.get("cosell_syncwithpartnercenter")
    }
    assert 0 < len(expected) < N
    tracked = make().pull_changes(None, fields=FIELDS, select=SYNCED)
    assert {r.id for p in tracked for r in p.records} == expected
    fallback = list(
        make(change_tracking=False, page_size=10).pull_changes(None, fields=FIELDS, select=SYNCED)
    )
    assert {r.id for p in fallback for r in p.records} == expected
    assert fallback[-1].cursor is not None and fallback[-1].cursor.startswith("modifiedon:")


def test_stage_metadata(make: Any) -> None:
    stages = make().stage_metadata()
    assert [s.label for s in stages] == ["Qualify", "Develop", "Propose", "Close", "Won", "Lost"]
    assert [s.is_closed for s in stages] == [False] * 4 + [True, True]


def test_write_status_single_batched_and_closed(make: Any, admin: httpx.Client) -> None:
    rows = all_rows(admin)
    open_ids = [r["opportunityid"] for r in rows if r["statecode"] == 0][:25]
    closed = next(r["opportunityid"] for r in rows if r["statecode"] != 0)
    missing = "00000000-0000-0000-0000-00000000beef"
    adapter = make(batch_size=10)
    updates = [
        CrmStatusUpdate(i, {"cosell_status": f"Active {n}", "cosell_referralid": f"ref-{n}"})
        for n, i in enumerate(open_ids)
    ]
    results = adapter.write_status(
        [
            *updates,
            CrmStatusUpdate(closed, {"cosell_status": "x"}),
            CrmStatusUpdate(missing, {"cosell_status": "x"}),
        ]
    )
    assert [r.ok for r in results[:-2]] == [True] * len(open_ids)
    assert (results[-2].error_code, results[-1].error_code) == ("read_only_closed", "not_found")
    assert adapter.usage.by_kind["batch"] == 3
    after = {r["opportunityid"]: r for r in all_rows(admin)}
    assert after[open_ids[7]]["cosell_referralid"] == "ref-7"
    assert after[closed]["cosell_status"] != "x"
    assert missing not in after  # If-Match: * never creates a row
    one = make().write_status([CrmStatusUpdate(open_ids[0], {"cosell_syncerror": "boom"})])
    assert one[0].ok


def test_calls_grow_with_pages_and_chunks_never_with_records(
    make: Any, admin: httpx.Client
) -> None:
    adapter = make(page_size=20, max_concurrency=4)
    pages = list(adapter.pull_changes(None, fields=FIELDS, select=None))
    records = [r for p in pages for r in p.records]
    assert len(pages) == 3 and len(records) == N
    # the table's definition and its column types once, one query per page, per lookup
    # and page at most
    assert set(adapter.usage.by_kind) == {"metadata", "read", "related"}
    assert adapter.usage.by_kind["metadata"] == 2
    assert adapter.usage.by_kind["read"] == 3 and adapter.usage.by_kind["related"] <= 3 * 3
    before = dict(adapter.usage.by_kind)
    open_ids = [r.id for r in records if not r.fields["is_closed"]]
    updates = [CrmStatusUpdate(r.id, {"cosell_status": "Active"}) for r in records]
    results = adapter.write_status(updates)
    assert sum(r.ok for r in results) == len(open_ids)
    assert adapter.usage.by_kind["read_state"] == 2  # 50 ids a query
    assert adapter.usage.by_kind["batch"] == -(-len(open_ids) // 20)  # 20 writes a $batch
    referrals = [f"ref-{n}" for n in range(N)]
    found = adapter.find_by_referral_ids("cosell_referralid", referrals)
    assert found == {}
    assert adapter.usage.by_kind["read"] - before["read"] == 2  # 50 referral ids a query
    assert adapter.usage.calls == sum(adapter.usage.by_kind.values())


def test_changeset_with_a_failing_row_is_retried_without_it(make: Any, admin: httpx.Client) -> None:
    rows = [r for r in all_rows(admin) if r["statecode"] == 0][:3]
    adapter = make(guard_closed=False)
    results = adapter.write_status(
        [
            CrmStatusUpdate(rows[0]["opportunityid"], {"cosell_status": "ok"}),
            CrmStatusUpdate(rows[1]["opportunityid"], {"closeprobability": "not a number"}),
            CrmStatusUpdate(rows[2]["opportunityid"], {"cosell_status": "ok"}),
        ]
    )
    assert [r.ok for r in results] == [True, False, True]
    after = {r["opportunityid"]: r for r in all_rows(admin)}
    assert after[rows[2]["opportunityid"]]["cosell_status"] == "ok"


def test_create_opportunities(make: Any, admin: httpx.Client) -> None:
    account = next(
        r["_parentaccountid_value"] for r in all_rows(admin) if r.get("_parentaccountid_value")
    )
    adapter = make()
    results = adapter.create_opportunities(
        [
            NewOpportunity(
                "ref-new",
                {
                    "name": "Inbound from Microsoft",
                    "estimatedvalue": Decimal("1234.50"),
                    "parentaccountid": account,
                    "cosell_referralid": "ref-new",
                },
            )
        ]
    )
    assert results[0].ok and results[0].crm_id
    created = adapter.fetch(
        results[0].crm_id, fields=["name", "parentaccountid.name", "cosell_referralid"]
    )
    assert created is not None
    assert created.fields["cosell_referralid"] == "ref-new"
    assert created.fields["parentaccountid"] == account.lower()
    assert created.fields["parentaccountid.name"]


def test_throttling_is_honoured_then_stops_at_the_budget(make: Any, admin: httpx.Client) -> None:
    admin.put("/_sandbox/dataverse/limits", json={"requests_per_5min": 3}).raise_for_status()
    sleeps: list[float] = []
    adapter = make(sleep=sleeps.append, max_throttle_wait_s=1.0, page_size=5)
    with pytest.raises(Throttled):
        list(adapter.pull_changes(None, fields=["name"], select=None))
    assert adapter.transport.throttled >= 1
    assert sleeps == []  # the server asked for far more than the 1 s this run may wait


def test_retry_after_is_honoured_on_the_sandbox_clock(make: Any, admin: httpx.Client) -> None:
    admin.put("/_sandbox/dataverse/limits", json={"requests_per_5min": 4}).raise_for_status()
    waited: list[float] = []
    local = [0.0]

    def sleep(seconds: float) -> None:  # "waiting" moves the sandbox's clock and ours
        waited.append(seconds)
        local[0] += seconds
        admin.post("/_sandbox/clock", json={"seconds": seconds}).raise_for_status()

    adapter = make(sleep=sleep, monotonic=lambda: local[0], page_size=10, max_throttle_wait_s=3600)
    records = [
        r for p in adapter.pull_changes(None, fields=["name"], select=None) for r in p.records
    ]
    assert len(records) == N
    assert adapter.transport.throttled >= 1 and len(waited) == adapter.transport.throttled
    assert all(0 < w <= 300 for w in waited)


def test_without_change_tracking_auto_reads_by_modifiedon_and_required_refuses(
    make: Any, admin: httpx.Client
) -> None:
    admin.put("/_sandbox/dataverse/change-tracking", json={"opportunity": False})
    selected = [
        r
        for r in admin.get("/_sandbox/dataverse/opportunities").json()["value"]
        if r["cosell_syncwithpartnercenter"]
    ]
    pages = list(make(page_size=20).pull_changes(None, fields=FIELDS, select=SYNCED))
    assert sorted(r.id for p in pages for r in p.records) == sorted(
        r["opportunityid"] for r in selected
    )
    assert str(pages[-1].cursor).startswith("modifiedon:")
    with pytest.raises(ConfigError, match=r"crm\.change_tracking"):
        list(make(change_tracking="required").pull_changes(None, fields=FIELDS, select=None))
