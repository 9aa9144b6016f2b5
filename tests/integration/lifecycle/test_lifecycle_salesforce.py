"""The seed's co-sell lifecycle, end to end over HTTPS: Salesforce (sandbox) ↔ core (sandbox).

One test per rule of "Manage co-sell opportunities" (the seed): deal types, the
invitation combinations table, the inbound received/accepted/declined/expired
stages, the sales stages and their percentages, won/lost, deal registration and
terminal immutability. Expectations come from the seed and the sandbox's records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from lifecycle_world import LifecycleWorld

from connector.crm.salesforce import SalesforceOpportunities
from connector.sync.pullback import PullBack, is_microsoft
from connector.sync.tuning import Tuning

ALLY = "9f1c2d3e-0000-4000-8000-00000000a11e"
ALLY_2 = "9f1c2d3e-0000-4000-8000-00000000a12e"
CO_SELL = {"How_can_Microsoft_help__c": "Proof of Concept or Demo"}
IP_SOLUTION = "SOL-IP-10001-AZM"


def partner_targets(referral: dict[str, Any]) -> list[str]:
    """Targets naming a partner: none ever (no documented target type names a partner)."""
    return [t["id"] for t in referral.get("target") or [] if t["id"] in (ALLY, ALLY_2)]


def partner_notice(world: LifecycleWorld, crm_id: str, *partners: str) -> str:
    error = str(world.opportunity(crm_id)["CoSell_Sync_Error__c"] or "")
    assert all(p in error for p in partners) and "invite it in Partner Center" in error, error
    return error


def inbound_notice(world: LifecycleWorld, crm_id: str, *partners: str) -> str:
    """The seed's combinations: partners cannot be invited to a deal in the Inbound tab."""
    error = str(world.opportunity(crm_id)["CoSell_Sync_Error__c"] or "")
    assert all(p in error for p in partners), error
    assert "cannot be invited to a deal received" in error, error
    return error


def core_writes(world: LifecycleWorld) -> int:
    core = world.calls().get("core", {})
    return int(core.get("POST", 0) + core.get("PATCH", 0))


def synced(world: LifecycleWorld, **values: Any) -> tuple[str, dict[str, Any]]:
    """A new opportunity, synced: its id and its referral."""
    crm_id = world.new_deal(**values)
    world.sync()
    return crm_id, world.referral_of(crm_id)


# --------------------------------------------------------------------------- deal types


def test_private_deal_is_independent_and_invisible_to_microsoft(world: LifecycleWorld) -> None:
    crm_id, referral = synced(world)
    assert referral["type"] == "Independent"
    assert referral["consent"]["consentToShareReferralWithMicrosoftSellers"] is False
    assert referral["inviteContext"] is None and partner_targets(referral) == []
    assert world.microsoft_side(referral) is None
    opp = world.opportunity(crm_id)
    assert opp["CoSell_Microsoft_Status__c"] == "Not invited"
    assert opp["CoSell_Registration_Eligible__c"] is False


def test_co_sell_deal_invites_microsoft_with_the_help_asked(world: LifecycleWorld) -> None:
    crm_id, referral = synced(world, **CO_SELL)
    assert referral["type"] == "Shared"
    assert referral["consent"]["consentToShareReferralWithMicrosoftSellers"] is True
    assert referral["inviteContext"]["assistanceRequestCode"] == "ProofOfConceptOrDemo"
    assert referral["customerProfile"]["team"], "co-sell needs a customer contact"
    side = world.microsoft_side(referral)
    assert side is not None and (side["status"], side["substatus"]) == ("New", "Pending")
    assert world.opportunity(crm_id)["CoSell_Microsoft_Status__c"] == "New/Pending"


def test_co_sell_without_a_customer_contact_is_refused_with_its_reason(
    world: LifecycleWorld,
) -> None:
    crm_id = world.new_deal(Primary_Contact__c=None, **CO_SELL)
    world.sync()
    assert not [r for r in world.all_referrals() if r.get("externalReferenceId") == crm_id]
    assert "customer contact" in world.opportunity(crm_id)["CoSell_Sync_Error__c"]


