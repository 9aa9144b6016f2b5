"""The co-sell lifecycle decisions the CRM drives (pure: no I/O, no clock).

- :func:`answer_of`: what a seller's record says about an incoming deal that waits for
  an answer (accept, decline, keep waiting) or that can no longer be answered.
- :func:`registration_of`: whether a won deal that asks for deal registration is
  submitted now, or why not.
- :func:`registration_blockers`: the seed's registration conditions that a deal fails.

The seed's rules: an incoming deal is accepted or declined (with a reason) within
14 days; registration needs Microsoft invited, Microsoft accepted or won, and an
incentive-eligible solution, and never applies to a Private deal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from connector.dealcore.payload import status_ops
from connector.mapping.apply import clean_text
from connector.mapping.schema import MappingFile
from connector.model import CrmOpportunity, StandardStage, Status, Substatus

#: solution ids that are incentive-eligible when the core does not say (the sandbox's and
#: Partner Center's IP co-sell solutions)
INCENTIVE_PREFIXES = ("SOL-IP-",)
#: registration statuses from which a (new) registration may be submitted
REGISTRABLE_FROM = frozenset({None, "None", "ActionRequired", "Failed"})
ACCEPT = "accept"
DECLINE = "decline"


@dataclass(frozen=True)
class Answer:
    """What to do with an incoming deal's record.

    ``kind``: ``accept`` / ``decline`` (``ops`` set), ``wait`` (nothing asked), or
    ``refuse`` (something was asked that cannot be sent; ``notice`` says why).
    """

    kind: str
    ops: tuple[dict[str, Any], ...] = ()
    notice: str | None = None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def asked_action(record: CrmOpportunity, mapping: MappingFile) -> str | None:
    """``accept`` or ``decline`` from the mapped action field, else None."""
    field = mapping.inbound.action_field
    value = _text(record.fields.get(field)) if field else None
    if value is None:
        return None
    lowered = value.lower()
    if lowered.startswith("accept"):
        return ACCEPT
    if lowered.startswith("decline"):
        return DECLINE
    return None


def answer_of(
    record: CrmOpportunity,
    mapping: MappingFile,
    status: str | None,
    substatus: str | None,
    stage: StandardStage | None,
) -> Answer:
    """The answer a seller gave to an incoming deal (link status ``status/substatus``).

    Accepting: the action field says Accept, or the record left the mapped "on hold"
    stage. Declining: the action field says Decline (or the record moved to a lost
    stage), with the reason from the mapped decline-reason field; a decline without
    a reason is not sent. A deal that is no longer New cannot be answered: asking
    again on a declined or expired deal is explained, on an accepted one ignored.
    """
    inbound = mapping.inbound
    action = asked_action(record, mapping)
    label = _text(record.fields.get(mapping.stages.field))
    # a stage answers only a deal still waiting: once it is closed, the CRM's own stage
    # may follow it there (inbound.close), and that asks nothing
    if action is None and status == Status.NEW.value and stage is StandardStage.LOST:
        action = DECLINE
    elif (
        action is None
        and status == Status.NEW.value
        and inbound.stage
        and label
        and label != inbound.stage
    ):
        action = ACCEPT
    if status != Status.NEW.value:
        if action is not None and substatus in (Substatus.DECLINED.value, Substatus.EXPIRED.value):
            if action == DECLINE and substatus == Substatus.DECLINED.value:
                return Answer("wait")
            return Answer(
                "refuse",
                notice=(
                    f"Not sent: the referral is {status}/{substatus} in Partner Center; "
                    f"it can no longer be {'accepted' if action == ACCEPT else 'declined'}."
                ),
            )
        return Answer("wait")
    if action == ACCEPT:
        return Answer(ACCEPT, tuple(status_ops(Status.ACTIVE, Substatus.ACCEPTED)))
    if action == DECLINE:
        field = inbound.decline_reason_field
        # sent to the core as text: control characters (C0, C1) go as in every mapped text
        raw = _text(record.fields.get(field)) if field else None
        reason = (clean_text(raw, multiline=True) or None) if raw else None
        if reason is None:
            where = f" in {field}" if field else " (map inbound.decline_reason_field)"
            return Answer(
                "refuse",
                notice=f"Not sent: declining a referral needs a reason{where}; fill it in.",
            )
        if inbound.decline_reasons:
            # the seller picks a reason; the mapping says what Partner Center is told
            picked = inbound.decline_reasons.get(reason)
            if picked is None:
                return Answer(
                    "refuse",
                    notice=(
                        f"Not sent: {field} is {reason[:60]!r}, which is not a decline reason "
                        f"of the mapping; pick one of {', '.join(inbound.decline_reasons)}."
                    ),
                )
            reason = clean_text(picked, multiline=True)
        return Answer(DECLINE, tuple(status_ops(Status.CLOSED, Substatus.DECLINED, reason[:500])))
    return Answer("wait")


def _solution_ids(body: Mapping[str, Any]) -> list[str]:
    details = body.get("details")
    requirements = details.get("requirements") if isinstance(details, Mapping) else None
    solutions = requirements.get("solutions") if isinstance(requirements, Mapping) else None
    if not isinstance(solutions, list):
        return []
    return [str(s["id"]) for s in solutions if isinstance(s, Mapping) and s.get("id")]


def shared_with_microsoft(body: Mapping[str, Any]) -> bool:
    """Whether the deal ``body`` consents to Microsoft's sellers (key case aside)."""
    consent = body.get("consent")
    return isinstance(consent, Mapping) and any(
        isinstance(k, str)
        and k.casefold() == "consenttosharereferralwithmicrosoftsellers"
        and v is True
        for k, v in consent.items()
    )


