"""The push: the planner's actions run against the core, with bounded concurrency.

:class:`Pusher` settles the actions that need no call (skips, rejections), marks every
create of a page pending in one transaction before any POST, and hands creates and
updates to a worker pool shared by the pages of a run. The workers only talk to the
core; the caller collects the futures and saves the links. The answers to incoming
deals (accept/decline) and deal registrations are pushed here too.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from connector.dealcore.base import DealCore
from connector.dealcore.payload import created_differences, status_ops
from connector.errors import ConnectorError, CoreError, PreconditionFailed
from connector.logs import record_fields
from connector.model import ReferralState, Status, Substatus
from connector.state.store import Link, Store
from connector.sync.existing import CLAIMED
from connector.sync.invite import invite_microsoft, relinked
from connector.sync.links import Linker
from connector.sync.outcome import RecordOutcome
from connector.sync.plan import Action, Create, Reject, Skip, Update, replan_update
from connector.sync.seen import SeenEtags
from connector.sync.stops import run_stop

#: the logger name these lines had before the stages were split out of the engine
#: (the "logger" field of the JSON logs operators filter on)
log = logging.getLogger("connector.sync.engine")

#: 4xx answers to a write that say nothing about the referral's state
_NOT_A_REFUSAL = frozenset({401, 404, 408, 429})


def refused(exc: CoreError) -> bool:
    """A write the core refused for a reason of the referral's own (judged by reading it)."""
    return exc.status is not None and 400 <= exc.status < 500 and exc.status not in _NOT_A_REFUSAL


@dataclass
class Pushed:
    """What :meth:`Pusher.start` did with a page's actions."""

    #: outcomes settled without a call (skips, rejections, creates another run claimed)
    settled: list[RecordOutcome] = field(default_factory=list)
    #: the pushes handed to the pool, and their CRM ids in the same order
    futures: list[Future[RecordOutcome]] = field(default_factory=list)
    crm_ids: list[str] = field(default_factory=list)


def settle(action: Action) -> RecordOutcome:
    """The outcome of an action that needs no call (pure)."""
    if isinstance(action, Skip):
        return RecordOutcome(
            action.crm_id,
            "skipped",
            action.reason.value,
            notice=action.notice,
            fingerprint=action.fingerprint,
        )
    assert isinstance(action, Reject)
    return RecordOutcome(action.crm_id, "rejected", action.code, action.message)


