"""Creating and patching referrals (pure functions over referral dicts).

- :func:`build_referral` turns a create body into a referral: the documented required
  parts (``type``, ``customerProfile``, ``consent``, ``details``: CR20), values checked
  where their form is documented, server fields set, everything else kept as sent.
- :func:`apply_patch` applies an RFC 6902 patch (``add`` and ``replace`` only, PA20) to
  a copy of a referral and checks the rules Microsoft documents: the status table and
  its transitions (RR), terminal deals unchangeable except the registration of a won
  deal (the seed), and deal registration eligibility (the seed). In strict mode (for
  client tests) only the paths of Microsoft's certified connector are accepted.

The store decides what happens around them (Microsoft's referral, eTags, timestamps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sandbox.partner_center import fields as f
from sandbox.partner_center.fields import ReferralError

#: fields the server owns: ignored in a create body, refused in a patch
SERVER_FIELDS = frozenset(
    {
        "id",
        "engagementId",
        "eTag",
        "createdDateTime",
        "updatedDateTime",
        "expirationDateTime",
        "acceptedDateTime",
        "closedDateTime",
        "organizationId",
        "organizationName",
        "direction",
        "registrationStatus",
        "registrations",
        "trackingInfo",
        "links",
        "quality",
        "isSpam",
        "tags",
        "@odata.context",
    }
)
#: the certified connector's PATCH paths (SW: UpdateReferralDetails, DealRegistration,
#: UpdateDealRegistration); strict mode accepts these only
SW_PATHS = frozenset(
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
REGISTRATION_PATH = "/registrations/-"
#: the registration details the certified connector may change after submitting
_REGISTRATION_DETAIL = "/registrations/0/"
#: registrations may (re)start from these registration statuses
REGISTRABLE_FROM = frozenset({"None", "ActionRequired", "Failed"})
_PAIRS = {**f.STATUS_SUBSTATUS, "None": frozenset({"None"})}

EligibleSolution = Callable[[str], bool]


def is_terminal(referral: dict[str, Any]) -> bool:
    return bool(referral["status"] == "Closed")


def registration_eligible(
    referral: dict[str, Any], microsoft_state: tuple[str, str] | None, eligible: EligibleSolution
) -> tuple[bool, str]:
    """The seed's conditions, with the first one that fails."""
    if not f.is_partners(referral):
        return False, "only the partner's own referral can be registered"
    if microsoft_state is None:
        return False, "Microsoft was not invited to this deal (Private deals never register)"
    if microsoft_state not in (("Active", "Accepted"), ("Closed", "Won")):
        return False, "Microsoft has not accepted the invitation nor marked the deal won"
    if referral["status"] == "New":
        return False, "the referral is not accepted yet"
    solutions = ((referral.get("details") or {}).get("requirements") or {}).get("solutions") or []
    ids = [s.get("id") for s in solutions if isinstance(s, dict)]
    if not any(isinstance(i, str) and eligible(i) for i in ids):
        return False, "the deal carries no incentive-eligible solution"
    if referral["status"] == "Closed" and referral["substatus"] != "Won":
        return False, f"the deal is Closed/{referral['substatus']}"
    return True, "eligible"


# --- create ------------------------------------------------------------------------------------


def build_referral(body: Any, now: datetime, *, strict: bool, keep_status: bool) -> dict[str, Any]:
    """A referral from a create ``body``, held by the partner, Outgoing.

    ``keep_status``: the status, substatus and sales stage sent are kept (else every new
    deal starts Active/Accepted, as CR20's answer shows). Without a status the seed's
    default applies: a created deal is Active/Accepted.
    """
    src = f.require_object(body, "body")
    stored = {k: f.clone(v) for k, v in src.items() if k not in SERVER_FIELDS}
    stamp = f.format_time(now)
    referral: dict[str, Any] = {
        "id": f.new_id(),
        "engagementId": f.new_id(),
        **f.PARTNER_ORG,
        "name": None,
        "externalReferenceId": None,
        "createdDateTime": stamp,
        "updatedDateTime": stamp,
        "expirationDateTime": None,
        "acceptedDateTime": stamp,
        "closedDateTime": None,
        "status": "Active",
        "substatus": "Accepted",
        "statusReason": None,
        "qualification": "None",
        "type": None,
        "direction": "Outgoing",
        "salesStage": None,
        "campaignId": None,
        "eTag": f.new_etag(),
        "target": [],
        "customerProfile": None,
        "consent": None,
        "details": None,
        "team": [],
        "inviteContext": None,
        "registrationStatus": "None",
        "registrations": [],
        "trackingInfo": {"microsoftMsxId": None},
    }
    referral.update(stored)
    if not keep_status:
        referral.update(status="Active", substatus="Accepted", salesStage=None)
    elif "status" in src and "substatus" not in src:
        referral["substatus"] = _default_substatus(referral["status"])
    f.require_object(src.get("customerProfile"), "customerProfile")
    f.require_object(src.get("details"), "details")
    f.require_object(src.get("consent"), "consent")
    if src.get("type") is None:
        raise ReferralError("type is required: Independent or Shared", target="type")
    normalise(referral, strict=strict)
    pair = (referral["status"], referral["substatus"])
    if pair[0] == "Closed":
        referral["closedDateTime"] = stamp
    if referral["inviteContext"] is not None:
        referral["inviteContext"].setdefault("invitedBy", {k: v for k, v in f.PARTNER_ORG.items()})
    return referral


