"""Which notes come back to the CRM (connector.sync.notes): others', never the CRM's own."""

from __future__ import annotations

from connector.sync.notes import (
    MAX_RECEIVED_NOTES,
    has_notes,
    microsoft_notes,
    received_notes,
    sender_notes,
)

OURS = {"details": {"notes": "Our plan"}, "inviteContext": {"notes": "Help with the POC"}}


def test_microsofts_copy_of_our_notes_is_not_theirs() -> None:
    assert microsoft_notes(OURS, OURS) is None
    theirs = {"details": {"notes": "Seller assigned\x9b"}, "inviteContext": OURS["inviteContext"]}
    assert microsoft_notes(theirs, OURS) == "Microsoft: Seller assigned"


def test_the_senders_message_names_the_sender() -> None:
    incoming = {
        "direction": "Incoming",
        "inviteContext": {"notes": " Call Ana ", "invitedBy": {"organizationName": "Ally Ltd"}},
    }
    assert sender_notes(incoming) == "Ally Ltd: Call Ana"
    assert sender_notes({**incoming, "direction": "Outgoing"}) is None
    assert sender_notes({"direction": "Incoming", "inviteContext": {"notes": "x"}}) == (
        "The sender: x"
    )


def test_a_referral_without_its_body_has_unknown_notes_not_none() -> None:
    assert not has_notes({"id": "r", "status": "New"})
    assert has_notes({"details": {}})


def test_received_notes_are_joined_and_bounded() -> None:
    assert received_notes(None, None) is None
    assert received_notes("A: a", "Microsoft: m") == "A: a\n\nMicrosoft: m"
    long = received_notes("A: " + "x" * 5000, None)
    assert long is not None and len(long) == MAX_RECEIVED_NOTES and long.endswith("…")


def test_microsofts_copy_of_our_old_notes_stays_ours_after_we_change_them() -> None:
    from dataclasses import replace

    from connector.model import ReferralState, Status
    from connector.sync.mirror import CoreFacts, with_microsoft

    microsoft = ReferralState("ms", "e", None, Status.NEW, None, "Incoming", None, raw=dict(OURS))
    facts = with_microsoft(CoreFacts("r", "Active", "Accepted", "Outgoing", "x"), microsoft, OURS)
    assert facts.microsoft_notes is None and facts.microsoft_copy == [
        "Our plan",
        "Help with the POC",
    ]
    changed = {**OURS, "details": {"notes": "Our new plan"}}
    again = with_microsoft(facts, microsoft, changed)
    assert again.microsoft_notes is None, "the copy of our old notes is not Microsoft's"
    answered = replace(microsoft, raw={**OURS, "details": {"notes": "Seller assigned"}})
    assert with_microsoft(again, answered, changed).microsoft_notes == "Microsoft: Seller assigned"
