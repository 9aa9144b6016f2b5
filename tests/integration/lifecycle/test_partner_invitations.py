"""What an invited partner is told on a partner-to-partner deal, and how it goes (issue 20).

By default (``core.partner_invitations: explain``) nothing is sent: no documented target
type names a partner organisation, so the record tells the seller whom to invite in
Partner Center and with what. Opted in (``engagement_referral``), each partner gets a
referral in the deal's engagement targeting its business profile location, with its own
close date, value, currency, notes, solutions, help asked and the deal's team, once.
"""

from __future__ import annotations

from typing import Any

from seller import Seller

ALLY = "9f1c2d3e-0000-4000-8000-00000000a11e"
ALLY_2 = "9f1c2d3e-0000-4000-8000-00000000a12e"
DETAILS = {
    "partner_close_date": "2027-01-31",
    "partner_value": 20000,
    "partner_currency": "EUR",
    "partner_notes": "Bring your data platform team",
    "partner_solutions": "SOL-55210-SEC",
    "partner_help": "Proof of Concept or Demo",
}


def invitations(seller: Seller, referral: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Referrals of the deal's engagement that target one of the test's partners, by id."""
    found: dict[str, dict[str, Any]] = {}
    for other in seller.world.all_referrals():
        if other["engagementId"] != referral["engagementId"] or other["id"] == referral["id"]:
            continue
        for target in other.get("target") or []:
            if target["type"] == "BusinessProfileLocation" and target["id"] in (ALLY, ALLY_2):
                found[target["id"]] = other
    return found


def test_by_default_the_record_tells_whom_to_invite_and_with_what(seller: Seller) -> None:
    crm_id, referral = seller.synced(partners=ALLY, **DETAILS)
    assert invitations(seller, referral) == {}
    error = str(seller.get(crm_id, "error"))
    assert f"inviting partner {ALLY} (close date 2027-01-31; value 20,000 EUR;" in error
    assert "solutions SOL-55210-SEC; help asked: ProofOfConceptOrDemo" in error
    assert "invite it in Partner Center" in error


def opt_in(seller: Seller) -> None:
    config = seller.world.config_path
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace(
            "      concurrency: 4\n",
            "      concurrency: 4\n      partner_invitations: engagement_referral\n",
        ),
        encoding="utf-8",
    )


def test_opted_in_each_partner_gets_its_details_once(seller: Seller) -> None:
    opt_in(seller)
    world = seller.world
    crm_id, referral = seller.synced(partners=ALLY, **DETAILS)
    found = invitations(seller, referral)
    assert set(found) == {ALLY}
    invitation = found[ALLY]
    details = invitation["details"]
    assert float(details["dealValue"]) == 20000 and details["currency"] == "EUR"
    assert details["closingDateTime"].startswith("2027-01-31")
    assert [s["id"] for s in details["requirements"]["solutions"]] == ["SOL-55210-SEC"]
    assert invitation["inviteContext"]["assistanceRequestCode"] == "ProofOfConceptOrDemo"
    assert invitation["inviteContext"]["notes"] == "Bring your data platform team"
    assert {m["email"] for m in invitation["team"]} == {m["email"] for m in referral["team"]}
    assert invitation.get("externalReferenceId") is None
    assert not seller.get(crm_id, "error")
    # the deal itself is the partner's own: unchanged, consenting to share with others
    assert world.referral_of(crm_id)["consent"]["consentToToShareInfoWithOthers"] is True
    world.reset_stats()
    world.sync()
    assert world.calls().get("core", {}).get("POST", 0) == 0, "never invited twice"
    # a second partner invited later gets its own referral; the first is not posted again
    seller.edit(crm_id, partners=f"{ALLY};{ALLY_2}")
    world.reset_stats()
    world.sync()
    assert set(invitations(seller, referral)) == {ALLY, ALLY_2}
    assert world.calls()["core"].get("POST", 0) == 1


def test_opted_in_a_deal_received_is_never_shared_with_a_partner(seller: Seller) -> None:
    opt_in(seller)
    world = seller.world
    incoming = world.send_incoming("Microsoft")
    world.sync()
    crm_id = seller.record_for(incoming["id"])
    seller.accept(crm_id)
    world.sync()
    seller.edit(crm_id, partners=ALLY)
    world.reset_stats()
    world.sync()
    assert world.calls().get("core", {}).get("POST", 0) == 0
    assert invitations(seller, world.referral(incoming["id"])) == {}
    assert "cannot be invited to a deal received" in str(seller.get(crm_id, "error"))
