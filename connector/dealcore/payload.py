"""Between the canonical model and the deal core's JSON: bodies, patches, parsing.

- :func:`referral_body`: a :class:`DealDraft` as the Referral body of a create.
- :func:`patch_ops`: the JSON Patch that turns one such body into another, limited to
  the paths the API lets a partner patch, and empty when nothing changed.
- :func:`status_ops`: the JSON Patch of a status change (close won/lost, accept, decline).
- :func:`parse_referral`: a Referral from the API as a :class:`ReferralState`,
  tolerant of unknown fields and of the alternatives the reference allows.

Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from connector.errors import CoreError
from connector.model import (
    Contact,
    DealDraft,
    DealType,
    ReferralState,
    StandardStage,
    Status,
    Substatus,
)

DEFAULT_LINK_BASE = "https://partner.microsoft.com/dashboard/referrals/v2/opportunities"

#: sales-stage names the API may answer instead of percentages (see the reference)
_STAGE_NAMES = {"qualify": 20, "develop": 40, "propose": 60, "close": 80}

#: patchable paths holding one value
_SCALAR_PATHS = (
    "/name",
    "/externalReferenceId",
    "/campaignId",
    "/salesStage",
    "/details/notes",
    "/details/dealValue",
    "/details/currency",
    "/details/closingDateTime",
    "/consent/consentToShareReferralWithMicrosoftSellers",
)
#: patchable arrays, always replaced whole (simpler and safer than index arithmetic)
_ARRAY_PATHS = ("/team", "/customerProfile/team", "/details/requirements/solutions")

#: paths whose value a draft may drop (sent as null); others missing mean "leave as is"
_CLEARABLE_PATHS = frozenset({"/details/notes", "/campaignId"})

_MISSING = object()


def _contact(contact: Contact) -> dict[str, str]:
    return {
        "firstName": contact.first_name,
        "lastName": contact.last_name,
        "phoneNumber": contact.phone,
        "email": contact.email,
    }


def _json_number(value: Decimal) -> int | float:
    # JSON has no decimal type; money values fit a double's 15 significant digits.
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def _closing(value: date) -> str:
    return f"{value.isoformat()}T00:00:00Z"


def referral_body(draft: DealDraft) -> dict[str, Any]:
    """The Referral JSON that creates ``draft`` in the core (see the reference's resource).

    Private deals are ``Independent`` and shared with nobody; co-sell and
    partner-to-partner deals are ``Shared``; co-sell deals consent to Microsoft's
    sellers and carry an ``inviteContext``. A Lost stage sends no ``salesStage``:
    closing is a status change (:func:`status_ops`), not a stage.
    """
    shared = draft.deal_type != DealType.PRIVATE or bool(draft.partners)
    co_sell = draft.deal_type == DealType.CO_SELL
    address = {
        "addressLine1": draft.customer.address_line1,
        "city": draft.customer.city,
        "state": draft.customer.state,
        "postalCode": draft.customer.postal_code,
        "country": draft.customer.country,
    }
    details: dict[str, Any] = {
        "dealValue": _json_number(draft.value),
        "currency": draft.currency,
        "closingDateTime": _closing(draft.close_date),
        "requirements": {"solutions": [{"id": s, "type": "Name"} for s in draft.solutions]},
    }
    if draft.notes is not None:
        details["notes"] = draft.notes
    body: dict[str, Any] = {
        "name": draft.name,
        "externalReferenceId": draft.crm_id,
        "type": "Shared" if shared else "Independent",
        "qualification": "SalesQualified",
        "customerProfile": {
            "name": draft.customer.name,
            "address": {k: v for k, v in address.items() if v is not None},
            "team": [_contact(c) for c in draft.customer.contacts],
        },
        "consent": {
            "consentToToShareInfoWithOthers": shared,  # sic: the API's own spelling
            "consentToContact": shared,
            "consentToShareReferralWithMicrosoftSellers": co_sell,
        },
        "details": details,
        "team": [_contact(c) for c in draft.team],
    }
    if draft.stage != StandardStage.LOST:
        body["salesStage"] = str(draft.stage.percent)
    if draft.campaign_id is not None:
        body["campaignId"] = draft.campaign_id
    if co_sell:
        body["inviteContext"] = {
            "assistanceRequestCode": draft.assistance_code or "GeneralOrOther",
        }
    if draft.partners:
        # The reference's target entries carry only type and id: the invited partner's
        # share (value, close date, help) has no place in the API, so it is not sent.
        body["target"] = [{"type": "Partner", "id": p} for p in draft.partners]
    return body


def partner_ids(body: Mapping[str, Any]) -> list[str]:
    """Ids of the partner organizations a body or referral invites (its Partner targets)."""
    targets = body.get("target")
    if not isinstance(targets, list):
        return []
    return [
        str(t["id"])
        for t in targets
        if isinstance(t, Mapping) and t.get("type") == "Partner" and t.get("id")
    ]


def _at(body: Mapping[str, Any], path: str) -> Any:
    node: Any = body
    for key in path.strip("/").split("/"):
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _normal(path: str, value: Any) -> Any:
    """A comparable form of a value, so that equal meanings do not count as changes."""
    if value is _MISSING or value is None:
        return None
    if path == "/details/dealValue":
        return _decimal(value)
    if path == "/salesStage":
        return _stage_percent(value)
    if path == "/details/closingDateTime":
        parsed = _datetime(value)
        return parsed.date() if parsed is not None else value
    if isinstance(value, list):
        # Compare arrays as multisets of the fields the connector sends: the core may
        # add ids of its own to team members, and reordering alone is not a change.
        return sorted(json.dumps(item, sort_keys=True, default=str) for item in value)
    return value


def _project(old: Any, new: Any) -> Any:
    """``old``'s array items cut down to the keys ``new``'s items use."""
    if not isinstance(old, list) or not isinstance(new, list) or not new:
        return old
    keys = set().union(*(item.keys() for item in new if isinstance(item, dict)))
    return [
        {k: v for k, v in item.items() if k in keys} if isinstance(item, dict) else item
        for item in old
    ]


def patch_ops(old_body: Mapping[str, Any], new_body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """JSON Patch ops that bring a referral from ``old_body`` to ``new_body``.

    Only the paths the API allows are considered; unchanged values give no op.
    Arrays are replaced whole. An ``inviteContext`` appears only when the deal
    newly becomes co-sell (sharing with Microsoft cannot be undone, so it is never
    removed). Partners new in ``new_body``'s ``target`` are invited with one
    ``add /target/-`` each; an invitation is never withdrawn. ``old_body`` may be a
    body from :func:`referral_body` or a Referral read from the core.
    """
    ops: list[dict[str, Any]] = []
    for path in (*_SCALAR_PATHS, *_ARRAY_PATHS):
        old = _at(old_body, path)
        new = _at(new_body, path)
        if new is _MISSING and (old is _MISSING or path not in _CLEARABLE_PATHS):
            continue
        if _normal(path, _project(old, new)) == _normal(path, new):
            continue
        if path == "/consent/consentToShareReferralWithMicrosoftSellers" and new is not True:
            continue  # withdrawing consent from Microsoft is not possible
        value = None if new is _MISSING else new
        op = "replace" if old is not _MISSING else "add"
        ops.append({"op": op, "path": path, "value": value})
    old_invite = _at(old_body, "/inviteContext")
    new_invite = _at(new_body, "/inviteContext")
    if new_invite not in (_MISSING, None) and old_invite in (_MISSING, None):
        ops.append({"op": "add", "path": "/inviteContext", "value": new_invite})
    invited = set(partner_ids(old_body))
    for partner in partner_ids(new_body):
        if partner not in invited:
            invited.add(partner)
            ops.append(
                {"op": "add", "path": "/target/-", "value": {"type": "Partner", "id": partner}}
            )
    return ops


def status_ops(
    status: Status, substatus: Substatus, reason: str | None = None
) -> list[dict[str, Any]]:
    """JSON Patch ops for a lifecycle change (``Closed``/``Won``, ``Active``/``Accepted`` …)."""
    ops: list[dict[str, Any]] = [
        {"op": "replace", "path": "/status", "value": str(status)},
        {"op": "replace", "path": "/substatus", "value": str(substatus)},
    ]
    if substatus == Substatus.WON:
        ops.append({"op": "replace", "path": "/salesStage", "value": "100"})
    if reason is not None:
        ops.append({"op": "replace", "path": "/statusReason", "value": reason})
    return ops


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        return Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None


def _stage_percent(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        return _STAGE_NAMES.get(text.lower())
    return None


def _datetime(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _enum_member(enum: type[Status] | type[Substatus], value: Any) -> Any:
    if not isinstance(value, str):
        return None
    for member in enum:
        if member.value.lower() == value.strip().lower():
            return member
    return None


def _deal_type(data: Mapping[str, Any]) -> DealType | None:
    kind = data.get("type")
    if not isinstance(kind, str):
        return None
    if kind.lower() == "independent":
        return DealType.PRIVATE
    if kind.lower() != "shared":
        return None
    consent = data.get("consent")
    invite = data.get("inviteContext")
    with_microsoft = (
        isinstance(consent, Mapping)
        and consent.get("consentToShareReferralWithMicrosoftSellers") is True
    ) or (isinstance(invite, Mapping) and bool(invite.get("assistanceRequestCode")))
    return DealType.CO_SELL if with_microsoft else DealType.PARTNER_TO_PARTNER


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_referral(data: Any, *, partial: bool = False) -> ReferralState:
    """A Referral from the API as a :class:`ReferralState`.

    Unknown fields are ignored and optional ones may be missing; ``salesStage`` may
    be a percentage (string or number) or a stage name. A referral without an ``id``
    or a known ``status`` raises a permanent ``CoreError`` (``malformed_referral``).
    ``partial`` marks a referral listed with ``$select`` (see ``ReferralState.partial``).
    """
    if not isinstance(data, Mapping):
        raise CoreError(
            "the deal core sent a referral that is not a JSON object",
            code="malformed_referral",
            transient=False,
        )
    referral_id = data.get("id")
    if not isinstance(referral_id, str) or not referral_id:
        raise CoreError(
            "the deal core sent a malformed referral: it has no id",
            code="malformed_referral",
            transient=False,
        )
    status = _enum_member(Status, data.get("status"))
    if status is None:
        raise CoreError(
            f"the deal core sent a malformed referral {referral_id}: status "
            f"{data.get('status')!r} is not New, Active or Closed",
            code="malformed_referral",
            transient=False,
        )
    return ReferralState(
        id=referral_id,
        engagement_id=_optional_str(data.get("engagementId")),
        etag=_optional_str(data.get("eTag")),
        status=status,
        substatus=_enum_member(Substatus, data.get("substatus")),
        direction=_optional_str(data.get("direction")) or "Unknown",
        updated=_datetime(data.get("updatedDateTime")),
        external_reference_id=_optional_str(data.get("externalReferenceId")),
        name=_optional_str(data.get("name")),
        sales_stage=_stage_percent(data.get("salesStage")),
        deal_type=_deal_type(data),
        expiration=_datetime(data.get("expirationDateTime")),
        registration_status=_optional_str(data.get("registrationStatus")),
        status_reason=_optional_str(data.get("statusReason")),
        raw=dict(data),
        partial=partial,
    )


def referral_link(referral_id: str, base: str = DEFAULT_LINK_BASE) -> str:
    """The Partner Center web page of a referral (written into the CRM's mirror fields)."""
    return f"{base.rstrip('/')}/{quote(referral_id, safe='')}"
