"""Planning (pure): what to do with one mapped record, given what the store knows.

No I/O and no clock: the engine hands in the mapped record and its link; the
planner answers with exactly one action. The correctness rules of the
architecture live here: no echo (fingerprints), terminal is terminal, sharing
with Microsoft is never undone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from connector.dealcore.payload import partner_ids, patch_ops, referral_body, status_ops
from connector.model import (
    STAGE_IGNORED,
    DealDraft,
    DealType,
    Rejection,
    StandardStage,
    Status,
    Substatus,
)


class SkipReason(StrEnum):
    UNCHANGED = "unchanged"
    TERMINAL = "terminal"
    LOST_BEFORE_SHARED = "lost_before_shared"
    DELETED = "deleted"
    INCOMING = "incoming_not_answered"
    #: the record's stage is mapped to ``ignore``
    STAGE_IGNORED = "stage_ignored"


class LinkFacts(Protocol):
    """What the planner reads of a link (the store's ``Link`` satisfies it)."""

    @property
    def referral_id(self) -> str | None: ...
    @property
    def fingerprint(self) -> str | None: ...
    @property
    def sent_body(self) -> Mapping[str, Any] | None: ...
    @property
    def status(self) -> str | None: ...
    @property
    def substatus(self) -> str | None: ...
    @property
    def direction(self) -> str: ...


@dataclass(frozen=True)
class Create:
    draft: DealDraft
    body: dict[str, Any]
    #: a deal already won in the CRM is created, then closed as won
    close_as: Substatus | None = None
    #: the fingerprint of the record as mapped (computed once, when planned)
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", self.draft.fingerprint())


@dataclass(frozen=True)
class Update:
    draft: DealDraft
    body: dict[str, Any]
    ops: list[dict[str, Any]]
    #: the fingerprint of the record as mapped (stored once the update is applied)
    fingerprint: str
    closes: Substatus | None = None
    #: a part of the change the lifecycle forbids, explained for the CRM record
    warning: str | None = None


@dataclass(frozen=True)
class Skip:
    crm_id: str
    reason: SkipReason
    #: shown in the record's sync-error field when set (the seller should know)
    notice: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class Reject:
    crm_id: str
    reasons: tuple[str, ...]
    code: str = "invalid_record"

    @property
    def message(self) -> str:
        return "; ".join(self.reasons)


Action = Create | Update | Skip | Reject


@dataclass
class PlanCounts:
    """Counts by action kind, for reports and dry runs."""

    created: int = 0
    updated: int = 0
    closed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)


def is_terminal(status: str | None, substatus: str | None) -> bool:
    return status == Status.CLOSED.value or substatus in {
        Substatus.WON.value,
        Substatus.LOST.value,
        Substatus.DECLINED.value,
        Substatus.EXPIRED.value,
    }


def plan_outbound(item: DealDraft | Rejection, link: LinkFacts | None) -> Action:
    """One action for one mapped record. ``link`` is None when the record was never shared."""
    if isinstance(item, Rejection):
        if item.code == STAGE_IGNORED:
            return Skip(item.crm_id, SkipReason.STAGE_IGNORED)
        return Reject(item.crm_id, item.reasons, item.code)
    draft = item
    fingerprint = draft.fingerprint()
    if link is None or link.referral_id is None:
        if draft.stage is StandardStage.LOST:
            return Skip(draft.crm_id, SkipReason.LOST_BEFORE_SHARED, fingerprint=fingerprint)
        close_as = Substatus.WON if draft.stage is StandardStage.WON else None
        return Create(draft, referral_body(draft), close_as, fingerprint)
    if link.fingerprint == fingerprint:
        return Skip(draft.crm_id, SkipReason.UNCHANGED, fingerprint=fingerprint)
    if is_terminal(link.status, link.substatus):
        return Skip(
            draft.crm_id,
            SkipReason.TERMINAL,
            notice=(
                f"Not sent: the referral is {link.status}/{link.substatus} in Partner Center, "
                "and a closed deal cannot be edited."
            ),
            fingerprint=fingerprint,
        )
    if link.direction == "Incoming" and link.status == Status.NEW.value:
        # An incoming deal is answered (accept/decline) before its content can change.
        return Skip(draft.crm_id, SkipReason.INCOMING, fingerprint=fingerprint)
    previous = dict(link.sent_body or {})
    warnings: list[str] = []
    if _was_shared_with_microsoft(previous) and draft.deal_type is DealType.PRIVATE:
        warnings.append(
            "Sharing with Microsoft cannot be undone; the deal stays co-sell in Partner Center."
        )
        draft = _keep_shared(draft, previous)
    if link.direction == "Incoming":
        # The seed's combinations: partners are invited only to deals your company created.
        invited = set(partner_ids(previous))
        refused = [p for p in draft.partners if p not in invited]
        if refused:
            warnings.append(
                f"Not sent: inviting partner {', '.join(refused)} was refused. Partners can be "
                "invited only to deals your company created, not to a deal it received "
                "(Inbound); clear the partner field."
            )
            draft = _without_partners(draft, invited)
    warning = " ".join(warnings) or None
    body = referral_body(draft)
    ops = patch_ops(previous, body)
    closes = None
    if draft.stage is StandardStage.WON:
        closes = Substatus.WON
    elif draft.stage is StandardStage.LOST:
        closes = Substatus.LOST
    if closes is not None:
        closing = status_ops(Status.CLOSED, closes)
        paths = {op["path"] for op in closing}
        ops = [op for op in ops if op["path"] not in paths] + closing
    if not ops:
        return Skip(draft.crm_id, SkipReason.UNCHANGED, notice=warning, fingerprint=fingerprint)
    return Update(draft, body, ops, fingerprint, closes, warning)


def _was_shared_with_microsoft(body: Mapping[str, Any]) -> bool:
    consent = body.get("consent") or {}
    return bool(consent.get("consentToShareReferralWithMicrosoftSellers")) and bool(
        body.get("inviteContext")
    )


def _without_partners(draft: DealDraft, keep: set[str]) -> DealDraft:
    from dataclasses import replace

    partners = tuple(p for p in draft.partners if p in keep)
    deal_type = draft.deal_type
    if not partners and deal_type is DealType.PARTNER_TO_PARTNER:
        deal_type = DealType.PRIVATE
    return replace(draft, partners=partners, deal_type=deal_type)


def _keep_shared(draft: DealDraft, previous: Mapping[str, Any]) -> DealDraft:
    from dataclasses import replace

    code = (previous.get("inviteContext") or {}).get("assistanceRequestCode") or "GeneralOrOther"
    return replace(draft, deal_type=DealType.CO_SELL, assistance_code=code)
