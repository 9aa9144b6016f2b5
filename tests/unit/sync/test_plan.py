"""Planning one record against what the store knows (pure, table-driven)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from connector.dealcore.payload import referral_body
from connector.model import (
    Contact,
    Customer,
    DealDraft,
    DealType,
    Rejection,
    StandardStage,
    Substatus,
)
from connector.sync.plan import Create, Reject, Skip, SkipReason, Update, plan_outbound


@dataclass
class FakeLink:
    referral_id: str | None = "ref-1"
    fingerprint: str | None = None
    sent_body: dict[str, Any] | None = None
    status: str | None = "Active"
    substatus: str | None = "Accepted"
    direction: str | None = "Outgoing"
    etag: str | None = '"e1"'


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


def linked(d: DealDraft, **overrides: Any) -> FakeLink:
    link = FakeLink(fingerprint=d.fingerprint(), sent_body=referral_body(d))
    for k, v in overrides.items():
        setattr(link, k, v)
    return link


def test_a_new_record_is_created() -> None:
    action = plan_outbound(draft(), None)
    assert isinstance(action, Create)
    assert action.close_as is None
    assert action.body["externalReferenceId"] == "006A"


def test_a_won_record_never_shared_is_created_then_closed_as_won() -> None:
    action = plan_outbound(draft(stage=StandardStage.WON), None)
    assert isinstance(action, Create) and action.close_as is Substatus.WON


def test_a_lost_record_never_shared_is_skipped() -> None:
    action = plan_outbound(draft(stage=StandardStage.LOST), None)
    assert isinstance(action, Skip) and action.reason is SkipReason.LOST_BEFORE_SHARED


def test_an_unchanged_record_costs_nothing() -> None:
    d = draft()
    action = plan_outbound(d, linked(d))
    assert isinstance(action, Skip) and action.reason is SkipReason.UNCHANGED


def test_a_changed_value_is_one_minimal_patch() -> None:
    old = draft()
    new = draft(value=Decimal(2000))
    action = plan_outbound(new, linked(old))
    assert isinstance(action, Update)
    assert action.ops == [{"op": "replace", "path": "/details/dealValue", "value": 2000}]
    assert action.fingerprint == new.fingerprint()


def test_a_stage_change_patches_the_sales_stage_percentage() -> None:
    old = draft()
    action = plan_outbound(draft(stage=StandardStage.PROPOSED), linked(old))
    assert isinstance(action, Update)
    assert {"op": "replace", "path": "/salesStage", "value": "60"} in action.ops


@pytest.mark.parametrize(
    ("stage", "substatus"), [(StandardStage.WON, "Won"), (StandardStage.LOST, "Lost")]
)
def test_won_and_lost_close_the_referral(stage: StandardStage, substatus: str) -> None:
    action = plan_outbound(draft(stage=stage), linked(draft()))
    assert isinstance(action, Update) and action.closes is not None
    assert {"op": "replace", "path": "/status", "value": "Closed"} in action.ops
    assert {"op": "replace", "path": "/substatus", "value": substatus} in action.ops


@pytest.mark.parametrize("substatus", ["Won", "Lost", "Declined", "Expired"])
def test_terminal_referrals_are_never_patched(substatus: str) -> None:
    old = draft()
    action = plan_outbound(draft(name="Renamed"), linked(old, status="Closed", substatus=substatus))
    assert isinstance(action, Skip) and action.reason is SkipReason.TERMINAL
    assert action.notice and substatus in action.notice


def test_a_rejection_is_planned_as_reject() -> None:
    action = plan_outbound(Rejection("006A", ("the deal value is empty",)), None)
    assert isinstance(action, Reject) and action.message == "the deal value is empty"


def test_sharing_with_microsoft_is_never_undone() -> None:
    co_sell = draft(deal_type=DealType.CO_SELL, assistance_code="ProofOfConceptOrDemo")
    action = plan_outbound(draft(deal_type=DealType.PRIVATE, value=Decimal(5)), linked(co_sell))
    assert isinstance(action, Update)
    assert action.warning and "cannot be undone" in action.warning
    paths = {op["path"] for op in action.ops}
    assert "/consent/consentToShareReferralWithMicrosoftSellers" not in paths
    assert paths == {"/details/dealValue"}


def test_inviting_microsoft_later_upgrades_a_private_deal() -> None:
    action = plan_outbound(
        draft(deal_type=DealType.CO_SELL, assistance_code="QuotesOrLicensing"), linked(draft())
    )
    assert isinstance(action, Update)
    paths = {op["path"] for op in action.ops}
    assert "/inviteContext" in paths
    assert "/consent/consentToShareReferralWithMicrosoftSellers" in paths
