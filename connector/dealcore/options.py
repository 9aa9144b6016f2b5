"""What Microsoft leaves open about the referrals API, as the connector's choices.

:class:`CoreOptions` travels with the :class:`~connector.dealcore.client.ReferralsClient`
to the pure functions that build bodies and plans. Every default is the documented or
observed behaviour (see ``docs/sandbox-core.md`` for the sources):

- ``sales_stage_format``: ``percent`` ("10" … "100", seen in real responses) or
  ``name`` (``Qualify``, ``Develop``, ``Propose``, ``Close``: the certified connector's
  enum); both are read whatever the setting;
- ``co_sell_mode``: ``two_referrals`` (the documented "create a shared referral" flow:
  the partner's referral, then one for Microsoft in its engagement) or ``consent_only``
  (consent and the help asked on the partner's referral);
- ``microsoft``: how Microsoft's referral in an engagement is recognised
  (:class:`MicrosoftReferralRule`);
- ``partner_invitations``: ``explain`` (nothing sent: no documented target type names a
  partner organisation; the record says whom to invite and with what) or
  ``engagement_referral`` (opt-in: a referral in the deal's engagement whose target is the
  partner's ``BusinessProfileLocation``, RR's "profile location from the partner business
  profile", carrying what that partner is told).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

SalesStageFormat = Literal["percent", "name"]
CoSellMode = Literal["two_referrals", "consent_only"]
PartnerInvitations = Literal["explain", "engagement_referral"]

#: the documented target of the referral a partner creates for Microsoft (CR20)
MICROSOFT_TARGET = {"type": "BusinessProfileLocation", "id": "msft"}


def _folded(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip().casefold() for v in values if v.strip())


@dataclass(frozen=True)
class MicrosoftReferralRule:
    """Which referral of an engagement is Microsoft's (the API has no owner field)."""

    target_msft: bool = True
    organization_ids: frozenset[str] = frozenset({"msft"})
    organization_names: frozenset[str] = frozenset({"microsoft"})

    @classmethod
    def of(
        cls,
        *,
        target_msft: bool,
        organization_ids: Iterable[str],
        organization_names: Iterable[str],
    ) -> MicrosoftReferralRule:
        return cls(target_msft, _folded(organization_ids), _folded(organization_names))

    def matches(self, referral: Mapping[str, Any]) -> bool:
        """Whether the referral JSON ``referral`` is Microsoft's."""
        org_id = referral.get("organizationId")
        if isinstance(org_id, str) and org_id.strip().casefold() in self.organization_ids:
            return True
        name = referral.get("organizationName")
        if isinstance(name, str) and name.strip().casefold() in self.organization_names:
            return True
        if self.target_msft:
            targets = referral.get("target")
            if isinstance(targets, list):
                return any(_is_microsoft_target(t) for t in targets)
        return False


def _is_microsoft_target(target: Any) -> bool:
    if not isinstance(target, Mapping):
        return False
    kind, ident = target.get("type"), target.get("id")
    return (
        isinstance(kind, str)
        and isinstance(ident, str)
        and kind.casefold() == MICROSOFT_TARGET["type"].casefold()
        and ident.casefold() == MICROSOFT_TARGET["id"]
    )


@dataclass(frozen=True)
class CoreOptions:
    """The connector's choices where the referrals API is not documented."""

    sales_stage_format: SalesStageFormat = "percent"
    co_sell_mode: CoSellMode = "two_referrals"
    microsoft: MicrosoftReferralRule = field(default_factory=MicrosoftReferralRule)
    #: pages one listing may follow
    max_pages: int = 10_000
    #: how partner-to-partner invitations go (connector.sync.partners)
    partner_invitations: PartnerInvitations = "explain"


DEFAULT_OPTIONS = CoreOptions()
