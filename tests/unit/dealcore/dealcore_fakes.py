"""Test doubles for the deal-core client tests: a sample referral, drafts, fake tokens, a fake clock."""

from __future__ import annotations

import threading
from datetime import date
from decimal import Decimal
from typing import Any

from connector.model import Contact, Customer, DealDraft, DealType, StandardStage

BASE = "https://core.test/v1.0/engagements"


def sample_referral(**overrides: Any) -> dict[str, Any]:
    """A Referral as the reference documents it, with overrides on top."""
    referral: dict[str, Any] = {
        "id": "4111fffc-0000-0000-0000-000000000001",
        "engagementId": "37ef26aa-0000-0000-0000-000000000001",
        "eTag": '"00006d10-0000"',
        "name": "Contoso – Azure migration",
        "externalReferenceId": "006Ax00000ABCDe",
        "createdDateTime": "2026-02-23T02:05:23Z",
        "updatedDateTime": "2026-02-23T02:05:23Z",
        "closedDateTime": None,
        "expirationDateTime": None,
        "status": "Active",
        "substatus": "Accepted",
        "statusReason": None,
        "type": "Shared",
        "qualification": "SalesQualified",
        "direction": "Outgoing",
        "salesStage": "40",
        "campaignId": "SPRING-26",
        "consent": {
            "consentToToShareInfoWithOthers": True,
            "consentToContact": True,
            "consentToShareReferralWithMicrosoftSellers": True,
        },
        "details": {"notes": "n", "dealValue": 50000, "currency": "USD"},
        "inviteContext": {"assistanceRequestCode": "ProofOfConceptOrDemo"},
        "registrationStatus": "None",
        "someFutureField": {"ignored": True},
    }
    referral.update(overrides)
    return referral


def make_draft(**overrides: Any) -> DealDraft:
    values: dict[str, Any] = {
        "crm_id": "006Ax00000ABCDe",
        "name": "Contoso – Azure migration",
        "value": Decimal("50000.00"),
        "currency": "USD",
        "close_date": date(2026, 11, 14),
        "customer": Customer(
            name="Contoso Customer Inc",
            country="US",
            city="Redmond",
            state="WA",
            postal_code="98052",
            contacts=(Contact("Sue", "Smith", "+1 425 555 0100", "sue@contoso.com"),),
        ),
        "team": (Contact("John", "Doe", "+1 425 555 0199", "john@partner.example"),),
        "solutions": ("SOL-34104-EBB",),
        "stage": StandardStage.DEVELOPED,
        "deal_type": DealType.CO_SELL,
        "assistance_code": "ProofOfConceptOrDemo",
        "notes": "Need a POC",
        "campaign_id": "SPRING-26",
    }
    values.update(overrides)
    return DealDraft(**values)


class FakeTokens:
    """A TokenProvider handing out token-1, token-2 … after each invalidate()."""

    def __init__(self) -> None:
        self.generation = 1
        self.invalidations = 0

    def token(self) -> str:
        return f"token-{self.generation}"

    def invalidate(self) -> None:
        self.invalidations += 1
        self.generation += 1


class FakeClock:
    """A monotonic clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds
