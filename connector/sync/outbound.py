"""The outbound stage: a page of CRM changes -> normalise -> map -> plan -> push.

Pull is the adapter's (it normalises); what follows is pure up to the pusher: records
are de-duplicated once here, mapped (:func:`connector.mapping.apply.apply_mapping`)
and planned (:mod:`connector.sync.plan`); the actions go to the
:class:`~connector.sync.pusher.Pusher`, the outcomes to :mod:`connector.sync.settle`.
The CRM cursor is committed only after every record of a page is linked, skipped or
dead-lettered, so a crash replays at most one page.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from connector.crm.base import CrmAdapter, CrmPage
from connector.dealcore.options import CoreOptions
from connector.dedupe import RecentKeys
from connector.errors import AUTHENTICATION_CODES, CoreError, Throttled
from connector.logs import record_fields
from connector.mapping.apply import apply_mapping
from connector.mapping.schema import MappingFile
from connector.model import CrmOpportunity, StageInfo
from connector.state.store import Link, Store
from connector.sync.dead_letters import (
    UNCHANGED_SINCE_FAILURE,
    ContentFingerprints,
    split_unchanged,
)
from connector.sync.existing import CLAIMED, ExistingReferrals
from connector.sync.inbound import with_referral_customer
from connector.sync.outcome import RecordOutcome
from connector.sync.partners import PartnerInvitations
from connector.sync.plan import Action, Create, Skip, Update, plan_outbound
from connector.sync.plan_view import describe, record_name
from connector.sync.pusher import Pusher
from connector.sync.report import RunReport
from connector.sync.settle import Settler
from connector.sync.status_writer import StatusWriter
from connector.sync.steps import LifecycleSteps
from connector.sync.stops import credentials_refused
from connector.sync.team import TeamStep
from connector.sync.tuning import DEFAULT_TUNING, Tuning

#: the logger name these lines had before the stages were split out of the engine
#: (the "logger" field of the JSON logs operators filter on)
log = logging.getLogger("connector.sync.engine")

ProgressFn = Callable[[str, int], None]


@dataclass
class PageWork:
    """A page handed to the push pool, waiting for :meth:`Outbound.finish`."""

    outcomes: list[RecordOutcome]
    links: dict[str, Link]
    by_id: dict[str, CrmOpportunity]
    ids: set[str]
    futures: list[Future[RecordOutcome]] = field(default_factory=list)
    #: how many of ``futures`` were collected (their links saved)
    collected: int = 0
    #: the CRM ids of ``futures``, in order
    pushed: list[str] = field(default_factory=list)
    #: pushes a stop cancelled before they started: nothing of them was sent
    cancelled: list[str] = field(default_factory=list)
    #: a part of a page that is not its last (see Outbound._parts): no cursor of its own
    part: bool = False


class Outbound:
    """Pulls, maps, plans and pushes the CRM's changes of one connection."""

    def __init__(
        self,
        connection: str,
        *,
        crm: CrmAdapter,
        store: Store,
        mapping: MappingFile,
        options: Callable[[], CoreOptions],
        pusher: Pusher,
        writer: StatusWriter,
        settler: Settler,
        lifecycle: LifecycleSteps,
        existing: ExistingReferrals,
        team: TeamStep,
        partners: PartnerInvitations,
        progress: ProgressFn,
        stop: threading.Event,
        tuning: Tuning = DEFAULT_TUNING,
    ) -> None:
        self.connection = connection
        self.crm = crm
        self.store = store
        self.state = store.connection(connection)
        self.mapping = mapping
        self.options = options
        self.pusher = pusher
        self.writer = writer
        self.settler = settler
        self.lifecycle = lifecycle
        self.existing = existing
        self.team = team
        self.partners = partners
        self.progress = progress
        self.stop = stop
        self.tuning = tuning
        #: set when a stop left a page partly pushed: no later cursor may pass it
        self.cursor_held = False
        #: what a dead letter remembers of its record's content (see sync.dead_letters)
        self.fingerprints = ContentFingerprints(mapping)

    def pulled_fields(self) -> list[str]:
        """The mapping's fields, and the referral id the CRM record carries: trusted
        before any create (see :mod:`connector.sync.existing`)."""
        fields = self.mapping.crm_fields()
        carried = self.mapping.status_fields.referral_id
        return fields if carried in fields else [*fields, carried]

    # ------------------------------------------------------------------ the pages

    def run(
        self, stages: Mapping[str, StageInfo], report: RunReport, *, dry_run: bool, full: bool
    ) -> None:
        """Pull the CRM's changes page by page, push them, commit the cursor per page.

        Pages overlap by one: page *k+1* is pulled, mapped and handed to the push pool
        before page *k*'s results are mirrored and its cursor committed, so the pool
        never waits for the CRM (the pull, the status writes). Two pages at most are in
        memory. A record already in flight in the previous page waits for it to finish.
        """
        cursor = None if full else self.state.cursors.get("crm")
        fields = self.pulled_fields()
        seen = RecentKeys(self.tuning.page_memory)  # a repeat comes only across a page boundary
        announced = False  # the pull's total was handed to the progress display
        #: pages handed to the pool and not yet finished, oldest first (two at most)
        begun: list[tuple[PageWork, CrmPage]] = []
        pages = iter(self.crm.pull_changes(cursor, fields=fields, select=self.mapping.select))
        #: True while the oldest page is being finished: if that fails, a newer page's
        #: cursor must not be committed over the records the failed one left undone
        finishing_oldest = False
        first_page = True

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
                records = [r for r in page.records if seen.add((r.id, r.modstamp))]
                report.pulled += len(records)
                self.progress("pulled", len(records))
                if not full:  # --full re-processes every record, dead-lettered or not
                    records = self.changed_since_letter(records, report)
                if dry_run:
                    self.process_records(records, stages, report, dry_run=True)
                    if page.deleted_ids:
                        self._deleted(page.deleted_ids, report, dry_run=True)
                    continue
                parts = self._parts(page, records) if first_page else [(records, page)]
                first_page = False
                for part, part_page in parts:
                    if begun and begun[0][0].ids & {r.id for r in part}:
                        finish_oldest()
                    work = self.begin(part, stages, report)
                    work.part = part_page is not page
                    begun.append((work, part_page))
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
            if len(begun) == 1 and not finishing_oldest and self.pusher.halted is None:
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
            self.pusher.close()  # what has not started is dropped; pending links stay marked
        if self.stop.is_set() and not dry_run:
            log.info(
                "%s: stop requested: the CRM cursor is committed up to the last page "
                "handled in full",
                self.connection,
                extra={"event": "stop", "connection": self.connection},
            )

    def _parts(
        self, page: CrmPage, records: list[CrmOpportunity]
    ) -> list[tuple[list[CrmOpportunity], CrmPage]]:
        """The run's first page in parts: :attr:`Tuning.first_part` records, four times
        as many, then the rest.

        Until the first page is mapped and planned the push pool has nothing to do; in
        parts, it starts after the first few records and is fed while the rest are
        mapped. Only the last part carries the page's cursor and deleted rows, so the
        cursor is committed once every part is finished, as for a whole page.
        """
        size = self.tuning.first_part
        if size <= 0 or len(records) <= size:
            return [(records, page)]
        cuts = [0, size, size * 5, len(records)]
        cuts = sorted({min(c, len(records)) for c in cuts})
        chunks = [records[a:b] for a, b in itertools.pairwise(cuts)]
        parts = [(chunk, CrmPage(chunk, None, total=page.total)) for chunk in chunks[:-1]]
        parts.append((chunks[-1], page))
        return parts

    def _near_guard(self, work: PageWork) -> bool:
        """Whether the CRM's guard could stop the run before ``work`` is mirrored."""
        headroom = self.crm.usage.headroom
        if headroom is None:
            return False
        writes = len(work.by_id) + self.writer.pending_count
        return headroom <= -(-writes // self.tuning.write_batch) + 1

    def _finish_page(self, work: PageWork, page: CrmPage, report: RunReport) -> None:
        self.finish(work, report)
        if page.deleted_ids:
            self._deleted(page.deleted_ids, report, dry_run=False)
        if work.part:
            return  # the page's last part writes its errors and commits its cursor
        self.writer.flush_unlinked(report)
        if page.cursor is not None and not self.cursor_held:
            self.state.cursors.set("crm", page.cursor)

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
        links = self.state.links.get_many(list(crm_ids))
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
                self.state.dead_letters.resolve(crm_id)

    def changed_since_letter(
        self, records: list[CrmOpportunity], report: RunReport
    ) -> list[CrmOpportunity]:
        """Leave out records read again unchanged since they were dead-lettered.

        The CRM pull overlaps its cursor, and writing a record's error field moves its
        stamp, so a failed record comes back; only a change of what the mapping reads
        (or of the mapping) or ``connector errors retry`` should process it again, and a
        discarded letter must stay discarded. Each one left out counts as skipped
        ``unchanged_since_failure``.
        """
        stamps = self.state.dead_letters.stamps([r.id for r in records])
        if not stamps:
            return records
        changed, unchanged = split_unchanged(records, stamps, self.fingerprints)
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
            links = self.state.links.get_many([r.id for r in live])
            live = self.team.attach(live)
            live = [with_referral_customer(r, self.mapping, links.get(r.id)) for r in live]
            for r in live:
                link = links.get(r.id)
                action = plan_outbound(apply_mapping(r, self.mapping, stages), link, self.options())
                sent = link.sent_body if link else None
                report.plan.append(describe(action, sent, name=record_name(r, self.mapping)))
                _count_planned(action, report)
            self.progress("settled", len(records))
            return
        try:
            self.finish(self.begin(records, stages, report), report)
        finally:
            self.pusher.close()

    def begin(
        self,
        records: Sequence[CrmOpportunity],
        stages: Mapping[str, StageInfo],
        report: RunReport,
    ) -> PageWork:
        """Map and plan a page, answer inbound deals, and hand its pushes to the pool."""
        live = [r for r in records if not r.deleted]
        report.skipped["deleted"] += len(records) - len(live)
        # before anything is planned: the referral each record already has, if any
        existing = self.existing.settle(live, self.state.links.get_many([r.id for r in live]))
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
        options = self.options()
        actions = [
            plan_outbound(drafts[r.id], links.get(r.id), options)
            for r in live
            if r.id not in settled
        ]
        actions = self._unless_the_core_has_it(actions, links, set_aside)
        work = PageWork(
            outcomes=[*answered, *set_aside],
            links=links,
            by_id={r.id: r for r in live},
            ids={r.id for r in records},
        )
        pushed = self.pusher.start(actions, links)
        work.outcomes.extend(pushed.settled)
        work.futures, work.pushed = pushed.futures, pushed.crm_ids
        # what needs no push is handled now (deleted rows too); pushes count as they end
        self.progress("settled", len(records) - len(work.futures))
        return work

    def _unless_the_core_has_it(
        self, actions: list[Action], links: dict[str, Link], set_aside: list[RecordOutcome]
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

    def finish(self, work: PageWork, report: RunReport) -> None:
        """Collect a page's push results, save their links, mirror them to the CRM.

        The links the core answered are saved in batches of :attr:`Tuning.link_batch`
        as results come in, and whatever came in when the loop stops for any reason.
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
                    if outcome.link.core_facts is not None and self.pusher.seen is not None:
                        self.pusher.seen.add(outcome.link.referral_id, outcome.link.etag)
                if len(unsaved) >= self.tuning.link_batch:
                    self.state.links.save_many(unsaved)
                    unsaved = []
                self.progress("pushed", 1)
        finally:
            self.state.links.save_many(unsaved)
        if work.cancelled:
            # never sent: the create intents go, so the next run plans them afresh
            # instead of looking each one up in the core
            self.state.links.release_pending(work.cancelled, holder=self.pusher.holder)
            self.cursor_held = True
        self._stop_on_refusal(outcomes)
        self.partners.invite(outcomes, work.by_id, work.links)
        self.lifecycle.register(outcomes, work.by_id, work.links)
        self.settler.settle(outcomes, work.links, work.by_id, report)

    def _cancel_rest(self, work: PageWork, start: int) -> None:
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

    def _keep_links(self, work: PageWork) -> None:
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
        self.state.links.save_many(kept)

    def _stop_on_refusal(self, outcomes: Sequence[RecordOutcome]) -> None:
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


def _set_aside(claimed: set[str], failed: Mapping[str, CoreError]) -> list[RecordOutcome]:
    """Outcomes of records not planned: another run's, or their evidence unreadable."""
    outcomes = [RecordOutcome(crm_id, "skipped", CLAIMED) for crm_id in sorted(claimed)]
    for crm_id, exc in failed.items():
        message = f"could not read the referral it may already have: {exc.message}"
        outcomes.append(RecordOutcome(crm_id, "failed", exc.code, message, transient=exc.transient))
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
