"""What an event names, read from the published bodies of each source (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from published_events import (
    OPPORTUNITY_ID,
    REFERRAL_ID,
    SALESFORCE_ID,
    TEST_CREATED,
    change_event,
    dataverse_update,
    partner_center,
)

from connector.events.notices import (
    Unreadable,
    dataverse_notice,
    partner_center_notice,
    salesforce_notice,
)

STATUS_FIELDS = {"CoSell_Status__c", "Referral_Identifier__c", "CoSell_Last_Sync__c"}


@pytest.mark.parametrize(
    "event",
    [
        "referral-created",
        "referral-updated",
        "related-referral-created",
        "related-referral-updated",
    ],
)
def test_every_referral_event_names_its_referral(event: str) -> None:
    notice = partner_center_notice(partner_center(event))
    assert notice is not None
    assert notice.referral_ids == (REFERRAL_ID,)
    assert notice.crm_ids == ()
    assert notice.changed_at == datetime(2018, 2, 17, 0, 5, 39, 548548, tzinfo=UTC)


def test_the_test_event_and_other_kinds_name_nothing() -> None:
    assert partner_center_notice(TEST_CREATED) is None
    assert partner_center_notice(b'{"EventName": "subscription-updated"}') is None


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"ResourceUri": "https://x/engagements/v1/referrals/abc"}',
        b'{"EventName": "referral-updated", "ResourceUri": "https://x/engagements/v1/customers/abc"}',
        b'{"EventName": "referral-updated", "ResourceUri": "https://x/engagements/v1/referrals/{{ReferralID}}"}',
        b'{"EventName": "referral-updated", "ResourceUri": "https://x/engagements/v1/referrals/a%2Fb"}',
        b'{"EventName": "referral-updated", "ResourceUri": 7}',
    ],
)
def test_an_unreadable_partner_center_body_is_refused(body: bytes) -> None:
    with pytest.raises(Unreadable) as caught:
        partner_center_notice(body)
    assert caught.value.reason == "malformed"


def test_the_resource_uri_is_only_read_for_its_last_segment() -> None:
    # another host, http, a query: the id is taken, the URI is never followed
    body = partner_center("referral-updated").replace(
        b"https://api.partnercenter.microsoft.com", b"http://evil.example"
    )
    notice = partner_center_notice(body)
    assert notice is not None and notice.referral_ids == (REFERRAL_ID,)


def test_a_dataverse_post_names_its_row() -> None:
    notice = dataverse_notice(dataverse_update({"name": "Big deal", "modifiedon": "x"}))
    assert notice is not None
    assert notice.crm_ids == (OPPORTUNITY_ID,)
    assert notice.own_write is False
    assert notice.changed_at == datetime(2017, 9, 26, 7, 4, 8, tzinfo=UTC)


def test_a_dataverse_post_of_only_the_connectors_columns_is_its_own_echo() -> None:
    fields = {"cosell_status", "cosell_lastsync"}
    own = dataverse_update(
        {"cosell_status": "Active", "opportunityid": OPPORTUNITY_ID, "modifiedon": "x"}
    )
    theirs = dataverse_update({"cosell_status": "Active", "estimatedvalue": 10})
    assert dataverse_notice(own, connector_fields=[*fields, "opportunityid"]).own_write  # type: ignore[union-attr]
    assert not dataverse_notice(theirs, connector_fields=fields).own_write  # type: ignore[union-attr]


def test_a_dataverse_post_for_another_table_is_ignored_and_a_bad_id_refused() -> None:
    other = dataverse_update({}).replace(
        b'"PrimaryEntityName": "opportunity"', b'"PrimaryEntityName": "contact"'
    )
    assert dataverse_notice(other) is None
    bad = dataverse_update({}, row_id="not-a-guid")
    with pytest.raises(Unreadable):
        dataverse_notice(bad)


def test_a_change_event_names_its_records_and_its_position() -> None:
    notice = salesforce_notice(change_event(record_ids=[SALESFORCE_ID, "0065g00000Abc13"]))
    assert notice is not None
    assert notice.crm_ids == (SALESFORCE_ID, "0065g00000Abc13")
    assert notice.replay_id == 6
    assert notice.full is False
    assert notice.changed_at == datetime(2019, 9, 25, 20, 36, 23, tzinfo=UTC)


@pytest.mark.parametrize(
    "event",
    [change_event("GAP_OVERFLOW", record_ids=[]), change_event(record_ids=["006*"])],
)
def test_a_change_no_event_can_name_asks_for_a_full_cycle(event: dict[str, object]) -> None:
    notice = salesforce_notice(event)
    assert notice is not None and notice.full and notice.crm_ids == ()
    assert notice.replay_id == 6


def test_a_gap_event_still_names_its_records() -> None:
    notice = salesforce_notice(change_event("GAP_UPDATE"))
    assert notice is not None and notice.crm_ids == (SALESFORCE_ID,)


def test_a_change_of_only_the_connectors_fields_is_its_own_echo() -> None:
    own = change_event(changed_fields=["CoSell_Status__c", "LastModifiedDate"])
    theirs = change_event(changed_fields=["CoSell_Status__c", "Amount", "LastModifiedDate"])
    assert salesforce_notice(own, connector_fields=STATUS_FIELDS).own_write  # type: ignore[union-attr]
    assert not salesforce_notice(theirs, connector_fields=STATUS_FIELDS).own_write  # type: ignore[union-attr]
    created = change_event("CREATE", changed_fields=["CoSell_Status__c"])
    assert not salesforce_notice(created, connector_fields=STATUS_FIELDS).own_write  # type: ignore[union-attr]


def test_another_objects_event_only_keeps_the_position() -> None:
    notice = salesforce_notice(change_event(entity="Account"))
    assert notice is not None and notice.crm_ids == () and notice.replay_id == 6


@pytest.mark.parametrize(
    "message",
    [
        {"channel": "/data/OpportunityChangeEvent"},
        {"data": {"payload": {}}},
        change_event(record_ids=["not an id!"]),
    ],
)
def test_an_unreadable_change_event_is_refused(message: dict[str, object]) -> None:
    with pytest.raises(Unreadable):
        salesforce_notice(message)
