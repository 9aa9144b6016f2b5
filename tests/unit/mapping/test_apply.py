"""Mapping a CRM record to a deal draft or a rejection (pure, table-driven)."""

from __future__ import annotations

import unicodedata
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connector.mapping.apply import apply_mapping, clean_text, stage_by_probability
from connector.mapping.load import load_mapping
from connector.model import CrmOpportunity, DealDraft, DealType, Rejection, StageInfo, StandardStage

MAPPING = load_mapping(Path(__file__).parents[3] / "mappings" / "salesforce.yaml")

STAGES = {
    s.label: s
    for s in [
        StageInfo("Prospecting", "Prospecting", Decimal(10), False, False),
        StageInfo("Needs Analysis", "Needs Analysis", Decimal(20), False, False),
        StageInfo("Negotiation/Review", "Negotiation/Review", Decimal(90), False, False),
        StageInfo("Technical Win", "Technical Win", Decimal(65), False, False),
        StageInfo("Closed Won", "Closed Won", Decimal(100), True, True),
        StageInfo("Closed Lost", "Closed Lost", Decimal(0), True, False),
    ]
}


def record(**overrides: Any) -> CrmOpportunity:
    fields: dict[str, Any] = {
        "Name": "Contoso – Azure migration",
        "Amount": Decimal("50000"),
        "CurrencyIsoCode": "USD",
        "CloseDate": date(2026, 12, 31),
        "StageName": "Needs Analysis",
        "IsWon": False,
        "IsClosed": False,
        "Description": "Needs a POC",
        "Account.Name": "Contoso Ltd",
        "Account.BillingCountryCode": "US",
        "Account.BillingCity": "Redmond",
        "Owner.FirstName": "Sue",
        "Owner.LastName": "Smith",
        "Owner.Email": "sue@partner.example",
        "Owner.Phone": "+1 555 0100",
        "Primary_Contact__r.FirstName": "Ann",
        "Primary_Contact__r.LastName": "Lee",
        "Primary_Contact__r.Email": "ann@contoso.example",
        "Primary_Contact__r.Phone": "+1 555 0199",
        "CoSell_Solutions__c": "SOL-34104-EBB;SOL-1200-AZM",
        "How_can_Microsoft_help__c": None,
    }
    fields.update(overrides)
    return CrmOpportunity("006000000000001AAA", datetime(2026, 5, 1, tzinfo=UTC), fields)


def test_a_complete_record_becomes_a_draft() -> None:
    draft = apply_mapping(record(), MAPPING, STAGES)
    assert isinstance(draft, DealDraft)
    assert draft.name == "Contoso – Azure migration"
    assert draft.value == Decimal("50000")
    assert draft.currency == "USD"
    assert draft.close_date == date(2026, 12, 31)
    assert draft.customer.name == "Contoso Ltd" and draft.customer.country == "US"
    assert draft.stage is StandardStage.QUALIFIED and draft.stage.percent == 20
    assert draft.solutions == ("SOL-34104-EBB", "SOL-1200-AZM")
    assert draft.team[0].email == "sue@partner.example"
    assert draft.deal_type is DealType.PRIVATE


def test_help_asked_of_microsoft_makes_a_co_sell_deal() -> None:
    draft = apply_mapping(
        record(How_can_Microsoft_help__c="Proof of Concept or Demo"), MAPPING, STAGES
    )
    assert isinstance(draft, DealDraft)
    assert draft.deal_type is DealType.CO_SELL
    assert draft.assistance_code == "ProofOfConceptOrDemo"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"Amount": None}, "the deal value is empty"),
        ({"Amount": Decimal("-5")}, "is negative"),
        ({"Amount": "abc"}, "is not a number"),
        ({"CloseDate": None}, "the close date is empty"),
        ({"CloseDate": "2026-02-30"}, "is not a date"),
        ({"CurrencyIsoCode": "XXY"}, "is not an ISO 4217 code"),
        ({"CurrencyIsoCode": "US$"}, "is not an ISO 4217 code"),
        ({"CurrencyIsoCode": "XXX"}, "is not an ISO 4217 code"),
        ({"Account.BillingCountryCode": None}, "the customer's country is empty"),
        ({"Account.BillingCountryCode": "United States"}, "is not an ISO 3166"),
        ({"CoSell_Solutions__c": None}, "no solution is named"),
        ({"Owner.Phone": None}, "the seller (team member)'s phone is empty"),
        ({"Owner.Email": "not-an-email"}, "is not an email address"),
        ({"Name": "x" * 300}, "the core accepts at most 255"),
        ({"Name": "\x00\x01 "}, "the deal name is empty"),
        ({"StageName": "Mystery"}, "stage 'Mystery' is not in the mapping"),
        ({"How_can_Microsoft_help__c": "Lots"}, "deal_type.help_values does not list"),
        (
            {"How_can_Microsoft_help__c": "General or Other", "Primary_Contact__r.Email": None},
            "the customer contact (needed when Microsoft is invited)'s email is empty",
        ),
        (
            {
                "How_can_Microsoft_help__c": "General or Other",
                "Primary_Contact__r.FirstName": None,
                "Primary_Contact__r.LastName": None,
                "Primary_Contact__r.Email": None,
                "Primary_Contact__r.Phone": None,
            },
            "the customer contact (needed when Microsoft is invited) is missing",
        ),
    ],
)
def test_each_defect_is_rejected_with_a_reason(overrides: dict[str, Any], expected: str) -> None:
    result = apply_mapping(record(**overrides), MAPPING, STAGES)
    assert isinstance(result, Rejection)
    assert any(expected in reason for reason in result.reasons), result.reasons