class Pusher:
    """Runs the planner's actions against the core for one connection."""

    def __init__(
        self,
        connection: str,
        *,
        core: DealCore,
        store: Store,
        linker: Linker,
        crm_system: str,
        concurrency: int,
        holder: str,
        seen: SeenEtags | None = None,
    ) -> None:
        self.connection = connection
        self.core = core
        self.store = store
        self.state = store.connection(connection)
        self.linker = linker
        self.crm_system = crm_system
        self.concurrency = concurrency
        self.holder = holder
        #: Microsoft's referrals this run looked up or created (connector.sync.seen)
        self.seen = seen
        self._pool: ThreadPoolExecutor | None = None
        #: set by the first push that met a run-stopping failure: the other pushes of
        #: the run are not sent (see connector.sync.stops)
        self.halted: ConnectorError | None = None

    def run_stop(self, error: ConnectorError) -> ConnectorError | None:
        return run_stop(error, connection=self.connection, crm_system=self.crm_system)

    # ------------------------------------------------------------------ a page's pushes

    def start(self, actions: Sequence[Action], links: Mapping[str, Link]) -> Pushed:
        """Settle skips and rejections; hand creates and updates to the worker pool.

        Every create of the page is marked pending (this run's create intent) in one
        transaction *before* any POST: a crash then leaves pending links that a later
        cycle resolves in the core instead of creating again. A record the store
        refuses is claimed by another run (pending under its intent, or linked by it
        since this page was read): that run creates it, so it is skipped, not failed.
        """
        pushed = Pushed()
        pushes = [a for a in actions if isinstance(a, (Create, Update))]
        pushed.settled.extend(settle(a) for a in actions if not isinstance(a, (Create, Update)))
        creates = [a for a in pushes if isinstance(a, Create)]
        if creates:
            claimed = self.state.links.mark_pending_many(
                [(a.draft.crm_id, a.fingerprint, a.body) for a in creates],
                holder=self.holder,
            )
            for crm_id, exc in claimed.items():
                log.info(
                    "%s: %s: not created: %s",
                    self.connection,
                    crm_id,
                    exc.message,
                    extra=record_fields(self.connection, crm_id, reason=exc.code),
                )
                pushed.settled.append(RecordOutcome(crm_id, "skipped", CLAIMED))
            pushes = [a for a in pushes if a.draft.crm_id not in claimed]
        if pushes:
            pool = self._get_pool()
            pushed.futures = [pool.submit(self._execute, a, links) for a in pushes]
            pushed.crm_ids = [a.draft.crm_id for a in pushes]
        return pushed

    def _get_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="push")
        return self._pool

    def close(self) -> None:
        """What has not started is dropped; what runs finishes."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _execute(self, action: Action, links: Mapping[str, Link]) -> RecordOutcome:
        crm_id = action.draft.crm_id if isinstance(action, (Create, Update)) else ""
        if self.halted is not None:
            # the run is stopping: this push is not sent (a copy: one traceback per thread)
            raise copy.copy(self.halted)
        try:
            if isinstance(action, Create):
                return self._create(action)
            assert isinstance(action, Update)
            return self._update(action, links[crm_id])
        except ConnectorError as exc:
            stop = self.run_stop(exc)
            if stop is not None:
                # Not the record's fault, and every other push would meet it too.
                self.halted = stop
                raise stop from None
            log.warning(
                "%s: %s: %s",
                self.connection,
                crm_id,
                exc.message,
                extra=record_fields(self.connection, crm_id, reason=exc.code),
            )
            return RecordOutcome(crm_id, "failed", exc.code, exc.message, transient=exc.transient)

    def _create(self, action: Create) -> RecordOutcome:
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
        referral = self.core.create(action.body)  # marked pending by start() before any POST
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
        link = self.linker(None, referral, fingerprint, body, crm_id=draft.crm_id)
        if action.invite_microsoft:
            return invite_microsoft(
                self.core, link, action.body, "created", action.notice, self.seen
            )
        return RecordOutcome(draft.crm_id, "created", link=link, notice=action.notice)

    def _update(self, action: Update, link: Link) -> RecordOutcome:
        referral_id = link.referral_id
        assert referral_id is not None
        kind = "closed" if action.closes is not None else "updated"
        if not action.ops:  # only Microsoft's referral is missing
            new_link = relinked(link, action.fingerprint, action.body)
            return invite_microsoft(
                self.core, new_link, action.body, kind, action.warning, self.seen
            )
        try:
            referral = self.core.patch(referral_id, action.ops, link.etag)
        except PreconditionFailed:
            # Someone changed the referral since we read it: re-read, re-plan, retry once.
            fresh = self.core.get(referral_id)
            if fresh.is_terminal:
                link = self.linker(link, fresh, link.fingerprint, link.sent_body)
                return RecordOutcome(link.crm_id, "skipped", "terminal", link=link)
            ops = replan_update(fresh.raw, action, self.core.options)
            referral = self.core.patch(referral_id, ops, fresh.etag) if ops else fresh
        except CoreError as exc:
            if not refused(exc):
                raise
            # Terminal is read from the referral itself, never guessed from an error code.
            fresh = self.core.get(referral_id)
            if not fresh.is_terminal:
                raise
            link = self.linker(link, fresh, link.fingerprint, link.sent_body)
            return RecordOutcome(link.crm_id, "skipped", "terminal", link=link)
        new_link = self.linker(link, referral, action.fingerprint, action.body)
        if action.invite_microsoft:
            return invite_microsoft(
                self.core, new_link, action.body, kind, action.warning, self.seen
            )
        return RecordOutcome(link.crm_id, kind, link=new_link, notice=action.warning)

    # ------------------------------------------------------------------ lifecycle pushes

    def answer(self, link: Link, ops: list[dict[str, Any]]) -> ReferralState:
        """Patch an incoming deal that is New (accept/decline); the fresh referral when it
        is not New anymore."""
        core = self.core
        assert link.referral_id is not None
        try:
            return core.patch(link.referral_id, ops, link.etag)
        except PreconditionFailed:
            fresh = core.get(link.referral_id)
            if fresh.status != Status.NEW:
                return fresh
            return core.patch(link.referral_id, ops, fresh.etag)
        except CoreError as exc:
            if not refused(exc):
                raise
            # No error code says "no longer New": the referral itself does.
            fresh = core.get(link.referral_id)
            if fresh.status != Status.NEW:
                return fresh
            raise

    def close_lost(self, link: Link) -> ReferralState:
        """Close a referral as Lost (its CRM record is gone); after a 412 it is read again
        and closed unless it is terminal already."""
        referral_id = str(link.referral_id)
        ops = status_ops(Status.CLOSED, Substatus.LOST)
        try:
            return self.core.patch(referral_id, ops, link.etag)
        except PreconditionFailed:
            referral = self.core.get(referral_id)  # someone changed it: read again
            if referral.is_terminal:
                return referral
            return self.core.patch(referral_id, ops, referral.etag)

    def invite_partner(
        self, engagement_id: str, body: dict[str, Any], already: Callable[[ReferralState], bool]
    ) -> ReferralState:
        """A partner's referral in the engagement (partner-to-partner invitation)."""
        return self.core.create_in_engagement(engagement_id, body, already)

    def register(self, link: Link, ops: list[dict[str, Any]]) -> ReferralState:
        """Submit a deal registration (retried once against the fresh eTag after a 412)."""
        assert link.referral_id is not None
        try:
            return self.core.patch(link.referral_id, ops, link.etag)
        except PreconditionFailed:
            fresh = self.core.get(link.referral_id)
            return self.core.patch(link.referral_id, ops, fresh.etag)
