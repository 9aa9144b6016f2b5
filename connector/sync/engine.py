"""One sync cycle of one connection: pull → map → plan → push → pull back → mirror → commit.

The engine talks only to the seams: a :class:`~connector.crm.base.CrmAdapter`, the
:class:`~connector.dealcore.client.ReferralsClient` and the
:class:`~connector.state.store.Store`. Pushes run on a bounded thread pool; the
CRM cursor is committed only after every record of a page is linked, skipped or
dead-lettered, so a crash replays at most one page.
"""

from __future__ import annotations

import collections
import copy
import functools
import itertools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from connector.crm.base import CrmAdapter, CrmPage, WriteResult
from connector.dealcore.client import ReferralsClient
from connector.dealcore.options import DEFAULT_OPTIONS, CoreOptions, MicrosoftReferralRule
from connector.dealcore.payload import created_differences, patch_ops, status_ops
from connector.dedupe import RecentKeys
from connector.errors import (
    AUTHENTICATION_CODES,
    ConnectorError,
    CoreError,
    CrmError,
    NotFound,
    PreconditionFailed,
    QuotaExhausted,
    Throttled,
)
from connector.logs import record_fields
from connector.mapping.apply import apply_mapping
from connector.mapping.schema import MappingFile
from connector.model import CrmOpportunity, CrmStatusUpdate, ReferralState, StageInfo, Status
from connector.settings import HistorySettings
from connector.state.store import RETRY_PREFIX, TRANSIENT_PREFIX, Link, LinkState, Store
from connector.sync.closing import Closing
from connector.sync.countdown import CoreClock, Countdown
from connector.sync.customers import CustomerLinks
from connector.sync.dead_letters import (
    UNCHANGED_SINCE_FAILURE,
    ContentFingerprints,
    split_unchanged,
)
from connector.sync.existing import CLAIMED, ExistingReferrals
from connector.sync.history import HistoryRecorder
from connector.sync.inbound import LifecycleSteps, refused, with_referral_customer
from connector.sync.invite import invite_microsoft, relinked
from connector.sync.mirror import (
    CoreFacts,
    carried_over,
    facts_of,
    status_values,
    values_fingerprint,
    with_eligibility,
    with_microsoft,
)
from connector.sync.outcome import RecordOutcome
from connector.sync.partners import PartnerInvitations
from connector.sync.plan import Action, Create, Reject, Skip, Update, plan_outbound
from connector.sync.plan_view import describe, record_name
from connector.sync.reconcile import reconcile_deleted_records
from connector.sync.report import CYCLE_LOG_LEVEL, Outcome, RunReport, log_settled_writes
from connector.sync.stops import credentials_refused, run_stop
from connector.sync.team import TeamStep

log = logging.getLogger(__name__)

#: how far before the stored core cursor the next pull-back starts (ties, late commits)
CORE_OVERLAP = timedelta(seconds=60)

#: status writes the CRM refuses for good, as the skip reason they are counted under:
#: a won/lost Dataverse row is read-only (the connector never reopens one), a deleted
#: row cannot be written. The link remembers the values as settled, so the write is
#: not tried again every cycle; a row that is reopened or edited is read again and
#: written then.
SETTLED_WRITE_CODES = {"read_only_closed": "read_only_closed", "not_found": "deleted"}
#: marks a dead letter whose message could not be written to the record's error field
NOT_WRITTEN = " [not yet written to the CRM]"

#: status writes per CRM call (a Salesforce collection holds 200 records)
WRITE_BATCH = 200
#: listed referrals mirrored together (one store lookup per batch)
MIRROR_BATCH = 200
#: status batches sent and not yet recorded while the pull-back lists (memory bound),
#: on WRITE_THREADS threads
WRITES_IN_FLIGHT = 4
WRITE_THREADS = 2
#: links saved per store transaction while a page is pushed
LINK_BATCH = 100
#: referrals written per parallel slice of the pull-back listing (10 core pages)
PULL_SLICE = 1000
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
#: (id, stamp) keys of pulled records remembered to drop a repeat (two large pages)
PAGE_MEMORY = 10_000

ProgressFn = Callable[[str, int], None]


def _noop_progress(kind: str, n: int) -> None:
    return None


_Outcome = RecordOutcome


@dataclass
class _PageWork:
    """A page handed to the push pool, waiting for :meth:`SyncEngine._finish`."""

    outcomes: list[_Outcome]
    links: dict[str, Link]
    by_id: dict[str, CrmOpportunity]
    ids: set[str]
    futures: list[Future[_Outcome]] = field(default_factory=list)
    #: how many of ``futures`` were collected (their links saved)
    collected: int = 0
    #: the CRM ids of ``futures``, in order
    pushed: list[str] = field(default_factory=list)
    #: pushes a stop cancelled before they started: nothing of them was sent
    cancelled: list[str] = field(default_factory=list)


