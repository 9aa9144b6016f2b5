"""What an invited partner is told (connector.sync.partners, pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

from connector.dealcore.payload import referral_body
from connector.model import Contact, Customer, DealDraft, DealType, PartnerDetails, StandardStage
from connector.sync.partners import invitation_body, partners_notice

DEAL = DealDraft(
    crm_id="006A",
    name="Deal",
    value=Decimal(50000),
    currency="USD",
    close_date=date(2026, 12, 1),
    customer=Customer("Contoso", "US"),
    team=(Contact("S", "T", "2", "s@p.example"),),
    solutions=("SOL-1",),
    stage=StandardStage.QUALIFIED,
    deal_type=DealType.PARTNER_TO_PARTNER,
    notes="our notes",
)
DETAILS = PartnerDetails(
    close_date=date(2027, 1, 31),
    value=Decimal("20000.00"),
    currency="EUR",
    notes="bring your team",
    solutions=("SOL-9",),
    help_code="ProofOfConceptOrDemo",
)


def test_the_invitation_carries_the_partners_own_details_in_documented_fields() -> None:
    body = invitation_body(referral_body(DEAL), "loc-1", DETAILS, "eng-1")
    assert body["engagementId"] == "eng-1" and body["type"] == "Shared"
    assert body["target"] == [{"type": "BusinessProfileLocation", "id": "loc-1"}]
    details = body["details"]
    assert (details["dealValue"], details["currency"]) == (20000, "EUR")
    assert details["closingDateTime"] == "2027-01-31T00:00:00Z"
    assert details["requirements"]["solutions"] == [{"id": "SOL-9", "type": "Name"}]
    assert body["inviteContext"] == {
        "assistanceRequestCode": "ProofOfConceptOrDemo",
        "notes": "bring your team",
    }
    assert body["team"] == referral_body(DEAL)["team"]
    for own in ("externalReferenceId", "status", "substatus", "salesStage"):
        assert own not in body


def test_without_details_the_partner_is_told_the_deals_own() -> None:
    body = invitation_body(referral_body(DEAL), "loc-1", None, "eng-1")
    assert (body["details"]["dealValue"], body["details"]["currency"]) == (50000, "USD")
    assert body["details"]["notes"] == "our notes"
    assert body["inviteContext"] == {"assistanceRequestCode": "Unknown"}


def test_the_seller_is_told_what_to_tell_the_partner() -> None:
    notice = partners_notice(("loc-1",), DETAILS)
    assert notice.startswith(
        "Not sent: inviting partner loc-1 (close date 2027-01-31; value 20,000 EUR; "
        "solutions SOL-9; help asked: ProofOfConceptOrDemo; the notes for the partner)."
    )
    assert partners_notice(("loc-1",), replace(DETAILS, value=None, notes=None, solutions=()))
