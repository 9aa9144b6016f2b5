"""The Salesforce adapter reads what Salesforce publishes: every fixture replayed through it.

The published query example reads Accounts; the adapter reads Opportunities, so each
replayed row gets the two fields every row of the change query has (``Id`` from its
``attributes.url``, ``SystemModstamp``); the envelope (``totalSize``, ``done``,
``nextRecordsUrl``, ``attributes``), collection results, error arrays and the
``Sforce-Limit-Info`` header are replayed as published.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import responses
from pydantic import SecretStr
from salesforce_contract import published

from connector.crm.salesforce.adapter import SalesforceOpportunities
from connector.crm.salesforce.auth import ClientCredentials, ExistingToken, SalesforceAuth
from connector.errors import CrmError, QuotaExhausted
from connector.model import CrmStatusUpdate
from connector.retry import RetryPolicy

INSTANCE = "https://acme.my.salesforce.com"
API = f"{INSTANCE}/services/data/v59.0"
LOGIN = "https://login.salesforce.com"
STAMP = "2026-05-01T12:00:00.000+0000"


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def adapter(auth: SalesforceAuth | None = None, **options: Any) -> SalesforceOpportunities:
    auth = auth or SalesforceAuth(ExistingToken(INSTANCE, SecretStr("tok")))
    policy = RetryPolicy(attempts=2, initial_wait=0, max_wait=0, jitter=0)
    return SalesforceOpportunities(auth, retry=policy, sleep=lambda s: None, **options)


def as_change_rows(body: dict[str, Any]) -> dict[str, Any]:
    rows = [
        {**r, "Id": r["attributes"]["url"].rsplit("/", 1)[1], "SystemModstamp": STAMP}
        for r in body["records"]
    ]
    return {**body, "records": rows}


def test_published_query_pages_are_followed_by_their_next_records_url(
    rsps: responses.RequestsMock,
) -> None:
    first, second = (r["body"] for r in published("query")["responses"])
    rsps.get(f"{API}/queryAll/", json=as_change_rows(first))
    follow = rsps.get(f"{INSTANCE}{first['nextRecordsUrl']}", json=as_change_rows(second))
    crm = adapter()
    pages = list(crm.pull_changes(None, fields=["Name"], select=None))
    assert follow.call_count == 1  # the published relative link, on the instance
    names = [r.fields["Name"] for p in pages for r in p.records]
    assert names == ["Test 1", "Test 2", "Test 3"]
    assert pages[0].records[0].id == "001D000000IRFmaIAH"
    assert crm.usage.by_kind == {"query": 1, "query_more": 1}


def test_published_collection_results_give_one_result_per_record(
    rsps: responses.RequestsMock,
) -> None:
    fixture = published("collections")
    rsps.patch(f"{API}/composite/sobjects", json=fixture["response"]["body"])
    ids = [r["id"] for r in fixture["request"]["body"]["records"]]
    results = adapter().write_status([CrmStatusUpdate(i, {"Title": "x"}) for i in ids])
    assert [(r.crm_id, r.ok, r.error_code) for r in results] == [
        (ids[0], True, None),
        (ids[1], False, "MALFORMED_ID"),
    ]
    assert results[1].message == (
        "MALFORMED_ID: Contact ID: id value of incorrect type: 001xx000003DGb2999 (fields: Id)"
    )
    sent = json.loads(rsps.calls[0].request.body)
    assert sent["allOrNone"] is False and [r["id"] for r in sent["records"]] == ids


def test_a_published_400_error_array_is_a_permanent_error_with_its_code(
    rsps: responses.RequestsMock,
) -> None:
    error = published("errors")["responses"]["malformed_id"]
    rsps.get(f"{API}/queryAll/", json=error["body"], status=error["status"])
    with pytest.raises(CrmError) as info:
        list(adapter().pull_changes(None, fields=["Name"], select=None))
    assert (info.value.code, info.value.status, info.value.transient) == (
        "MALFORMED_ID",
        400,
        False,
    )
    assert "id value of incorrect type" in info.value.message


def test_a_published_401_signs_in_again_once(rsps: responses.RequestsMock) -> None:
    session = published("errors")["responses"]["session"]
    rsps.post(
        f"{LOGIN}/services/oauth2/token",
        json={"access_token": "tok-2", "instance_url": INSTANCE, "token_type": "Bearer"},
    )
    query = f"{API}/queryAll/"
    rsps.get(query, json=session["body"], status=session["status"])
    rsps.get(query, json={"totalSize": 0, "done": True, "records": []})
    auth = SalesforceAuth(ClientCredentials(LOGIN, "cid", SecretStr("secret")))
    crm = adapter(auth)
    assert [list(p.records) for p in crm.pull_changes(None, fields=["Name"], select=None)] == [[]]
    assert crm.usage.by_kind == {"token": 2, "query": 2}


def test_a_published_403_limit_stops_the_run_as_spent_quota(
    rsps: responses.RequestsMock,
) -> None:
    limit = published("errors")["responses"]["limit"]
    rsps.get(f"{API}/queryAll/", json=limit["body"], status=limit["status"])
    with pytest.raises(QuotaExhausted) as info:
        list(adapter().pull_changes(None, fields=["Name"], select=None))
    assert "REQUEST_LIMIT_EXCEEDED" in info.value.message


def test_the_published_limit_info_header_feeds_the_quota_guard(
    rsps: responses.RequestsMock,
) -> None:
    header = published("limit_info")["response"]["headers"]
    rsps.get(
        f"{API}/queryAll/",
        json={"totalSize": 0, "done": True, "records": []},
        headers={"Sforce-Limit-Info": header["Sforce-Limit-Info"], "Date": header["Date"]},
    )
    crm = adapter(max_quota_share=0.5)
    list(crm.pull_changes(None, fields=["Name"], select=None))
    assert (crm.usage.used, crm.usage.limit, crm.usage.guard_at) == (18, 5000, 2500)
    assert crm.quota_share() == pytest.approx(18 / 5000)
