"""What the sync needs of the deal core, beside the CRM protocol (connector.crm.base).

:class:`~connector.dealcore.client.ReferralsClient` is the real one (Partner Center's
referrals API); the tests' in-memory fake (tests/fakes/core.py) is another. Only the
pusher and the pull-back call it during a cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from connector.dealcore.options import CoreOptions
from connector.dealcore.retry import RetryPolicy
from connector.model import ReferralState


class DealCore(Protocol):
    """Create, read, find, list and patch referrals."""

    #: the connector's choices where the API is not documented (read by the planner)
    options: CoreOptions
    #: the core's clock from its last answer (cursor safety)
    server_time: datetime | None

    @property
    def calls(self) -> Mapping[str, int]:
        """Requests sent, by method (for the run report)."""
        ...

    @property
    def match_margin(self) -> timedelta: ...

    def core_time(self, local: datetime) -> datetime: ...

    def create(self, body: dict[str, Any]) -> ReferralState: ...

    def get(self, referral_id: str) -> ReferralState: ...

    def patch(
        self, referral_id: str, ops: list[dict[str, Any]], etag: str | None
    ) -> ReferralState: ...

    def find_created(
        self, external_id: str, since: datetime | None, *, policy: RetryPolicy | None = None
    ) -> ReferralState | None: ...

    def list_recent(
        self,
        since: datetime | None,
        *,
        select: Sequence[str] | None = None,
        policy: RetryPolicy | None = None,
    ) -> Iterator[ReferralState]: ...

    def list_changed(
        self,
        since: datetime | None,
        *,
        until: datetime | None = None,
        extra_filter: str | None = None,
        select: Sequence[str] | None = None,
    ) -> Iterator[ReferralState]: ...

    def invite_microsoft(self, engagement_id: str, body: dict[str, Any]) -> ReferralState: ...

    def create_in_engagement(
        self,
        engagement_id: str,
        body: dict[str, Any],
        already: Callable[[ReferralState], bool],
    ) -> ReferralState: ...