def test_every_problem_of_a_record_is_reported_at_once() -> None:
    result = apply_mapping(
        record(Amount=None, CloseDate=None, CurrencyIsoCode="??"), MAPPING, STAGES
    )
    assert isinstance(result, Rejection)
    assert len(result.reasons) == 3


@pytest.mark.parametrize(
    ("stage", "won", "closed", "expected"),
    [
        ("Prospecting", False, False, StandardStage.CREATED),
        ("Negotiation/Review", False, False, StandardStage.NEGOTIATED),
        ("Technical Win", False, False, StandardStage.PROPOSED),  # unmapped: by probability (65)
        ("Closed Won", True, True, StandardStage.WON),
        ("Closed Lost", False, True, StandardStage.LOST),
    ],
)
def test_stages_map_to_standard_stages(
    stage: str, won: bool, closed: bool, expected: StandardStage
) -> None:
    draft = apply_mapping(record(StageName=stage, IsWon=won, IsClosed=closed), MAPPING, STAGES)
    assert isinstance(draft, DealDraft)
    assert draft.stage is expected


def test_a_won_stage_mapped_to_an_open_stage_is_a_contradiction() -> None:
    from connector.mapping.load import parse_mapping

    text = (Path(__file__).parents[3] / "mappings" / "salesforce.yaml").read_text()
    broken = parse_mapping(text.replace("Closed Won: Won", "Closed Won: Negotiated"), "m.yaml")
    result = apply_mapping(
        record(StageName="Closed Won", IsWon=True, IsClosed=True), broken, STAGES
    )
    assert isinstance(result, Rejection)
    assert "a won stage may only map to Won" in result.message


@pytest.mark.parametrize(
    ("probability", "expected"),
    [
        (0, "Created"),
        (19, "Created"),
        (20, "Qualified"),
        (50, "Developed"),
        (75, "Proposed"),
        (90, "Negotiated"),
    ],
)
def test_stage_by_probability(probability: int, expected: str) -> None:
    assert stage_by_probability(Decimal(probability)).value == expected


def test_clean_text_drops_control_characters_but_keeps_unicode() -> None:
    assert clean_text("Müller\x00 GmbH 🚀\x1b[31m") == "Müller GmbH 🚀 [31m"
    assert clean_text("line1\nline2\x07", multiline=True) == "line1\nline2"


def _clean_text_character_by_character(value: str, *, multiline: bool) -> str:
    """clean_text without its fast path for printable text: what it must equal."""
    control = {chr(c) for c in range(32) if chr(c) not in "\n\t"} | {chr(127)}
    text = unicodedata.normalize("NFC", value)
    if multiline:
        return "".join(c for c in text if c not in control).strip()
    return " ".join("".join(c if c not in control else " " for c in text).split())


@pytest.mark.parametrize(
    "value",
    [
        "Contoso Ltd",
        "  Contoso   Ltd  ",
        "Cafe\u0301 Müller",  # combining accent: NFC folds it
        "tab\there",
        "two\nlines\r\n",
        "nbsp\u00a0and\u2028line separator",
        "zero\u200bwidth",
        "bell\x07 and delete\x7f",
        "",
        "   ",
        "🚀 emoji",
    ],
)
@pytest.mark.parametrize("multiline", [False, True])
def test_clean_text_fast_path_gives_what_character_by_character_cleaning_gives(
    value: str, multiline: bool
) -> None:
    expected = _clean_text_character_by_character(value, multiline=multiline)
    assert clean_text(value, multiline=multiline) == expected


def test_a_record_in_an_ignored_stage_is_skipped_not_rejected_whatever_else_it_lacks() -> None:
    from connector.mapping.load import parse_mapping
    from connector.sync.plan import Skip, SkipReason, plan_outbound

    text = (Path(__file__).parents[3] / "mappings" / "salesforce.yaml").read_text("utf-8")
    ignoring = parse_mapping(
        text.replace("Needs Analysis: Qualified", "Needs Analysis: ignore"), "m.yaml"
    )
    result = apply_mapping(record(CloseDate=None, Amount=None), ignoring, STAGES)
    assert isinstance(result, Rejection) and result.code == "stage_ignored"
    action = plan_outbound(result, None)
    assert isinstance(action, Skip) and action.reason is SkipReason.STAGE_IGNORED
    assert isinstance(apply_mapping(record(), MAPPING, STAGES), DealDraft)  # not ignored there
