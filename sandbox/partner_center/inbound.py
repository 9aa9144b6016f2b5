"""Referrals the partner does not create: incoming deals and Microsoft's related referral.

Both are made by the sandbox itself (admin API, seeding, co-sell invitations), so their
values are generated, deterministic for a given random generator. Their shapes are the
published ones: the holder in ``organizationId``/``organizationName``, the sender in
``inviteContext.invitedBy`` (``msft`` for Microsoft, GL19), the partner's business
location or ``msft`` in ``target``.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

from sandbox.partner_center import fields as f

_CUSTOMERS = (
    ("Contoso", "US", "USD", "Redmond", "WA", "98052"),
    ("Fabrikam", "GB", "GBP", "London", "", "EC1A 1BB"),
    ("Northwind Traders", "DE", "EUR", "Berlin", "", "10115"),
    ("Adventure Works", "FR", "EUR", "Lyon", "", "69001"),
    ("Tailspin Toys", "NL", "EUR", "Utrecht", "", "3511"),
    ("Woodgrove Bank", "CA", "CAD", "Toronto", "ON", "M5H 2N2"),
    ("Litware", "JP", "JPY", "Tokyo", "", "100-0001"),
    ("Wide World Importers", "AU", "AUD", "Sydney", "NSW", "2000"),
)
_WORKLOADS = (
    "Azure migration",
    "Data platform modernisation",
    "Copilot rollout",
    "Security uplift",
    "SAP on Azure",
    "Virtual desktop",
)
_SOLUTIONS = ("SOL-IP-10001-AZM", "SOL-34104-EBB", "SOL-IP-20417-DAT", "SOL-55210-SEC")
_PEOPLE = (("Sue", "Smith"), ("Raj", "Patel"), ("Ana", "Lopez"), ("Kenji", "Sato"))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into ``base`` (objects merge, everything else replaces)."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = f.clone(value)
    return base


def build_incoming(
    rng: random.Random, now: datetime, overrides: dict[str, Any], sender: str
) -> dict[str, Any]:
    """A referral sent to the partner: Incoming, New/Pending, expires 14 days from now.

    ``sender`` is ``Microsoft`` (a co-sell invitation: consent and the help asked set)
    or ``Partner`` (partner to partner: ``invitedBy`` names the sending partner).
    """
    customer, country, currency, city, state, postal = rng.choice(_CUSTOMERS)
    first, last = rng.choice(_PEOPLE)
    stamp = f.format_time(now)
    closing = (now + timedelta(days=rng.randint(30, 180))).strftime("%Y-%m-%dT00:00:00Z")
    domain = customer.lower().replace(" ", "") + ".example"
    from_microsoft = sender == "Microsoft"
    sender_org = (
        dict(f.MICROSOFT_INVITER)
        if from_microsoft
        else {"organizationId": _uuid(rng), "organizationName": "Sandbox Ally Partner"}
    )
    referral: dict[str, Any] = {
        "id": _uuid(rng),
        "engagementId": _uuid(rng),
        **f.PARTNER_ORG,
        "eTag": f.new_etag(),
        "name": f"{customer} – {rng.choice(_WORKLOADS)}",
        "externalReferenceId": None,
        "createdDateTime": stamp,
        "updatedDateTime": stamp,
        "acceptedDateTime": None,
        "closedDateTime": None,
        "expirationDateTime": f.format_time(now + f.INVITATION_WINDOW),
        "status": "New",
        "substatus": "Pending",
        "statusReason": None,
        "type": "Shared",
        "qualification": "SalesQualified",
        "direction": "Incoming",
        "salesStage": None,
        "campaignId": None,
        "customerProfile": {
            "name": f"{customer} Inc",
            "size": rng.choice(("1to50employees", "51to500employees", "501to1000employees")),
            "address": {
                "addressLine1": f"{rng.randint(1, 999)} Main Street",
                "city": city,
                "state": state,
                "postalCode": postal,
                "country": country,
            },
            "team": [
                {
                    "firstName": first,
                    "lastName": last,
                    "phoneNumber": f"+1 555 {rng.randint(1000, 9999)}",
                    "email": f"{first.lower()}.{last.lower()}@{domain}",
                }
            ],
            "ids": [],
        },
        "consent": {
            "consentToToShareInfoWithOthers": True,
            "consentToContact": True,
            f.MS_CONSENT: from_microsoft,
        },
        "details": {
            "notes": f"Sent by {sender_org['organizationName']} (sandbox).",
            "dealValue": rng.randrange(5, 500) * 1000,
            "currency": currency,
            "closingDateTime": closing,
            "requirements": {"solutions": [{"id": rng.choice(_SOLUTIONS), "type": "Name"}]},
        },
        "team": [],
        "inviteContext": {
            "notes": "Customer asked for a partner with migration experience.",
            "assistanceRequestCode": (
                rng.choice(sorted(set(f.ASSISTANCE_CODES) - {"Unknown"}))
                if from_microsoft
                else "Unknown"
            ),
            "invitedBy": sender_org,
        },
        "target": [{"type": "BusinessProfileLocation", "id": f.PARTNER_LOCATION}],
        "registrationStatus": "None",
        "registrations": [],
        "trackingInfo": {
            "microsoftMsxId": f"7-{rng.randint(10**9, 10**10 - 1)}" if from_microsoft else None
        },
    }
    return _merge(referral, overrides)


def build_microsoft_side(
    deal: dict[str, Any], now: datetime, *, invited: bool, rng: random.Random | None = None
) -> dict[str, Any]:
    """Microsoft's related referral in ``deal``'s engagement.

    ``invited``: the partner invited Microsoft (New/Pending, 14 days to answer,
    direction Incoming from Microsoft's point of view, target ``msft``: the documented
    referral for Microsoft). Otherwise Microsoft sent the deal and is already engaged
    (Active/Accepted, direction Outgoing, target the partner's business location).
    """
    stamp = f.format_time(now)
    new_id = _uuid(rng) if rng is not None else f.new_id()
    side: dict[str, Any] = {
        "id": new_id,
        "engagementId": deal["engagementId"],
        **f.MICROSOFT_ORG,
        "eTag": f.new_etag(),
        "name": deal["name"],
        "externalReferenceId": None,
        "createdDateTime": stamp,
        "updatedDateTime": stamp,
        "acceptedDateTime": None if invited else stamp,
        "closedDateTime": None,
        "expirationDateTime": f.format_time(now + f.INVITATION_WINDOW) if invited else None,
        "status": "New" if invited else "Active",
        "substatus": "Pending" if invited else "Accepted",
        "statusReason": None,
        "type": "Shared",
        "qualification": deal["qualification"],
        "direction": "Incoming" if invited else "Outgoing",
        "salesStage": None if invited else "10",
        "campaignId": None,
        "customerProfile": f.clone(deal["customerProfile"]),
        "consent": f.clone(deal["consent"]),
        "details": f.clone(deal["details"]),
        "team": [],
        "inviteContext": f.clone(deal["inviteContext"]),
        "target": (
            [dict(f.MICROSOFT_TARGET)]
            if invited
            else [{"type": "BusinessProfileLocation", "id": f.PARTNER_LOCATION}]
        ),
        "registrationStatus": "None",
        "registrations": [],
        "trackingInfo": {"microsoftMsxId": (deal.get("trackingInfo") or {}).get("microsoftMsxId")},
    }
    if not invited:
        side["team"] = [_microsoft_seller()]
    return side


def as_microsofts(referral: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A referral a partner created for Microsoft (CR20's second step), held by Microsoft:
    New/Pending and Incoming from its point of view, 14 days to answer."""
    return {
        **referral,
        **f.MICROSOFT_ORG,
        "externalReferenceId": None,
        "status": "New",
        "substatus": "Pending",
        "direction": "Incoming",
        "salesStage": None,
        "acceptedDateTime": None,
        "closedDateTime": None,
        "expirationDateTime": f.format_time(now + f.INVITATION_WINDOW),
        "team": [],
    }


def _microsoft_seller() -> dict[str, str]:
    return {
        "firstName": "Morgan",
        "lastName": "Seller",
        "phoneNumber": "+1 425 555 0100",
        "email": "morgan.seller@microsoft.example",
    }


def microsoft_answer(side: dict[str, Any], action: str, now: datetime, reason: str | None) -> None:
    """Microsoft accepts, declines or wins its related referral (already checked legal)."""
    stamp = f.format_time(now)
    if action == "accept":
        side.update(status="Active", substatus="Accepted", acceptedDateTime=stamp)
        side["team"] = side["team"] or [_microsoft_seller()]
    elif action == "decline":
        side.update(
            status="Closed",
            substatus="Declined",
            closedDateTime=stamp,
            statusReason=reason or "Microsoft has no seller capacity for this deal (sandbox)",
        )
    else:  # win
        side.update(status="Closed", substatus="Won", salesStage="100", closedDateTime=stamp)
        side["acceptedDateTime"] = side["acceptedDateTime"] or stamp
        side["team"] = side["team"] or [_microsoft_seller()]
    if action != "decline" and side["trackingInfo"].get("microsoftMsxId") is None:
        side["trackingInfo"]["microsoftMsxId"] = f"7-{uuid.uuid4().int % 10**10:010d}"