class SyncEngine:
    """Runs cycles for one connection."""

    def __init__(
        self,
        connection: str,
        *,
        crm: CrmAdapter,
        core: ReferralsClient,
        store: Store,
        mapping: MappingFile,
        link_for: Callable[[str], str],
        concurrency: int = 8,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        progress: ProgressFn = _noop_progress,
        stop: threading.Event | None = None,
        history: HistorySettings | None = None,
        holder: str | None = None,
    ) -> None:
        self.connection = connection
        self.crm = crm
        self.core = core
        self.store = store
        self.mapping = mapping
        self.link_for = link_for
        self.concurrency = concurrency
        self.clock = clock
        self.progress = progress
        self.stop = stop or threading.Event()
        #: status writes waiting for a full CRM batch, by CRM id (a later one replaces an
        #: earlier one); links needing a write are also marked in the store, so a crash
        #: loses none of them
        self._pending: dict[str, tuple[CrmStatusUpdate, Link | None, str]] = {}
        #: the push workers, shared by the pages of a run (see :meth:`_outbound`)
        self._pool: ThreadPoolExecutor | None = None
        #: during the pull-back, status batches go to the CRM on these threads while the
        #: listing goes on; their results are recorded on the main thread, in order sent
        self._writer: ThreadPoolExecutor | None = None
        self._writes: collections.deque[
            tuple[Sequence[tuple[CrmStatusUpdate, Link | None, str]], Future[list[WriteResult]]]
        ] = collections.deque()
        self._outbound_started: datetime | None = None
        #: set by the first push that met a run-stopping failure: the other pushes of
        #: the run are not sent (see connector.sync.stops)
        self._halted: ConnectorError | None = None
        self.lifecycle = LifecycleSteps(self)
        #: the core's clock (expiry is the core's), and the daily refresh of days left
        self.core_clock = CoreClock(store, connection, clock)
        self.countdown = Countdown(self)
        #: declined and expired incoming deals closed in the CRM (inbound.close)
        self.closing = Closing(self)
        #: the account and contact of new incoming deals' opportunities (inbound.customer)
        self.customers = CustomerLinks(self)
        #: opportunity teams (fields.team)
        self.team = TeamStep(self)
        #: partner-to-partner invitations (core.partner_invitations)
        self.partners = PartnerInvitations(self)
        #: what each record's syncs did, for the console (connector.sync.history)
        self.history = HistoryRecorder(store, connection, history)
        #: whose create intents this run writes: the lease holder of the process running it
        self.holder = holder or f"engine:{uuid.uuid4().hex[:12]}"
        self.existing = ExistingReferrals(
            connection,
            store=store,
            core=core,
            holder=self.holder,
            link_field=mapping.status_fields.referral_id,
            linked=self._linked,
            overlap=CORE_OVERLAP,
            concurrency=concurrency,
        )
        #: set when a stop left a page partly pushed: no later cursor may pass it
        self._cursor_held = False
        #: status writes the CRM refused for good this run, by skip reason (logged once)
        self._settled_writes: collections.Counter[str] = collections.Counter()
        #: what a dead letter remembers of its record's content (see sync.dead_letters)
        self._fingerprints = ContentFingerprints(mapping)

    # ------------------------------------------------------------------ the cycle

    def run(self, *, dry_run: bool = False, full: bool = False) -> RunReport:
        report = RunReport(self.connection, dry_run=dry_run)
        self._halted = None
        started = time.monotonic()
        run_id = None if dry_run else self.store.start_run(self.connection)
        self.history.begin(run_id, self.clock())
        calls_before = self._api_calls()
        log.info(
            "%s: cycle started%s",
            self.connection,
            " (dry run)" if dry_run else "",
            extra={"event": "cycle_start", "connection": self.connection},
        )
        try:
            with report.phase("start"):
                stages = self._stages()
                if not dry_run:
                    self.existing.start(self.clock())
                    self._mirror_left_over(report)
                    self._retry_dead_letters(stages, report)
                    reconcile_deleted_records(self, report)
                    self.team.process_changes(stages, report)
            self._outbound_started = self.clock()
            with report.phase("outbound"):
                self._outbound(stages, report, dry_run=dry_run, full=full)
            if not dry_run and not self.stop.is_set():
                writing = report.phases.get("crm_status_calls", 0.0)
                with report.phase("pull_back"):
                    self._pull_back(report)
                report.phases["pull_back_crm_status_calls"] = (
                    report.phases.get("crm_status_calls", 0.0) - writing
                )
                with report.phase("countdown"):
                    self.countdown.refresh(report)
            if not dry_run:
                with report.phase("status_writes"):
                    if self.stop.is_set():
                        self._write_status([], report)  # linked writes wait for next run
                    self._flush_status(report, everything=True)
                    # after the status writes: a record closed in Dataverse is read-only
                    self.closing.close(report)
            if self.stop.is_set():
                report.outcome = Outcome.INTERRUPTED
        except QuotaExhausted as exc:
            report.outcome = Outcome.QUOTA
            report.error = exc.message
            log.warning("%s: stopped at the API quota guard: %s", self.connection, exc.message)
        except Throttled as exc:
            report.outcome = Outcome.THROTTLED
            report.error = exc.message
            log.warning("%s: stopped, throttled: %s", self.connection, exc.message)
        except ConnectorError as exc:
            error = self._run_stop(exc) or exc
            # the CRM refused a request as such (HTTP 400): a field the mapping names?
            report.crm_refused_request = isinstance(exc, CrmError) and exc.status == 400
            report.outcome = Outcome.FAILED
            report.error = error.message
            log.error("%s: the run failed: %s", self.connection, error.message)
        finally:
            report.duration_s = time.monotonic() - started
            report.api_calls = {
                system: n - calls_before.get(system, 0) for system, n in self._api_calls().items()
            }
            report.quota = self._quota_shares()
            report.finish_outcome()
            if run_id is not None:
                self.store.finish_run(
                    run_id,
                    report.outcome,
                    report.counts(),
                    report.api_calls,
                    report.duration_s,
                    report.error,
                )
                self.history.end(report)
        log_settled_writes(self.connection, self._settled_writes)
        log.log(
            CYCLE_LOG_LEVEL.get(report.outcome, logging.INFO),
            "%s: cycle %s in %.1fs: created=%d updated=%d closed=%d mirrored=%d skipped=%d "
            "rejected=%d failed=%d",
            self.connection,
            report.outcome,
            report.duration_s,
            report.created,
            report.updated,
            report.closed,
            report.mirrored,
            sum(report.skipped.values()),
            sum(report.rejected.values()),
            sum(report.failed.values()),
            extra={"event": "cycle", "connection": self.connection, **report.log_fields()},
        )
        return report

    def _quota_shares(self) -> dict[str, float]:
        """The share of the CRM's allowance (or of this run's budget) used, when known."""
        usage = self.crm.usage
        if usage.used is None or not usage.limit:
            return {}
        return {self.crm.system: round(usage.used / usage.limit, 4)}

    def _api_calls(self) -> dict[str, int]:
        core_calls = self.core.calls
        total_core = (
            sum(core_calls.values()) if isinstance(core_calls, Mapping) else int(core_calls)
        )
        return {self.crm.system: self.crm.usage.calls, "core": total_core}

    @property
    def _options(self) -> CoreOptions:
        """The core settings Microsoft leaves open (sales stage form, co-sell flow …)."""
        return self.core.options

    def _pulled_fields(self) -> list[str]:
        """The mapping's fields, and the referral id the CRM record carries: trusted
        before any create (see :mod:`connector.sync.existing`)."""
        fields = self.mapping.crm_fields()
        carried = self.mapping.status_fields.referral_id
        return fields if carried in fields else [*fields, carried]

    def _stages(self) -> dict[str, StageInfo]:
        stages: dict[str, StageInfo] = {}
        for info in self.crm.stage_metadata():
            stages[info.label] = info
            stages.setdefault(info.api_name, info)
        return stages

    # ------------------------------------------------------------------ outbound

    def _outbound(
        self, stages: Mapping[str, StageInfo], report: RunReport, *, dry_run: bool, full: bool
    ) -> None:
        """Pull the CRM's changes page by page, push them, commit the cursor per page.

        Pages overlap by one: page *k+1* is pulled, mapped and handed to the push pool
        before page *k*'s results are mirrored and its cursor committed, so the pool
        never waits for the CRM (the pull, the status writes). Two pages at most are in
        memory. A record already in flight in the previous page waits for it to finish.
        """
        cursor = None if full else self.store.get_cursor(self.connection, "crm")
        fields = self._pulled_fields()
        seen = RecentKeys(PAGE_MEMORY)  # a repeat comes only across a page boundary
        announced = False  # the pull's total was handed to the progress display
        #: pages handed to the pool and not yet finished, oldest first (two at most)
        begun: list[tuple[_PageWork, CrmPage]] = []
        pages = iter(self.crm.pull_changes(cursor, fields=fields, select=self.mapping.select))
        #: True while the oldest page is being finished: if that fails, a newer page's
        #: cursor must not be committed over the records the failed one left undone
        finishing_oldest = False

        def finish_oldest() -> None:
            nonlocal finishing_oldest
            work, page = begun.pop(0)
            finishing_oldest = True
            try:
                self._finish_page(work, page, report)
            except Exception:
                self._keep_links(work)  # whatever the pool sent of it is linked
                raise
            finishing_oldest = False

        try:
            while True:
                if begun and self._near_guard(begun[0][0]):
                    # Few CRM calls left before the quota guard: finish the page in
                    # flight (its status writes) before a call is spent on the next one.
                    finish_oldest()
                if self.stop.is_set():
                    break  # the pages still in flight are finished below
                page = next(pages, None)
                if page is None:
                    break
                if page.total is not None and not announced:
                    announced = True
                    self.progress("total", page.total)
                records = []
                for record in page.records:
                    if seen.add((record.id, record.modstamp)):
                        records.append(record)
                report.pulled += len(records)
                self.progress("pulled", len(records))
                if not full:  # --full re-processes every record, dead-lettered or not
                    records = self._changed_since_letter(records, report)
                if dry_run:
                    self.process_records(records, stages, report, dry_run=True)
                    if page.deleted_ids:
                        self._deleted(page.deleted_ids, report, dry_run=True)
                    continue
                if begun and begun[0][0].ids & {r.id for r in records}:
                    finish_oldest()
                begun.append((self._begin(records, stages, report), page))
                if len(begun) > 1:
                    finish_oldest()
            while begun:
                finish_oldest()
        except Exception as exc:
            # The next page could not be pulled or planned, or a page not finished (a
            # quota stop, the CRM down): the oldest page still in flight is finished and
            # its cursor committed if it can be, as if the pages had not overlapped, and
            # whatever the pool sent is linked in the store; then the error goes on. Not
            # when an older page failed to finish, nor when the run was halted (pushes
            # were left unsent): that cursor would skip records never pushed.
            if len(begun) == 1 and not finishing_oldest and self._halted is None:
                try:
                    self._finish_page(*begun.pop(0), report)
                except Exception as again:
                    log.error(
                        "%s: could not finish the page in flight after %s: %s",
                        self.connection,
                        getattr(exc, "message", type(exc).__name__),
                        getattr(again, "message", again),
                    )
            for work, _ in begun:
                self._keep_links(work)
            raise
        finally:
            self._close_pool()  # what has not started is dropped; pending links stay marked
        if self.stop.is_set() and not dry_run:
            log.info(
                "%s: stop requested: the CRM cursor is committed up to the last page "
                "handled in full",
                self.connection,
                extra={"event": "stop", "connection": self.connection},
            )

    def _near_guard(self, work: _PageWork) -> bool:
        """Whether the CRM's guard could stop the run before ``work`` is mirrored."""
        headroom = self.crm.usage.headroom
        if headroom is None:
            return False
        writes = len(work.by_id) + len(self._pending)
        return headroom <= -(-writes // WRITE_BATCH) + 1

    def _finish_page(self, work: _PageWork, page: CrmPage, report: RunReport) -> None:
        self._finish(work, report)
        if page.deleted_ids:
            self._deleted(page.deleted_ids, report, dry_run=False)
        self._flush_unlinked(report)
        if page.cursor is not None and not self._cursor_held:
            self.store.set_cursor(self.connection, "crm", page.cursor)

    def _deleted(self, crm_ids: Sequence[str], report: RunReport, *, dry_run: bool) -> None:
        """Rows the CRM reports deleted (Dataverse change tracking).

        A deletion never writes to the core: the referral is the partner's record of a
        deal shared with Microsoft and stays as it is (close it in Partner Center if the
        deal is really gone). The link is kept, so a row restored with the same id is
        not shared twice, and a later status write to the deleted row is settled as
        ``deleted``. Each linked row counts once under skipped ``deleted``; rows never
        shared are ignored. A dead letter of a deleted row is resolved: nothing is left
        to fix.
        """
        links = self.store.get_links(self.connection, list(crm_ids))
        for crm_id in crm_ids:
            if crm_id in links:
                report.skipped["deleted"] += 1
                log.info(
                    "%s: %s: deleted in the CRM; referral %s left as it is",
                    self.connection,
                    crm_id,
                    links[crm_id].referral_id,
                    extra=record_fields(self.connection, crm_id, event="deleted"),
                )
            if not dry_run:
                self.store.resolve_dead_letter(self.connection, crm_id)

    def _changed_since_letter(
        self, records: list[CrmOpportunity], report: RunReport
    ) -> list[CrmOpportunity]:
        """Leave out records read again unchanged since they were dead-lettered.

        The CRM pull overlaps its cursor, and writing a record's error field moves its
        stamp, so a failed record comes back; only a change of what the mapping reads
        (or of the mapping) or ``connector errors retry`` should process it again, and a
        discarded letter must stay discarded. Each one left out counts as skipped
        ``unchanged_since_failure``.
        """
        stamps = self.store.dead_letter_stamps(self.connection, [r.id for r in records])
        if not stamps:
            return records
        changed, unchanged = split_unchanged(records, stamps, self._fingerprints)
        if unchanged:
            report.skipped[UNCHANGED_SINCE_FAILURE] += len(unchanged)
            self.progress("settled", len(unchanged))
        return changed

    def process_records(
        self,
        records: Sequence[CrmOpportunity],
        stages: Mapping[str, StageInfo],
        report: RunReport,
        *,
        dry_run: bool = False,
    ) -> None:
        """Map, plan, push and mirror one page of records."""
        if dry_run:
            live = [r for r in records if not r.deleted]
            report.skipped["deleted"] += len(records) - len(live)
            links = self.store.get_links(self.connection, [r.id for r in live])
            live = self.team.attach(live)
            live = [with_referral_customer(r, self.mapping, links.get(r.id)) for r in live]
            for r in live:
                link = links.get(r.id)
                action = plan_outbound(apply_mapping(r, self.mapping, stages), link, self._options)
                sent = link.sent_body if link else None
                report.plan.append(describe(action, sent, name=record_name(r, self.mapping)))
                _count_planned(action, report)
            self.progress("settled", len(records))
            return
        try:
            self._finish(self._begin(records, stages, report), report)
        finally:
            self._close_pool()

    def _begin(
        self,
        records: Sequence[CrmOpportunity],
        stages: Mapping[str, StageInfo],
        report: RunReport,
    ) -> _PageWork:
        """Map and plan a page, answer inbound deals, and hand its pushes to the pool."""
        live = [r for r in records if not r.deleted]
        report.skipped["deleted"] += len(records) - len(live)
        # before anything is planned: the referral each record already has, if any
        existing = self.existing.settle(
            live, self.store.get_links(self.connection, [r.id for r in live])
        )
        links = existing.links
        set_aside = _set_aside(existing.claimed, existing.failed)
        live = [r for r in live if r.id not in existing.claimed and r.id not in existing.failed]
        live = self.team.attach(live)
        # an incoming deal's customer is the sender's: filled from the core where the CRM
        # cannot hold it (see connector.sync.inbound)
        live = [with_referral_customer(r, self.mapping, links.get(r.id)) for r in live]
        drafts = {r.id: apply_mapping(r, self.mapping, stages) for r in live}
        answered = self.lifecycle.answer(live, drafts, links, stages, report)
        settled = {o.crm_id for o in answered}
        actions = [
            plan_outbound(drafts[r.id], links.get(r.id), self._options)
            for r in live
            if r.id not in settled
        ]
        actions = self._unless_the_core_has_it(actions, links, set_aside)
        work = _PageWork(
            outcomes=[*answered, *set_aside],
            links=links,
            by_id={r.id: r for r in live},
            ids={r.id for r in records},
        )
        self._push(actions, work)
        # what needs no push is handled now (deleted rows too); pushes count as they end
        self.progress("settled", len(records) - len(work.futures))
        return work

    def _unless_the_core_has_it(
        self, actions: list[Action], links: dict[str, Link], set_aside: list[_Outcome]
    ) -> list[Action]:
        """Creates planned for records without a link, once the core was asked: a record
        whose referral the core already holds is linked to it and planned again."""
        creates = [a.draft.crm_id for a in actions if isinstance(a, Create)]
        found = self.existing.before_create(creates, links)
        if not found.failed and not any(links[c].referral_id for c in creates if c in links):
            return actions
        set_aside.extend(_set_aside(set(), found.failed))
        planned: list[Action] = []
        for action in actions:
            if isinstance(action, Create):
                crm_id = action.draft.crm_id
                if crm_id in found.failed:
                    continue
                link = links.get(crm_id)
                if link is not None and link.referral_id is not None:
                    action = plan_outbound(action.draft, link)
            planned.append(action)
        return planned

    def _finish(self, work: _PageWork, report: RunReport) -> None:
        """Collect a page's push results, save their links, mirror them to the CRM.

        The links the core answered are saved in batches of :data:`LINK_BATCH` as
        results come in, and whatever came in when the loop stops for any reason.
        """
        outcomes = work.outcomes
        unsaved: list[Link] = []
        try:
            for index, future in enumerate(work.futures):
                if self.stop.is_set() and not work.cancelled:
                    self._cancel_rest(work, index)
                if future.cancelled():
                    work.collected += 1
                    continue
                with report.phase("outbound_waiting_for_pushes"):
                    outcome = future.result()
                work.collected += 1
                outcomes.append(outcome)
                if outcome.link is not None:
                    unsaved.append(outcome.link)
                if len(unsaved) >= LINK_BATCH:
                    self.store.save_links(self.connection, unsaved)
                    unsaved = []
                self.progress("pushed", 1)
        finally:
            self.store.save_links(self.connection, unsaved)
        if work.cancelled:
            # never sent: the create intents go, so the next run plans them afresh
            # instead of looking each one up in the core
            self.store.release_pending(self.connection, work.cancelled, holder=self.holder)
            self._cursor_held = True
        self._stop_on_refusal(outcomes)
        self.partners.invite(outcomes, work.by_id, work.links)
        self.lifecycle.register(outcomes, work.by_id, work.links)
        self._mirror_outcomes(outcomes, work.links, work.by_id, report)

    def _cancel_rest(self, work: _PageWork, start: int) -> None:
        """A stop: pushes not started yet are dropped; those in flight finish."""
        for crm_id, future in zip(work.pushed[start:], work.futures[start:], strict=True):
            if future.cancel():
                work.cancelled.append(crm_id)
        if work.cancelled:
            log.info(
                "%s: stop requested: %d record(s) of the page left for the next run",
                self.connection,
                len(work.cancelled),
                extra={"event": "stop", "connection": self.connection},
            )

    def _keep_links(self, work: _PageWork) -> None:
        """After an error: wait for what the pool sent of a page and save its links."""
        kept = []
        for future in work.futures[work.collected :]:
            try:
                outcome = future.result()
            except Exception:  # noqa: S112 - the run is already failing; keep the rest
                continue
            if outcome.link is not None:
                kept.append(outcome.link)
        work.collected = len(work.futures)
        self.store.save_links(self.connection, kept)

    def _push(self, actions: Sequence[Action], work: _PageWork) -> None:
        """Settle skips and rejections; hand creates and updates to the worker pool.

        The workers only talk to the core; the store is written from this thread. Every
        create of the page is marked pending (this run's create intent) in one
        transaction *before* any POST: a crash then leaves pending links that a later
        cycle resolves in the core instead of creating again. A record the store
        refuses is claimed by another run (pending under its intent, or linked by it
        since this page was read): that run creates it, so it is skipped, not failed.
        """
        pushes = [a for a in actions if isinstance(a, (Create, Update))]
        work.outcomes.extend(
            self._settle(a) for a in actions if not isinstance(a, (Create, Update))
        )
        creates = [a for a in pushes if isinstance(a, Create)]
        if creates:
            refused = self.store.mark_pending_many(
                self.connection,
                [(a.draft.crm_id, a.fingerprint, a.body) for a in creates],
                holder=self.holder,
            )
            for crm_id, exc in refused.items():
                log.info(
                    "%s: %s: not created: %s",
                    self.connection,
                    crm_id,
                    exc.message,
                    extra=record_fields(self.connection, crm_id, reason=exc.code),
                )
                work.outcomes.append(_Outcome(crm_id, "skipped", CLAIMED))
            pushes = [a for a in pushes if a.draft.crm_id not in refused]
        if pushes:
            pool = self._get_pool()
            links = work.links
            work.futures = [pool.submit(self._execute, a, links) for a in pushes]
            work.pushed = [a.draft.crm_id for a in pushes]

    def _get_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="push")
        return self._pool

    def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _settle(self, action: Action) -> _Outcome:
        if isinstance(action, Skip):
            return _Outcome(
                action.crm_id,
                "skipped",
                action.reason.value,
                notice=action.notice,
                fingerprint=action.fingerprint,
            )
        assert isinstance(action, Reject)
        return _Outcome(action.crm_id, "rejected", action.code, action.message)

    def _execute(self, action: Action, links: Mapping[str, Link]) -> _Outcome:
        crm_id = action.draft.crm_id if isinstance(action, (Create, Update)) else ""
        if self._halted is not None:
            # the run is stopping: this push is not sent (a copy: one traceback per thread)
            raise copy.copy(self._halted)
        try:
            if isinstance(action, Create):
                return self._create(action)
            assert isinstance(action, Update)
            return self._update(action, links[crm_id])
        except ConnectorError as exc:
            stop = self._run_stop(exc)
            if stop is not None:
                # Not the record's fault, and every other push would meet it too.
                self._halted = stop
                raise stop from None
            log.warning(
                "%s: %s: %s",
                self.connection,
                crm_id,
                exc.message,
                extra=record_fields(self.connection, crm_id, reason=exc.code),
            )
            return _Outcome(crm_id, "failed", exc.code, exc.message, transient=exc.transient)

    def _run_stop(self, error: ConnectorError) -> ConnectorError | None:
        return run_stop(error, connection=self.connection, crm_system=self.crm.system)

    def _stop_on_refusal(self, outcomes: Sequence[_Outcome]) -> None:
        """Stop before anything of a page is mirrored when one of its records failed on a
        refused credential or a throttle (a step that turned the error into an outcome)."""
        for o in outcomes:
            if o.kind != "failed":
                continue
            if o.reason == Throttled.code:
                raise Throttled(o.message or "throttled", status=429)
            if o.reason in AUTHENTICATION_CODES:
                raise credentials_refused(
                    "core", o.reason, o.message or "", connection=self.connection
                )

    def _create(self, action: Create) -> _Outcome:
        """POST the referral; patch what the core did not keep; invite Microsoft if asked.

        The create body carries the status and sales stage, so a core that keeps what it
        is sent costs one write. What came back different (a core that starts every deal
        Active/Accepted, or drops closingDateTime) is patched at once. A patch or an
        invitation that fails leaves the referral linked without a fingerprint: the
        record is planned again against what the core holds.
        """
        draft = action.draft
        fingerprint: str | None = action.fingerprint
        body: Mapping[str, Any] = action.body
        referral = self.core.create(action.body)  # marked pending by _push before any POST
        if referral.direction == "Unknown":  # a create answer may leave it out (CR20)
            referral = replace(referral, direction="Outgoing")
        ops = created_differences(action.body, referral.raw)
        if ops:
            try:
                referral = replace(
                    self.core.patch(referral.id, ops, referral.etag), direction="Outgoing"
                )
            except CoreError as exc:
                log.warning(
                    "%s: %s: referral %s created, but bringing it to the record failed: %s",
                    self.connection,
                    draft.crm_id,
                    referral.id,
                    exc.message,
                )
                fingerprint, body = None, dict(referral.raw)
        link = self._linked(None, referral, fingerprint, body, crm_id=draft.crm_id)
        if action.invite_microsoft:
            return invite_microsoft(self.core, link, action.body, "created", action.notice)
        return _Outcome(draft.crm_id, "created", link=link, notice=action.notice)

    def _update(self, action: Update, link: Link) -> _Outcome:
        referral_id = link.referral_id
        assert referral_id is not None
        kind = "closed" if action.closes is not None else "updated"
        if not action.ops:  # only Microsoft's referral is missing
            new_link = relinked(link, action.fingerprint, action.body)
            return invite_microsoft(self.core, new_link, action.body, kind, action.warning)
        try:
            referral = self.core.patch(referral_id, action.ops, link.etag)
        except PreconditionFailed:
            # Someone changed the referral since we read it: re-read, re-plan, retry once.
            fresh = self.core.get(referral_id)
            if fresh.is_terminal:
                link = self._linked(link, fresh, link.fingerprint, link.sent_body)
                return _Outcome(link.crm_id, "skipped", "terminal", link=link)
            ops = patch_ops(dict(fresh.raw), action.body)
            if action.closes is not None:
                closing = status_ops(
                    Status.CLOSED, action.closes, stage_format=self._options.sales_stage_format
                )
                paths = {op["path"] for op in closing}
                ops = [o for o in ops if o["path"] not in paths] + closing
            referral = self.core.patch(referral_id, ops, fresh.etag) if ops else fresh
        except CoreError as exc:
            if not refused(exc):
                raise
            # Terminal is read from the referral itself, never guessed from an error code.
            fresh = self.core.get(referral_id)
            if not fresh.is_terminal:
                raise
            link = self._linked(link, fresh, link.fingerprint, link.sent_body)
            return _Outcome(link.crm_id, "skipped", "terminal", link=link)
        new_link = self._linked(link, referral, action.fingerprint, action.body)
        if action.invite_microsoft:
            return invite_microsoft(self.core, new_link, action.body, kind, action.warning)
        return _Outcome(link.crm_id, kind, link=new_link, notice=action.warning)

    def _linked(
        self,
        link: Link | None,
        referral: ReferralState,
        fingerprint: str | None,
        body: Mapping[str, Any] | None,
        *,
        crm_id: str | None = None,
    ) -> Link:
        previous = CoreFacts.from_json(link.core_facts) if link and link.core_facts else None
        facts = facts_of(referral, self.link_for(referral.id), None)
        if link is not None and previous is not None:
            facts = replace(
                carried_over(previous, facts, referral.raw),
                notice=previous.notice if fingerprint == link.fingerprint else None,
            )
        facts = with_eligibility(facts, body if body is not None else referral.raw)
        state = LinkState.TERMINAL if referral.is_terminal else LinkState.LINKED
        base = link or Link(connection=self.connection, crm_id=crm_id or "", state=state)
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

    # ------------------------------------------------------------------ mirror

    def _mirror_outcomes(
        self,
        outcomes: Sequence[_Outcome],
        links: Mapping[str, Link],
        records: Mapping[str, CrmOpportunity],
        report: RunReport,
    ) -> None:
        updates: list[tuple[CrmStatusUpdate, Link | None, str]] = []
        now = self.clock()
        fields = self.mapping.status_fields
        troubled = {o.crm_id for o in outcomes if o.kind in {"rejected", "failed"}}
        letters: list[tuple[str, str, str, datetime | None, str | None]] = []
        # open letters of this connection: resolved by a success or a skip, one letter per record
        earlier = {
            crm_id: d.message
            for crm_id, d in self.store.open_dead_letters(
                self.connection, [o.crm_id for o in outcomes]
            ).items()
        }
        for o in outcomes:
            if o.kind in {"created", "updated", "closed"}:
                setattr(report, o.kind, getattr(report, o.kind) + 1)
                if o.crm_id in earlier:
                    self.store.resolve_dead_letter(self.connection, o.crm_id)
            elif o.kind == "skipped":
                report.skipped[o.reason or "skipped"] += 1
                # no longer failing (e.g. lost before it was shared); a record another run
                # is creating is that run's to settle
                if o.crm_id in earlier and o.reason != CLAIMED:
                    self.store.resolve_dead_letter(self.connection, o.crm_id)
            elif o.kind == "rejected":
                report.rejected[o.reason or "invalid_record"] += 1
            else:
                report.failed[o.reason or "error"] += 1
            link = o.link or links.get(o.crm_id)
            error = o.message if o.crm_id in troubled else o.notice
            if o.crm_id in troubled:
                record = records.get(o.crm_id)
                code = f"{TRANSIENT_PREFIX}{o.reason}" if o.transient else (o.reason or "error")
                # A rejection is the mapping's verdict on the record's content: the same
                # content gets the same verdict, so the letter remembers it. A failure
                # also depends on the remote system (it may answer otherwise next time):
                # such a letter compares the stamp only.
                content = self._fingerprints.of(record) if record and o.kind == "rejected" else None
                letters.append(
                    (o.crm_id, code, o.message or "", record.modstamp if record else None, content)
                )
                if link is None or link.core_facts is None:
                    # Writing the error bumps the record's stamp: write it only when it is
                    # new, or the next cycle would read the record and write it again.
                    if fields.sync_error and earlier.get(o.crm_id) != o.message:
                        updates.append(
                            (CrmStatusUpdate(o.crm_id, {fields.sync_error: error}), None, "")
                        )
                    continue
            if link is None or link.core_facts is None:
                continue
            facts = CoreFacts.from_json(link.core_facts)
            if (
                o.kind == "skipped"
                and o.reason == "unchanged"
                and o.notice is None
                and o.fingerprint == link.fingerprint
            ):
                error = facts.notice  # nothing new happened to the record
            elif o.kind not in {"rejected", "failed"} and facts.notice != o.notice:
                facts = replace(facts, notice=o.notice)
                link = replace(
                    link, core_facts=facts.as_json(), fingerprint=o.fingerprint or link.fingerprint
                )
                self.store.save_link(self.connection, link)
            values = status_values(facts, fields, self.core_clock.now(), error)
            fp = values_fingerprint(values)
            if fp != link.mirrored_fingerprint:
                updates.append((self._with_stamp(o.crm_id, values, now), link, fp))
        self.store.add_dead_letters(self.connection, letters)
        self.history.record(outcomes, links, now)
        self._write_status(updates, report)
        self.closing.consider(o.link for o in outcomes)

    def _with_stamp(self, crm_id: str, values: dict[str, Any], now: datetime) -> CrmStatusUpdate:
        stamped = dict(values)
        if self.mapping.status_fields.last_sync:
            stamped[self.mapping.status_fields.last_sync] = now
        return CrmStatusUpdate(crm_id, stamped)

    def _write_status(
        self, updates: Sequence[tuple[CrmStatusUpdate, Link | None, str]], report: RunReport
    ) -> None:
        """Queue status writes; full CRM batches go out at once, the rest at the run's end.

        After a stop, a linked record's write is left to the next run (its link is
        marked as not mirrored, see :meth:`_mirror_left_over`): only the errors of
        records without a link, which nothing else remembers, are still written.
        """
        if self.stop.is_set():
            updates = self._defer_linked(updates)
        for update in updates:
            self._pending.pop(update[0].crm_id, None)
            self._pending[update[0].crm_id] = update
        self._flush_status(report, everything=False)

    def _defer_linked(
        self, updates: Sequence[tuple[CrmStatusUpdate, Link | None, str]]
    ) -> list[tuple[CrmStatusUpdate, Link | None, str]]:
        """Mark linked records' writes for the next run; return the others."""
        queued = [u for u in self._pending.values() if u[1] is not None]
        for update in queued:
            del self._pending[update[0].crm_id]
        deferred = [u for u in [*queued, *updates] if u[1] is not None]
        if deferred:
            self.store.set_mirrored(self.connection, {u[0].crm_id: None for u in deferred})
        return [u for u in updates if u[1] is None]

    def _flush_status(self, report: RunReport, *, everything: bool) -> None:
        while len(self._pending) >= WRITE_BATCH or (everything and self._pending):
            keys = list(itertools.islice(self._pending, WRITE_BATCH))
            self._write_now([self._pending.pop(k) for k in keys], report)

    def _flush_unlinked(self, report: RunReport) -> None:
        """Errors of records with no link are not marked in the store: write them before
        the page's cursor is committed, topped up with linked writes to fill the batch."""
        unlinked = [k for k, (_, link, _) in self._pending.items() if link is None]
        if not unlinked:
            return
        size = -(-len(unlinked) // WRITE_BATCH) * WRITE_BATCH
        linked = [k for k, (_, link, _) in self._pending.items() if link is not None]
        keys = unlinked + linked[: size - len(unlinked)]
        for start in range(0, len(keys), WRITE_BATCH):
            self._write_now(
                [self._pending.pop(k) for k in keys[start : start + WRITE_BATCH]], report
            )

    def _mirror_left_over(self, report: RunReport) -> None:
        """Status writes a crashed or stopped run left undone are written first."""
        now = self.clock()
        while not self.stop.is_set():
            links = [
                link
                for link in self.store.links_to_mirror(self.connection)
                if link.crm_id not in self._pending
            ]
            if not links:
                return
            updates = []
            for link in links:
                assert link.core_facts is not None
                facts = CoreFacts.from_json(link.core_facts)
                values = status_values(
                    facts, self.mapping.status_fields, self.core_clock.now(), facts.notice
                )
                updates.append(
                    (self._with_stamp(link.crm_id, values, now), link, values_fingerprint(values))
                )
            self._write_status(updates, report)
            self._flush_status(report, everything=True)
            if len(links) < 5000:
                return

    def _write_now(
        self, updates: Sequence[tuple[CrmStatusUpdate, Link | None, str]], report: RunReport
    ) -> None:
        if not updates:
            return
        if self._writer is not None:
            # Two writes to one record must land in order: a batch waits for the batch
            # in flight that holds one of its records (they run on parallel threads).
            ids = {u.crm_id for u, _, _ in updates}
            while any(ids & {u.crm_id for u, _, _ in sent} for sent, _ in self._writes):
                self._record_write(*self._writes.popleft(), report)
            self._writes.append(
                (updates, self._writer.submit(self.crm.write_status, [u for u, _, _ in updates]))
            )
            while len(self._writes) > WRITES_IN_FLIGHT:
                self._record_write(*self._writes.popleft(), report)
            return
        try:
            with report.phase("crm_status_calls"):
                results = self.crm.write_status([u for u, _, _ in updates])
        except ConnectorError as exc:
            # The batch's fate is unknown: an error with no link behind it would be taken
            # as shown and never written, so its letter forgets the record (read again,
            # it is processed again and its error written then).
            for update, link, _ in updates:
                if link is None:
                    self._error_not_written(update.crm_id, exc.code)
            raise
        self._record_writes(updates, results, report)

    def _record_write(
        self,
        updates: Sequence[tuple[CrmStatusUpdate, Link | None, str]],
        future: Future[list[WriteResult]],
        report: RunReport,
    ) -> None:
        with report.phase("crm_status_calls"):
            results = future.result()
        self._record_writes(updates, results, report)

    def _drain_writes(self, report: RunReport) -> None:
        while self._writes:
            self._record_write(*self._writes.popleft(), report)

    def _record_writes(
        self,
        updates: Sequence[tuple[CrmStatusUpdate, Link | None, str]],
        results: Sequence[WriteResult],
        report: RunReport,
    ) -> None:
        saved: dict[str, str] = {}
        quota: WriteResult | None = None
        for result in results:
            if not result.ok and result.error_code in AUTHENTICATION_CODES:
                # Recorded as nothing: the next run writes the whole batch again.
                raise credentials_refused(
                    self.crm.system,
                    result.error_code,
                    result.message or "",
                    connection=self.connection,
                )
        for (update, link, fp), result in zip(updates, results, strict=True):
            settled = SETTLED_WRITE_CODES.get(result.error_code or "")
            if result.ok:
                report.mirrored += 1
                if link is not None:
                    saved[link.crm_id] = fp
            elif settled is not None:
                report.skipped[settled] += 1
                self._settled_writes[settled] += 1
                if link is not None:
                    saved[link.crm_id] = fp
                # one line per cycle says how many (see run); each one only when debugging
                log.debug(
                    "%s: %s: status fields not written (%s): %s",
                    self.connection,
                    update.crm_id,
                    result.error_code,
                    result.message,
                    extra=record_fields(self.connection, update.crm_id, reason=settled),
                )
            elif result.error_code == QuotaExhausted.code:
                quota = result  # not a record's fault: written next cycle (not mirrored yet)
            else:
                report.failed[f"crm_write:{result.error_code}"] += 1
                log.warning(
                    "%s: %s: writing status fields failed: %s %s",
                    self.connection,
                    update.crm_id,
                    result.error_code,
                    result.message,
                    extra=record_fields(
                        self.connection, update.crm_id, reason=f"crm_write:{result.error_code}"
                    ),
                )
            if not result.ok and settled is None and link is None:
                self._error_not_written(update.crm_id, result.error_code)
        self.store.set_mirrored(self.connection, saved)
        self.progress("mirrored", len(updates))
        if quota is not None:
            # The adapter reports a spent budget per record (Dataverse): stop the run here,
            # before the page's cursor is committed, so the next cycle writes the rest.
            raise QuotaExhausted(quota.message or "the CRM's API budget is spent", transient=True)

    def _error_not_written(self, crm_id: str, code: str | None) -> None:
        """A rejected record's error did not reach the CRM (412, throttling, ...).

        The error is written only when it differs from the dead letter's message (no
        echo loop); marking the message makes the next processing of the record write
        it again instead of taking it as already shown. The letter forgets how the
        record was (stamp and content), so the record is processed again the next time
        it is read even if nothing the mapping reads has changed.
        """
        letter = self.store.open_dead_letters(self.connection, [crm_id]).get(crm_id)
        if letter is not None and NOT_WRITTEN not in letter.message:
            self.store.add_dead_letter(
                self.connection,
                crm_id,
                letter.reason_code,
                f"{letter.message}{NOT_WRITTEN} ({code})",
            )

    # ------------------------------------------------------------------ pull back

    def _pull_back(self, report: RunReport) -> None:
        """List the core's changes, mirror them, move the core cursor.

        Full batches of status writes go to the CRM on background threads while the
        listing goes on (:data:`WRITES_IN_FLIGHT` at most, a record in one batch at a
        time); their results are recorded on this thread, in the order sent. On an
        error the batches already sent are still recorded.
        """
        writer = ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="crm-write")
        self._writer = writer
        try:
            self._list_and_mirror(report)
        except BaseException:
            self._writer = None
            try:
                self._drain_writes(report)  # record what was written; the error goes on
            except Exception as again:
                log.error(
                    "%s: recording status writes after an error failed: %s",
                    self.connection,
                    getattr(again, "message", again),
                )
            raise
        finally:
            self._writer = None
            writer.shutdown(wait=True)
        self._drain_writes(report)

    def _list_and_mirror(self, report: RunReport) -> None:
        stored = self.store.get_cursor(self.connection, "core")
        since = datetime.fromisoformat(stored) - CORE_OVERLAP if stored else None
        newest: datetime | None = None
        batch: list[ReferralState] = []
        #: Microsoft's referrals seen so far, by engagement (a new incoming deal's Microsoft
        #: side may come in an earlier batch than the deal itself)
        microsoft: dict[str, ReferralState] = {}
        retry_from: list[datetime] = []
        for referral in self._changed_referrals(since, report):
            if self.stop.is_set():
                return  # the core cursor stays: the next run lists these again
            if referral.updated is not None and (newest is None or referral.updated > newest):
                newest = referral.updated
            batch.append(referral)
            if len(batch) >= MIRROR_BATCH:
                retry_from.extend(self._mirror_referrals(batch, report, microsoft))
                batch = []
        if batch:
            retry_from.extend(self._mirror_referrals(batch, report, microsoft))
        # Everything up to the core's "now" was listed: once a burst of changes is older
        # than the overlap window, the cursor moves past it, so idle cycles list nothing.
        server_now = self.core.server_time
        self.core_clock.saw(server_now)
        floor = server_now - CORE_OVERLAP if server_now is not None else None
        candidates = [t for t in (newest, floor) if t is not None]
        if stored:
            candidates.append(datetime.fromisoformat(stored))
        if candidates:
            cursor = max(candidates)
            if retry_from:
                # incoming referrals whose CRM record could not be created: list them again
                cursor = min(cursor, *retry_from)
            self.store.set_cursor(self.connection, "core", cursor.isoformat())

    def _changed_referrals(
        self, since: datetime | None, report: RunReport
    ) -> Iterator[ReferralState]:
        """The core's changes since ``since``, listed in parallel time slices when many.

        A sync that wrote many referrals lists them all back (the core pages 100 at a
        time, one page after another). The window in which this run wrote is then cut
        into up to ``concurrency`` slices of about :data:`PULL_SLICE` writes each, listed
        at once; the first slice holds everything before the run and the last one is open
        ended, so the slices cover the same span as one listing. A referral on a slice
        boundary (bounds are closed) is yielded once. The slices ask only for
        :data:`LISTED_FIELDS`: most of what they list is what this run wrote, unchanged.
        """
        writes = report.created + report.updated + report.closed
        slices = min(self.concurrency, writes // PULL_SLICE)
        server_now = self.core.server_time
        if slices < 2 or server_now is None or self._outbound_started is None:
            yield from self.core.list_changed(since)
            return
        # the run's start on the core's clock (Date headers have whole seconds)
        skew = server_now - self.clock()
        start = self._outbound_started + skew - timedelta(seconds=2)
        step = (server_now - start) / slices
        cuts = [start + step * i for i in range(slices)]
        cuts = [c for c in cuts if since is None or c > since]
        bounds = list(zip([since, *cuts], [*cuts, None], strict=True))
        yield from _merged(
            [
                functools.partial(self.core.list_changed, lo, until=hi, select=LISTED_FIELDS)
                for lo, hi in bounds
            ],
            boundaries=frozenset(_second(c) for c in cuts),
        )

    def _mirror_referrals(
        self,
        referrals: Sequence[ReferralState],
        report: RunReport,
        microsoft_seen: dict[str, ReferralState] | None = None,
    ) -> list[datetime]:
        """Mirror changed referrals into linked records; create records for incoming ones.

        Returns the ``updatedDateTime`` of incoming referrals whose CRM record could not
        be created (the cursor stays before them).
        """
        rule = self._options.microsoft
        own = [r for r in referrals if not _is_microsoft(r, rule)]
        microsoft = [r for r in referrals if _is_microsoft(r, rule)]
        engagements = [ms.engagement_id for ms in microsoft if ms.engagement_id]
        by_engagement: dict[str, list[Link]] = {}
        for engaged in self.store.links_by_engagements(self.connection, engagements):
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
        etags = self.store.etags_by_referral(self.connection, [r.id for r in own])
        own = [r for r in own if not (r.etag and etags.get(r.id) == r.etag)]
        own, retry_from = self._read_whole(own)
        links = self.store.links_by_referral(self.connection, [r.id for r in own])
        if self.mapping.inbound.create_opportunities:
            floor = self.lifecycle.create_opportunities(own, links, seen, report, rule)
            if floor is not None:
                retry_from.append(floor)
        changed: dict[str, Link] = {}
        for referral in own:
            link = links.get(referral.id)
            if link is None:
                if referral.direction == "Incoming":
                    report.skipped["incoming_not_linked"] += 1
                continue
            changed[link.crm_id] = self._linked(link, referral, link.fingerprint, link.sent_body)
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
        self.store.save_links(self.connection, list(changed.values()))
        self.closing.consider(changed.values())
        now = self.clock()
        self.history.mirrored(list(changed.values()), now)
        updates: list[tuple[CrmStatusUpdate, Link | None, str]] = []
        for link in changed.values():
            assert link.core_facts is not None
            values = status_values(
                CoreFacts.from_json(link.core_facts),
                self.mapping.status_fields,
                self.core_clock.now(),
            )
            fp = values_fingerprint(values)
            if fp != link.mirrored_fingerprint:
                updates.append((self._with_stamp(link.crm_id, values, now), link, fp))
        self._write_status(updates, report)
        return retry_from

    def _read_whole(
        self, referrals: list[ReferralState]
    ) -> tuple[list[ReferralState], list[datetime]]:
        """Referrals listed partially (``$select``) read whole, in parallel; others as given.

        A referral gone since it was listed (404) is left out and its ``updatedDateTime``
        returned, so that the cursor stays before it: the core never deletes a referral,
        so this is a server that lies, and the next cycle lists it again.
        """
        partial = [r for r in referrals if r.partial]
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
            if not referral.partial:
                result.append(referral)
            elif (found := whole[referral.id]) is not None:
                result.append(found)
            elif referral.updated is not None:
                again.append(referral.updated)
        return result, again

    # ------------------------------------------------------------------ dead letters

    def _retry_dead_letters(self, stages: Mapping[str, StageInfo], report: RunReport) -> None:
        """Transient failures, and those an operator asked to retry, are tried again now."""
        letters = [
            d
            for d in self.store.list_dead_letters(self.connection)
            if d.reason_code.startswith((TRANSIENT_PREFIX, RETRY_PREFIX))
        ]
        records: list[CrmOpportunity] = []
        for letter in letters:
            if self.stop.is_set():
                break  # the rest are retried by the next cycle
            record = self.crm.fetch(letter.crm_id, fields=self._pulled_fields())
            if record is None:
                self.store.resolve_dead_letter(self.connection, letter.crm_id)
            else:
                records.append(record)
        if records:
            self.process_records(records, stages, report)


def _is_microsoft(
    referral: ReferralState, rule: MicrosoftReferralRule = DEFAULT_OPTIONS.microsoft
) -> bool:
    """Whether ``referral`` is Microsoft's side of a deal (``core.microsoft_referral``)."""
    return rule.matches(referral.raw)


def _set_aside(claimed: set[str], failed: Mapping[str, CoreError]) -> list[_Outcome]:
    """Outcomes of records not planned: another run's, or their evidence unreadable."""
    outcomes = [_Outcome(crm_id, "skipped", CLAIMED) for crm_id in sorted(claimed)]
    for crm_id, exc in failed.items():
        message = f"could not read the referral it may already have: {exc.message}"
        outcomes.append(_Outcome(crm_id, "failed", exc.code, message, transient=exc.transient))
    return outcomes


def _count_planned(action: Action, report: RunReport) -> None:
    if isinstance(action, Create):
        report.created += 1
    elif isinstance(action, Update):
        if action.closes:
            report.closed += 1
        else:
            report.updated += 1
    elif isinstance(action, Skip):
        report.skipped[action.reason.value] += 1
    else:
        report.rejected[action.code] += 1


def _second(when: datetime) -> datetime:
    """``when`` floored to the second, in UTC (the precision of an OData bound)."""
    return when.astimezone(UTC).replace(microsecond=0)


def _merged(
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
