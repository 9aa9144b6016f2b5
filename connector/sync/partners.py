"""Partner-to-partner invitations: what each invited partner is told, and how it goes.

The seed's "Invite partner" step tells each invited partner its own close date, value
and currency, notes, team, solutions and the help asked of it. The mapping reads them
(``deal_type.partner_details``; an empty part is the deal's own) into
:class:`~connector.model.PartnerDetails`. No documented target type names a partner
*organisation*, so ``core.partner_invitations`` decides:

- ``explain`` (the default): nothing is sent; the record's sync-error field names each
  partner to invite in Partner Center and what to tell it (:func:`partners_notice`);
- ``engagement_referral`` (opt-in): after the partner's own referral exists, one referral
  per partner in the deal's engagement (the shape of the documented referral for
  Microsoft, CR20), its target the partner's ``BusinessProfileLocation`` (RR: "profile
  location from the partner business profile": the invite field then holds that id),
  carrying the partner's details and the deal's team (:func:`invitation_body`). The
  engagement is looked at before each post, so no partner is invited twice; invited
  partners are remembered in the link's facts. What a partner was told cannot be changed
  afterwards (the seed), and a deal received from Microsoft or another partner never
  invites one (the seed's combinations table).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, MutableSequence, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from connector.dealcore.payload import _closing, _json_number
from connector.errors import ConnectorError
from connector.mapping.apply import RecordReader, partners_of
from connector.mapping.apply_parts import partner_details
from connector.model import CrmOpportunity, PartnerDetails, ReferralState
from connector.state.store import Link
from connector.sync.mirror import CoreFacts
from connector.sync.outcome import RecordOutcome

if TYPE_CHECKING:
    from connector.sync.context import SyncContext

log = logging.getLogger(__name__)

#: the target type that addresses a partner's business profile location (RR)
PARTNER_TARGET = "BusinessProfileLocation"
#: what an invitation does not carry of the deal: the partner's own bookkeeping
_NOT_FOR_THE_PARTNER = frozenset(
    {"externalReferenceId", "status", "substatus", "statusReason", "salesStage", "campaignId"}
)


def details_text(details: PartnerDetails | None) -> str:
    """What a partner is told, for the seller (empty when it is the deal's own)."""
    if details is None:
        return ""
    parts = []
    if details.close_date is not None:
        parts.append(f"close date {details.close_date.isoformat()}")
    if details.value is not None:
        parts.append(f"value {details.value.normalize():,f} {details.currency or ''}".rstrip())
    elif details.currency is not None:
        parts.append(f"currency {details.currency}")
    if details.solutions:
        parts.append(f"solutions {', '.join(details.solutions)}")
    if details.help_code:
        parts.append(f"help asked: {details.help_code}")
    if details.notes:
        parts.append("the notes for the partner")
    return "; ".join(parts)


def partners_notice(partners: Sequence[str], details: PartnerDetails | None = None) -> str:
    """Why the partners were not invited, and what to tell them in Partner Center."""
    told = details_text(details)
    return (
        f"Not sent: inviting partner {', '.join(partners)}"
        + (f" ({told})" if told else "")
        + ". Partner Center's API documents no way to invite a partner organisation; "
        "invite it in Partner Center."
    )


def inbound_partners_notice(partners: Sequence[str]) -> str:
    return (
        f"Not sent: inviting partner {', '.join(partners)}. Partners cannot be invited to a "
        "deal received from Microsoft or another partner."
    )


def invitation_body(
    deal: Mapping[str, Any], partner: str, details: PartnerDetails | None, engagement_id: str
) -> dict[str, Any]:
    """The referral inviting ``partner`` into the deal's engagement (see the module)."""
    body: dict[str, Any] = json.loads(
        json.dumps({k: v for k, v in deal.items() if k not in _NOT_FOR_THE_PARTNER})
    )
    body["engagementId"] = engagement_id
    body["type"] = "Shared"  # RR: all parties involved collaborate to close
    body["target"] = [{"type": PARTNER_TARGET, "id": partner}]
    info = details or PartnerDetails()
    given = body.setdefault("details", {})
    if info.value is not None:
        given["dealValue"] = _json_number(info.value)
    if info.currency is not None:
        given["currency"] = info.currency
    if info.close_date is not None:
        given["closingDateTime"] = _closing(info.close_date)
    if info.solutions:
        given["requirements"] = {"solutions": [{"id": s, "type": "Name"} for s in info.solutions]}
    invite: dict[str, Any] = {"assistanceRequestCode": info.help_code or "Unknown"}
    if info.notes is not None:
        invite["notes"] = info.notes
    body["inviteContext"] = invite
    return body


def _targets(referral: ReferralState) -> set[str]:
    targets = referral.raw.get("target")
    if not isinstance(targets, list):
        return set()
    return {
        str(t.get("id")).casefold()
        for t in targets
        if isinstance(t, Mapping) and str(t.get("type", "")).casefold() == PARTNER_TARGET.casefold()
    }


def _inviting(partner: str) -> Callable[[ReferralState], bool]:
    """Whether a referral of the engagement is the one inviting ``partner``."""
    wanted = partner.casefold()
    return lambda referral: wanted in _targets(referral)


class PartnerInvitations:
    """Sends invitations in ``engagement_referral`` mode (see the module docstring)."""

    def __init__(self, engine: SyncContext) -> None:
        self.engine = engine

    def invite(
        self,
        outcomes: MutableSequence[RecordOutcome],
        records: Mapping[str, CrmOpportunity],
        links: Mapping[str, Link],
    ) -> None:
        engine = self.engine
        if engine.core.options.partner_invitations != "engagement_referral":
            return
        field = engine.mapping.deal_type.invite_partner_field
        if field is None:
            return
        for outcome in outcomes:
            record = records.get(outcome.crm_id)
            link = outcome.link or links.get(outcome.crm_id)
            if (
                record is None
                or not record.fields.get(field)
                or outcome.kind in ("rejected", "failed")
                or link is None
                or link.referral_id is None
                or link.core_facts is None
                or link.status == "Closed"
                or link.direction != "Outgoing"
                or not link.engagement_id
                or not link.sent_body
            ):
                continue
            reader = RecordReader(record)
            partners = partners_of(reader, engine.mapping)
            details = partner_details(reader, engine.mapping)
            facts = CoreFacts.from_json(link.core_facts)
            invited = set(facts.invited_partners or [])
            todo = [p for p in partners if p.casefold() not in invited]
            if not todo or reader.problems:
                continue
            sent, failures = self._send(link, todo, details)
            facts = replace(facts, invited_partners=sorted(invited | sent))
            link = replace(link, core_facts=facts.as_json())
            engine.store.save_link(engine.connection, link)
            outcome.link = link
            if failures:
                outcome.notice = " ".join(filter(None, [outcome.notice, *failures]))

    def _send(
        self, link: Link, partners: Sequence[str], details: PartnerDetails | None
    ) -> tuple[set[str], list[str]]:
        engine = self.engine
        assert link.engagement_id is not None and link.sent_body is not None
        sent: set[str] = set()
        failures: list[str] = []
        for partner in partners:
            body = invitation_body(link.sent_body, partner, details, link.engagement_id)
            try:
                engine.pusher.invite_partner(link.engagement_id, body, _inviting(partner))
            except ConnectorError as exc:
                log.warning(
                    "%s: %s: inviting partner %s failed: %s",
                    engine.connection,
                    link.crm_id,
                    partner,
                    exc.message,
                )
                failures.append(f"Inviting partner {partner} failed: {exc.message}")
                continue
            sent.add(partner.casefold())
            log.info("%s: %s: partner %s invited", engine.connection, link.crm_id, partner)
        return sent, failures
