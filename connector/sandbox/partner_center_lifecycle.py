"""The seed's lifecycle rules, as pure functions over referral dicts.

- :func:`build_outgoing` validates a create body and returns the new deal.
- :func:`apply_patch` applies a JSON Patch to a copy of a deal and checks the
  result: the status table and transitions, terminal immutability, the
  invitation combinations, "sharing with Microsoft cannot be undone" and deal
  registration eligibility. The store decides what happens around it (Microsoft's
  related referral, eTags, timestamps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connector.sandbox import partner_center_fields as f
from connector.sandbox.partner_center_fields import ReferralError

#: status → statuses a partner may move a deal to (Expired is set by the core only)
NEXT_STATUS = {"New": ("New", "Active", "Closed"), "Active": ("Active", "Closed"), "Closed": ()}
#: substatuses a partner may close with, by the status the deal leaves
CLOSE_FROM = {"New": frozenset({"Declined"}), "Active": frozenset({"Won", "Lost"})}
#: registrations may (re)start from these registration statuses
REGISTRABLE_FROM = frozenset({"None", "ActionRequired", "Failed"})

EligibleSolution = Callable[[str], bool]


def is_terminal(referral: dict[str, Any]) -> bool:
    return bool(referral["status"] == "Closed")


def microsoft_invited(referral: dict[str, Any]) -> bool:
    """Co-sell: consent to share with Microsoft sellers and an invitation context."""
    return bool(referral["consent"].get(f.MS_CONSENT)) and referral.get("inviteContext") is not None


def partner_targets(referral: dict[str, Any]) -> list[str]:
    return [t["id"] for t in referral.get("target") or [] if t.get("type") == "Partner"]


def deal_kind(referral: dict[str, Any]) -> str:
    """``Private``, ``Co-sell`` or ``P2P`` (partner to partner without Microsoft)."""
    if microsoft_invited(referral):
        return "Co-sell"
    if referral["type"] == "Independent":
        return "Private"
    return "P2P"


def registration_eligible(
    referral: dict[str, Any], microsoft_state: tuple[str, str] | None, eligible: EligibleSolution
) -> tuple[bool, str]:
    """The seed's three conditions (never for Private deals), with the first reason that fails."""
    if referral["owner"]["type"] != "Partner":
        return False, "only the partner's own referral can be registered"
    if deal_kind(referral) == "Private" or not microsoft_invited(referral):
        return False, "Microsoft was not invited to this deal (Private deals never register)"
    if microsoft_state not in (("Active", "Accepted"), ("Closed", "Won")):
        return False, "Microsoft has not accepted the invitation nor marked the deal won"
    if referral["status"] == "New":
        return False, "the referral is not accepted yet"
    solutions = referral["details"].get("requirements", {}).get("solutions", [])
    if not any(eligible(s["id"]) for s in solutions):
        return False, "the deal carries no incentive-eligible solution"
    if referral["status"] == "Closed" and referral["substatus"] != "Won":
        return False, f"the deal is Closed/{referral['substatus']}"
    return True, "eligible"


