"""SalesforceOpportunities against a mocked REST API (``responses``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from pydantic import TypeAdapter
from responses import matchers
from salesforce_fakes import (
    API,
    COMPOSITE,
    QUERY_ALL,
    describe_answer,
    existing_token_adapter,
    opp,
    page,
    sf_error,
    sf_id,
)
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from connector.crm.base import CrmPage, NewOpportunity
from connector.crm.salesforce.errors import crm_error_from
from connector.crm.salesforce.writes import COLLECTION_SIZE
from connector.errors import ConfigError, CrmError, QuotaExhausted
from connector.model import CrmStatusUpdate, Filter

NEXT = "/services/data/v59.0/query/01gD0000000AbCdEF-2000"
SERVER_DATE = "Fri, 01 May 2026 12:10:00 GMT"
SELECT = TypeAdapter(Filter).validate_python(
    {"field": "Sync_with_Partner_Center__c", "op": "eq", "value": True}
)


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def soql_of(call: Any) -> str:
    return parse_qs(urlsplit(call.request.url).query)["q"][0]


# ------------------------------------------------------------------ reading


def test_the_change_query_has_the_overlap_window_filter_and_order(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(QUERY_ALL, json=page([]))
    adapter = existing_token_adapter(overlap_s=300)
    list(adapter.pull_changes("2026-05-01T12:00:00.000Z", fields=["Name", "Amount"], select=SELECT))
    assert soql_of(rsps.calls[0]) == (
        "SELECT Id, SystemModstamp, IsDeleted, Name, Amount FROM Opportunity "
        "WHERE SystemModstamp >= 2026-05-01T11:55:00Z AND Sync_with_Partner_Center__c = true "
        "ORDER BY SystemModstamp, Id"
    )


def test_a_first_pull_has_no_lower_bound(rsps: responses.RequestsMock) -> None:
    rsps.get(QUERY_ALL, json=page([]))
    adapter = existing_token_adapter()
    list(adapter.pull_changes(None, fields=["Id", "systemmodstamp"], select=None))
    assert soql_of(rsps.calls[0]) == (
        "SELECT Id, SystemModstamp, IsDeleted FROM Opportunity ORDER BY SystemModstamp, Id"
    )


def test_hostile_field_names_never_reach_the_query(rsps: responses.RequestsMock) -> None:
    adapter = existing_token_adapter()
    with pytest.raises(ConfigError, match="not a valid Salesforce field"):
        list(adapter.pull_changes(None, fields=["Name FROM User --"], select=None))
    assert len(rsps.calls) == 0


def test_pages_follow_next_records_url_lazily_with_the_batch_size_header(
    rsps: responses.RequestsMock,
) -> None:
    header = matchers.header_matcher({"Sforce-Query-Options": "batchSize=200"})
    rsps.get(
        QUERY_ALL,
        json=page([opp(1, "2026-05-01T12:00:00.000+0000")], next_url=NEXT),
        match=[header],
    )
    rsps.get(
        f"https://acme.my.salesforce.com{NEXT}",
        json=page([opp(2, "2026-05-01T12:00:01.000+0000")]),
        match=[header],
    )
    adapter = existing_token_adapter(batch_size=200, timeout=7.5)
    pages = adapter.pull_changes(None, fields=[], select=None)
    first = next(pages)
    assert [r.id for r in first.records] == [sf_id(1)]
    assert len(rsps.calls) == 1  # the next page is asked for only when needed
    second = next(pages)
    assert [r.id for r in second.records] == [sf_id(2)]
    assert list(pages) == []
    assert adapter.usage.by_kind == {"query": 1, "query_more": 1}
    assert all(c.request.req_kwargs["timeout"] == 7.5 for c in rsps.calls)


def test_a_next_page_link_to_another_host_is_refused(rsps: responses.RequestsMock) -> None:
    rsps.get(QUERY_ALL, json=page([], next_url="https://elsewhere.example/services/x"))
    adapter = existing_token_adapter()
    pages = adapter.pull_changes(None, fields=[], select=None)
    next(pages)
    with pytest.raises(CrmError, match="next-page link"):
        next(pages)
    assert len(rsps.calls) == 1


def test_rows_seen_twice_in_one_pull_are_dropped(rsps: responses.RequestsMock) -> None:
    stamp = "2026-05-01T12:00:00.000+0000"
    rsps.get(QUERY_ALL, json=page([opp(1, stamp), opp(2, stamp)], next_url=NEXT))
    rsps.get(
        f"https://acme.my.salesforce.com{NEXT}",
        json=page([opp(2, stamp), opp(2, "2026-05-01T12:00:09.000+0000"), opp(3, stamp)]),
    )
    adapter = existing_token_adapter()
    pages = list(adapter.pull_changes(None, fields=[], select=None))
    ids = [(r.id[-1], r.modstamp.second) for p in pages for r in p.records]
    assert ids == [("1", 0), ("2", 0), ("2", 9), ("3", 0)]
    assert adapter.duplicates_dropped == 1


def test_soft_deleted_rows_come_from_query_all_marked_deleted(
    rsps: responses.RequestsMock,
) -> None:
    gone = opp(1, "2026-05-01T12:00:00.000+0000")
    gone["IsDeleted"] = True
    rsps.get(QUERY_ALL, json=page([gone]))
    adapter = existing_token_adapter()
    (only,) = list(adapter.pull_changes(None, fields=[], select=None))
    assert only.records[0].deleted is True


def test_the_cursor_is_the_newest_stamp_of_the_page(rsps: responses.RequestsMock) -> None:
    rsps.get(
        QUERY_ALL,
        json=page([opp(1, "2026-05-01T11:00:00.000+0000"), opp(2, "2026-05-01T11:30:00.000+0000")]),
        headers={"Date": SERVER_DATE},
    )
    adapter = existing_token_adapter(server_margin_s=5)
    only, last = list(adapter.pull_changes(None, fields=[], select=None))
    assert only.cursor == "2026-05-01T11:30:00.000Z"
    # the pull was complete: a last page moves the cursor up to the query's server time
    assert last == CrmPage(records=[], cursor="2026-05-01T12:09:55.000Z")


def test_a_complete_pull_ends_at_the_server_time_of_its_first_answer(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(
        QUERY_ALL,
        json=page([opp(1, "2026-05-01T11:00:00.000+0000")], next_url=NEXT),
        headers={"Date": SERVER_DATE},
    )
    rsps.get(
        f"https://acme.my.salesforce.com{NEXT}",
        json=page([opp(2, "2026-05-01T11:30:00.000+0000")]),
        headers={"Date": "Fri, 01 May 2026 12:10:40 GMT"},
    )
    adapter = existing_token_adapter(server_margin_s=5)
    pages = list(adapter.pull_changes("2026-05-01T10:00:00.000Z", fields=[], select=None))
    assert [p.cursor for p in pages] == [
        "2026-05-01T11:00:00.000Z",
        "2026-05-01T11:30:00.000Z",
        "2026-05-01T12:09:55.000Z",  # the first answer's Date, not the later page's
    ]
    assert [len(p.records) for p in pages] == [1, 1, 0]
    assert adapter.usage.by_kind == {"query": 1, "query_more": 1}


def test_an_empty_complete_pull_still_moves_the_cursor_to_the_server_time(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(QUERY_ALL, json=page([]), headers={"Date": SERVER_DATE})
    adapter = existing_token_adapter(server_margin_s=5)
    pages = list(adapter.pull_changes("2026-05-01T11:00:00.000Z", fields=[], select=None))
    assert pages == [
        CrmPage(records=[], cursor="2026-05-01T11:00:00.000Z"),
        CrmPage(records=[], cursor="2026-05-01T12:09:55.000Z"),
    ]
    assert len(rsps.calls) == 1
    assert "SystemModstamp >= 2026-05-01T10:55:00Z" in soql_of(rsps.calls[0])


def test_the_server_time_never_moves_the_cursor_back(rsps: responses.RequestsMock) -> None:
    rsps.get(QUERY_ALL, json=page([]), headers={"Date": SERVER_DATE})
    adapter = existing_token_adapter(server_margin_s=5)
    # a cursor newer than the server time minus the margin stays where it is
    pages = list(adapter.pull_changes("2026-05-01T12:09:58.000Z", fields=[], select=None))
    assert pages == [CrmPage(records=[], cursor="2026-05-01T12:09:58.000Z")]


def test_a_pull_stopped_early_never_yields_the_server_time(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(
        QUERY_ALL,
        json=page([opp(1, "2026-05-01T11:00:00.000+0000")], next_url=NEXT),
        headers={"Date": SERVER_DATE},
    )
    rsps.get(
        f"https://acme.my.salesforce.com{NEXT}",
        json=page([opp(2, "2026-05-01T11:30:00.000+0000")]),
        headers={"Date": SERVER_DATE},
    )
    adapter = existing_token_adapter(server_margin_s=5)
    pages = adapter.pull_changes(None, fields=[], select=None)
    first = next(pages)
    pages.close()  # the caller stops after the first page (a stop request, a crash)
    assert first.cursor == "2026-05-01T11:00:00.000Z"
    assert len(rsps.calls) == 1
    with pytest.raises(StopIteration):
        next(pages)


def test_a_pull_failing_on_a_later_page_never_yields_the_server_time(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(
        QUERY_ALL,
        json=page([opp(1, "2026-05-01T11:00:00.000+0000")], next_url=NEXT),
        headers={"Date": SERVER_DATE},
    )
    rsps.get(f"https://acme.my.salesforce.com{NEXT}", status=503, json=sf_error("UNAVAILABLE"))
    adapter = existing_token_adapter(server_margin_s=5)
    cursors = []
    with pytest.raises(CrmError):
        for p in adapter.pull_changes(None, fields=[], select=None):
            cursors.append(p.cursor)
    assert cursors == ["2026-05-01T11:00:00.000Z"]


@pytest.mark.parametrize(
    "first_date",
    [
        None,
        "",
        "not a date",
        "Fri, 41 Mai 2026 25:61:00 GMT",
        "Fri, 01 May 99999 12:00:00 GMT",
        "Fri, 31 Dec 9999 23:59:59 -2359",  # past year 9999 in UTC
    ],
)
def test_without_a_readable_date_the_cursor_stays_the_newest_stamp(
    rsps: responses.RequestsMock, first_date: str | None
) -> None:
    headers = {} if first_date is None else {"Date": first_date}
    rsps.get(
        QUERY_ALL,
        json=page([opp(1, "2026-05-01T11:00:00.000+0000")], next_url=NEXT),
        headers=headers,
    )
    # a later page's Date is not the query's time: it must not be used instead
    rsps.get(
        f"https://acme.my.salesforce.com{NEXT}",
        json=page([opp(2, "2026-05-01T11:30:00.000+0000")]),
        headers={"Date": SERVER_DATE},
    )
    adapter = existing_token_adapter(
        server_margin_s=5, clock=lambda: datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    )
    pages = list(adapter.pull_changes(None, fields=[], select=None))
    assert [p.cursor for p in pages] == ["2026-05-01T11:00:00.000Z", "2026-05-01T11:30:00.000Z"]


def test_the_cursor_never_passes_server_time_minus_the_margin(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(
        QUERY_ALL,
        json=page([opp(1, "2026-05-01T12:09:58.000+0000")]),
        headers={"Date": SERVER_DATE},
    )
    adapter = existing_token_adapter(server_margin_s=5)
    (only,) = list(adapter.pull_changes(None, fields=[], select=None))
    assert only.cursor == "2026-05-01T12:09:55.000Z"


def test_without_a_date_header_the_local_clock_caps_the_cursor(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(QUERY_ALL, json=page([opp(1, "2026-05-01T12:09:58.000+0000")]))
    adapter = existing_token_adapter(
        server_margin_s=5, clock=lambda: datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    )
    (only,) = list(adapter.pull_changes(None, fields=[], select=None))
    assert only.cursor == "2026-05-01T11:59:55.000Z"


def test_the_cursor_never_moves_back(rsps: responses.RequestsMock) -> None:
    # rows replayed by the overlap window are older than the cursor we started from
    rsps.get(QUERY_ALL, json=page([opp(1, "2026-05-01T11:58:00.000+0000")]))
    adapter = existing_token_adapter()
    (only,) = list(adapter.pull_changes("2026-05-01T12:00:00Z", fields=[], select=None))
    assert only.cursor == "2026-05-01T12:00:00.000Z"
    assert len(only.records) == 1


def test_a_garbled_cursor_is_a_clear_error() -> None:
    adapter = existing_token_adapter()
    with pytest.raises(CrmError, match="full sync"):
        list(adapter.pull_changes("yesterday", fields=[], select=None))


def test_records_are_normalised(rsps: responses.RequestsMock) -> None:
    row = opp(
        1,
        "2026-05-01T12:34:56.000+0000",
        Name="Müller GmbH – Azure",
        Amount=12345.67,
        Probability=65,
        CloseDate="2026-06-30",
        CoSell_Expiration__c="2026-05-15T08:00:00.000+0000",
        Sync_with_Partner_Center__c=True,
        Description=None,
        Account={
            "attributes": {"type": "Account", "url": "/x"},
            "BillingCountryCode": "DE",
            "NumberOfEmployees": 250,
        },
        Primary_Contact__r=None,
    )
    rsps.get(QUERY_ALL, json=page([row]))
    describe = rsps.get(
        f"{API}/sobjects/Opportunity/describe",
        json=describe_answer(
            Name="string",
            Amount="currency",
            CloseDate="date",
            CoSell_Expiration__c="datetime",
            Description="textarea",
        ),
    )
    adapter = existing_token_adapter()
    fields = [
        "Name",
        "Amount",
        "Probability",
        "CloseDate",
        "CoSell_Expiration__c",
        "Sync_with_Partner_Center__c",
        "Description",
        "Account.BillingCountryCode",
        "account.numberofemployees",
        "Primary_Contact__r.Email",
        "Primary_Contact__r.Phone",
    ]
    (only,) = list(adapter.pull_changes(None, fields=fields, select=None))
    record = only.records[0]
    assert record.id == sf_id(1)
    assert record.modstamp == datetime(2026, 5, 1, 12, 34, 56, tzinfo=UTC)
    assert record.deleted is False
    values = dict(record.fields)
    assert "attributes" not in values
    assert values["Name"] == "Müller GmbH – Azure"
    assert values["Amount"] == Decimal("12345.67")
    assert str(values["Amount"]) == "12345.67"
    assert values["Probability"] == Decimal(65)
    assert values["CloseDate"] == date(2026, 6, 30)  # a date because describe says so
    assert values["CoSell_Expiration__c"] == datetime(2026, 5, 15, 8, tzinfo=UTC)
    assert describe.call_count == 1 and adapter.usage.by_kind["describe"] == 1
    assert values["Sync_with_Partner_Center__c"] is True
    assert values["Description"] is None
    assert values["Account.BillingCountryCode"] == "DE"
    assert values["account.numberofemployees"] == Decimal(250)
    assert values["Primary_Contact__r.Email"] is None
    assert values["Primary_Contact__r.Phone"] is None


def test_fetch_validates_the_id_before_querying(rsps: responses.RequestsMock) -> None:
    adapter = existing_token_adapter()
    for bad in ["006' OR Id != null --", "006AB", "006000000000000000000001", "006 00000000000001"]:
        with pytest.raises(CrmError, match="not a Salesforce record id"):
            adapter.fetch(bad, fields=["Name"])
    assert len(rsps.calls) == 0


def test_fetch_reads_one_record_or_none(rsps: responses.RequestsMock) -> None:
    rsps.get(QUERY_ALL, json=page([opp(7, "2026-05-01T12:00:00.000+0000", Name="Deal")]))
    rsps.get(QUERY_ALL, json=page([]))
    adapter = existing_token_adapter()
    found = adapter.fetch(sf_id(7), fields=["Name"])
    assert found is not None and found.fields["Name"] == "Deal"
    assert soql_of(rsps.calls[0]) == (
        f"SELECT Id, SystemModstamp, IsDeleted, Name FROM Opportunity WHERE Id = '{sf_id(7)}'"
    )
    assert adapter.fetch(sf_id(8)[:15], fields=["Name"]) is None


def test_stage_metadata(rsps: responses.RequestsMock) -> None:
    stages = [
        {
            "attributes": {"type": "OpportunityStage"},
            "MasterLabel": "Prospecting",
            "ApiName": "Prospecting",
            "IsActive": True,
            "SortOrder": 1,
            "IsClosed": False,
            "IsWon": False,
            "DefaultProbability": 10.0,
            "ForecastCategoryName": "Pipeline",
        },
        {
            "attributes": {"type": "OpportunityStage"},
            "MasterLabel": "Closed Won",
            "ApiName": "Closed Won",
            "IsActive": True,
            "SortOrder": 9,
            "IsClosed": True,
            "IsWon": True,
            "DefaultProbability": 100.0,
            "ForecastCategoryName": "Closed",
        },
    ]
    rsps.get(f"{API}/query/", json=page(stages))
    adapter = existing_token_adapter()
    result = adapter.stage_metadata()
    assert soql_of(rsps.calls[0]).startswith(
        "SELECT MasterLabel, ApiName, IsActive, SortOrder, IsClosed, IsWon, DefaultProbability"
    )
    assert [(s.label, s.probability, s.is_closed, s.is_won, s.sort_order) for s in result] == [
        ("Prospecting", Decimal("10.0"), False, False, 1),
        ("Closed Won", Decimal("100.0"), True, True, 9),
    ]


# ------------------------------------------------------------------ writing


def composite_ok(request: Any) -> tuple[int, dict[str, str], str]:
    """Echo one success per record, except records whose Name is "bad"."""
    body = json.loads(request.body)
    results = []
    for n, record in enumerate(body["records"]):
        if record.get("CoSell_Status__c") == "bad":
            results.append(
                {
                    "id": record.get("id"),
                    "success": False,
                    "errors": [
                        {
                            "statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                            "message": "Status not allowed",
                            "fields": ["CoSell_Status__c"],
                        }
                    ],
                }
            )
        else:
            results.append(
                {"id": record.get("id") or sf_id(900 + n), "success": True, "errors": []}
            )
    return 200, {"Sforce-Limit-Info": "api-usage=25/15000"}, json.dumps(results)


def test_write_status_sends_collections_of_200_with_per_record_results(
    rsps: responses.RequestsMock,
) -> None:
    rsps.add_callback(responses.PATCH, COMPOSITE, callback=composite_ok)
    updates = [
        CrmStatusUpdate(sf_id(n), {"CoSell_Status__c": "bad" if n == 250 else "Active"})
        for n in range(450)
    ]
    adapter = existing_token_adapter()
    results = adapter.write_status(updates)
    sizes = [len(json.loads(c.request.body)["records"]) for c in rsps.calls]
    assert sizes == [COLLECTION_SIZE, COLLECTION_SIZE, 50]
    assert all(json.loads(c.request.body)["allOrNone"] is False for c in rsps.calls)
    assert [r.crm_id for r in results] == [u.crm_id for u in updates]
    assert [n for n, r in enumerate(results) if not r.ok] == [250]
    failed = results[250]
    assert failed.error_code == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    assert failed.message is not None and "CoSell_Status__c" in failed.message
    assert adapter.usage.by_kind == {"composite": 3}
    assert (adapter.usage.used, adapter.usage.limit) == (25, 15000)


def test_write_values_are_serialised_for_the_rest_api(rsps: responses.RequestsMock) -> None:
    rsps.add_callback(responses.PATCH, COMPOSITE, callback=composite_ok)
    adapter = existing_token_adapter()
    adapter.write_status(
        [
            CrmStatusUpdate(
                sf_id(1),
                {
                    "CoSell_Last_Sync__c": datetime(2026, 5, 1, 12, 0, 1, 250000, tzinfo=UTC),
                    "CoSell_Days_To_Expiry__c": Decimal("13"),
                    "Amount": Decimal("12345.67"),
                    "CoSell_Sync_Error__c": None,
                    "CoSell_Registration_Eligible__c": True,
                    "CloseDate": date(2026, 6, 30),
                },
            )
        ]
    )
    raw = rsps.calls[0].request.body
    record = json.loads(raw)["records"][0]
    assert record == {
        "attributes": {"type": "Opportunity"},
        "id": sf_id(1),
        "CoSell_Last_Sync__c": "2026-05-01T12:00:01.250Z",
        "CoSell_Days_To_Expiry__c": 13,
        "Amount": 12345.67,
        "CoSell_Sync_Error__c": None,
        "CoSell_Registration_Eligible__c": True,
        "CloseDate": "2026-06-30",
    }
    assert b'"Amount": 12345.67' in raw


def test_updates_that_cannot_be_sent_fail_alone(rsps: responses.RequestsMock) -> None:
    rsps.add_callback(responses.PATCH, COMPOSITE, callback=composite_ok)
    adapter = existing_token_adapter()
    results = adapter.write_status(
        [
            CrmStatusUpdate(sf_id(1), {"CoSell_Status__c": "Active"}),
            CrmStatusUpdate("not-an-id", {"CoSell_Status__c": "Active"}),
            CrmStatusUpdate(sf_id(3), {"Bad Field": 1}),
            CrmStatusUpdate(sf_id(4), {"CoSell_Status__c": object()}),
            CrmStatusUpdate(sf_id(5), {"CoSell_Status__c": "Active"}),
        ]
    )
    assert [r.ok for r in results] == [True, False, False, False, True]
    assert [r.crm_id for r in results] == [sf_id(1), "not-an-id", sf_id(3), sf_id(4), sf_id(5)]
    assert {r.error_code for r in results if not r.ok} == {"invalid_request"}
    sent = json.loads(rsps.calls[0].request.body)["records"]
    assert [r["id"] for r in sent] == [sf_id(1), sf_id(5)]


def test_a_transient_whole_call_failure_is_retried(rsps: responses.RequestsMock) -> None:
    rsps.patch(COMPOSITE, status=503, json=sf_error("SERVER_UNAVAILABLE"))
    rsps.patch(COMPOSITE, status=400, json=sf_error("UNABLE_TO_LOCK_ROW", "locked"))
    rsps.add_callback(responses.PATCH, COMPOSITE, callback=composite_ok)
    adapter = existing_token_adapter()
    results = adapter.write_status([CrmStatusUpdate(sf_id(1), {"CoSell_Status__c": "A"})])
    assert [r.ok for r in results] == [True]
    assert len(rsps.calls) == 3


def test_transient_failures_end_as_a_transient_error(rsps: responses.RequestsMock) -> None:
    rsps.patch(COMPOSITE, body=requests.ConnectionError("boom https://x/?token=abc"))
    adapter = existing_token_adapter()
    with pytest.raises(CrmError) as caught:
        adapter.write_status([CrmStatusUpdate(sf_id(1), {"CoSell_Status__c": "A"})])
    assert caught.value.transient and caught.value.code == "connection"
    assert "token" not in str(caught.value) and "https://" not in str(caught.value)
    assert len(rsps.calls) == 3  # the policy's three attempts


def test_request_limit_exceeded_stops_the_run(rsps: responses.RequestsMock) -> None:
    rsps.patch(COMPOSITE, status=403, json=sf_error("REQUEST_LIMIT_EXCEEDED", "TotalRequests"))
    adapter = existing_token_adapter()
    with pytest.raises(QuotaExhausted):
        adapter.write_status([CrmStatusUpdate(sf_id(1), {"CoSell_Status__c": "A"})])
    assert len(rsps.calls) == 1


def test_a_malformed_collection_fails_each_record_permanently(
    rsps: responses.RequestsMock,
) -> None:
    rsps.patch(COMPOSITE, status=400, json=sf_error("INVALID_FIELD", "No such column 'X__c'"))
    adapter = existing_token_adapter()
    results = adapter.write_status([CrmStatusUpdate(sf_id(n), {"X__c": "A"}) for n in range(3)])
    assert [(r.crm_id, r.ok, r.error_code) for r in results] == [
        (sf_id(n), False, "INVALID_FIELD") for n in range(3)
    ]
    assert results[0].message is not None and "X__c" in results[0].message
    assert len(rsps.calls) == 1


def test_create_opportunities_returns_the_new_ids(rsps: responses.RequestsMock) -> None:
    rsps.add_callback(responses.POST, COMPOSITE, callback=composite_ok)
    adapter = existing_token_adapter()
    items = [
        NewOpportunity(f"ref-{n}", {"Name": f"Deal {n}", "StageName": "Prospecting"})
        for n in range(201)
    ]
    results = adapter.create_opportunities(items)
    assert [len(json.loads(c.request.body)["records"]) for c in rsps.calls] == [200, 1]
    first = json.loads(rsps.calls[0].request.body)["records"][0]
    assert first == {
        "attributes": {"type": "Opportunity"},
        "Name": "Deal 0",
        "StageName": "Prospecting",
    }
    assert results[0].ok and results[0].crm_id == sf_id(900)
    assert results[200].crm_id == sf_id(900)


def test_creates_are_not_retried_after_an_ambiguous_failure(
    rsps: responses.RequestsMock,
) -> None:
    rsps.post(COMPOSITE, status=503, json=sf_error("SERVER_UNAVAILABLE"))
    adapter = existing_token_adapter()
    with pytest.raises(CrmError) as caught:
        adapter.create_opportunities([NewOpportunity("ref-1", {"Name": "Deal"})])
    assert caught.value.transient
    assert len(rsps.calls) == 1


# ------------------------------------------------------------------ quota and errors


def test_the_quota_guard_stops_before_the_call_that_would_pass_the_share(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(QUERY_ALL, json=page([]), headers={"Sforce-Limit-Info": "api-usage=12001/15000"})
    adapter = existing_token_adapter(max_quota_share=0.8)
    assert adapter.quota_share() is None
    list(adapter.pull_changes(None, fields=[], select=None))
    assert adapter.quota_share() == pytest.approx(0.80007, abs=1e-5)
    with pytest.raises(QuotaExhausted, match="12001/15000") as caught:
        adapter.write_status([CrmStatusUpdate(sf_id(1), {"CoSell_Status__c": "A"})])
    assert not caught.value.transient
    assert len(rsps.calls) == 1


def test_below_the_share_calls_go_ahead(rsps: responses.RequestsMock) -> None:
    rsps.get(QUERY_ALL, json=page([]), headers={"Sforce-Limit-Info": "api-usage=100/15000"})
    adapter = existing_token_adapter(max_quota_share=0.8)
    list(adapter.pull_changes(None, fields=[], select=None))
    list(adapter.pull_changes(None, fields=[], select=None))
    assert adapter.usage.calls == 2


URL = "https://acme.my.salesforce.com/services/data/v59.0/query/?q=SELECT+Id+FROM+Opportunity"


@pytest.mark.parametrize(
    ("exc", "error_type", "code", "transient"),
    [
        (
            SalesforceMalformedRequest(URL, 400, "query", sf_error("MALFORMED_QUERY", "bad")),
            CrmError,
            "MALFORMED_QUERY",
            False,
        ),
        (
            SalesforceMalformedRequest(URL, 400, "x", sf_error("UNABLE_TO_LOCK_ROW")),
            CrmError,
            "UNABLE_TO_LOCK_ROW",
            True,
        ),
        (
            SalesforceExpiredSession(URL, 401, "query", sf_error("INVALID_SESSION_ID")),
            CrmError,
            "INVALID_SESSION_ID",
            False,
        ),
        (
            SalesforceRefusedRequest(URL, 403, "query", sf_error("REQUEST_LIMIT_EXCEEDED")),
            QuotaExhausted,
            "quota_exhausted",
            False,
        ),
        (
            SalesforceRefusedRequest(URL, 403, "query", sf_error("INSUFFICIENT_ACCESS")),
            CrmError,
            "INSUFFICIENT_ACCESS",
            False,
        ),
        (
            SalesforceResourceNotFound(URL, 404, "query", sf_error("NOT_FOUND")),
            CrmError,
            "NOT_FOUND",
            False,
        ),
        (
            SalesforceGeneralError(URL, 500, "query", sf_error("UNKNOWN_EXCEPTION")),
            CrmError,
            "UNKNOWN_EXCEPTION",
            True,
        ),
        (SalesforceGeneralError(URL, 502, "query", b"<html>"), CrmError, "UNKNOWN", True),
        (requests.ConnectTimeout(URL), CrmError, "connect_timeout", True),
        (requests.ReadTimeout(URL), CrmError, "timeout", True),
        (requests.ConnectionError(URL), CrmError, "connection", True),
        (requests.exceptions.ChunkedEncodingError(URL), CrmError, "connection", True),
        (requests.exceptions.SSLError(URL), CrmError, "tls", False),
    ],
)
def test_error_mapping(
    exc: BaseException, error_type: type[CrmError], code: str, transient: bool
) -> None:
    error = crm_error_from(exc, "the change query")
    assert type(error) is error_type
    assert (error.code, error.transient) == (code, transient)
    assert "the change query" in str(error)
    assert "q=" not in str(error) and "https://" not in str(error)
