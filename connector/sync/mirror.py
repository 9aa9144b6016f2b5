"""Map back (pure): the core's view of a deal → the values of the CRM's status fields."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from connector.mapping.schema import StatusFields
from connector.model import ReferralState
from connector.sync.lifecycle import registration_blockers
from connector.sync.notes import (
    copied_texts,
    has_notes,
    microsoft_notes,
    received_notes,
    sender_notes,
)

#: what the status fields say when Microsoft was never invited
NOT_INVITED = "Not invited"


@dataclass(frozen=True)
class CoreFacts:
    """The facts the core owns about one linked deal (stored per link)."""

    referral_id: str
    status: str
    substatus: str | None
    direction: str
    link: str
    expiration: str | None = None
    registration_status: str | None = None
    #: the seed's registration conditions, judged on the deal as sent and Microsoft's
    #: side (the referral resource carries no eligibility of its own)
    registration_eligible: bool | None = None
    microsoft_status: str | None = None
    microsoft_expiration: str | None = None
    #: Microsoft's referral in the deal's engagement, once known (read or created)
    microsoft_referral_id: str | None = None
    #: why the record's last change was not sent (terminal deal, forbidden invitation);
    #: kept until the record changes again, so later mirrors do not erase it
    notice: str | None = None
    #: the sender's message on an incoming deal, and Microsoft's notes on its referral
    #: (connector.sync.notes): mirrored into ``received_notes``
    sender_notes: str | None = None
    microsoft_notes: str | None = None
    #: what Microsoft's referral held of the partner's own notes when first seen (its copy)
    microsoft_copy: list[str] | None = None
    #: the referral's ``statusReason`` (why it was declined, lost or expired)
    status_reason: str | None = None
    #: the substatus (Declined, Expired) for which the connector closed the CRM record
    crm_closed: str | None = None
    #: on a deal received from a partner, the emails of the sender's team as it came: the
    #: other company's people, kept in every team sent (connector.sync.team)
    partner_team: list[str] | None = None
    #: partners invited to the deal by the connector (core.partner_invitations), by id
    invited_partners: list[str] | None = None

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CoreFacts:
        known: dict[str, Any] = {k: data.get(k) for k in cls.__dataclass_fields__}
        return cls(**known)


def facts_of(
    referral: ReferralState,
    link: str,
    microsoft: ReferralState | None,
    body: Mapping[str, Any] | None = None,
) -> CoreFacts:
    """The facts of ``referral`` (``body``: the deal as sent, else the referral itself)."""
    facts = CoreFacts(
        referral_id=referral.id,
        status=referral.status.value,
        substatus=referral.substatus.value if referral.substatus else None,
        direction=referral.direction,
        link=link,
        expiration=_iso(referral.expiration),
        registration_status=referral.registration_status,
        sender_notes=sender_notes(referral.raw),
        status_reason=referral.status_reason,
    )
    if microsoft is not None:
        return with_microsoft(facts, microsoft, body if body is not None else referral.raw)
    return with_eligibility(facts, body if body is not None else referral.raw)


def with_microsoft(
    facts: CoreFacts, microsoft: ReferralState, body: Mapping[str, Any] | None = None
) -> CoreFacts:
    """``facts`` with Microsoft's side; eligibility judged again when ``body`` is given."""
    facts = replace(
        facts,
        microsoft_status=_status_text(microsoft),
        microsoft_expiration=_iso(microsoft.expiration),
        microsoft_referral_id=microsoft.id,
    )
    if has_notes(microsoft.raw):
        ours = body or {}
        copied = facts.microsoft_copy
        if copied is None:
            copied = copied_texts(microsoft.raw, ours)
        notes = microsoft_notes(microsoft.raw, ours, copied)
        facts = replace(facts, microsoft_notes=notes, microsoft_copy=copied)
    return facts if body is None else with_eligibility(facts, body)


def carried_over(previous: CoreFacts, facts: CoreFacts, raw: Mapping[str, Any]) -> CoreFacts:
    """``facts`` read from the deal's own referral (``raw``), with what that referral does
    not tell kept from ``previous``: Microsoft's side, and the notes when ``raw`` has none."""
    return replace(
        facts,
        microsoft_status=previous.microsoft_status,
        microsoft_expiration=previous.microsoft_expiration,
        microsoft_referral_id=previous.microsoft_referral_id,
        microsoft_notes=previous.microsoft_notes,
        microsoft_copy=previous.microsoft_copy,
        sender_notes=facts.sender_notes if has_notes(raw) else previous.sender_notes,
        crm_closed=previous.crm_closed,
        partner_team=previous.partner_team,
        invited_partners=previous.invited_partners,
    )


def with_eligibility(facts: CoreFacts, body: Mapping[str, Any]) -> CoreFacts:
    """``facts`` with ``registration_eligible`` judged by the seed's conditions."""
    eligible = not registration_blockers(body, facts.microsoft_status)
    return (
        facts
        if facts.registration_eligible == eligible
        else replace(facts, registration_eligible=eligible)
    )


def _status_text(referral: ReferralState) -> str:
    return (
        f"{referral.status.value}/{referral.substatus.value}"
        if referral.substatus
        else referral.status.value
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def status_values(
    facts: CoreFacts, fields: StatusFields, now: datetime, sync_error: str | None = None
) -> dict[str, Any]:
    """CRM field → value for one linked record (without the last-sync stamp)."""
    values: dict[str, Any] = {fields.referral_id: facts.referral_id}
    status = f"{facts.status}/{facts.substatus}" if facts.substatus else facts.status
    pending_expiry = facts.expiration if facts.status == "New" else None
    if (
        pending_expiry is None
        and facts.microsoft_status
        and facts.microsoft_status.startswith("New")
    ):
        pending_expiry = facts.microsoft_expiration
    optional: dict[str | None, Any] = {
        fields.referral_link: facts.link,
        fields.status: status,
        fields.sync_error: sync_error if sync_error is not None else facts.notice,
        fields.microsoft_status: facts.microsoft_status or NOT_INVITED,
        fields.expiration: pending_expiry,
        fields.days_to_expiry: _days_left(pending_expiry, now),
        fields.registration_eligible: bool(facts.registration_eligible),
        fields.registration_status: facts.registration_status,
        fields.direction: facts.direction,
        fields.received_notes: received_notes(facts.sender_notes, facts.microsoft_notes),
    }
    for name, value in optional.items():
        if name is not None:
            values[name] = value
    return values


def _days_left(expiry: str | None, now: datetime) -> int | None:
    """Whole days from ``now``'s day to the expiry's day (UTC): the value changes at
    midnight only, so one write a day keeps it right (see connector.sync.countdown)."""
    if not expiry:
        return None
    try:
        when = datetime.fromisoformat(expiry.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, (when.astimezone(UTC).date() - now.astimezone(UTC).date()).days)


def values_fingerprint(values: Mapping[str, Any]) -> str:
    text = json.dumps(values, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
