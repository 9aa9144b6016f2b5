"""Who a deal is shared with, and what it is made of, in both CRMs (issue 20).

- ``deal_type.share_field``: shared with Microsoft's sellers without asking for help
  (LIVE-CR's "partner-led" deal);
- consent on partner-to-partner deals (the seed: the invited partner works with the
  customer), and what a private deal upgraded to partner-to-partner cannot change;
- solution kinds: the partner's own, Microsoft's and other partners' (RR's SolutionType);
- decline reasons picked from the mapped list.

Each test runs against the sandbox for Salesforce and for Dynamics 365.
"""

from __future__ import annotations

from seller import Seller

ALLY = "9f1c2d3e-0000-4000-8000-00000000a11e"
MS_CONSENT = "consentToShareReferralWithMicrosoftSellers"


def test_a_deal_shared_with_microsoft_without_help_is_partner_led(seller: Seller) -> None:
    world = seller.world
    world.core_settings(consent_invites_microsoft=False)  # only what the connector posts
    crm_id, referral = seller.synced(share=True)
    assert referral["consent"][MS_CONSENT] is True
    assert referral["type"] == "Independent" and referral["inviteContext"] is None
    assert world.microsoft_side(referral) is None, "no help asked: Microsoft is not invited"
    assert not seller.get(crm_id, "error")
    # a private deal shared later: the consent is patched (a documented path), once
    private, before = seller.synced()
    assert before["consent"][MS_CONSENT] is False
    seller.edit(private, share=True)
    world.sync()
    after = world.referral_of(private)
    assert after["consent"][MS_CONSENT] is True and after["inviteContext"] is None
    assert world.microsoft_side(after) is None
    assert not seller.get(private, "error")
    world.reset_stats()
    world.sync()
    assert world.calls().get("core", {}).get("PATCH", 0) == 0, "nothing sent twice"


def test_unticking_the_share_box_does_not_unshare_the_deal(seller: Seller) -> None:
    crm_id, _ = seller.synced(share=True)
    seller.edit(crm_id, share=False, amount=61000)
    seller.world.sync()
    referral = seller.world.referral_of(crm_id)
    assert referral["consent"][MS_CONSENT] is True
    assert float(referral["details"]["dealValue"]) == 61000
    assert referral["inviteContext"] is None, "still no help asked"
    assert "cannot be undone" in seller.get(crm_id, "error")


def test_a_partner_to_partner_deal_consents_to_sharing_with_others(seller: Seller) -> None:
    """The customer's information goes to the invited partner, not to Microsoft."""
    crm_id, referral = seller.synced(partners=ALLY)
    consent = referral["consent"]
    assert consent["consentToToShareInfoWithOthers"] is True
    assert consent["consentToContact"] is True
    assert consent[MS_CONSENT] is False
    assert "invite it in Partner Center" in seller.get(crm_id, "error")


def test_a_private_deal_upgraded_to_partner_to_partner_says_what_it_cannot_change(
    seller: Seller,
) -> None:
    """No documented PATCH path changes the customer's consents: the record says so."""
    crm_id, before = seller.synced()
    assert before["consent"]["consentToToShareInfoWithOthers"] is False
    seller.edit(crm_id, partners=ALLY)
    seller.world.reset_stats()
    seller.world.sync()
    assert seller.world.calls().get("core", {}).get("PATCH", 0) == 0, "nothing sendable changed"
    error = str(seller.get(crm_id, "error"))
    assert "the customer's consent to share its information with others" in error
    assert "the customer's consent to be contacted" in error
    assert ALLY in error and "invite it in Partner Center" in error


def test_solutions_of_each_kind_go_with_their_type(seller: Seller) -> None:
    seller.world.core_settings(consent_invites_microsoft=False)
    crm_id, referral = seller.synced(
        help="Proof of Concept or Demo",
        solutions="SOL-34104-EBB",
        microsoft_solutions="CloudMigration",
        third_party_solutions="SOL-55210-SEC",
    )
    items = {s["id"]: s["type"] for s in referral["details"]["requirements"]["solutions"]}
    assert items == {"SOL-34104-EBB": "Name", "CloudMigration": "Category", "SOL-55210-SEC": "Name"}
    # only the partner's own solution is the deal's target (its solution profile)
    assert referral["target"] == [{"type": "SolutionProfile", "id": "SOL-34104-EBB"}]
    side = seller.world.microsoft_side(referral)
    assert side is not None
    assert {s["id"] for s in side["details"]["requirements"]["solutions"]} == set(items)
    # a kind edited later is patched with its type
    seller.edit(crm_id, microsoft_solutions="CloudMigration;SAPonAzure")
    seller.world.sync()
    after = seller.world.referral_of(crm_id)["details"]["requirements"]["solutions"]
    assert {"id": "SAPonAzure", "type": "Category"} in [
        {"id": s["id"], "type": s["type"]} for s in after
    ]


def test_an_incoming_deals_solutions_land_in_the_field_of_their_kind(seller: Seller) -> None:
    world = seller.world
    incoming = world.send_incoming(
        "Microsoft",
        details={
            "requirements": {
                "solutions": [
                    {"id": "SOL-IP-10001-AZM", "type": "Name"},
                    {"id": "SAPonAzure", "type": "Category"},
                ]
            }
        },
    )
    world.sync()
    crm_id = seller.record_for(incoming["id"])
    assert seller.get(crm_id, "solutions") == "SOL-IP-10001-AZM"
    assert seller.get(crm_id, "microsoft_solutions") == "SAPonAzure"
    seller.accept(crm_id)
    world.sync()
    referral = world.referral(incoming["id"])
    assert referral["status"] == "Active"
    kinds = {s["id"]: s["type"] for s in referral["details"]["requirements"]["solutions"]}
    assert kinds == {"SOL-IP-10001-AZM": "Name", "SAPonAzure": "Category"}


def test_the_seller_picks_the_decline_reason_from_the_mapped_list(seller: Seller) -> None:
    world = seller.world
    incoming = world.send_incoming("Partner")
    world.sync()
    crm_id = seller.record_for(incoming["id"])
    seller.decline(crm_id, "Other")
    world.sync()
    referral = world.referral(incoming["id"])
    assert (referral["status"], referral["substatus"]) == ("Closed", "Declined")
    # the mapping words the picked reason for Partner Center
    assert referral["statusReason"] == "Declined for another reason"
    assert seller.get(crm_id, "status") == "Closed/Declined"
