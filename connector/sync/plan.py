"""Planning (pure): what to do with one mapped record, given what the store knows.

No I/O and no clock: the engine hands in the mapped record, its link and the core
options; the planner answers with exactly one action. The correctness rules of the
architecture live here: no echo (fingerprints), terminal is terminal, sharing with
Microsoft is never undone, and only what the API lets a partner change is sent
(anything else is explained on the record).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from connector.dealcore.options import DEFAULT_OPTIONS, CoreOptions
from connector.dealcore.payload import HELP_ASKED, patch_ops, referral_body, sendable, status_ops
from connector.model import (
    STAGE_IGNORED,
    DealDraft,
    DealType,
    Rejection,
    StandardStage,
    Status,
    Substatus,
)
from connector.sync.lifecycle import shared_with_microsoft
from connector.sync.partners import inbound_partners_notice, partners_notice
from connector.sync.team import with_partner_team


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
    @property
    def core_facts(self) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class Create:
    draft: DealDraft
    #: the create body: content, status/substatus (Closed/Won for a deal already won)
    #: and sales stage, so that a core keeping what it is sent needs no second write
    body: dict[str, Any]
    #: the fingerprint of the record as mapped (computed once, when planned)
    fingerprint: str = ""
    #: create Microsoft's referral in the new engagement too (two-referral co-sell)
    invite_microsoft: bool = False
    #: a part of the record that is not sent, explained for the CRM record
    notice: str | None = None

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", self.draft.fingerprint())


@dataclass(frozen=True)
class Update:
    draft: DealDraft
    #: what the referral holds once ``ops`` are applied (the base of the next comparison)
    body: dict[str, Any]
    ops: list[dict[str, Any]]
    #: the fingerprint of the record as mapped (stored once the update is applied)
    fingerprint: str
    closes: Substatus | None = None
    #: a part of the change the lifecycle or the API forbids, explained for the CRM record
    warning: str | None = None
    #: create Microsoft's referral in the deal's engagement (two-referral co-sell)
    invite_microsoft: bool = False


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


#: what a create fixes of the customer, as a notice names it (connector.dealcore.payload)
_CUSTOMER_PROFILE = frozenset({"the customer's name", "the customer's address"})
#: how an incoming deal ends without being worked: the CRM closes it lost (inbound.close)
_ENDED_UNANSWERED = frozenset({Substatus.DECLINED.value, Substatus.EXPIRED.value})


def is_terminal(status: str | None, substatus: str | None) -> bool:
    return status == Status.CLOSED.value or substatus in {
        Substatus.WON.value,
        Substatus.LOST.value,
        Substatus.DECLINED.value,
        Substatus.EXPIRED.value,
    }


def fixed_notice(left_out: list[str]) -> str:
    return (
        f"Not sent: {' and '.join(left_out)}. Partner Center's API cannot change "
        f"{'it' if len(left_out) == 1 else 'them'} once the referral exists; "
        "change it in Partner Center."
    )


def plan_outbound(
    item: DealDraft | Rejection, link: LinkFacts | None, options: CoreOptions = DEFAULT_OPTIONS
) -> Action:
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
        notice = _partner_notice(draft, None, options)
        sent = _without_partners(draft)
        return Create(
            draft,
            referral_body(sent, options),
            fingerprint,
            invite_microsoft=(
                sent.deal_type is DealType.CO_SELL and options.co_sell_mode == "two_referrals"
            ),
            notice=notice,
        )
    if link.fingerprint == fingerprint:
        return Skip(draft.crm_id, SkipReason.UNCHANGED, fingerprint=fingerprint)
    if is_terminal(link.status, link.substatus):
        # a declined or expired deal closed lost in the CRM (inbound.close), nothing else
        # changed, agrees with the core: nothing to explain
        agrees = _only_closed_lost(draft, link)
        return Skip(
            draft.crm_id,
            SkipReason.TERMINAL,
            notice=None
            if agrees
            else (
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
    if (
        shared_with_microsoft(previous)
        and draft.deal_type is not DealType.CO_SELL
        and not draft.shared_with_microsoft
    ):
        warnings.append(
            "Sharing with Microsoft cannot be undone; the deal stays shared with Microsoft in "
            "Partner Center."
        )
        draft = _keep_shared(draft, previous)
    if draft.partners:
        notice = _partner_notice(draft, link, options)
        if notice:
            warnings.append(notice)
        draft = _without_partners(draft)
    wanted = referral_body(draft, options)
    if link.direction == "Incoming":
        partner_team = (link.core_facts or {}).get("partner_team")
        if partner_team:
            wanted = with_partner_team(wanted, previous, partner_team)
    body, left_out = sendable(previous, wanted)
    if draft.deal_type is DealType.PARTNER_TO_PARTNER and "consent" in previous:
        left_out += consents_left_out(previous, wanted)
    invite = (
        options.co_sell_mode == "two_referrals"
        and draft.deal_type is DealType.CO_SELL
        and not _microsoft_known(link)
    )
    if invite and "inviteContext" in wanted:
        # the help asked travels in Microsoft's referral: it is sent after all
        body["inviteContext"] = wanted["inviteContext"]
        left_out = [what for what in left_out if what != HELP_ASKED]
    if link.direction == "Incoming":
        # the sender owns an incoming deal's customer; the CRM's account is the partner's
        # own record of it (inbound.customer), not a change to send
        left_out = [what for what in left_out if what not in _CUSTOMER_PROFILE]
    if left_out:
        warnings.append(fixed_notice(left_out))
    warning = " ".join(warnings) or None
    ops = patch_ops(previous, body)
    closes = None
    if draft.stage is StandardStage.WON:
        closes = Substatus.WON
    elif draft.stage is StandardStage.LOST:
        closes = Substatus.LOST
    if closes is not None:
        ops = with_close_ops(ops, closes, options)
        body = {**body, "status": Status.CLOSED.value, "substatus": closes.value}
    if not ops and not invite:
        return Skip(draft.crm_id, SkipReason.UNCHANGED, notice=warning, fingerprint=fingerprint)
    return Update(draft, body, ops, fingerprint, closes, warning, invite)


def _partner_notice(draft: DealDraft, link: LinkFacts | None, options: CoreOptions) -> str | None:
    """What the record says about the partners it invites (connector.sync.partners)."""
    if not draft.partners:
        return None
    if link is not None and link.direction == "Incoming":
        return inbound_partners_notice(draft.partners)
    if options.partner_invitations == "engagement_referral":
        return None  # sent after the push (connector.sync.partners)
    return partners_notice(draft.partners, draft.partner_details)


def _only_closed_lost(draft: DealDraft, link: LinkFacts) -> bool:
    """Whether the record of a declined or expired deal changed only by moving to a lost
    stage (as ``inbound.close`` moves it): the same draft at an earlier stage is the one
    last synced."""
    if (
        draft.stage is not StandardStage.LOST
        or link.substatus not in _ENDED_UNANSWERED
        or not link.fingerprint
    ):
        return False
    return any(
        replace(draft, stage=stage).fingerprint() == link.fingerprint
        for stage in StandardStage
        if not stage.is_closed
    )


def _microsoft_known(link: LinkFacts) -> bool:
    """Whether Microsoft's referral in the deal's engagement is known (read or created)."""
    facts = link.core_facts or {}
    return bool(facts.get("microsoft_referral_id") or facts.get("microsoft_status"))


def _without_partners(draft: DealDraft) -> DealDraft:
    """``draft`` as it is sent: no partner is invited. A partner-to-partner deal keeps its
    type, so its consents say the customer's information may go to a partner (who the
    seller invites in Partner Center)."""
    if not draft.partners and draft.partner_details is None:
        return draft
    return replace(draft, partners=(), partner_details=None)


def _keep_shared(draft: DealDraft, previous: Mapping[str, Any]) -> DealDraft:
    """``draft`` still shared with Microsoft as ``previous`` was: asking the help it asked,
    or (a deal shared without asking any) shared without asking."""
    invite = previous.get("inviteContext") or {}
    code = invite.get("assistanceRequestCode") if isinstance(invite, Mapping) else None
    if not code or code == "Unknown":
        return replace(draft, shared_with_microsoft=True)
    return replace(draft, deal_type=DealType.CO_SELL, assistance_code=code)


#: the consents a create fixes for good (no PATCH path), as the record's notice names them
_CUSTOMER_CONSENTS = {
    "consentToToShareInfoWithOthers": "the customer's consent to share its information with others",
    "consentToContact": "the customer's consent to be contacted",
}


def consents_left_out(previous: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """The customer consents a partner-to-partner deal needs that its referral lacks."""
    before = previous.get("consent") or {}
    after = wanted.get("consent") or {}
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return []
    return [
        label
        for key, label in _CUSTOMER_CONSENTS.items()
        if after.get(key) is True and before.get(key) is not True
    ]


def with_close_ops(
    ops: list[dict[str, Any]], closes: Substatus, options: CoreOptions = DEFAULT_OPTIONS
) -> list[dict[str, Any]]:
    """``ops`` closing the referral (won or lost): the status ops replace any op on the
    same paths. The one place the close ops are spliced in."""
    closing = status_ops(Status.CLOSED, closes, stage_format=options.sales_stage_format)
    paths = {op["path"] for op in closing}
    return [op for op in ops if op["path"] not in paths] + closing


def replan_update(
    fresh: Mapping[str, Any], action: Update, options: CoreOptions = DEFAULT_OPTIONS
) -> list[dict[str, Any]]:
    """After a 412: the ops that bring the referral as read again (``fresh``) to what
    ``action`` sends, closing it when the action closes."""
    ops = patch_ops(dict(fresh), action.body)
    if action.closes is not None:
        ops = with_close_ops(ops, action.closes, options)
    return ops
