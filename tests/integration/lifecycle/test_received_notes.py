"""Notes Microsoft and other partners write reach the CRM, and nothing echoes (issue 20)."""

from __future__ import annotations

from seller import Seller

CO_SELL = {"help": "Proof of Concept or Demo"}


def core_writes(seller: Seller) -> int:
    core = seller.world.calls().get("core", {})
    return int(core.get("POST", 0) + core.get("PATCH", 0))


def test_microsofts_notes_are_mirrored_and_the_crms_own_never_come_back(seller: Seller) -> None:
    world = seller.world
    world.core_settings(consent_invites_microsoft=False)
    crm_id, referral = seller.synced(description="Our own plan: pilot in May", **CO_SELL)
    assert referral["details"]["notes"] == "Our own plan: pilot in May"
    assert world.microsoft_side(referral) is not None
    assert not seller.get(crm_id, "received_notes"), "the CRM's own notes never come back"
    world.admin.post(
        f"/_sandbox/core/microsoft/{referral['id']}/notes",
        json={"notes": "Customer wants a proof of concept in June"},
    ).raise_for_status()
    world.sync()
    assert seller.get(crm_id, "received_notes") == (
        "Microsoft: Customer wants a proof of concept in June"
    )
    # no echo: the mirrored notes are never sent to the core, nor written again
    world.reset_stats()
    world.sync()
    world.sync()
    assert core_writes(seller) == 0 and seller.write_calls() == 0
    assert world.referral_of(crm_id)["details"]["notes"] == "Our own plan: pilot in May"
    # the seller's own notes still go out, and leave Microsoft's where they are
    seller.edit(crm_id, description="Pilot moved to June")
    world.sync()
    assert world.referral_of(crm_id)["details"]["notes"] == "Pilot moved to June"
    assert seller.get(crm_id, "received_notes") == (
        "Microsoft: Customer wants a proof of concept in June"
    )


def test_the_senders_message_on_an_incoming_deal_is_mirrored(seller: Seller) -> None:
    world = seller.world
    incoming = world.send_incoming(
        "Partner",
        inviteContext={"notes": "We need your data platform team for this one."},
    )
    world.sync()
    crm_id = seller.record_for(incoming["id"])
    sender = incoming["inviteContext"]["invitedBy"]["organizationName"]
    assert seller.get(crm_id, "received_notes") == (
        f"{sender}: We need your data platform team for this one."
    )
    seller.accept(crm_id)
    world.sync()
    world.reset_stats()
    world.sync()
    assert core_writes(seller) == 0, "the sender's message is never sent back"
    assert seller.get(crm_id, "received_notes") == (
        f"{sender}: We need your data platform team for this one."
    )