def test_an_invited_partner_is_not_sent_and_the_record_says_why(world: LifecycleWorld) -> None:
    """Partner Center's API documents no target type for a partner organisation: the deal
    is shared with nobody, and the seller is told to invite the partner in Partner Center."""
    crm_id, referral = synced(world, CoSell_Invite_Partner__c=ALLY)
    assert referral["type"] == "Independent" and referral["target"] == []
    assert partner_targets(referral) == [] and ALLY not in str(referral)
    assert world.microsoft_side(referral) is None
    partner_notice(world, crm_id, ALLY)


# ------------------------------------------------------------ the combinations table


@pytest.mark.parametrize("consent_invites", [True, False])
def test_private_deal_invites_microsoft_and_is_upgraded_to_co_sell(
    world: LifecycleWorld, consent_invites: bool
) -> None:
    """The upgrade patches the consent (a documented path) and, in the documented
    two-referral flow, creates Microsoft's referral in the deal's engagement unless the
    core already made one on the consent: never two."""
    world.core_settings(consent_invites_microsoft=consent_invites)
    crm_id, referral = synced(world)
    world.reset_stats()
    world.edit(crm_id, **CO_SELL)
    world.sync()
    referral = world.referral_of(crm_id)
    assert referral["consent"]["consentToShareReferralWithMicrosoftSellers"] is True
    side = world.microsoft_side(referral)
    assert side is not None and (side["status"], side["substatus"]) == ("New", "Pending")
    engaged = [r for r in world.all_referrals() if r["engagementId"] == referral["engagementId"]]
    assert len(engaged) == 2, "the deal and one Microsoft referral"
    if not consent_invites:  # posted by the connector: CR20's second step
        assert side["target"] == [{"type": "BusinessProfileLocation", "id": "msft"}]
        assert side["inviteContext"]["assistanceRequestCode"] == "ProofOfConceptOrDemo"
        assert world.calls()["core"]["POST"] == 1
    assert world.opportunity(crm_id)["CoSell_Microsoft_Status__c"] == "New/Pending"
    assert not world.opportunity(crm_id)["CoSell_Sync_Error__c"]


def test_co_sell_in_two_referrals_when_the_consent_invites_nobody(world: LifecycleWorld) -> None:
    world.core_settings(consent_invites_microsoft=False)
    crm_id, referral = synced(world, **CO_SELL)
    assert referral["target"] == [{"type": "SolutionProfile", "id": "SOL-34104-EBB"}]
    side = world.microsoft_side(referral)
    assert side is not None
    assert side["target"] == [{"type": "BusinessProfileLocation", "id": "msft"}]
    assert side.get("externalReferenceId") is None
    assert world.opportunity(crm_id)["CoSell_Microsoft_Status__c"] == "New/Pending"
    world.reset_stats()
    world.sync()
    assert core_writes(world) == 0, "nothing posted twice"


@pytest.mark.parametrize("start", ["private", "co-sell"])
def test_inviting_a_partner_later_is_explained_not_sent(world: LifecycleWorld, start: str) -> None:
    crm_id, _ = synced(world, **(CO_SELL if start == "co-sell" else {}))
    world.edit(crm_id, CoSell_Invite_Partner__c=ALLY)
    world.reset_stats()
    world.sync()
    assert core_writes(world) == 0, "nothing else changed: nothing to send"
    referral = world.referral_of(crm_id)
    assert partner_targets(referral) == []
    assert (referral["inviteContext"] is not None) is (start == "co-sell")
    partner_notice(world, crm_id, ALLY)


