"""A draft's fingerprint: the hash of its ``asdict`` JSON, which stored links depend on."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from datetime import date
from decimal import Decimal

import pytest

from connector.model import Contact, Customer, DealDraft, DealType, StandardStage

BASE = DealDraft(
    crm_id="006A",
    name="Deal",
    value=Decimal("1000.50"),
    currency="USD",
    close_date=date(2026, 12, 1),
    customer=Customer("Contoso", "US", contacts=(Contact("A", "B", "1", "a@b.example"),)),
    team=(Contact("S", "T", "2", "s@p.example"),),
    solutions=("SOL-1",),
    stage=StandardStage.QUALIFIED,
)


def reference(draft: DealDraft) -> str:
    """The fingerprint as first written (``asdict``): what stored links hold."""
    fields = asdict(draft)
    # fields added after the first fingerprints were stored are hashed only when set
    for name, default in (
        ("partners", ()),
        ("shared_with_microsoft", False),
        ("other_solutions", ()),
        ("own_solution_type", "Name"),
        ("partner_details", None),
    ):
        if fields[name] == default:
            del fields[name]
    payload = json.dumps(fields, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@pytest.mark.parametrize(
    "draft",
    [
        BASE,
        replace(BASE, partners=("P-1", "P-2"), deal_type=DealType.CO_SELL),
        replace(
            BASE,
            name="Dëal «ünïcode» \u2028 line",
            notes="two\nlines",
            assistance_code="GeneralOrOther",
            campaign_id="CMP-1",
            customer=Customer(
                "Fabrikam",
                "DE",
                city="Köln",
                state="NW",
                postal_code="50667",
                address_line1="Str. 1",
                contacts=(),
            ),
            team=(Contact("S", "T", "2", "s@p.example"), Contact("U", "V", "3", "u@p.example")),
            solutions=("SOL-1", "SOL-2"),
            stage=StandardStage.WON,
        ),
    ],
)
def test_fingerprint_is_the_hash_of_the_drafts_asdict_json(draft: DealDraft) -> None:
    assert draft.fingerprint() == reference(draft)


def test_fingerprint_of_a_known_draft_never_changes() -> None:
    # stored in every link: a change here would make every linked deal look changed
    assert BASE.fingerprint() == reference(BASE)
    assert BASE.fingerprint() == "da3c892e7dec6cf319d37c90697f486c0991e094f541b742f01c0b6ec6f9dce5"
    assert BASE.fingerprint() != replace(BASE, value=Decimal("1000.51")).fingerprint()
    assert BASE.fingerprint() != replace(BASE, team=()).fingerprint()
