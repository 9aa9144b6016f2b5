"""The pull-back: the core's changed referrals -> mirror (pure map-back) -> status writer.

Lists the referrals changed since the core cursor (in parallel time slices when this
run wrote many), leaves out the sent referrals of other connections on a shared core
tenant, reads whole those listed partially that it uses (those of a link, new incoming
ones), turns each into the new link of its record
(:func:`connector.sync.links.link_after`), hands new incoming referrals to the inbound
step, queues the status writes and moves the core cursor.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from connector.dealcore.base import DealCore
from connector.dealcore.options import DEFAULT_OPTIONS, MicrosoftReferralRule
from connector.errors import NotFound
from connector.mapping.schema import MappingFile
from connector.model import ReferralState
from connector.state.store import Link, Store
from connector.sync.countdown import CoreClock
from connector.sync.history import HistoryRecorder
from connector.sync.inbound import is_new_incoming
from connector.sync.links import Linker
from connector.sync.mirror import CoreFacts, with_microsoft
from connector.sync.report import RunReport
from connector.sync.seen import SeenEtags
from connector.sync.status_writer import Pending, StatusWriter
from connector.sync.tuning import DEFAULT_TUNING, Tuning

#: the logger name these lines had before the stages were split out of the engine
#: (the "logger" field of the JSON logs operators filter on)
log = logging.getLogger("connector.sync.engine")

#: what a sliced pull-back lists of each referral ($select): enough to tell whether it
#: changed since this connector wrote it, and Microsoft's side of a deal (its status,
#: expiry, and what tells it apart: its organisation and target); a referral of ours that
#: did change is then read whole
LISTED_FIELDS = (
    "id",
    "engagementId",
    "eTag",
    "status",
    "substatus",
    "direction",
    "updatedDateTime",
    "externalReferenceId",
    "expirationDateTime",
    "organizationId",
    "organizationName",
    "target",
)


#: the skipped reason of a listed referral another connection sent (a shared core tenant)
NOT_THIS_CONNECTION = "not_this_connection"


class IncomingStep(Protocol):
    """Creates CRM opportunities for new incoming referrals (connector.sync.inbound)."""

    def create_opportunities(
        self,
        referrals: Sequence[ReferralState],
        links: dict[str, Link],
        microsoft: dict[str, ReferralState],
        report: RunReport,
        rule: MicrosoftReferralRule,
    ) -> datetime | None: ...


class ClosingStep(Protocol):
    def consider(self, links: Iterable[Link | None]) -> None: ...


class PullBack:
    """Lists the core's changes for one connection and mirrors them."""

    def __init__(
        self,
        connection: str,
        *,
        core: DealCore,
        store: Store,
        mapping: MappingFile,
        writer: StatusWriter,
        linker: Linker,
        incoming: IncomingStep,
        closing: ClosingStep,
        history: HistoryRecorder,
        core_clock: CoreClock,
        clock: Callable[[], datetime],
        stop: threading.Event,
        concurrency: int,
        tuning: Tuning = DEFAULT_TUNING,
        seen: SeenEtags | None = None,
    ) -> None:
        self.connection = connection
        self.core = core
        #: the referrals this run wrote or read, by eTag (connector.sync.seen)
        self.core_seen = seen
        self.store = store
        self.state = store.connection(connection)
        self.mapping = mapping
        self.writer = writer
        self.linker = linker
        self.incoming = incoming
        self.closing = closing
        self.history = history
        self.core_clock = core_clock
        self.clock = clock
        self.stop = stop
        self.concurrency = concurrency
        self.tuning = tuning

    def run(self, report: RunReport, outbound_started: datetime | None) -> None:
        """List the core's changes, mirror them, move the core cursor.

        Full batches of status writes go to the CRM on background threads while the
        listing goes on (see :meth:`StatusWriter.in_background`).
        """
        with self.writer.in_background(report):
            self._list_and_mirror(report, outbound_started)

    def _list_and_mirror(self, report: RunReport, outbound_started: datetime | None) -> None:
        overlap = self.tuning.core_overlap
        stored = self.state.cursors.get("core")
        since = datetime.fromisoformat(stored) - overlap if stored else None
        newest: datetime | None = None
        batch: list[ReferralState] = []
        #: Microsoft's referrals seen so far, by engagement (a new incoming deal's Microsoft
        #: side may come in an earlier batch than the deal itself)
        microsoft: dict[str, ReferralState] = {}
        retry_from: list[datetime] = []
        for referral in self._changed_referrals(since, report, outbound_started):
            if self.stop.is_set():
                return  # the core cursor stays: the next run lists these again
            if referral.updated is not None and (newest is None or referral.updated > newest):
                newest = referral.updated
            batch.append(referral)
            if len(batch) >= self.tuning.mirror_batch:
                retry_from.extend(self.mirror(batch, report, microsoft))
                batch = []
        if batch:
            retry_from.extend(self.mirror(batch, report, microsoft))
        # Everything up to the core's "now" was listed: once a burst of changes is older
        # than the overlap window, the cursor moves past it, so idle cycles list nothing.
        server_now = self.core.server_time
        self.core_clock.saw(server_now)
        floor = server_now - overlap if server_now is not None else None
        candidates = [t for t in (newest, floor) if t is not None]
        if stored:
            candidates.append(datetime.fromisoformat(stored))
        if candidates:
            cursor = max(candidates)
            if retry_from:
                # incoming referrals whose CRM record could not be created: list them again
                cursor = min(cursor, *retry_from)
            self.state.cursors.set("core", cursor.isoformat())

    def _changed_referrals(
        self, since: datetime | None, report: RunReport, outbound_started: datetime | None
    ) -> Iterator[ReferralState]:
        """The core's changes since ``since``, listed in parallel time slices when many.

        A sync that wrote many referrals lists them all back (the core pages 100 at a
        time, one page after another). The window in which this run wrote is then cut
        into up to ``concurrency`` slices of about :attr:`Tuning.pull_slice` writes each,
        listed at once; the first slice holds everything before the run and the last one
        is open ended, so the slices cover the same span as one listing. A referral on a
        slice boundary (bounds are closed) is yielded once. The slices ask only for
        :data:`LISTED_FIELDS`: most of what they list is what this run wrote, unchanged.
        """
        writes = report.created + report.updated + report.closed
        slices = min(self.concurrency, writes // self.tuning.pull_slice)
        server_now = self.core.server_time
        if slices < 2 or server_now is None or outbound_started is None:
            yield from self.core.list_changed(since)
            return
        # the run's start on the core's clock (Date headers have whole seconds)
        skew = server_now - self.clock()
        start = outbound_started + skew - timedelta(seconds=2)
        step = (server_now - start) / slices
        cuts = [start + step * i for i in range(slices)]
        cuts = [c for c in cuts if since is None or c > since]
        bounds = list(zip([since, *cuts], [*cuts, None], strict=True))
        yield from merged(
            [
                functools.partial(self.core.list_changed, lo, until=hi, select=LISTED_FIELDS)
                for lo, hi in bounds
            ],
            boundaries=frozenset(_second(c) for c in cuts),
        )

    def mirror(
        self,
        referrals: Sequence[ReferralState],
        report: RunReport,
        microsoft_seen: dict[str, ReferralState] | None = None,
    ) -> list[datetime]:
        """Mirror changed referrals into linked records; create records for incoming ones.

        Returns the ``updatedDateTime`` of incoming referrals whose CRM record could not
        be created (the cursor stays before them).
        """
        known = self.core_seen
        if known is not None and len(known):
            # as this run wrote or read them: their links hold what they say
            referrals = [r for r in referrals if not known.unchanged(r.id, r.etag)]
        rule = self.core.options.microsoft
        own = [r for r in referrals if not is_microsoft(r, rule)]
        microsoft = [r for r in referrals if is_microsoft(r, rule)]
        engagements = [ms.engagement_id for ms in microsoft if ms.engagement_id]
        by_engagement: dict[str, list[Link]] = {}
        for engaged in self.state.links.by_engagements(engagements):
            if engaged.engagement_id:
                by_engagement.setdefault(engaged.engagement_id, []).append(engaged)
        seen = microsoft_seen if microsoft_seen is not None else {}
        # Microsoft's side of a deal no record is linked to yet: an incoming deal listed
        # later may need it. Kept for the whole listing, so without its body (only the
        # status is used); a linked deal's side is mirrored below and not kept.
        seen.update(
            {
                ms.engagement_id: replace(ms, raw={})
                for ms in microsoft
                if ms.engagement_id and ms.engagement_id not in by_engagement
            }
        )
        # the referral as this connector last wrote or read it: nothing new, no work
        etags = self.state.links.etags_by_referral([r.id for r in own])
        own = [r for r in own if not (r.etag and etags.get(r.id) == r.etag)]
        links = self.state.links.by_referrals([r.id for r in own])
        own = self._ours(own, links, report)
        creates = self.mapping.inbound.create_opportunities
        own, retry_from = self._read_whole(
            own, lambda r: r.id in links or (creates and is_new_incoming(r, rule))
        )
        if creates:
            floor = self.incoming.create_opportunities(own, links, seen, report, rule)
            if floor is not None:
                retry_from.append(floor)
        changed: dict[str, Link] = {}
        for referral in own:
            link = links.get(referral.id)
            if link is None:
                if referral.direction == "Incoming":
                    report.skipped["incoming_not_linked"] += 1
                continue
            changed[link.crm_id] = self.linker(link, referral, link.fingerprint, link.sent_body)
        for ms in microsoft:
            for link in by_engagement.get(ms.engagement_id or "", []):
                current = changed.get(link.crm_id, link)
                if current.core_facts is None:
                    continue
                facts = with_microsoft(
                    CoreFacts.from_json(current.core_facts), ms, current.sent_body or {}
                )
                if facts.as_json() != current.core_facts:
                    changed[link.crm_id] = replace(current, core_facts=facts.as_json())
        if not changed:
            return retry_from
        self.state.links.save_many(list(changed.values()))
        self.closing.consider(changed.values())
        now = self.clock()
        self.history.mirrored(list(changed.values()), now)
        updates: list[Pending] = []
        for link in changed.values():
            assert link.core_facts is not None
            write = self.writer.for_link(link, CoreFacts.from_json(link.core_facts), now)
            if write is not None:
                updates.append(write)
        self.writer.queue(updates, report)
        return retry_from

    def _ours(
        self, referrals: list[ReferralState], links: Mapping[str, Link], report: RunReport
    ) -> list[ReferralState]:
        """``referrals`` without the sent ones no link of this connection names.

        Connections that share a core tenant list each other's referrals: a sent referral
        this connection holds no link for is another connection's (or one it no longer
        knows), and nothing here would use it. Each one left out counts as skipped
        ``not_this_connection``; incoming referrals stay (the inbound step may create
        their records).
        """
        kept = [r for r in referrals if r.id in links or r.direction == "Incoming"]
        report.skipped[NOT_THIS_CONNECTION] += len(referrals) - len(kept)
        return kept

    def _read_whole(
        self, referrals: list[ReferralState], wanted: Callable[[ReferralState], bool]
    ) -> tuple[list[ReferralState], list[datetime]]:
        """Referrals listed partially (``$select``) read whole, in parallel, when ``wanted``
        (a referral of a link, or a new incoming one to create a record for); others as
        given: an incoming referral that is neither is only counted, from its listed fields.

        A referral gone since it was listed (404) is left out and its ``updatedDateTime``
        returned, so that the cursor stays before it: the core never deletes a referral,
        so this is a server that lies, and the next cycle lists it again.
        """
        partial = [r for r in referrals if r.partial and wanted(r)]
        if not partial:
            return referrals, []

        def read(referral: ReferralState) -> ReferralState | None:
            try:
                return self.core.get(referral.id)
            except NotFound:
                log.warning(
                    "%s: referral %s was listed but cannot be read (404); left for the next cycle",
                    self.connection,
                    referral.id,
                    extra={"connection": self.connection, "referral_id": referral.id},
                )
                return None

        with ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(partial)), thread_name_prefix="read"
        ) as pool:
            whole = dict(zip([r.id for r in partial], pool.map(read, partial), strict=True))
        result = []
        again: list[datetime] = []
        for referral in referrals:
            if referral.id not in whole:
                result.append(referral)
            elif (found := whole[referral.id]) is not None:
                result.append(found)
            elif referral.updated is not None:
                again.append(referral.updated)
        return result, again