def build_outgoing(body: Any, now: datetime) -> dict[str, Any]:
    """A deal the partner creates: validated fields, Active/Accepted, stage 10, Outgoing."""
    src = f.require_object(body, "body")
    kind = src.get("type")
    if kind not in f.TYPES:
        raise ReferralError(f"type must be Independent or Shared (got {kind!r})", target="type")
    if src.get("direction", "Outgoing") != "Outgoing":
        raise ReferralError("a partner can only create Outgoing referrals", target="direction")
    details = f.require_object(src.get("details"), "details")
    requirements = details.get("requirements")
    if requirements is not None and not isinstance(requirements, dict):
        raise ReferralError("details.requirements must be an object", target="details.requirements")
    profile = f.require_object(src.get("customerProfile"), "customerProfile")
    address = f.require_object(profile.get("address"), "customerProfile.address")
    stamp = f.format_time(now)
    referral: dict[str, Any] = {
        "id": f.new_id(),
        "engagementId": f.new_id(),
        "eTag": f.new_etag(),
        "name": f.require_text(src.get("name"), "name", max_len=250),
        "externalReferenceId": f.require_text(
            src.get("externalReferenceId"), "externalReferenceId", max_len=100, optional=True
        ),
        "createdDateTime": stamp,
        "updatedDateTime": stamp,
        "acceptedDateTime": stamp,
        "closedDateTime": None,
        "expirationDateTime": None,
        "status": "Active",
        "substatus": "Accepted",
        "statusReason": None,
        "type": kind,
        "qualification": f.qualification(src.get("qualification")),
        "direction": "Outgoing",
        "salesStage": "10",
        "campaignId": f.require_text(src.get("campaignId"), "campaignId", optional=True),
        "customerProfile": {
            "name": f.require_text(profile.get("name"), "customerProfile.name", max_len=250),
            "size": profile.get("size") if isinstance(profile.get("size"), str) else None,
            "address": {
                **{k: v for k, v in address.items() if isinstance(v, str) and k != "country"},
                "country": f.country(address.get("country")),
            },
            "team": f.contacts(profile.get("team")),
            "ids": profile.get("ids") if isinstance(profile.get("ids"), list) else [],
        },
        "consent": f.consent(src.get("consent")),
        "details": {
            "notes": f.require_text(
                details.get("notes"), "details.notes", max_len=4000, optional=True
            ),
            "dealValue": f.deal_value(details.get("dealValue")),
            "currency": f.currency(details.get("currency")),
            "closingDateTime": f.timestamp(
                details.get("closingDateTime"), "details.closingDateTime"
            ),
            "requirements": {"solutions": f.solutions((requirements or {}).get("solutions"))},
        },
        "team": f.team(src.get("team")),
        "inviteContext": f.invite_context(src.get("inviteContext")),
        "target": f.targets(src.get("target")),
        "registrationStatus": "None",
        "registrations": [],
        "trackingInfo": {"microsoftMsxId": None},
        "owner": {"type": "Partner", **f.PARTNER_ORG},
        "registrationEligible": False,
    }
    check_deal_type(referral)
    if referral["inviteContext"] is not None:
        referral["inviteContext"]["invitedBy"] = dict(f.PARTNER_ORG)
    return referral


def check_deal_type(referral: dict[str, Any]) -> None:
    """Private, Co-sell and partner-to-partner as the reference defines them."""
    invited_ms = microsoft_invited(referral)
    if referral.get("inviteContext") is not None and not referral["consent"][f.MS_CONSENT]:
        raise ReferralError(
            "inviting Microsoft (inviteContext) needs "
            "consent.consentToShareReferralWithMicrosoftSellers = true",
            target=f"consent.{f.MS_CONSENT}",
        )
    if referral["type"] == "Independent":
        if invited_ms or partner_targets(referral):
            raise ReferralError(
                "an Independent (Private) deal invites nobody: use type Shared to invite "
                "Microsoft or partners",
                target="type",
            )
        if referral["consent"][f.MS_CONSENT]:
            raise ReferralError(
                "a Private deal is not shared with Microsoft sellers: set "
                "consentToShareReferralWithMicrosoftSellers to false, or add an inviteContext "
                "and type Shared for a co-sell deal",
                target=f"consent.{f.MS_CONSENT}",
            )
    elif not invited_ms and not partner_targets(referral):
        raise ReferralError(
            "a Shared deal needs an inviteContext with consent (co-sell) or a target "
            '{"type": "Partner", "id": …} (partner to partner)',
            target="type",
        )
    if invited_ms and not referral["customerProfile"]["team"]:
        raise ReferralError(
            "inviting Microsoft needs a customer contact in customerProfile.team",
            target="customerProfile.team",
        )


# --- PATCH -------------------------------------------------------------------------------

#: path → (JSON location, validator of the new value); "-" paths append to a list
_SCALAR_PATHS: dict[str, tuple[tuple[str, ...], Callable[[Any, str], Any]]] = {
    "/name": (("name",), lambda v, t: f.require_text(v, t, max_len=250)),
    "/campaignId": (("campaignId",), lambda v, t: f.require_text(v, t, optional=True)),
    "/externalReferenceId": (
        ("externalReferenceId",),
        lambda v, t: f.require_text(v, t, max_len=100, optional=True),
    ),
    "/salesStage": (("salesStage",), f.sales_stage),
    "/status": (("status",), lambda v, t: _enum(v, t, f.STATUS_SUBSTATUS)),
    "/substatus": (("substatus",), lambda v, t: _enum(v, t, f.ALL_SUBSTATUSES)),
    "/statusReason": (("statusReason",), lambda v, t: f.require_text(v, t, optional=True)),
    "/team": (("team",), f.team),
    "/customerProfile/team": (("customerProfile", "team"), f.contacts),
    "/details/notes": (
        ("details", "notes"),
        lambda v, t: f.require_text(v, t, max_len=4000, optional=True),
    ),
    "/details/dealValue": (("details", "dealValue"), f.deal_value),
    "/details/currency": (("details", "currency"), f.currency),
    "/details/closingDateTime": (("details", "closingDateTime"), f.timestamp),
    "/details/requirements/solutions": (("details", "requirements", "solutions"), f.solutions),
    "/consent/consentToShareReferralWithMicrosoftSellers": (
        ("consent", f.MS_CONSENT),
        f.require_bool,
    ),
    "/inviteContext": (("inviteContext",), f.invite_context),
}
_LIST_PATHS: dict[str, tuple[tuple[str, ...], Callable[[Any, str], Any], int]] = {
    "/team/-": (("team",), lambda v, t: f.person(v, t, complete=True), f.MAX_TEAM),
    "/customerProfile/team/-": (
        ("customerProfile", "team"),
        lambda v, t: f.person(v, t, complete=False),
        f.MAX_TEAM,
    ),
    "/details/requirements/solutions/-": (
        ("details", "requirements", "solutions"),
        f.solution,
        f.MAX_SOLUTIONS,
    ),
    "/target/-": (("target",), f.target_entry, 1000),
}
REGISTRATION_PATH = "/registrations/-"
ALLOWED_PATHS = (*_SCALAR_PATHS, *_LIST_PATHS, REGISTRATION_PATH)