def _default_substatus(status: Any) -> Any:
    return {"New": "Pending", "Active": "Accepted", "None": "None"}.get(str(status))


def normalise(referral: dict[str, Any], *, strict: bool) -> None:
    """Check the values whose form is documented, in place; answer enums in their case."""
    referral["type"] = f.enum(referral.get("type"), f.TYPES, "type")
    referral["status"] = f.enum(referral.get("status"), f.STATUSES, "status")
    referral["substatus"] = f.enum(referral.get("substatus"), f.SUBSTATUSES, "substatus")
    if referral["substatus"] not in _PAIRS[referral["status"]]:
        raise ReferralError(
            f"substatus {referral['substatus']} is not allowed with status {referral['status']} "
            f"(allowed: {', '.join(sorted(_PAIRS[referral['status']]))})",
            target="substatus",
        )
    if referral.get("qualification") is not None:
        referral["qualification"] = f.enum(
            referral["qualification"], f.QUALIFICATIONS, "qualification"
        )
    referral["salesStage"] = f.sales_stage(referral.get("salesStage"))
    for key in ("name", "externalReferenceId", "campaignId", "statusReason"):
        f.optional_text(referral.get(key), key)
    profile = f.require_object(referral.get("customerProfile"), "customerProfile")
    address = profile.get("address")
    if address is not None:
        f.country(f.require_object(address, "customerProfile.address").get("country"))
    for key in ("team",):
        _list_of_objects(profile.get(key), f"customerProfile.{key}")
    referral["consent"] = f.consent(referral.get("consent"))
    details = f.require_object(referral.get("details"), "details")
    details["dealValue"] = f.deal_value(details.get("dealValue"))
    f.currency(details.get("currency"))
    if details.get("closingDateTime") is not None:
        details["closingDateTime"] = f.timestamp(
            details["closingDateTime"], "details.closingDateTime"
        )
    f.optional_text(details.get("notes"), "details.notes")
    requirements = details.get("requirements")
    if requirements is not None:
        solutions = f.require_object(requirements, "details.requirements").get("solutions")
        _list_of_objects(solutions, "details.requirements.solutions")
    _list_of_objects(referral.get("team"), "team")
    referral["inviteContext"] = f.invite_context(referral.get("inviteContext"))
    referral["target"] = f.targets(referral.get("target"), strict=strict)


def _list_of_objects(value: Any, target: str) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ReferralError(f"{target} must be a list of objects", target=target)


# --- PATCH -------------------------------------------------------------------------------------


@dataclass
class PatchOutcome:
    referral: dict[str, Any]
    #: consent to Microsoft's sellers was given by this patch
    shared_with_microsoft: bool = False
    registered: bool = False


def apply_patch(
    current: dict[str, Any],
    ops: Any,
    now: datetime,
    microsoft_state: tuple[str, str] | None,
    eligible: EligibleSolution,
    *,
    strict: bool,
) -> PatchOutcome:
    """Apply ``ops`` to a copy of ``current`` and check the result."""
    if not isinstance(ops, list) or not ops:
        raise ReferralError("the body must be a non-empty JSON Patch array", target="body")
    parsed = [_parse_op(op, i, strict=strict) for i, op in enumerate(ops)]
    if is_terminal(current):
        registering = all(
            path == REGISTRATION_PATH or path.startswith(_REGISTRATION_DETAIL)
            for _, path, _ in parsed
        )
        if not (registering and current["substatus"] == "Won"):
            raise ReferralError(
                f"referral {current['id']} is Closed/{current['substatus']}: a closed deal "
                "cannot be changed",
                target="status",
            )
    new = f.clone(current)
    registrations: list[dict[str, Any]] = []
    for op, path, value in parsed:
        if path == REGISTRATION_PATH:
            registrations.append(f.require_object(value, "registrations[-]"))
        else:
            _apply(new, op, path, value)
    normalise(new, strict=strict)
    _check_status(current, new, now)
    if registrations:
        _register(new, registrations, now, microsoft_state, eligible)
    shared = not current["consent"].get(f.MS_CONSENT) and bool(new["consent"].get(f.MS_CONSENT))
    return PatchOutcome(new, shared_with_microsoft=shared, registered=bool(registrations))


