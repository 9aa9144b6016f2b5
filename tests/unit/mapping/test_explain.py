"""Explaining one record under a mapping, field by field (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from connector.commands.explain import explain_record
from connector.mapping.load import parse_mapping
from connector.model import CrmOpportunity, DealDraft, Rejection, StageInfo

ROOT = Path(__file__).parents[3]
TEXT = (ROOT / "mappings" / "salesforce.yaml").read_text(encoding="utf-8")
STAGES = {
    "Needs Analysis": StageInfo("Needs Analysis", "Needs Analysis", Decimal(20), False, False)
}


def record(**overrides: Any) -> CrmOpportunity:
    fields: dict[str, Any] = {
        "Name": "Contoso – AKS",
        "Amount": Decimal("50000"),
        "CurrencyIsoCode": "EUR",
        "CloseDate": date(2026, 12, 31),
        "StageName": "Needs Analysis",
        "Account.Name": "Contoso GmbH",
        "Account.Country__c": "Germany",
        "Owner.FirstName": "Sue",
        "Owner.LastName": "Smith",
        "Owner.Email": "sue@partner.example",
        "Owner.Phone": "+1 555 0100",
        "CoSell_Solutions__c": "SOL-1;SOL-2",
    }
    fields.update(overrides)
    return CrmOpportunity("006000000000001AAA", datetime(2026, 5, 1, tzinfo=UTC), fields)


MAPPING = parse_mapping(
    TEXT.replace(
        "customer_country: {field: Account.BillingCountryCode}",
        "customer_country: {field: Account.Country__c, table: {Germany: DE}, default: US}",
    ),
    "m.yaml",
)


@dataclass
class FakeLink:
    referral_id: str | None = "R-1"
    fingerprint: str | None = None
    sent_body: dict[str, Any] | None = None
    status: str | None = "Active"
    substatus: str | None = "Accepted"
    direction: str = "Outgoing"


def rows(explanation: Any) -> dict[str, tuple[str, str, str]]:
    return {line.deal_field: (line.source, line.raw, line.mapped) for line in explanation.lines}


def test_each_field_shows_source_raw_and_mapped_value() -> None:
    explanation = explain_record(record(), MAPPING, STAGES)
    assert isinstance(explanation.result, DealDraft)
    got = rows(explanation)
    assert got["customer_country"] == (
        "Account.Country__c (value table, default 'US')",
        "Germany",
        "DE",
    )
    assert got["solutions"] == ("CoSell_Solutions__c (split on ';')", "SOL-1;SOL-2", "SOL-1, SOL-2")
    assert got["team_member.email"][2] == "sue@partner.example"
    assert got["stage"][1:] == ("Needs Analysis", "Qualified")
    assert got["notes"][1:] == ("(empty)", "(empty)")
    assert explanation.action == "create a new referral in Partner Center (Active/Accepted)"


def test_a_rejected_record_lists_every_reason_and_no_mapped_values() -> None:
    explanation = explain_record(record(Amount=None, StageName="Mystery"), MAPPING, STAGES)
    assert isinstance(explanation.result, Rejection)
    assert len(explanation.result.reasons) == 2
    assert all(mapped == "-" for _, _, mapped in rows(explanation).values())
    assert explanation.action.startswith("reject: 2 problem(s)")


def test_the_action_follows_the_stores_link() -> None:
    first = explain_record(record(), MAPPING, STAGES)
    assert isinstance(first.result, DealDraft)
    unchanged = FakeLink(fingerprint=first.result.fingerprint())
    assert explain_record(record(), MAPPING, STAGES, unchanged).action == "skip (unchanged)"
    changed = explain_record(record(Amount=Decimal("60000")), MAPPING, STAGES, unchanged)
    assert changed.action.startswith("update referral R-1")
