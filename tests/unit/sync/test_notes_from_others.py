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