def is_microsoft(
    referral: ReferralState, rule: MicrosoftReferralRule = DEFAULT_OPTIONS.microsoft
) -> bool:
    """Whether ``referral`` is Microsoft's side of a deal (``core.microsoft_referral``)."""
    return rule.matches(referral.raw)


def _second(when: datetime) -> datetime:
    """``when`` floored to the second, in UTC (the precision of an OData bound)."""
    return when.astimezone(UTC).replace(microsecond=0)


def merged(
    listings: Sequence[Callable[[], Iterator[ReferralState]]],
    *,
    boundaries: frozenset[datetime] | None = None,
) -> Iterator[ReferralState]:
    """Run the listings on threads at once; yield their referrals as they come, each once.

    Two slices share only their boundary second (both bounds are closed): given the
    ``boundaries``, only referrals updated within one of those seconds are remembered
    to drop the repeat, so memory does not grow with the listing. A bounded queue keeps
    memory flat; an error in a listing is raised here once the referrals listed before
    it are yielded. Leaving early stops the listings.
    """
    done = object()
    out: queue.Queue[object] = queue.Queue(maxsize=1000)
    cancel = threading.Event()

    def put(item: object) -> bool:
        while not cancel.is_set():
            try:
                out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def run(listing: Callable[[], Iterator[ReferralState]]) -> None:
        try:
            for referral in listing():
                if not put(referral):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            put(exc)
        finally:
            put(done)

    threads = [
        threading.Thread(target=run, args=(listing,), name=f"pull-{i}", daemon=True)
        for i, listing in enumerate(listings)
    ]
    for thread in threads:
        thread.start()
    seen: set[tuple[str, str | None]] = set()
    running = len(threads)
    try:
        while running:
            item = out.get()
            if item is done:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                assert isinstance(item, ReferralState)
                if (
                    boundaries is not None
                    and item.updated is not None
                    and _second(item.updated) not in boundaries
                ):
                    yield item  # inside one slice: listed once
                    continue
                key = (item.id, item.etag or str(item.updated))
                if key not in seen:
                    seen.add(key)
                    yield item
    finally:
        cancel.set()
        for thread in threads:
            thread.join(timeout=30)