def test_partners_are_never_invited_to_an_inbound_co_sell_deal(world: LifecycleWorld) -> None:
    incoming = world.send_incoming("Microsoft")
    world.sync()
    opp = world.opportunity_for(incoming["id"])
    world.edit(opp["Id"], CoSell_Action__c="Accept")
    world.sync()
    world.sync()  # settle the echo of the accept
    world.edit(opp["Id"], CoSell_Invite_Partner__c=ALLY)
    world.reset_stats()
    world.sync()
    assert world.calls().get("core", {}).get("PATCH", 0) == 0, "refused before the core"
    referral = world.referral(incoming["id"])
    assert partner_targets(referral) == []
    inbound_notice(world, opp["Id"], ALLY)
    # other changes of the same deal still go through, the refusal stays explained
    world.edit(opp["Id"], Amount=777000)
    world.sync()
    assert Decimal(str(world.referral(incoming["id"])["details"]["dealValue"])) == 777000
    assert partner_targets(world.referral(incoming["id"])) == []
    inbound_notice(world, opp["Id"], ALLY)


def test_a_deal_with_a_partner_invites_microsoft_and_is_upgraded_to_co_sell(
    world: LifecycleWorld,
) -> None:
    crm_id, _ = synced(world, CoSell_Invite_Partner__c=ALLY)
    world.edit(crm_id, **CO_SELL)
    world.sync()
    referral = world.referral_of(crm_id)
    assert referral["consent"]["consentToShareReferralWithMicrosoftSellers"] is True
    assert world.microsoft_side(referral) is not None
    assert partner_targets(referral) == []
    partner_notice(world, crm_id, ALLY)


def test_a_renamed_deal_keeps_its_name_and_the_record_says_why(world: LifecycleWorld) -> None:
    """/name is not among the paths the API lets a partner patch (the certified
    connector's definition): the other changes go, the name is explained."""
    crm_id, referral = synced(world)
    world.edit(crm_id, Name="Renamed in the CRM", Amount=64000)
    world.sync()
    after = world.referral_of(crm_id)
    assert after["name"] == referral["name"]
    assert Decimal(str(after["details"]["dealValue"])) == 64000
    assert "the deal name" in world.opportunity(crm_id)["CoSell_Sync_Error__c"]


def test_sharing_with_microsoft_is_never_undone(world: LifecycleWorld) -> None:
    crm_id, _ = synced(world, **CO_SELL)
    world.edit(crm_id, How_can_Microsoft_help__c="None", Amount=61000)
    world.sync()
    referral = world.referral_of(crm_id)
    assert referral["consent"]["consentToShareReferralWithMicrosoftSellers"] is True
    assert Decimal(str(referral["details"]["dealValue"])) == 61000
    assert "cannot be undone" in world.opportunity(crm_id)["CoSell_Sync_Error__c"]


# ---------------------------------------------------------------- incoming deals


def test_incoming_referral_is_received_as_an_on_hold_opportunity(world: LifecycleWorld) -> None:
    incoming = world.send_incoming("Microsoft")
    world.sync()
    opp = world.opportunity_for(incoming["id"])
    details = incoming["details"]
    assert opp["StageName"] == "Prospecting"  # the mapping's "on hold" stage
    assert opp["Name"] == incoming["name"][:120]
    assert Decimal(str(opp["Amount"])) == Decimal(str(details["dealValue"]))
    assert opp["CurrencyIsoCode"] == details["currency"]
    assert opp["CloseDate"] == details["closingDateTime"][:10]
    assert opp["CoSell_Solutions__c"] == details["requirements"]["solutions"][0]["id"]
    assert opp["Sync_with_Partner_Center__c"] is True
    assert opp["CoSell_Status__c"] == "New/Pending"
    assert opp["CoSell_Direction__c"] == "Incoming"
    assert opp["CoSell_Days_To_Expiry__c"] == 14
    assert opp["CoSell_Microsoft_Status__c"] == "Active/Accepted"  # Microsoft sent it
    assert incoming["id"] in opp["Referral_Link__c"]
    # nothing is pushed while the deal waits for an answer, and nothing is created twice
    world.reset_stats()
    world.sync()
    world.sync()
    assert core_writes(world) == 0
    assert len(world.opportunities(Referral_Identifier__c=incoming["id"])) == 1
    assert world.referral(incoming["id"])["status"] == "New"


