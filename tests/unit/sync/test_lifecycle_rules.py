"""The lifecycle rules as pure functions: invitations, answers, registration."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connector.dealcore.payload import patch_ops, referral_body
from connector.mapping.load import load_mapping
from connector.model import (
    Contact,
    CrmOpportunity,
    Customer,
    DealDraft,
    DealType,
    StandardStage,
)
from connector.sync.lifecycle import answer_of, registration_blockers, registration_of
from connector.sync.plan import Skip, Update, plan_outbound

MAPPING = load_mapping(Path(__file__).parents[3] / "mappings" / "salesforce.yaml")


@dataclass
class FakeLink:
    referral_id: str | None = "ref-1"
    fingerprint: str | None = None
    sent_body: dict[str, Any] | None = None
    status: str | None = "Active"
    substatus: str | None = "Accepted"
    direction: str = "Outgoing"
    core_facts: dict[str, Any] | None = None


def draft(**overrides: Any) -> DealDraft:
    base = DealDraft(
        crm_id="006A",
        name="Deal",
        value=Decimal(1000),
        currency="USD",
        close_date=date(2026, 12, 1),
        customer=Customer("Contoso", "US", contacts=(Contact("A", "B", "1", "a@b.example"),)),
        team=(Contact("S", "T", "2", "s@p.example"),),
        solutions=("SOL-1",),
        stage=StandardStage.QUALIFIED,
    )
    return replace(base, **overrides)


def record(**fields: Any) -> CrmOpportunity:
    return CrmOpportunity(
        "006A", datetime(2026, 5, 1, tzinfo=UTC), {"StageName": "Prospecting", **fields}
    )


def test_partners_are_never_targeted_on_any_deal() -> None:
    """No documented target type names a partner organisation: invitations stay in
    Partner Center, and the record says so (own deals and incoming deals alike)."""
    for deal_type in DealType:
        body = referral_body(draft(deal_type=deal_type, partners=("p-1",)))
        assert all(t["type"] != "Partner" for t in body["target"])
        assert "p-1" not in json.dumps(body)


@pytest.mark.parametrize("direction", ["Outgoing", "Incoming"])
def test_an_invited_partner_is_explained_and_other_changes_still_go(direction: str) -> None:
    before = draft()
    link = FakeLink(
        fingerprint=before.fingerprint(), sent_body=referral_body(before), direction=direction
    )
    only = plan_outbound(draft(partners=("p-9",), deal_type=DealType.PARTNER_TO_PARTNER), link)
    assert isinstance(only, Skip) and only.notice and "p-9" in only.notice
    both = plan_outbound(draft(partners=("p-9",), value=Decimal(5)), link)
    assert isinstance(both, Update) and both.warning and "p-9" in both.warning
    assert [op["path"] for op in both.ops] == ["/details/dealValue"]
    assert patch_ops(referral_body(before), both.body) == both.ops


def test_a_draft_without_partners_hashes_as_before_partners_existed() -> None:
    d = draft()
    fields = asdict(d)
    for later in ("partners", "shared_with_microsoft", "other_solutions", "own_solution_type"):
        del fields[later]
    del fields["partner_details"]
    text = json.dumps(fields, sort_keys=True, default=str, ensure_ascii=False)
    assert d.fingerprint() == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert d.fingerprint() != draft(partners=("p",)).fingerprint()


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({}, "wait"),
        ({"CoSell_Action__c": "Accept"}, "accept"),
        ({"StageName": "Qualification"}, "accept"),
        ({"CoSell_Action__c": "Decline"}, "refuse"),
        ({"CoSell_Action__c": "Decline", "CoSell_Decline_Reason__c": "Not a fit"}, "decline"),
    ],
)
def test_an_incoming_deal_is_answered_from_its_record(fields: dict[str, Any], kind: str) -> None:
    answer = answer_of(record(**fields), MAPPING, "New", "Pending", None)
    assert answer.kind == kind
    if kind == "decline":
        assert {"op": "replace", "path": "/statusReason", "value": "Not a fit"} in answer.ops


@pytest.mark.parametrize(
    ("picked", "sent"),
    [
        ("Other", "Declined for another reason"),
        ("Duplicate deal", "Duplicate of a deal we already work on"),
    ],
)
def test_a_picked_decline_reason_is_sent_as_the_mapping_words_it(picked: str, sent: str) -> None:
    answer = answer_of(
        record(CoSell_Action__c="Decline", CoSell_Decline_Reason__c=picked),
        MAPPING,
        "New",
        "Pending",
        None,
    )
    assert answer.kind == "decline"
    assert {"op": "replace", "path": "/statusReason", "value": sent} in answer.ops


def test_a_decline_reason_outside_the_mapped_picklist_is_refused_with_the_choices() -> None:
    answer = answer_of(
        record(CoSell_Action__c="Decline", CoSell_Decline_Reason__c="Too busy"),
        MAPPING,
        "New",
        "Pending",
        None,
    )
    assert answer.kind == "refuse" and answer.notice is not None
    assert "'Too busy'" in answer.notice and "Not a fit, No capacity this quarter" in answer.notice


def test_without_a_picklist_the_decline_reason_is_sent_as_typed() -> None:
    free_text = MAPPING.model_copy(
        update={"inbound": MAPPING.inbound.model_copy(update={"decline_reasons": {}})}
    )
    answer = answer_of(
        record(CoSell_Action__c="Decline", CoSell_Decline_Reason__c="Too busy"),
        free_text,
        "New",
        "Pending",
        None,
    )
    assert {"op": "replace", "path": "/statusReason", "value": "Too busy"} in answer.ops


@pytest.mark.parametrize(("substatus", "kind"), [("Expired", "refuse"), ("Accepted", "wait")])
def test_a_deal_no_longer_new_is_not_answered_again(substatus: str, kind: str) -> None:
    status = "Closed" if substatus == "Expired" else "Active"
    answer = answer_of(record(CoSell_Action__c="Accept"), MAPPING, status, substatus, None)
    assert answer.kind == kind


def co_sell_body(solution: str = "SOL-IP-1") -> dict[str, Any]:
    return referral_body(
        draft(deal_type=DealType.CO_SELL, assistance_code="GeneralOrOther", solutions=(solution,))
    )


@pytest.mark.parametrize(
    ("body", "microsoft", "reason"),
    [
        (referral_body(draft(solutions=("SOL-IP-1",))), None, "Microsoft is not invited"),
        (co_sell_body(), "New/Pending", "Microsoft has not accepted"),
        (co_sell_body("SOL-2"), "Active/Accepted", "incentive-eligible"),
    ],
)
def test_each_registration_condition_is_named_when_it_fails(
    body: dict[str, Any], microsoft: str | None, reason: str
) -> None:
    assert any(reason in r for r in registration_blockers(body, microsoft))


@pytest.mark.parametrize("microsoft", ["Active/Accepted", "Closed/Won"])
def test_a_won_eligible_deal_that_asks_is_registered(microsoft: str) -> None:
    assert registration_blockers(co_sell_body(), microsoft) == []
    decision = registration_of(
        record(CoSell_Register_Deal__c=True),
        MAPPING,
        status="Closed",
        substatus="Won",
        registration_status="None",
        blockers=[],
        solutions=("SOL-IP-1",),
    )
    assert decision.kind == "submit"
    # the certified connector's DealRegistration shape
    assert decision.ops == (
        {
            "op": "add",
            "path": "/registrations/-",
            "value": {"type": "AzureIPCoSell", "solutionDetails": [{"id": "SOL-IP-1"}]},
        },
    )


def test_microsoft_known_through_its_referral_counts_as_invited() -> None:
    """An upgraded deal keeps the type it was created with (/type cannot be patched):
    Microsoft's referral in the engagement is what says it is invited."""
    upgraded = referral_body(draft(solutions=("SOL-IP-1",)))
    assert any("not invited" in r for r in registration_blockers(upgraded, None))
    assert registration_blockers(upgraded, "Active/Accepted") == []


def test_registration_waits_for_won_and_is_not_sent_twice() -> None:
    asks = record(CoSell_Register_Deal__c=True)
    common: dict[str, Any] = {"blockers": []}
    active = registration_of(
        asks, MAPPING, status="Active", substatus="Accepted", registration_status="None", **common
    )
    assert active.kind == "refuse"
    again = registration_of(
        asks,
        MAPPING,
        status="Closed",
        substatus="Won",
        registration_status="ReviewPending",
        **common,
    )
    assert again.kind == "none"