def _enum(value: Any, target: str, allowed: Any) -> str:
    if value not in allowed:
        raise ReferralError(
            f"{target} must be one of {', '.join(sorted(allowed))} (got {value!r})", target=target
        )
    return str(value)


@dataclass
class PatchOutcome:
    referral: dict[str, Any]
    #: Microsoft was invited by this patch: the store creates its related referral
    invited_microsoft: bool = False
    registered: bool = False


def apply_patch(
    current: dict[str, Any],
    ops: Any,
    now: datetime,
    microsoft_state: tuple[str, str] | None,
    eligible: EligibleSolution,
) -> PatchOutcome:
    """Apply ``ops`` (RFC 6902, ``add``/``replace`` only) to a copy of ``current`` and check it."""
    if not isinstance(ops, list) or not ops:
        raise ReferralError("the body must be a non-empty JSON Patch array", target="body")
    parsed = [_parse_op(op, i) for i, op in enumerate(ops)]
    if is_terminal(current):
        only_registration = all(path == REGISTRATION_PATH for _, path, _ in parsed)
        if not (only_registration and current["substatus"] == "Won"):
            raise ReferralError(
                f"referral {current['id']} is Closed/{current['substatus']}: terminal deals "
                "accept no edit",
                inner_code="ReferralClosed",
            )
    new = f.clone(current)
    registrations: list[dict[str, Any]] = []
    invited_partners: list[str] = []
    for op, path, value in parsed:
        target = path.strip("/").replace("/", ".")
        if path == REGISTRATION_PATH:
            registrations.append(f.require_object(value, "registrations[-]"))
        elif path in _SCALAR_PATHS:
            keys, check = _SCALAR_PATHS[path]
            _put(new, keys, check(value, target))
        else:
            keys, check, limit = _LIST_PATHS[path]
            if op != "add":
                raise ReferralError(f"{path} appends to a list: use op add", target=path)
            items = _get(new, keys)
            if len(items) >= limit:
                raise ReferralError(f"{target[:-2]} already holds {limit} items", target=path)
            item = check(value, f"{target[:-2]}[{len(items)}]")
            if path == "/target/-" and item["type"] == "Partner":
                if (
                    item["id"] in partner_targets(new)
                    or item["id"] == f.PARTNER_ORG["organizationId"]
                ):
                    raise ReferralError(f"partner {item['id']} is already on the deal", target=path)
                invited_partners.append(item["id"])
            items.append(item)
    _check_status(current, new, now)
    invited = _check_invitations(current, new, invited_partners)
    if registrations:
        _register(new, registrations, now, microsoft_state, eligible)
    return PatchOutcome(new, invited_microsoft=invited, registered=bool(registrations))


def _parse_op(op: Any, index: int) -> tuple[str, str, Any]:
    if not isinstance(op, dict):
        raise ReferralError(f"operation {index} must be an object", target=f"[{index}]")
    kind, path = op.get("op"), op.get("path")
    if kind not in ("add", "replace"):
        raise ReferralError(
            f"operation {index}: op {kind!r} is not supported (only add and replace)",
            target=f"[{index}].op",
        )
    if path not in ALLOWED_PATHS:
        raise ReferralError(
            f"operation {index}: path {path!r} cannot be patched; allowed: "
            + ", ".join(ALLOWED_PATHS),
            target=str(path),
        )
    if "value" not in op:
        raise ReferralError(f"operation {index} has no value", target=f"[{index}].value")
    return str(kind), str(path), op["value"]


