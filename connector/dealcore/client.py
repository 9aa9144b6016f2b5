"""The deal core's client: Partner Center referrals over httpx.

One class, :class:`ReferralsClient`, with the operations the sync needs, sent through
its :class:`~connector.dealcore.transport.CoreTransport`. Every request carries the bearer token, JSON headers, a fresh ``client-request-id`` and
the run's ``MS-CorrelationId``; waits at the shared :class:`RateGate`; is classified
by :func:`connector.dealcore.classify.classify`; and is retried by
:func:`connector.retry.call_with_retry` when the error is transient.
A 401 invalidates the token and tries once more with a fresh one. Listings follow
``@odata.nextLink`` through :mod:`connector.dealcore.paging` (same host, https, page
cap, loop guard) and drop ``$select`` for good if the core refuses it.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from connector.dealcore.auth import TokenProvider
from connector.dealcore.options import DEFAULT_OPTIONS, CoreOptions
from connector.dealcore.parse import parse_referral
from connector.dealcore.transport import DEFAULT_MATCH_MARGIN, CallState, CoreTransport
from connector.dedupe import RecentKeys
from connector.errors import CoreError
from connector.fastjson import loads
from connector.model import ReferralState
from connector.retry import RateGate, RetryPolicy, Sleep, call_with_retry

log = logging.getLogger(__name__)

#: listed keys remembered to drop a repeat (a tie moved across a page of 100)
LISTING_MEMORY = 1000

DEFAULT_BASE_URL = "https://api.partner.microsoft.com/v1.0/engagements"
_SINGLE_ATTEMPT = RetryPolicy(attempts=1)
_END = object()
#: a newest-first listing reads at most this many pages (100 referrals each today), then
#: fails instead of walking an endless or looping listing
RECENT_PAGE_CAP = 10_000
#: a referral updated while a newest-first listing runs moves to its first page: the
#: listing reads the first pages again back to its own start, minus this
RELIST_MARGIN = timedelta(seconds=5)


def odata_string(value: str) -> str:
    """``value`` as an OData string literal: quoted, with single quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def odata_datetime(value: datetime) -> str:
    """An aware datetime as an OData UTC literal, floored to the second.

    Flooring keeps a ``ge`` lower bound closed even against a server that stores
    whole seconds; the duplicates it may bring back are removed by id.
    """
    if value.tzinfo is None:
        raise ValueError("odata_datetime needs a timezone-aware datetime")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ReferralsClient(CoreTransport):
    """Partner Center referrals: create, read, find, list changes, patch.

    Built like a :class:`~connector.dealcore.transport.CoreTransport`, whose requests
    it sends; ``calls`` counts them by method. Thread-safe: one client serves the whole
    pool of pushers, and they all respect the same ``gate``.
    """

    def __init__(
        self,
        base_url: str,
        tokens: TokenProvider,
        *,
        http: httpx.Client,
        correlation_id: str,
        retry_policy: RetryPolicy | None = None,
        gate: RateGate | None = None,
        sleep: Sleep = time.sleep,
        options: CoreOptions = DEFAULT_OPTIONS,
        match_margin: timedelta = DEFAULT_MATCH_MARGIN,
        recent_page_cap: int = RECENT_PAGE_CAP,
    ) -> None:
        #: pages of the recent listing read at most before ``listing_too_long``
        self.recent_page_cap = recent_page_cap
        super().__init__(
            base_url,
            tokens,
            http=http,
            correlation_id=correlation_id,
            retry_policy=retry_policy,
            gate=gate,
            sleep=sleep,
            options=options,
            match_margin=match_margin,
        )

    def __repr__(self) -> str:
        return f"ReferralsClient(base={self._referrals!r}, calls={dict(self.calls)})"

    # ── operations ──────────────────────────────────────────────────────────

    def create(self, body: dict[str, Any]) -> ReferralState:
        """POST a new referral; returns it as created (with id, engagementId, eTag).

        Idempotent: when an attempt failed in a way that may have created the referral
        anyway (timeout, reset, 500/502/504), the next attempt first looks for it with
        :meth:`find_created` (back to when this call began, minus the match margin)
        and posts again only if nothing matches.
        """
        external_id = body.get("externalReferenceId")
        what = f"POST referral for {external_id or 'a record without externalReferenceId'}"
        state = CallState()
        began = self.core_time(datetime.now(UTC))

        def attempt() -> ReferralState:
            if state.ambiguous and isinstance(external_id, str) and external_id:
                # One look-up at a time: POSTs that failed together (a core in trouble)
                # must not become a burst of identical listings of its newest pages, sent
                # at once and all throttled alike. Each page has its own retries: one
                # failed page must not cost the create an attempt.
                with self._lookups:
                    existing = self.find_created(external_id, began - self._match_margin)
                if existing is not None:
                    log.info("create: found referral %s already created", existing.id)
                    return existing
            response = self._attempt(
                "POST", self._referrals, state, what=what, expect="referral", json_body=body
            )
            return parse_referral(loads(response.content))

        return call_with_retry(attempt, self._policy, sleep=self._sleep)

    def get(self, referral_id: str) -> ReferralState:
        """GET one referral; :class:`~connector.errors.NotFound` when it does not exist."""
        response = self._request(
            "GET", self._url_of(referral_id), what=f"GET referral {referral_id}", expect="referral"
        )
        return parse_referral(loads(response.content))

    def find_created(
        self, external_id: str, since: datetime | None, *, policy: RetryPolicy | None = None
    ) -> ReferralState | None:
        """The referral whose ``externalReferenceId`` is ``external_id``, updated at or
        after ``since`` (the core's clock; None: any time), or None.

        Matched client-side over :meth:`list_recent`: ``externalReferenceId`` is not
        among the documented ``$filter`` fields, so no filter on it is ever sent. A
        referral is updated at or after its creation, so ``since`` = a create intent's
        time minus a margin finds that create's referral, whatever happened to it since.
        """
        for referral in self.list_recent(since, policy=policy):
            if referral.external_reference_id == external_id:
                return referral
        return None

    def list_recent(
        self,
        since: datetime | None,
        *,
        select: Sequence[str] | None = None,
        policy: RetryPolicy | None = None,
    ) -> Iterator[ReferralState]:
        """Referrals updated at or after ``since`` (the core's clock; None: all), newest
        first, stopping client-side at the first older one.

        Only ``$orderby=updatedDateTime desc`` is sent (documented; a date filter with
        ``ge`` is not): the pages are read lazily and the listing stops at ``since``.
        Pages may shift while they are read (a referral updated meanwhile moves to the
        first page): when the listing took more than one page, its first pages are read
        again back to when it began, so such a referral is not missed; it may then come
        twice. At most :data:`RECENT_PAGE_CAP` pages are read, then ``listing_too_long``.
        """
        params = {"$orderby": "updatedDateTime desc"}
        if select:
            params["$select"] = ",".join(select)
        began = self.core_time(datetime.now(UTC)) - RELIST_MARGIN
        pages = [0]
        yield from self._newest_first(params, since, pages, policy or self._policy)
        if pages[0] > 1:
            yield from self._newest_first(params, began, [0], policy or self._policy)

    @property
    def match_margin(self) -> timedelta:
        """How far before a create intent its referral is looked for (a setting)."""
        return self._match_margin

    def core_time(self, local: datetime) -> datetime:
        """``local`` (this machine's clock) on the core's clock, never later than it is.

        A response's ``Date`` was stamped before it arrived, and is floored to the
        second: ``Date`` minus our time of arrival is a lower bound of the core's clock
        minus ours. Unknown before the first response: ``local`` itself.
        """
        skew = self._skew
        return local if skew is None else local + skew

    def list_changed(
        self,
        since: datetime | None,
        *,
        until: datetime | None = None,
        extra_filter: str | None = None,
        select: Sequence[str] | None = None,
    ) -> Iterator[ReferralState]:
        """Referrals updated at or after ``since`` (all when None), oldest first.

        Both bounds are closed (``ge``, and ``le`` for ``until`` when given), floored to
        the second: the caller dedupes against what it has.
        Pages are fetched lazily through ``@odata.nextLink``. A referral that appears
        twice with the same eTag (a tie moving across a page boundary) is yielded once.
        ``extra_filter`` is an OData expression ANDed to the date bound; build its
        literals with :func:`odata_string`. With ``select`` only those fields are asked
        for (``$select``) and the referrals come marked ``partial``.
        """
        clauses = []
        if since is not None:
            clauses.append(f"updatedDateTime ge {odata_datetime(since)}")
        if until is not None:
            clauses.append(f"updatedDateTime le {odata_datetime(until)}")
        if extra_filter:
            clauses.append(f"({extra_filter})")
        params = {"$orderby": "updatedDateTime asc"}
        if clauses:
            params["$filter"] = " and ".join(clauses)
        partial = bool(select) and not self.select_refused
        if partial:
            params["$select"] = ",".join(select or ())
        what = "GET changed referrals"
        items = self._items(params, what, self._policy)
        try:
            first = next(items, _END)
        except CoreError as exc:
            if not partial or exc.status != 400:
                raise
            # $select is documented, but a core that refuses it must not stop the sync.
            log.warning("%s: the core refused $select (%s); asking for whole referrals", what, exc)
            self.select_refused, partial = True, False
            del params["$select"]
            items = self._items(params, what, self._policy)
            first = next(items, _END)
        if first is _END:
            return
        seen = RecentKeys(LISTING_MEMORY)  # repeats come only across a page boundary
        for item in itertools.chain((first,), items):
            referral = self._parse_listed(item, partial=partial)
            if referral is None:
                continue
            if seen.add((referral.id, referral.etag or str(referral.updated))):
                yield referral

    def list_engagement(
        self, engagement_id: str, policy: RetryPolicy | None = None
    ) -> list[ReferralState]:
        """Every referral of one engagement: ours, Microsoft's, other partners'."""
        params = {"$filter": f"engagementId eq {odata_string(engagement_id)}"}
        what = f"GET referrals of engagement {engagement_id}"
        result = []
        for item in self._items(params, what, policy or self._policy):
            if isinstance(item, dict) and item.get("engagementId") not in (None, engagement_id):
                continue  # a server that ignored the filter
            referral = self._parse_listed(item)
            if referral is not None:
                result.append(referral)
        return result

    def microsoft_referral(
        self, engagement_id: str, policy: RetryPolicy | None = None
    ) -> ReferralState | None:
        """Microsoft's referral in the engagement (:attr:`options`' rule), or None."""
        rule = self.options.microsoft
        found = [r for r in self.list_engagement(engagement_id, policy) if rule.matches(r.raw)]
        return found[0] if found else None

    def invite_microsoft(self, engagement_id: str, body: dict[str, Any]) -> ReferralState:
        """Microsoft's referral in the engagement: the one there, else created from ``body``.

        The documented second step of a co-sell deal (a referral for Microsoft in the
        partner's engagement). Looking first makes it idempotent: a core that already
        invited Microsoft on the partner's consent, an earlier run that crashed after
        the POST, or an attempt whose outcome was lost (timeout, 5xx) is not posted
        twice.
        """
        existing = self.microsoft_referral(engagement_id)
        if existing is not None:
            return existing
        what = f"POST Microsoft's referral in engagement {engagement_id}"
        state = CallState()

        def attempt() -> ReferralState:
            if state.ambiguous:
                found = self.microsoft_referral(engagement_id, _SINGLE_ATTEMPT)
                if found is not None:
                    return found
            response = self._attempt(
                "POST", self._referrals, state, what=what, expect="referral", json_body=body
            )
            return parse_referral(loads(response.content))

        return call_with_retry(attempt, self._policy, sleep=self._sleep)

    def create_in_engagement(
        self,
        engagement_id: str,
        body: dict[str, Any],
        already: Callable[[ReferralState], bool],
    ) -> ReferralState:
        """A referral of the engagement that ``already`` recognises, else one created from
        ``body``: looked for before posting and again after an attempt whose outcome is
        unknown, so it is never posted twice (as :meth:`invite_microsoft`)."""

        def existing(policy: RetryPolicy | None = None) -> ReferralState | None:
            found = [r for r in self.list_engagement(engagement_id, policy) if already(r)]
            return found[0] if found else None

        found = existing()
        if found is not None:
            return found
        what = f"POST a referral in engagement {engagement_id}"
        state = CallState()

        def attempt() -> ReferralState:
            if state.ambiguous:
                again = existing(_SINGLE_ATTEMPT)
                if again is not None:
                    return again
            response = self._attempt(
                "POST", self._referrals, state, what=what, expect="referral", json_body=body
            )
            return parse_referral(loads(response.content))

        return call_with_retry(attempt, self._policy, sleep=self._sleep)

    def patch(self, referral_id: str, ops: list[dict[str, Any]], etag: str | None) -> ReferralState:
        """Apply JSON Patch ``ops``; ``etag`` goes verbatim into ``If-Match``.

        A stale eTag raises :class:`~connector.errors.PreconditionFailed`. When the
        server answers 204 without a body, the referral is read back with a GET.
        """
        headers = {"Prefer": "return=representation"}
        if etag:
            headers["If-Match"] = etag
        response = self._request(
            "PATCH",
            self._url_of(referral_id),
            what=f"PATCH referral {referral_id}",
            expect="referral_or_empty",
            json_body=ops,
            extra_headers=headers,
        )
        if not response.content.strip():
            return self.get(referral_id)
        return parse_referral(loads(response.content))

    def _url_of(self, referral_id: str) -> str:
        return f"{self._referrals}/{quote(referral_id, safe='')}"

    def _newest_first(
        self,
        params: dict[str, str],
        since: datetime | None,
        pages: list[int],
        policy: RetryPolicy,
    ) -> Iterator[ReferralState]:
        what = "GET recent referrals (newest first)"

        def on_page() -> None:
            pages[0] += 1
            if pages[0] > self.recent_page_cap:
                raise CoreError(
                    f"{what}: more than {self.recent_page_cap} pages; stopping instead of reading "
                    "an endless listing (report this to the core's operators)",
                    code="listing_too_long",
                )

        for item in self._items(params, what, policy, on_page=on_page):
            referral = self._parse_listed(item, partial="$select" in params)
            if referral is None:
                continue
            if since is not None and referral.updated is not None and referral.updated < since:
                return  # newest first: everything after this is older
            yield referral

    def _parse_listed(self, item: Any, *, partial: bool = False) -> ReferralState | None:
        try:
            return parse_referral(item, partial=partial)
        except CoreError as exc:
            # One bad referral must not stop the listing of the others.
            with self._lock:
                self.malformed_skipped += 1
            log.warning("skipping a listed referral: %s", exc)
            return None
