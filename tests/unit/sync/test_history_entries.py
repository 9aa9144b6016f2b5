"""Record outcomes become history entries: what was sent, what came back, both sides."""

from __future__ import annotations

from datetime import UTC, datetime

from connector.mapping.schema import StatusFields
from connector.state.store import Link, LinkState
from connector.sync.history import crm_values_of, mirrored_entries, outcome_entries
from connector.sync.outcome import RecordOutcome

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FIELDS = StatusFields(
    referral_id="Referral_Identifier__c", status="CoSell_Status__c", sync_error="Sync_Error__c"
)


def facts(status: str = "Active", substatus: str | None = "Accepted") -> dict[str, object]:
    return {
        "referral_id": "R-1",
        "status": status,
        "substatus": substatus,
        "direction": "Outgoing",
        "link": "https://partner.example/referrals/R-1",
    }


def link(body: dict[str, object], **changes: object) -> Link:
    values: dict[str, object] = {
        "connection": "sf",
        "crm_id": "006A",
        "state": LinkState.LINKED,
        "referral_id": "R-1",
        "etag": '"2"',
        "sent_body": body,
        "status": "Active",
        "substatus": "Accepted",
        "core_facts": facts(),
    }
    values.update(changes)
    return Link(**values)  # type: ignore[arg-type]


def test_a_created_record_keeps_the_body_sent_and_the_cores_answer() -> None:
    new = link({"name": "Deal", "details": {"dealValue": 100}})
    (entry,) = outcome_entries("sf", 7, [RecordOutcome("006A", "created", link=new)], {}, NOW)
    assert entry.kind == "created" and entry.run_id == 7
    assert entry.sent == {"name": "Deal", "details": {"dealValue": 100}}
    assert entry.answer is not None and entry.answer["etag"] == '"2"'
    assert entry.answer["status"] == "Active"
    assert entry.core_status == "Active" and entry.core_substatus == "Accepted"
    assert crm_values_of(entry, FIELDS) == {
        "Referral_Identifier__c": "R-1",
        "CoSell_Status__c": "Active/Accepted",
        "Sync_Error__c": None,
    }


def test_an_update_keeps_only_the_changes_sent() -> None:
    before = link({"name": "Deal", "details": {"dealValue": 100}})
    after = link({"name": "Deal", "details": {"dealValue": 250}}, etag='"3"')
    (entry,) = outcome_entries(
        "sf", 8, [RecordOutcome("006A", "updated", link=after)], {"006A": before}, NOW
    )
    assert entry.sent == {
        "changes": [{"op": "replace", "path": "/details/dealValue", "value": 250}]
    }


def test_a_rejection_never_reached_the_core_and_shows_the_error_written_to_the_crm() -> None:
    outcome = RecordOutcome("006B", "rejected", "invalid_record", "the close date is empty")
    (entry,) = outcome_entries("sf", 9, [outcome], {}, NOW)
    assert entry.answer is None and entry.sent is None and entry.referral_id is None
    assert entry.message == "the close date is empty"
    assert crm_values_of(entry, FIELDS) == {"Sync_Error__c": "the close date is empty"}


def test_an_unchanged_record_read_again_leaves_no_entry_but_a_notice_does() -> None:
    quiet = RecordOutcome("006A", "skipped", "unchanged")
    terminal = RecordOutcome("006C", "skipped", "terminal", notice="the deal is closed")
    entries = outcome_entries("sf", 9, [quiet, terminal], {}, NOW)
    assert [(e.crm_id, e.reason, e.message) for e in entries] == [
        ("006C", "terminal", "the deal is closed")
    ]


def test_a_referral_changed_in_the_core_is_a_mirrored_entry() -> None:
    won = link({}, status="Closed", substatus="Won", core_facts=facts("Closed", "Won"))
    (entry,) = mirrored_entries("sf", 10, [won], NOW)
    assert entry.kind == "mirrored" and entry.core_status == "Closed"
    values = crm_values_of(entry, FIELDS)
    assert values is not None and values["CoSell_Status__c"] == "Closed/Won"
