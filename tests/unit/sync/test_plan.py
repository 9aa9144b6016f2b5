"""Planning one record against what the store knows (pure, table-driven)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from connector.dealcore.options import CoreOptions
from connector.dealcore.payload import referral_body
from connector.model import (
    Contact,
    Customer,
    DealDraft,
    DealType,
    Rejection,
    StandardStage,
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


def linked(d: DealDraft, **overrides: Any) -> FakeLink:
    link = FakeLink(fingerprint=d.fingerprint(), sent_body=referral_body(d))
    for k, v in overrides.items():
        setattr(link, k, v)
    return link


def test_a_new_record_is_created_with_its_status_and_stage() -> None:
    action = plan_outbound(draft(), None)
    assert isinstance(action, Create)
    assert action.body["externalReferenceId"] == "006A"
    body = action.body
    assert (body["status"], body["substatus"], body["salesStage"]) == ("Active", "Accepted", "20")
    assert not action.invite_microsoft and action.notice is None


def test_a_won_record_never_shared_is_created_closed_won_in_one_write() -> None:
    action = plan_outbound(draft(stage=StandardStage.WON), None)
    assert isinstance(action, Create)
    body = action.body
    assert (body["status"], body["substatus"], body["salesStage"]) == ("Closed", "Won", "100")


@pytest.mark.parametrize(
    ("options", "invites"),
    [(CoreOptions(), True), (CoreOptions(co_sell_mode="consent_only"), False)],
)
def test_a_co_sell_create_invites_microsoft_in_the_two_referral_flow(
    options: CoreOptions, invites: bool
) -> None:
    co_sell = draft(deal_type=DealType.CO_SELL, assistance_code="QuotesOrLicensing")
    action = plan_outbound(co_sell, None, options)
    assert isinstance(action, Create) and action.invite_microsoft is invites
    assert action.body["consent"]["consentToShareReferralWithMicrosoftSellers"] is True


def test_the_sales_stage_format_setting_reaches_the_body_and_the_close() -> None:
    names = CoreOptions(sales_stage_format="name")
    created = plan_outbound(draft(), None, names)
    assert isinstance(created, Create) and created.body["salesStage"] == "Qualify"
    won = plan_outbound(draft(stage=StandardStage.WON), linked(draft()), names)
    assert isinstance(won, Update)
    assert {"op": "replace", "path": "/salesStage", "value": "Close"} in won.ops


def test_partners_are_never_sent_and_the_record_is_told() -> None:
    p2p = draft(deal_type=DealType.PARTNER_TO_PARTNER, partners=("P-1",))
    created = plan_outbound(p2p, None)
    assert isinstance(created, Create)
    assert created.body["type"] == "Independent" and created.body["target"] == []
    assert created.notice and "P-1" in created.notice and "Partner Center" in created.notice
    assert created.fingerprint == p2p.fingerprint()
    update = plan_outbound(replace(p2p, value=Decimal(5)), linked(draft()))
    assert isinstance(update, Update) and update.warning and "P-1" in update.warning
    assert [op["path"] for op in update.ops] == ["/details/dealValue"]


def test_a_renamed_deal_is_not_patched_and_the_record_says_why() -> None:
    old = draft()
    only_name = plan_outbound(draft(name="Renamed"), linked(old))
    assert isinstance(only_name, Skip) and only_name.reason is SkipReason.UNCHANGED
    assert only_name.notice and "the deal name" in only_name.notice
    both = plan_outbound(draft(name="Renamed", value=Decimal(7)), linked(old))
    assert isinstance(both, Update) and [op["path"] for op in both.ops] == ["/details/dealValue"]
    assert both.warning and "the deal name" in both.warning
    assert both.body["name"] == "Deal", "the base of the next comparison is what the core holds"


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
    link = linked(co_sell, core_facts={"microsoft_referral_id": "ms-1"})
    action = plan_outbound(draft(deal_type=DealType.PRIVATE, value=Decimal(5)), link)
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
    assert action.ops == [
        {
            "op": "replace",
            "path": "/consent/consentToShareReferralWithMicrosoftSellers",
            "value": True,
        }
    ]
    # the documented flow: Microsoft's own referral carries the help asked
    assert action.invite_microsoft and not action.warning
    assert action.body["inviteContext"] == {"assistanceRequestCode": "QuotesOrLicensing"}


def test_upgrading_by_consent_alone_says_the_help_asked_is_not_sent() -> None:
    action = plan_outbound(
        draft(deal_type=DealType.CO_SELL, assistance_code="QuotesOrLicensing"),
        linked(draft()),
        CoreOptions(co_sell_mode="consent_only"),
    )
    assert isinstance(action, Update) and not action.invite_microsoft
    assert action.warning and "the help asked of Microsoft" in action.warning


def test_a_co_sell_deal_whose_microsoft_referral_is_missing_invites_it_again() -> None:
    """A failed invitation leaves the link without a fingerprint: the next plan invites."""
    co_sell = draft(deal_type=DealType.CO_SELL, assistance_code="QuotesOrLicensing")
    missing = plan_outbound(co_sell, linked(co_sell, fingerprint=None))
    assert isinstance(missing, Update) and missing.ops == [] and missing.invite_microsoft
    known = linked(co_sell, fingerprint=None, core_facts={"microsoft_status": "New/Pending"})
    assert isinstance(plan_outbound(co_sell, known), Skip)


@pytest.mark.parametrize("substatus", ["Declined", "Expired"])
def test_a_declined_or_expired_deal_moved_to_lost_alone_agrees_with_the_core(
    substatus: str,
) -> None:
    """inbound.close moves the CRM record to a lost stage: only the stage changed, so the
    record agrees with the core and nothing is explained; any other change still is."""
    before = draft()
    link = linked(before, status="Closed", substatus=substatus, direction="Incoming")
    closed = plan_outbound(replace(before, stage=StandardStage.LOST), link)
    assert isinstance(closed, Skip) and closed.reason is SkipReason.TERMINAL
    assert closed.notice is None
    edited = plan_outbound(replace(before, stage=StandardStage.LOST, value=Decimal(5)), link)
    assert isinstance(edited, Skip) and edited.notice and "cannot be edited" in edited.notice
    lost = plan_outbound(
        replace(before, stage=StandardStage.LOST), linked(before, status="Closed", substatus="Won")
    )
    assert isinstance(lost, Skip) and lost.notice and "cannot be edited" in lost.notice