def _get(doc: dict[str, Any], keys: tuple[str, ...]) -> Any:
    node: Any = doc
    for key in keys:
        child = node.get(key)
        if child is None:
            child = [] if key == keys[-1] else {}
            node[key] = child
        node = child
    return node


def _put(doc: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    node = doc
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def _check_status(old: dict[str, Any], new: dict[str, Any], now: datetime) -> None:
    pair = (new["status"], new["substatus"])
    moved = pair != (old["status"], old["substatus"])
    if moved:
        if new["substatus"] not in f.STATUS_SUBSTATUS[new["status"]]:
            raise ReferralError(
                f"substatus {new['substatus']} is not allowed with status {new['status']} "
                f"(allowed: {', '.join(sorted(f.STATUS_SUBSTATUS[new['status']]))})",
                target="substatus",
                inner_code="InvalidTransition",
            )
        allowed = new["status"] in NEXT_STATUS[old["status"]]
        if new["status"] == "Closed":
            allowed = allowed and new["substatus"] in CLOSE_FROM.get(old["status"], ())
        if not allowed:
            raise ReferralError(
                f"referral {old['id']} cannot move from {old['status']}/{old['substatus']} to "
                f"{new['status']}/{new['substatus']}",
                target="status",
                inner_code="InvalidTransition",
            )
    stage_set = new.get("salesStage") != old.get("salesStage")
    if stage_set and new["status"] != "Active" and pair != ("Closed", "Won"):
        raise ReferralError("salesStage reports progress on Active deals only", target="salesStage")
    if stage_set and new["salesStage"] == "100" and pair != ("Closed", "Won"):
        raise ReferralError(
            'salesStage "100" means won: close the deal with status Closed, substatus Won',
            target="salesStage",
        )
    if not moved:
        return
    stamp = f.format_time(now)
    if pair == ("Active", "Accepted"):
        new["acceptedDateTime"] = stamp
        if not stage_set:
            new["salesStage"] = "10"
    elif new["status"] == "Closed":
        new["closedDateTime"] = stamp
        if new["substatus"] == "Won":
            new["salesStage"] = "100"
        if new["substatus"] == "Declined" and not new.get("statusReason"):
            raise ReferralError("declining a referral needs a statusReason", target="statusReason")


def _check_invitations(old: dict[str, Any], new: dict[str, Any], partners: list[str]) -> bool:
    """The seed's combinations table; returns True when this patch invites Microsoft."""
    was_shared_ms = microsoft_invited(old)
    if was_shared_ms and not microsoft_invited(new):
        raise ReferralError(
            f"referral {old['id']} is shared with Microsoft and that cannot be undone: keep "
            "consentToShareReferralWithMicrosoftSellers true and the inviteContext",
            target="inviteContext"
            if new.get("inviteContext") is None
            else f"consent.{f.MS_CONSENT}",
            inner_code="SharingIrreversible",
        )
    if partners:
        if old["direction"] == "Incoming":
            raise ReferralError(
                f"referral {old['id']} is Incoming: partners cannot be invited to inbound deals",
                target="target",
                inner_code="InvitationNotAllowed",
            )
        new["type"] = "Shared"
    inviting_ms = not was_shared_ms and new.get("inviteContext") is not None
    if inviting_ms:
        if not new["consent"][f.MS_CONSENT]:
            raise ReferralError(
                "inviting Microsoft needs consentToShareReferralWithMicrosoftSellers = true in "
                "the same patch",
                target=f"consent.{f.MS_CONSENT}",
            )
        new["type"] = "Shared"
        new["inviteContext"]["invitedBy"] = dict(f.PARTNER_ORG)
    elif new["type"] == "Independent" and new["consent"][f.MS_CONSENT]:
        raise ReferralError(
            "consent alone does not invite Microsoft: add /inviteContext with an "
            "assistanceRequestCode in the same patch",
            target="inviteContext",
        )
    if not was_shared_ms and inviting_ms and not new["customerProfile"].get("team"):
        raise ReferralError(
            "inviting Microsoft needs a customer contact in customerProfile.team",
            target="customerProfile.team",
        )
    if was_shared_ms and new.get("inviteContext") is not None:
        new["inviteContext"].setdefault("invitedBy", old["inviteContext"].get("invitedBy"))
    return inviting_ms


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
            f"referral {new['id']} cannot be registered: {reason}",
            target="registrations",
            inner_code="RegistrationNotEligible",
        )
    for value in registrations:
        new["registrations"].append(
            {
                **value,
                "id": f.new_id(),
                "status": "ReviewPending",
                "createdDateTime": f.format_time(now),
            }
        )
    new["registrationStatus"] = "ReviewPending"
