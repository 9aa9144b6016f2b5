"""Salesforce values are read by their field's type from describe, never by their look."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
import responses
from salesforce_fakes import (
    API,
    QUERY_ALL,
    describe_answer,
    existing_token_adapter,
    opp,
    page,
    sf_error,
    sf_id,
)

from connector.crm.salesforce.records import UNREADABLE_STAMP
from connector.model import CrmOpportunity

STAMP = "2026-05-01T12:34:56.000+0000"
OPPORTUNITY = describe_answer(
    Name="string",
    Description="textarea",
    CloseDate="date",
    CoSell_Expiration__c="datetime",
    AccountId="reference:Account",
    Primary_Contact__c="reference:Contact",
)
HOSTILE_TEXT = [
    "2026-13-45T99:99:99Z",
    "2024-02-30T10:00:00Z",
    "2026-05-01T12:34:56+9999",
    "2026-05-01T12:34:56Z",
    "2026-05-01",
]


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def pull(fields: list[str]) -> tuple[list[CrmOpportunity], dict[str, int]]:
    adapter = existing_token_adapter()
    records = [r for p in adapter.pull_changes(None, fields=fields, select=None) for r in p.records]
    return records, dict(adapter.usage.by_kind)


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_datetime_looking_text_in_a_name_or_notes_is_kept_exactly(
    rsps: responses.RequestsMock, text: str
) -> None:
    rsps.get(QUERY_ALL, json=page([opp(1, STAMP, Name=text, Description=text)]))
    describe = rsps.get(f"{API}/sobjects/Opportunity/describe", json=OPPORTUNITY)
    (record,), calls = pull(["Name", "Description"])
    assert record.fields["Name"] == text and record.fields["Description"] == text
    assert record.problems == ()
    assert describe.call_count == 1 and calls == {"query": 1, "describe": 1}


def test_an_impossible_date_in_a_date_field_rejects_only_that_record_naming_it(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(
        QUERY_ALL,
        json=page(
            [
                opp(1, STAMP, CloseDate="2024-02-30", CoSell_Expiration__c=None),
                opp(2, STAMP, CloseDate="2026-06-30", CoSell_Expiration__c="2026-13-45T99:99:99Z"),
                opp(3, STAMP, CloseDate="2026-06-30", CoSell_Expiration__c=STAMP),
            ]
        ),
    )
    rsps.get(f"{API}/sobjects/Opportunity/describe", json=OPPORTUNITY)
    (bad_date, bad_time, good), _ = pull(["CloseDate", "CoSell_Expiration__c"])
    assert bad_date.fields["CloseDate"] == "2024-02-30"
    assert [p.split(",")[0] for p in bad_date.problems] == ["CloseDate holds '2024-02-30'"]
    assert "not a valid date" in bad_date.problems[0]
    assert bad_time.problems[0].startswith("CoSell_Expiration__c holds '2026-13-45T99:99:99Z'")
    assert good.problems == ()
    assert good.fields["CloseDate"] == date(2026, 6, 30)
    assert good.fields["CoSell_Expiration__c"] == datetime(2026, 5, 1, 12, 34, 56, tzinfo=UTC)


def test_relationship_paths_are_typed_by_the_object_they_reach(
    rsps: responses.RequestsMock,
) -> None:
    account = {"attributes": {"type": "Account"}, "Name": "2026-05-01", "CreatedDate": STAMP}
    contact = {"attributes": {"type": "Contact"}, "Email": "ana@example.com"}
    rsps.get(
        QUERY_ALL,
        json=page([opp(1, STAMP, Account=account, Primary_Contact__r=contact)]),
    )
    rsps.get(f"{API}/sobjects/Opportunity/describe", json=OPPORTUNITY)
    rsps.get(
        f"{API}/sobjects/Account/describe",
        json=describe_answer("Account", Name="string", CreatedDate="datetime"),
    )
    (record,), calls = pull(["Account.Name", "Account.CreatedDate", "Primary_Contact__r.Email"])
    assert record.fields["Account.Name"] == "2026-05-01"
    assert record.fields["Account.CreatedDate"] == datetime(2026, 5, 1, 12, 34, 56, tzinfo=UTC)
    assert record.fields["Primary_Contact__r.Email"] == "ana@example.com"
    # Contact is never described: none of its values needed a type
    assert calls == {"query": 1, "describe": 2}


def test_an_object_the_user_cannot_describe_leaves_its_values_as_text(
    rsps: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    rsps.get(QUERY_ALL, json=page([opp(1, STAMP, CloseDate="2026-06-30")]))
    rsps.get(
        f"{API}/sobjects/Opportunity/describe",
        json=sf_error("INSUFFICIENT_ACCESS", "no access"),
        status=403,
    )
    with caplog.at_level("WARNING"):
        (record,), _ = pull(["CloseDate"])
    assert record.fields["CloseDate"] == "2026-06-30"  # the mapping reads text dates itself
    assert "cannot describe Opportunity" in caplog.text


def test_an_unreadable_system_stamp_rejects_the_row_not_the_page(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(
        QUERY_ALL,
        json=page([opp(1, "2026-13-45T99:99:99Z"), opp(2, "2026-05-01T12:00:00.000+0000")]),
    )
    adapter = existing_token_adapter()
    pages = list(adapter.pull_changes(None, fields=["Name"], select=None))
    bad, good = [r for p in pages for r in p.records]
    assert bad.id == sf_id(1) and bad.modstamp == UNREADABLE_STAMP
    assert bad.problems[0].startswith("SystemModstamp holds '2026-13-45T99:99:99Z'")
    assert good.problems == ()
    assert pages[-1].cursor == "2026-05-01T12:00:00.000Z"  # the unreadable row moves nothing
    assert adapter.usage.by_kind == {"query": 1}  # SystemModstamp is a datetime by definition


def test_an_idle_pull_or_a_page_without_date_shaped_text_describes_nothing(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(QUERY_ALL, json=page([opp(1, STAMP, Name="Plain", Amount=10)]))
    (record,), calls = pull(["Name", "Amount"])
    assert record.fields["Name"] == "Plain"
    assert calls == {"query": 1}
