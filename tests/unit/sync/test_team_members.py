"""The deal's team from the CRM's opportunity team, and both companies' people (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from connector.mapping.apply import apply_mapping
from connector.mapping.load import load_mapping
from connector.model import TEAM_MEMBERS, CrmOpportunity, DealDraft, StageInfo, TeamMember
from connector.sync.team import partner_members, with_partner_team

ROOT = Path(__file__).parents[3]
SHIPPED = load_mapping(ROOT / "mappings" / "salesforce.yaml")


def mapping_with(source: str, roles: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    team = SHIPPED.fields.team.model_copy(update={"source": source, "roles": roles})
    return SHIPPED.model_copy(update={"fields": SHIPPED.fields.model_copy(update={"team": team})})


RECORD = CrmOpportunity(
    "006A",
    datetime(2026, 5, 1, tzinfo=UTC),
    {
        "Name": "Deal",
        "Amount": 1000,
        "CurrencyIsoCode": "USD",
        "CloseDate": "2026-12-01",
        "Account.Name": "Contoso",
        "Account.BillingCountryCode": "US",
        "Owner.FirstName": "Sue",
        "Owner.LastName": "Seller",
        "Owner.Email": "sue@partner.example",
        "Owner.Phone": "1",
        "CoSell_Solutions__c": "SOL-1",
        "StageName": "Prospecting",
        "How_can_Microsoft_help__c": "None",
        TEAM_MEMBERS: (
            TeamMember("Ravi", "Rao", "ravi@partner.example", "", "Sales Rep"),
            TeamMember("Sue", "Seller", "SUE@partner.example", "1", "Sales Rep"),
            TeamMember("Tom", "Tech", "tom@partner.example", "2", "Solution Engineer"),
            TeamMember("", "Nameless", "n@partner.example", "3", "Sales Rep"),
        ),
    },
)
STAGES = {"Prospecting": StageInfo("Prospecting", "Prospecting", None, False, False)}


def team(mapping) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    draft = apply_mapping(RECORD, mapping, STAGES)
    assert isinstance(draft, DealDraft), draft
    return [(c.email, c.phone) for c in draft.team]


def test_the_owner_alone_unless_the_mapping_reads_the_opportunity_team() -> None:
    assert team(mapping_with("owner")) == [("sue@partner.example", "1")]


def test_the_opportunity_team_adds_its_members_once_each_and_by_role() -> None:
    assert team(mapping_with("opportunity_team")) == [
        ("sue@partner.example", "1"),
        ("ravi@partner.example", ""),
        ("tom@partner.example", "2"),
    ]
    assert team(mapping_with("opportunity_team", ("sales rep",))) == [
        ("sue@partner.example", "1"),
        ("ravi@partner.example", ""),
    ]


def test_the_sending_partners_people_stay_beside_ours() -> None:
    incoming = {"team": [{"email": "Alex@ally.example", "firstName": "Alex"}]}
    theirs = partner_members(incoming)
    assert theirs == ["alex@ally.example"]
    wanted = {"team": [{"email": "sue@partner.example"}]}
    assert with_partner_team(wanted, incoming, theirs)["team"] == [
        {"email": "sue@partner.example"},
        {"email": "Alex@ally.example", "firstName": "Alex"},
    ]
    # a member of theirs who left the referral is not brought back
    assert with_partner_team(wanted, {"team": []}, theirs) == wanted
