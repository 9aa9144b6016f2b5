"""Notes Microsoft and other partners write on a deal, for the CRM (pure, no I/O).

A referral carries notes in ``details.notes`` and ``inviteContext.notes`` (RR: "notes
for the receiving organization"). What the seller wrote in the CRM goes out as the
deal's own notes; what others wrote comes back into ``status_fields.received_notes``:

- the sender's message on an incoming deal (``inviteContext.notes`` of the referral sent
  to the partner, with the sender's name from ``invitedBy``);
- Microsoft's notes on its referral in the deal's engagement, leaving out any text that
  is the partner's own: the referral for Microsoft starts as a copy of the partner's, so
  what it held of the partner's texts when first seen (:func:`copied_texts`) stays the
  partner's even after the partner's own notes change.

Never the CRM's own notes: nothing echoes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from connector.mapping.apply import clean_text

#: the longest received-notes value written (Dataverse text columns hold 4,000)
MAX_RECEIVED_NOTES = 4000


def texts(raw: Mapping[str, Any]) -> list[str]:
    """The non-empty notes of a referral (details first, then the invitation's)."""
    found: list[str] = []
    for part in ("details", "inviteContext"):
        node = raw.get(part)
        notes = node.get("notes") if isinstance(node, Mapping) else None
        if isinstance(notes, str):
            text = clean_text(notes, multiline=True)
            if text and text not in found:
                found.append(text)
    return found


def has_notes(raw: Mapping[str, Any]) -> bool:
    """Whether ``raw`` holds the parts notes live in (a referral listed with ``$select``
    or kept without its body does not: its notes are unknown, not empty)."""
    return "details" in raw or "inviteContext" in raw


def sender_notes(raw: Mapping[str, Any]) -> str | None:
    """The sender's message on an incoming referral, with the sender's name."""
    if raw.get("direction") != "Incoming":
        return None
    invite = raw.get("inviteContext")
    if not isinstance(invite, Mapping) or not isinstance(invite.get("notes"), str):
        return None
    text = clean_text(invite["notes"], multiline=True)
    if not text:
        return None
    by = invite.get("invitedBy")
    name = by.get("organizationName") if isinstance(by, Mapping) else None
    return f"{clean_text(name) if isinstance(name, str) and name.strip() else 'The sender'}: {text}"


def copied_texts(microsoft: Mapping[str, Any], ours: Mapping[str, Any]) -> list[str]:
    """The texts of Microsoft's referral that are the partner's (its copy when first seen)."""
    own = set(texts(ours))
    return [text for text in texts(microsoft) if text in own]


def microsoft_notes(
    microsoft: Mapping[str, Any], ours: Mapping[str, Any], copied: Sequence[str] = ()
) -> str | None:
    """Microsoft's notes on its referral, without the partner's own texts (``ours``, and
    what Microsoft's referral ``copied`` of them)."""
    own = {*texts(ours), *copied}
    theirs = [text for text in texts(microsoft) if text not in own]
    return "Microsoft: " + "\n".join(theirs) if theirs else None


def received_notes(sender: str | None, microsoft: str | None) -> str | None:
    """The value of the received-notes field: each source on its own paragraph."""
    parts = [p for p in (sender, microsoft) if p]
    if not parts:
        return None
    text = "\n\n".join(parts)
    return text if len(text) <= MAX_RECEIVED_NOTES else text[: MAX_RECEIVED_NOTES - 1] + "…"
