"""Inviting Microsoft to a deal: the second referral of the documented co-sell flow.

A co-sell deal is the partner's referral plus a referral for Microsoft in the same
engagement (``core.co_sell_mode: two_referrals``). The engine calls
:func:`invite_microsoft` after the partner's referral is created, or after the patch
that shares an existing deal with Microsoft; the client looks at the engagement before
posting, so an invitation is never made twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from connector.dealcore.base import DealCore
from connector.dealcore.payload import microsoft_referral_body
from connector.errors import ConnectorError, CoreError
from connector.state.store import Link
from connector.sync.mirror import CoreFacts, with_eligibility, with_microsoft
from connector.sync.outcome import RecordOutcome
from connector.sync.seen import SeenEtags

log = logging.getLogger(__name__)

#: permanent error codes that say nothing about the record: retried like transient ones
_NOT_THE_RECORDS_FAULT = frozenset({"unauthenticated"})


def invite_microsoft(
    core: DealCore,
    link: Link,
    body: Mapping[str, Any],
    kind: str,
    notice: str | None,
    seen: SeenEtags | None = None,
) -> RecordOutcome:
    """Microsoft's referral in ``link``'s engagement; the record's outcome ``kind`` on success.

    On failure the record fails (a dead letter; transient ones are retried next cycle)
    but its link is kept, without a fingerprint, so that the next try plans the
    invitation again.
    """
    assert link.referral_id is not None
    try:
        if not link.engagement_id:
            raise CoreError(
                f"the core gave referral {link.referral_id} no engagementId to invite Microsoft to",
                code="no_engagement",
                transient=False,
            )
        microsoft = core.invite_microsoft(
            link.engagement_id, microsoft_referral_body(body, link.engagement_id)
        )
    except ConnectorError as exc:
        message = f"referral {link.referral_id} is {kind}, but inviting Microsoft failed: "
        log.warning("%s: %s: %s%s", link.connection, link.crm_id, message, exc.message)
        return RecordOutcome(
            link.crm_id,
            "failed",
            exc.code,
            message + exc.message,
            link=replace(link, fingerprint=None),
            transient=exc.transient or exc.code in _NOT_THE_RECORDS_FAULT,
        )
    assert link.core_facts is not None
    if seen is not None:
        seen.add(microsoft.id, microsoft.etag)  # its facts are in the link returned
    facts = with_microsoft(CoreFacts.from_json(link.core_facts), microsoft, link.sent_body or {})
    return RecordOutcome(
        link.crm_id, kind, link=replace(link, core_facts=facts.as_json()), notice=notice
    )


def relinked(link: Link, fingerprint: str, body: Mapping[str, Any]) -> Link:
    """``link`` with a new fingerprint and body, its referral unchanged (nothing patched)."""
    facts = CoreFacts.from_json(link.core_facts) if link.core_facts else None
    if facts is not None:
        facts = with_eligibility(facts, body)
    return replace(
        link,
        fingerprint=fingerprint,
        sent_body=dict(body),
        core_facts=facts.as_json() if facts is not None else None,
    )