def _parse_op(op: Any, index: int, *, strict: bool) -> tuple[str, str, Any]:
    if not isinstance(op, dict):
        raise ReferralError(f"operation {index} must be an object", target=f"[{index}]")
    kind, path = op.get("op"), op.get("path")
    if kind not in ("add", "replace"):
        raise ReferralError(
            f"operation {index}: op {kind!r} is not supported (only add and replace)",
            target=f"[{index}].op",
        )
    if not isinstance(path, str) or not path.startswith("/") or path == "/":
        raise ReferralError(
            f"operation {index}: path {path!r} is not a JSON pointer", target=f"[{index}].path"
        )
    if "value" not in op:
        raise ReferralError(f"operation {index} has no value", target=f"[{index}].value")
    head = path.split("/")[1]
    registration_detail = path.startswith(_REGISTRATION_DETAIL)
    if path != REGISTRATION_PATH and not registration_detail and head in SERVER_FIELDS:
        raise ReferralError(f"operation {index}: {head} is read-only", target=path)
    if strict and path not in SW_PATHS and not registration_detail:
        raise ReferralError(
            f"operation {index}: path {path} is not one the API lets a partner patch; "
            f"allowed: {', '.join(sorted(SW_PATHS))}",
            target=path,
        )
    return str(kind), path, op["value"]


def _apply(doc: dict[str, Any], op: str, path: str, value: Any) -> None:
    """RFC 6902 ``add``/``replace`` on a JSON pointer; missing objects on the way are made."""
    keys = [k.replace("~1", "/").replace("~0", "~") for k in path.split("/")[1:]]
    node: Any = doc
    for key in keys[:-1]:
        if isinstance(node, list):
            node = _item(node, key, path)
            continue
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        node = child
    last = keys[-1]
    if isinstance(node, list):
        if last == "-":
            if op != "add":
                raise ReferralError(f"{path} appends to a list: use op add", target=path)
            node.append(f.clone(value))
        elif op == "add":
            node.insert(_index(node, last, path, len(node)), f.clone(value))
        else:
            node[_index(node, last, path, len(node) - 1)] = f.clone(value)
        return
    if not isinstance(node, dict):
        raise ReferralError(f"{path} does not name a field of the referral", target=path)
    node[last] = f.clone(value)


def _index(items: list[Any], key: str, path: str, highest: int) -> int:
    if not key.isdigit() or int(key) > highest:
        raise ReferralError(f"{path}: no item {key} in the list", target=path)
    return int(key)


def _item(items: list[Any], key: str, path: str) -> Any:
    if not key.isdigit() or int(key) >= len(items):
        raise ReferralError(f"{path}: no item {key} in the list", target=path)
    return items[int(key)]


def _check_status(old: dict[str, Any], new: dict[str, Any], now: datetime) -> None:
    pair = (new["status"], new["substatus"])
    if pair == (old["status"], old["substatus"]):
        return
    if old["status"] != "None" and new["status"] not in f.NEXT_STATUS.get(old["status"], ()):
        raise ReferralError(
            f"referral {old['id']} cannot move from {old['status']}/{old['substatus']} to "
            f"{new['status']}/{new['substatus']}",
            target="status",
        )
    stamp = f.format_time(now)
    if pair == ("Active", "Accepted"):
        new["acceptedDateTime"] = stamp
    elif new["status"] == "Closed":
        new["closedDateTime"] = stamp


def _register(
    new: dict[str, Any],
    registrations: list[dict[str, Any]],
    now: datetime,
    microsoft_state: tuple[str, str] | None,
    eligible: EligibleSolution,
) -> None:
    ok, reason = registration_eligible(new, microsoft_state, eligible)
    if ok and new["registrationStatus"] not in REGISTRABLE_FROM:
        ok, reason = False, f"the deal is already registered ({new['registrationStatus']})"
    if not ok:
        raise ReferralError(
            f"referral {new['id']} cannot be registered: {reason}", target="registrations"
        )
    for value in registrations:
        new["registrations"].append(
            {
                **f.clone(value),
                "id": f.new_id(),
                "status": "ReviewPending",
                "registrationDateTime": f.format_time(now),
            }
        )
    new["registrationStatus"] = "ReviewPending"