def registration_blockers(
    body: Mapping[str, Any],
    microsoft_status: str | None,
    prefixes: tuple[str, ...] = INCENTIVE_PREFIXES,
) -> list[str]:
    """The seed's registration conditions that the deal ``body`` fails (empty: eligible).

    Microsoft is invited when the deal is shared with its sellers or Microsoft's referral
    in the engagement is known (``microsoft_status``).
    """
    reasons: list[str] = []
    if microsoft_status is None and not shared_with_microsoft(body):
        reasons.append("Microsoft is not invited (a Private deal is never registered)")
    elif microsoft_status not in ("Active/Accepted", "Closed/Won"):
        reasons.append(
            f"Microsoft has not accepted nor won the deal (Microsoft: {microsoft_status or 'none'})"
        )
    if not incentive_solutions(body, prefixes):
        reasons.append("the deal has no incentive-eligible solution")
    return reasons


def incentive_solutions(
    body: Mapping[str, Any], prefixes: tuple[str, ...] = INCENTIVE_PREFIXES
) -> list[str]:
    """The deal's incentive-eligible solution ids."""
    return [s for s in _solution_ids(body) if s.startswith(prefixes)]


@dataclass(frozen=True)
class Registration:
    """``submit`` (send ``ops``), ``refuse`` (``notice`` says why) or ``none``."""

    kind: str
    ops: tuple[dict[str, Any], ...] = ()
    notice: str | None = None


def wants_registration(record: CrmOpportunity, mapping: MappingFile) -> bool:
    field = mapping.deal_type.register_field
    if field is None:
        return False
    value = record.fields.get(field)
    if isinstance(value, str):
        return value.strip().lower() in {"true", "yes", "1"}
    return bool(value)


def registration_of(
    record: CrmOpportunity,
    mapping: MappingFile,
    *,
    status: str | None,
    substatus: str | None,
    registration_status: str | None,
    blockers: list[str],
    solutions: Sequence[str] = (),
) -> Registration:
    """Whether a deal that asks for registration (the mapped checkbox) is submitted now.

    ``blockers`` are :func:`registration_blockers`' for the deal; ``solutions`` its
    incentive-eligible solutions, sent in the registration (the certified connector's
    ``AzureIPCoSell`` shape).
    """
    if not wants_registration(record, mapping):
        return Registration("none")
    if registration_status not in REGISTRABLE_FROM:
        return Registration("none")  # already submitted; its review status is mirrored
    if (status, substatus) != (Status.CLOSED.value, Substatus.WON.value):
        if status == Status.CLOSED.value:
            return Registration(
                "refuse",
                notice=f"Registration not sent: the deal is {status}/{substatus}; only a won "
                "deal is registered.",
            )
        return Registration(
            "refuse", notice="Registration waits: it is sent once the deal is marked won."
        )
    if blockers:
        return Registration("refuse", notice=f"Registration not sent: {'; '.join(blockers)}.")
    value = {"type": "AzureIPCoSell", "solutionDetails": [{"id": s} for s in solutions]}
    return Registration(
        "submit", ({"op": "add", "path": "/registrations/-", "value": value},), None
    )
