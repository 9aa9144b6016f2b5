"""What a link becomes after the core answered (pure).

:func:`link_after` takes the link as it was (or none, for a create), the referral the
core returned and what was sent, and returns the new link: the referral's id, eTag,
status and the core's facts the mirror writes, carried over from the previous facts
where the referral leaves them out. No I/O: the caller saves it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from connector.model import ReferralState
from connector.state.store import Link, LinkState
from connector.sync.mirror import CoreFacts, carried_over, facts_of, with_eligibility


def link_after(
    link: Link | None,
    referral: ReferralState,
    fingerprint: str | None,
    body: Mapping[str, Any] | None,
    *,
    connection: str,
    referral_url: str,
    crm_id: str | None = None,
) -> Link:
    """The link of a record after the core answered with ``referral``."""
    previous = CoreFacts.from_json(link.core_facts) if link and link.core_facts else None
    facts = facts_of(referral, referral_url, None)
    if link is not None and previous is not None:
        facts = replace(
            carried_over(previous, facts, referral.raw),
            notice=previous.notice if fingerprint == link.fingerprint else None,
        )
    facts = with_eligibility(facts, body if body is not None else referral.raw)
    state = LinkState.TERMINAL if referral.is_terminal else LinkState.LINKED
    base = link or Link(connection=connection, crm_id=crm_id or "", state=state)
    return replace(
        base,
        referral_id=referral.id,
        engagement_id=referral.engagement_id,
        etag=referral.etag,
        fingerprint=fingerprint,
        sent_body=dict(body) if body is not None else None,
        state=state,
        status=referral.status.value,
        substatus=referral.substatus.value if referral.substatus else None,
        direction=referral.direction,
        core_facts=facts.as_json(),
        mirrored_fingerprint=(
            base.mirrored_fingerprint if base.core_facts == facts.as_json() else None
        ),
    )


@dataclass(frozen=True)
class Linker:
    """:func:`link_after` bound to one connection and its referral links (still pure)."""

    connection: str
    link_for: Callable[[str], str]

    def __call__(
        self,
        link: Link | None,
        referral: ReferralState,
        fingerprint: str | None,
        body: Mapping[str, Any] | None,
        *,
        crm_id: str | None = None,
    ) -> Link:
        return link_after(
            link,
            referral,
            fingerprint,
            body,
            connection=self.connection,
            referral_url=self.link_for(referral.id),
            crm_id=crm_id,
        )