def test_microsofts_side_listed_apart_from_its_deal_still_reaches_the_record(
    world: LifecycleWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One referral per mirrored batch, Microsoft's sides listed first: an incoming deal
    comes in a later batch than Microsoft's side of it, as does a linked deal."""
    world.tuning = Tuning(mirror_batch=1)
    listed = PullBack._changed_referrals

    def microsoft_first(self: Any, *args: Any) -> Iterator[Any]:
        return iter(sorted(listed(self, *args), key=lambda r: not is_microsoft(r)))

    monkeypatch.setattr(PullBack, "_changed_referrals", microsoft_first)
    outgoing, referral = synced(world, **CO_SELL)
    incoming = world.send_incoming("Microsoft")
    world.microsoft(referral["id"], "accept")
    world.sync()
    assert world.opportunity_for(incoming["id"])["CoSell_Microsoft_Status__c"] == "Active/Accepted"
    assert world.opportunity(outgoing)["CoSell_Microsoft_Status__c"] == "Active/Accepted"
    world.microsoft(incoming["id"], "win")
    world.sync()
    assert world.opportunity_for(incoming["id"])["CoSell_Microsoft_Status__c"] == "Closed/Won"


def test_incoming_from_a_partner_is_received_too(world: LifecycleWorld) -> None:
    incoming = world.send_incoming("Partner")
    world.sync()
    opp = world.opportunity_for(incoming["id"])
    assert opp["CoSell_Status__c"] == "New/Pending"
    assert opp["CoSell_Microsoft_Status__c"] == "Not invited"


def test_incoming_referrals_are_not_created_when_the_mapping_says_no(
    world: LifecycleWorld,
) -> None:
    text = world.config_path.read_text()
    mapping = next(line.split(": ", 1)[1] for line in text.splitlines() if "mapping:" in line)
    path = world.config_path.parent / mapping.strip().split("/")[-1]
    path.write_text(
        path.read_text().replace("create_opportunities: true", "create_opportunities: false")
    )
    incoming = world.send_incoming("Microsoft")
    report = world.sync()
    assert world.opportunities(Referral_Identifier__c=incoming["id"]) == []
    assert report.skipped["incoming_not_linked"] >= 1


def test_a_crash_between_the_crm_create_and_the_link_creates_no_duplicate(
    world: LifecycleWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = [world.send_incoming("Microsoft") for _ in range(3)]
    real = SalesforceOpportunities.create_opportunities

    def crashing(self: SalesforceOpportunities, items: Any) -> Any:
        real(self, items)
        raise SystemExit("simulated crash after the CRM create, before the link is saved")

    monkeypatch.setattr(SalesforceOpportunities, "create_opportunities", crashing)
    with pytest.raises(SystemExit):
        world.sync()
    monkeypatch.setattr(SalesforceOpportunities, "create_opportunities", real)
    world.sync()
    counts = Counter(o["Referral_Identifier__c"] for o in world.opportunities())
    for incoming in sent:
        assert counts[incoming["id"]] == 1
        opp = world.opportunity_for(incoming["id"])
        assert opp["CoSell_Status__c"] == "New/Pending"


def test_accepting_with_the_action_field_activates_the_referral(world: LifecycleWorld) -> None:
    incoming = world.send_incoming("Microsoft")
    world.sync()
    opp = world.opportunity_for(incoming["id"])
    world.edit(opp["Id"], CoSell_Action__c="Accept")
    world.sync()
    referral = world.referral(incoming["id"])
    assert (referral["status"], referral["substatus"], referral["salesStage"]) == (
        "Active",
        "Accepted",
        "10",
    )
    assert referral["externalReferenceId"] == opp["Id"]
    assert referral["team"], "the seller is on the deal's team"
    after = world.opportunity(opp["Id"])
    assert after["CoSell_Status__c"] == "Active/Accepted"
    assert after["CoSell_Days_To_Expiry__c"] is None
    assert not after["CoSell_Sync_Error__c"]


def test_leaving_the_on_hold_stage_accepts_and_reports_the_stage(world: LifecycleWorld) -> None:
    incoming = world.send_incoming("Partner")
    world.sync()
    opp = world.opportunity_for(incoming["id"])
    world.edit(opp["Id"], StageName="Value Proposition")
    world.sync()
    referral = world.referral(incoming["id"])
    assert (referral["status"], referral["substatus"]) == ("Active", "Accepted")
    assert referral["salesStage"] == "40"


def test_declining_needs_a_reason_and_closes_the_referral_declined(world: LifecycleWorld) -> None:
    incoming = world.send_incoming("Microsoft")
    world.sync()
    opp = world.opportunity_for(incoming["id"])
    world.edit(opp["Id"], CoSell_Action__c="Decline")
    world.reset_stats()
    world.sync()
    assert world.calls().get("core", {}).get("PATCH", 0) == 0
    assert world.referral(incoming["id"])["status"] == "New"
    assert "reason" in world.opportunity(opp["Id"])["CoSell_Sync_Error__c"]
    world.edit(opp["Id"], CoSell_Decline_Reason__c="No capacity this quarter")
    world.sync()
    referral = world.referral(incoming["id"])
    assert (referral["status"], referral["substatus"]) == ("Closed", "Declined")
    assert referral["statusReason"] == "No capacity this quarter"
    after = world.opportunity(opp["Id"])
    assert after["CoSell_Status__c"] == "Closed/Declined"
    assert not after["CoSell_Sync_Error__c"]


def test_an_unanswered_incoming_deal_expires_after_14_days(world: LifecycleWorld) -> None:
    incoming = world.send_incoming("Microsoft")
    world.sync()
    world.advance(13)
    world.sync()
    assert world.opportunity_for(incoming["id"])["CoSell_Status__c"] == "New/Pending"
    world.advance(2)
    world.sync()
    opp = world.opportunity_for(incoming["id"])
    assert opp["CoSell_Status__c"] == "Closed/Expired"
    assert opp["CoSell_Days_To_Expiry__c"] is None
    # a late accept is not sent, and the seller is told why
    world.edit(opp["Id"], CoSell_Action__c="Accept")
    world.reset_stats()
    world.sync()
    assert core_writes(world) == 0
    assert world.referral(incoming["id"])["substatus"] == "Expired"
    assert "can no longer be accepted" in world.opportunity(opp["Id"])["CoSell_Sync_Error__c"]


# ------------------------------------------------------------ sales stages, won, lost


def test_sales_stages_carry_the_seed_percentages(world: LifecycleWorld) -> None:
    crm_id, referral = synced(world)
    assert referral["salesStage"] == "10"  # Created
    for stage, percent in (
        ("Qualification", "20"),
        ("Value Proposition", "40"),
        ("Proposal/Price Quote", "60"),
        ("Negotiation/Review", "80"),
    ):
        world.edit(crm_id, StageName=stage)
        world.sync()
        referral = world.referral_of(crm_id)
        assert referral["salesStage"] == percent, stage
        assert (referral["status"], referral["substatus"]) == ("Active", "Accepted")
    world.edit(crm_id, StageName="Closed Won")
    world.sync()
    referral = world.referral_of(crm_id)
    assert (referral["status"], referral["substatus"], referral["salesStage"]) == (
        "Closed",
        "Won",
        "100",
    )


def test_won_and_lost_close_the_referral(world: LifecycleWorld) -> None:
    won, _ = synced(world, StageName="Negotiation/Review")
    lost = world.new_deal(StageName="Qualification")
    world.sync()
    world.edit(won, StageName="Closed Won")
    world.edit(lost, StageName="Closed Lost")
    report = world.sync()
    assert report.closed == 2
    assert (world.referral_of(won)["status"], world.referral_of(won)["substatus"]) == (
        "Closed",
        "Won",
    )
    assert world.referral_of(lost)["substatus"] == "Lost"
    assert world.opportunity(won)["CoSell_Status__c"] == "Closed/Won"
    assert world.opportunity(lost)["CoSell_Status__c"] == "Closed/Lost"


# --------------------------------------------------------------- Microsoft's side


def test_microsoft_status_is_mirrored_through_its_answers(world: LifecycleWorld) -> None:
    accepted, r_accepted = synced(world, **CO_SELL)
    declined = world.new_deal(**CO_SELL)
    won = world.new_deal(**CO_SELL)
    expired = world.new_deal(**CO_SELL)
    world.sync()
    for crm_id in (accepted, declined, won, expired):
        assert world.opportunity(crm_id)["CoSell_Microsoft_Status__c"] == "New/Pending"
    world.microsoft(r_accepted["id"], "accept")
    world.microsoft(world.referral_of(declined)["id"], "decline")
    world.microsoft(world.referral_of(won)["id"], "win")
    world.sync()
    assert world.opportunity(accepted)["CoSell_Microsoft_Status__c"] == "Active/Accepted"
    assert world.opportunity(declined)["CoSell_Microsoft_Status__c"] == "Closed/Declined"
    assert world.opportunity(won)["CoSell_Microsoft_Status__c"] == "Closed/Won"
    world.advance(15)
    world.sync()
    assert world.opportunity(expired)["CoSell_Microsoft_Status__c"] == "Closed/Expired"
    # the partner's own deal is not Microsoft's: it stays active
    assert world.opportunity(expired)["CoSell_Status__c"] == "Active/Accepted"


# --------------------------------------------------------------- deal registration


def won_and_asked_to_register(world: LifecycleWorld, crm_id: str) -> dict[str, Any]:
    world.edit(crm_id, StageName="Closed Won", CoSell_Register_Deal__c=True)
    world.sync()
    return world.referral_of(crm_id)


@pytest.mark.parametrize("answer", ["accept", "win"])
def test_a_won_eligible_deal_is_registered_and_its_review_mirrored(
    world: LifecycleWorld, answer: str
) -> None:
    crm_id, referral = synced(world, CoSell_Solutions__c=IP_SOLUTION, **CO_SELL)
    world.microsoft(referral["id"], answer)
    world.sync()
    assert world.opportunity(crm_id)["CoSell_Registration_Eligible__c"] is True
    referral = won_and_asked_to_register(world, crm_id)
    assert referral["substatus"] == "Won"
    assert referral["registrationStatus"] == "ReviewPending"
    assert len(referral["registrations"]) == 1
    opp = world.opportunity(crm_id)
    assert opp["CoSell_Registration_Status__c"] == "ReviewPending"
    assert opp["CoSell_Register_Deal__c"] is False, "the request is consumed"
    assert not opp["CoSell_Sync_Error__c"]
    world.review_registration(referral["id"], "approve")
    world.sync()
    assert world.opportunity(crm_id)["CoSell_Registration_Status__c"] == "Approved"
    assert len(world.referral_of(crm_id)["registrations"]) == 1


def test_registration_needs_microsoft_invited_and_never_applies_to_private_deals(
    world: LifecycleWorld,
) -> None:
    crm_id, _ = synced(world, CoSell_Solutions__c=IP_SOLUTION)
    referral = won_and_asked_to_register(world, crm_id)
    assert referral["registrationStatus"] == "None" and referral["registrations"] == []
    opp = world.opportunity(crm_id)
    assert opp["CoSell_Registration_Eligible__c"] is False
    assert "Microsoft is not invited" in opp["CoSell_Sync_Error__c"]


def test_registration_needs_microsoft_to_accept_or_win(world: LifecycleWorld) -> None:
    crm_id, _ = synced(world, CoSell_Solutions__c=IP_SOLUTION, **CO_SELL)
    referral = won_and_asked_to_register(world, crm_id)
    assert referral["registrationStatus"] == "None"
    opp = world.opportunity(crm_id)
    assert opp["CoSell_Registration_Eligible__c"] is False
    assert "Microsoft has not accepted" in opp["CoSell_Sync_Error__c"]


def test_registration_needs_an_incentive_eligible_solution(world: LifecycleWorld) -> None:
    crm_id, referral = synced(world, CoSell_Solutions__c="SOL-34104-EBB", **CO_SELL)
    world.microsoft(referral["id"], "accept")
    world.sync()
    referral = won_and_asked_to_register(world, crm_id)
    assert referral["registrationStatus"] == "None"
    opp = world.opportunity(crm_id)
    assert opp["CoSell_Registration_Eligible__c"] is False
    assert "incentive-eligible" in opp["CoSell_Sync_Error__c"]


# ------------------------------------------------------------ terminal is terminal


@pytest.mark.parametrize("end", ["declined", "expired", "won"])
def test_a_terminal_incoming_deal_is_never_patched_and_the_crm_says_why(
    world: LifecycleWorld, end: str
) -> None:
    incoming = world.send_incoming("Microsoft")
    world.sync()
    opp = world.opportunity_for(incoming["id"])
    if end == "declined":
        world.edit(opp["Id"], CoSell_Action__c="Decline", CoSell_Decline_Reason__c="Not a fit")
    elif end == "won":
        world.edit(opp["Id"], CoSell_Action__c="Accept")
        world.sync()
        world.edit(opp["Id"], StageName="Closed Won")
    else:
        world.advance(15)
    world.sync()
    world.sync()  # settle the echo
    status = world.opportunity(opp["Id"])["CoSell_Status__c"]
    assert status == f"Closed/{end.capitalize()}"
    before = world.referral(incoming["id"])
    world.edit(opp["Id"], Amount=424242, Description="changed after the end")
    world.reset_stats()
    world.sync()
    assert world.calls().get("core", {}).get("PATCH", 0) == 0
    assert world.referral(incoming["id"])["eTag"] == before["eTag"]
    assert "cannot be edited" in world.opportunity(opp["Id"])["CoSell_Sync_Error__c"]


def test_a_deal_closed_behind_the_connectors_back_is_read_terminal_after_the_refusal(
    world: LifecycleWorld,
) -> None:
    """The core refuses the patch of a closed deal with a plain 400 (no published code
    says "closed"): the connector reads the referral, finds it Closed and records it
    terminal, instead of dead-lettering the record. (Closed in place, its eTag kept: a
    changed eTag would be a 412, the other way to the same re-read.)"""
    crm_id, referral = synced(world)
    world.sb.part("core").store.records[referral["id"]].update(status="Closed", substatus="Lost")
    world.edit(crm_id, Amount=99000)
    world.reset_stats()
    report = world.sync()
    assert report.failed == {} and report.skipped["terminal"] == 1
    assert world.calls()["core"]["PATCH"] == 1  # refused once, then read, never retried
    opp = world.opportunity(crm_id)
    assert opp["CoSell_Status__c"] == "Closed/Lost"
    world.edit(crm_id, Amount=98000)
    world.reset_stats()
    world.sync()
    assert world.calls().get("core", {}).get("PATCH", 0) == 0, "terminal is terminal"
    assert "cannot be edited" in world.opportunity(crm_id)["CoSell_Sync_Error__c"]


def test_an_answer_to_a_deal_that_expired_unseen_is_read_back_not_retried(
    world: LifecycleWorld,
) -> None:
    """The deal expires in the core before the connector has seen it: the accept is
    refused (400), the referral read, and the seller told it can no longer be answered."""
    incoming = world.send_incoming("Microsoft")
    world.sync()
    opp = world.opportunity_for(incoming["id"])
    # expired in the core (in place, its eTag kept); the next cycle answers before it reads
    world.sb.part("core").store.records[incoming["id"]].update(status="Closed", substatus="Expired")
    world.edit(opp["Id"], CoSell_Action__c="Accept")
    report = world.sync()
    assert report.failed == {}
    assert world.referral(incoming["id"])["substatus"] == "Expired"
    after = world.opportunity(opp["Id"])
    assert after["CoSell_Status__c"] == "Closed/Expired"
    assert "can no longer be answered" in after["CoSell_Sync_Error__c"]
