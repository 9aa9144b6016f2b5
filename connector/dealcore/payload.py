"""Between the canonical model and the deal core's JSON: bodies and patches (pure).

- :func:`referral_body`: a :class:`DealDraft` as the Referral a create sends, with its
  status, substatus and sales stage (the core keeps them, or the client patches the
  difference: :func:`created_differences`).
- :func:`microsoft_referral_body`: the referral a partner creates for Microsoft in its
  engagement (the documented second step of a co-sell deal).
- :func:`sendable`: a new body with what the API cannot change kept as it was, and
  what that left out, for the record's notice.
- :func:`patch_ops`: the JSON Patch from one body to another, over the paths Microsoft's
  certified connector lists (:data:`PATCHABLE_PATHS`) and nothing else.
- :func:`status_ops`: the JSON Patch of a status change (close won/lost, accept, decline).

No I/O, no clock. Reading a referral lives in :mod:`connector.dealcore.parse`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from connector.dealcore.options import (
    DEFAULT_OPTIONS,
    MICROSOFT_TARGET,
    CoreOptions,
    SalesStageFormat,
)
from connector.dealcore.parse import datetime_of, decimal_of, parse_referral, stage_percent
from connector.model import Contact, DealDraft, DealType, StandardStage, Status, Substatus

__all__ = [
    "PATCHABLE_PATHS",
    "created_differences",
    "microsoft_referral_body",
    "parse_referral",
    "patch_ops",
    "referral_body",
    "referral_link",
    "sales_stage_value",
    "sendable",
    "solution_items",
    "status_ops",
]

DEFAULT_LINK_BASE = "https://partner.microsoft.com/dashboard/referrals/v2/opportunities"

#: the certified connector's PATCH paths (apiDefinition.swagger.json, UpdateReferralDetails)
#: plus deal registration's; ``/name``, ``/inviteContext`` and ``/target/-`` are not among them
PATCHABLE_PATHS = frozenset(
    {
        "/campaignId",
        "/consent/consentToShareReferralWithMicrosoftSellers",
        "/customerProfile/team",
        "/customerProfile/team/-",
        "/details/closingDateTime",
        "/details/currency",
        "/details/dealValue",
        "/details/notes",
        "/details/requirements/solutions",
        "/details/requirements/solutions/-",
        "/externalReferenceId",
        "/referralProgram",
        "/salesStage",
        "/status",
        "/substatus",
        "/statusReason",
        "/team",
        "/team/-",
        "/registrations/-",
    }
)

#: patchable paths holding one value
_SCALAR_PATHS = (
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

HELP_ASKED = "the help asked of Microsoft"
#: keys a create body may leave out (a private deal's invitation)
_OPTIONAL_AT_CREATE = frozenset({"inviteContext", "target"})
#: what a create fixes for good, as the record's notice names it (None: kept silently,
#: a consequence of another change that is sent another way)
_FIXED_AT_CREATE: tuple[tuple[tuple[str, ...], str | None], ...] = (
    (("name",), "the deal name"),
    (("customerProfile", "name"), "the customer's name"),
    (("customerProfile", "address"), "the customer's address"),
    (("inviteContext",), HELP_ASKED),
    (("type",), None),
    (("target",), None),
    (("qualification",), None),
    (("consent", "consentToToShareInfoWithOthers"), None),
    (("consent", "consentToContact"), None),
)

_STAGE_NAMES = {
    StandardStage.QUALIFIED: "Qualify",
    StandardStage.DEVELOPED: "Develop",
    StandardStage.PROPOSED: "Propose",
    StandardStage.NEGOTIATED: "Close",
    StandardStage.WON: "Close",
}

_MISSING = object()


def sales_stage_value(stage: StandardStage, stage_format: SalesStageFormat) -> str | None:
    """``stage`` as the core's ``salesStage``; None when the format has no value for it.

    Percentages are the seed's; the names are the certified connector's four, which
    have none for Created/Accepted (10) and none for Lost (closing is a status change).
    """
    if stage is StandardStage.LOST:
        return None
    if stage_format == "name":
        return _STAGE_NAMES.get(stage)
    return str(stage.percent)


def _contact(contact: Contact) -> dict[str, str | None]:
    return {
        "firstName": contact.first_name,
        "lastName": contact.last_name,
        # a team member the CRM gives no phone: none sent rather than an empty string
        "phoneNumber": contact.phone or None,
        "email": contact.email,
    }


def solution_items(draft: DealDraft) -> list[dict[str, str]]:
    """``details.requirements.solutions``: the partner's own, then Microsoft's and other
    partners', each with the ``type`` its kind is sent with (RR's SolutionTag)."""
    own = [{"id": s, "type": draft.own_solution_type} for s in draft.solutions]
    return own + [{"id": r.id, "type": r.type} for r in draft.other_solutions]


def _json_number(value: Decimal) -> int | float:
    # JSON has no decimal type; money values fit a double's 15 significant digits.
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def _closing(value: date) -> str:
    return f"{value.isoformat()}T00:00:00Z"


def referral_body(draft: DealDraft, options: CoreOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    """The Referral JSON that creates ``draft`` in the core.

    Private deals are ``Independent`` and share nothing (LIVE-CR's private sample).
    Co-sell deals are ``Shared``, consent to Microsoft's sellers and carry the help asked
    in ``inviteContext``; in the documented two-referral flow their ``target`` is the
    partner's own solution profiles (``SolutionProfile``), Microsoft being invited by a
    second referral (:func:`microsoft_referral_body`). A deal shared with Microsoft's
    sellers without asking for help (LIVE-CR's "partner-led") consents to them and asks
    nothing. A partner-to-partner deal consents to sharing the customer's information
    with others and to their contacting the customer (the seed: the invited partner
    works with the customer); partners are never targeted: no documented target type
    names a partner organisation. The status is the seed's for a created deal
    (``Active``/``Accepted``), or ``Closed``/``Won`` for a deal already won.
    """
    co_sell = draft.deal_type == DealType.CO_SELL
    to_microsoft = co_sell or draft.shared_with_microsoft
    with_others = (
        to_microsoft or draft.deal_type == DealType.PARTNER_TO_PARTNER or bool(draft.partners)
    )
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
        "requirements": {"solutions": solution_items(draft)},
    }
    if draft.notes is not None:
        details["notes"] = draft.notes
    won = draft.stage is StandardStage.WON
    body: dict[str, Any] = {
        "name": draft.name,
        "externalReferenceId": draft.crm_id,
        "status": (Status.CLOSED if won else Status.ACTIVE).value,
        "substatus": (Substatus.WON if won else Substatus.ACCEPTED).value,
        "type": "Shared" if co_sell else "Independent",
        "qualification": "SalesQualified",
        "customerProfile": {
            "name": draft.customer.name,
            "address": {k: v for k, v in address.items() if v is not None},
            "team": [_contact(c) for c in draft.customer.contacts],
        },
        "consent": {
            "consentToToShareInfoWithOthers": with_others,  # sic: the API's own spelling
            "consentToContact": with_others,
            "consentToShareReferralWithMicrosoftSellers": to_microsoft,
        },
        "details": details,
        "team": [_contact(c) for c in draft.team],
        "target": [],
    }
    stage = sales_stage_value(draft.stage, options.sales_stage_format)
    if stage is not None:
        body["salesStage"] = stage
    if draft.campaign_id is not None:
        body["campaignId"] = draft.campaign_id
    if co_sell:
        body["inviteContext"] = {
            "assistanceRequestCode": draft.assistance_code or "GeneralOrOther",
        }
        if options.co_sell_mode == "two_referrals":
            body["target"] = [{"type": "SolutionProfile", "id": s} for s in draft.solutions]
    return body


def microsoft_referral_body(body: Mapping[str, Any], engagement_id: str) -> dict[str, Any]:
    """The referral for Microsoft in the engagement of the partner's referral ``body``.

    The documented second step of a shared referral: the deal's content, the partner's
    ``engagementId`` and the target ``{"type": "BusinessProfileLocation", "id": "msft"}``.
    It carries no ``externalReferenceId`` (the CRM record is the partner's referral's)
    and no status: answering it is Microsoft's.
    """
    left_out = {"externalReferenceId", "status", "substatus", "statusReason", "salesStage"}
    referral = {k: v for k, v in body.items() if k not in left_out}
    referral["engagementId"] = engagement_id
    referral["type"] = "Shared"
    referral["target"] = [dict(MICROSOFT_TARGET)]
    return referral


def _at(body: Mapping[str, Any], path: str) -> Any:
    node: Any = body
    for key in path.strip("/").split("/"):
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _normal(path: str, value: Any) -> Any:
    """A comparable form of a value, so that equal meanings do not count as changes."""
    if value is _MISSING or value is None or value == "" or value == []:
        return None
    if path == "/details/dealValue":
        return decimal_of(value)
    if path == "/salesStage":
        return stage_percent(value)
    if path == "/details/closingDateTime":
        parsed = datetime_of(value)
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

    Only :data:`PATCHABLE_PATHS` are considered and only ``replace`` and ``add`` used;
    unchanged values give no op. Arrays are replaced whole. Consent to Microsoft's
    sellers is only ever given, never withdrawn. Status changes are
    :func:`status_ops`'. ``old_body`` may be a body or a Referral read from the core.
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
    return ops


def _same(old: Any, new: Any) -> bool:
    """Whether ``old`` holds what ``new`` says (objects compared on ``new``'s keys)."""
    if isinstance(new, Mapping):
        if not isinstance(old, Mapping):
            return not any(v not in (None, "") for v in new.values())
        return all(_same(old.get(k), v) for k, v in new.items())
    if old in (None, "") and new in (None, ""):
        return True
    if isinstance(old, str) and isinstance(new, str):
        return old.strip() == new.strip()
    return bool(old == new)


def sendable(
    previous: Mapping[str, Any], new: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """``new`` with what a create fixes for good put back to ``previous``'s values.

    Returns that body (what the core will hold after the patch: the base of the next
    comparison) and what was left out, as the record's notice names it. Fields that
    ``previous`` does not carry are taken from ``new``.
    """
    body = json.loads(json.dumps(new))
    left_out: list[str] = []
    for keys, label in _FIXED_AT_CREATE:
        old = _at(previous, "/" + "/".join(keys))
        if old is _MISSING:
            if keys[0] not in _OPTIONAL_AT_CREATE or "type" not in previous:
                continue
            old = None  # a body sent without it: the referral has none
        wanted = _at(body, "/" + "/".join(keys))
        if not _same(old, None if wanted is _MISSING else wanted) and label is not None:
            left_out.append(label)
        node = body
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = json.loads(json.dumps(old))
    return body, left_out


def status_ops(
    status: Status,
    substatus: Substatus,
    reason: str | None = None,
    *,
    stage_format: SalesStageFormat = "percent",
) -> list[dict[str, Any]]:
    """JSON Patch ops for a lifecycle change (``Closed``/``Won``, ``Active``/``Accepted`` …)."""
    ops: list[dict[str, Any]] = [
        {"op": "replace", "path": "/status", "value": str(status)},
        {"op": "replace", "path": "/substatus", "value": str(substatus)},
    ]
    stage = sales_stage_value(StandardStage.WON, stage_format)
    if substatus == Substatus.WON and stage is not None:
        ops.append({"op": "replace", "path": "/salesStage", "value": stage})
    if reason is not None:
        ops.append({"op": "replace", "path": "/statusReason", "value": reason})
    return ops


def _folded(value: Any) -> str | None:
    return value.strip().casefold() if isinstance(value, str) and value.strip() else None


def created_differences(
    sent: Mapping[str, Any], returned: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The patch that brings a just-created referral to what its create ``sent``.

    The core may start a deal at its own status (CR20's create answers Active/Accepted
    to a New/Pending body) or leave fields out (CR20's answer has no closingDateTime);
    a core that keeps what it was sent needs no patch. A referral the core created
    closed is never patched: terminal is terminal.
    """
    if _folded(returned.get("status")) == "closed":
        return []
    ops = patch_ops(returned, sent)
    status, substatus = sent.get("status"), sent.get("substatus")
    if (
        status
        and substatus
        and (_folded(status), _folded(substatus))
        != (
            _folded(returned.get("status")),
            _folded(returned.get("substatus")),
        )
    ):
        ops = [op for op in ops if op["path"] not in ("/status", "/substatus")]
        ops += [
            {"op": "replace", "path": "/status", "value": status},
            {"op": "replace", "path": "/substatus", "value": substatus},
        ]
    return ops


def referral_link(referral_id: str, base: str = DEFAULT_LINK_BASE) -> str:
    """The Partner Center web page of a referral (written into the CRM's mirror fields)."""
    return f"{base.rstrip('/')}/{quote(referral_id, safe='')}"
