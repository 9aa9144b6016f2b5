"""The composition root of a connection's sync: builds the stages and runs cycles.

The stages take data and return data or actions; nothing calls back up:

- :mod:`connector.sync.cycle`: the phases of one cycle, the report, the cursor commits;
- :mod:`connector.sync.outbound`: a page: pull -> normalise -> map -> plan;
- :mod:`connector.sync.plan`: every action, the close ops, the re-plan after a 412;
- :mod:`connector.sync.pusher`: the only place that calls the core for the actions;
- :mod:`connector.sync.settle`: a page's outcomes -> counts, dead letters, status writes;
- :mod:`connector.sync.links`: the pure ``link_after``;
- :mod:`connector.sync.status_writer`: batched CRM status writes, no echo;
- :mod:`connector.sync.pullback`: changed referrals -> mirror -> status writer;
- :mod:`connector.sync.dead_letters`: what a dead letter remembers of its record.

Tuning knobs (batch sizes, slices, threads) come in one :class:`~connector.sync.tuning.Tuning`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from connector.crm.base import CrmAdapter
from connector.dealcore.base import DealCore
from connector.mapping.schema import MappingFile
from connector.model import CrmOpportunity, StageInfo
from connector.settings import HistorySettings
from connector.state.store import Store
from connector.sync.closing import Closing
from connector.sync.context import SyncContext
from connector.sync.countdown import CoreClock, Countdown
from connector.sync.customers import CustomerLinks
from connector.sync.cycle import Cycle, api_calls, stages_of
from connector.sync.dead_letters import ContentFingerprints
from connector.sync.existing import ExistingReferrals
from connector.sync.history import HistoryRecorder
from connector.sync.links import Linker
from connector.sync.outbound import Outbound
from connector.sync.partners import PartnerInvitations
from connector.sync.pullback import PullBack
from connector.sync.pusher import Pusher
from connector.sync.report import RunReport
from connector.sync.seen import SeenEtags
from connector.sync.settle import Settler
from connector.sync.status_writer import StatusWriter
from connector.sync.steps import LifecycleSteps
from connector.sync.team import TeamStep
from connector.sync.tuning import DEFAULT_TUNING, Tuning

ProgressFn = Callable[[str, int], None]


def _noop_progress(kind: str, n: int) -> None:
    return None


class SyncEngine:
    """Runs cycles for one connection (builds its stages once)."""

    def __init__(
        self,
        connection: str,
        *,
        crm: CrmAdapter,
        core: DealCore,
        store: Store,
        mapping: MappingFile,
        link_for: Callable[[str], str],
        concurrency: int = 8,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        progress: ProgressFn = _noop_progress,
        stop: threading.Event | None = None,
        history: HistorySettings | None = None,
        holder: str | None = None,
        tuning: Tuning = DEFAULT_TUNING,
    ) -> None:
        self.connection = connection
        self.crm = crm
        self.core = core
        self.store = store
        self.state = store.connection(connection)
        self.mapping = mapping
        self.concurrency = concurrency
        self.clock = clock
        self.progress = progress
        self.stop = stop or threading.Event()
        self.tuning = tuning
        #: whose create intents this run writes: the lease holder of the process running it
        self.holder = holder or f"engine:{uuid.uuid4().hex[:12]}"
        linker = Linker(connection, link_for)
        #: the core's clock (expiry is the core's), and the daily refresh of days left
        self.core_clock = CoreClock(store, connection, clock)
        #: the referrals a cycle wrote or read, for its pull-back (connector.sync.seen)
        self.seen = SeenEtags(tuning.seen_etags)
        self.pusher = Pusher(
            connection,
            core=core,
            store=store,
            linker=linker,
            crm_system=crm.system,
            concurrency=concurrency,
            holder=self.holder,
            seen=self.seen,
        )
        ctx = SyncContext(
            connection=connection,
            crm=crm,
            core=core,
            store=store,
            mapping=mapping,
            clock=clock,
            stop=self.stop,
            core_clock=self.core_clock,
            linker=linker,
            concurrency=concurrency,
            pusher=self.pusher,
        )
        self.context = ctx
        #: what each record's syncs did, for the console (connector.sync.history)
        self.history = HistoryRecorder(store, connection, history)
        self.writer = StatusWriter(
            connection,
            crm=crm,
            store=store,
            fields=mapping.status_fields,
            core_now=self.core_clock.now,
            progress=progress,
            stop=self.stop,
            tuning=tuning,
        )
        self.existing = ExistingReferrals(
            connection,
            store=store,
            core=core,
            holder=self.holder,
            link_field=mapping.status_fields.referral_id,
            linked=linker,
            overlap=tuning.core_overlap,
            concurrency=concurrency,
        )
        #: declined and expired incoming deals closed in the CRM (inbound.close)
        self.closing = Closing(ctx)
        #: the account and contact of new incoming deals' opportunities (inbound.customer)
        self.customers = CustomerLinks(ctx)
        #: opportunity teams (fields.team)
        self.team = TeamStep(ctx)
        #: partner-to-partner invitations (core.partner_invitations)
        self.partners = PartnerInvitations(ctx)
        self.countdown = Countdown(
            connection,
            store=store,
            fields=mapping.status_fields,
            core_clock=self.core_clock,
            clock=clock,
            writer=self.writer,
        )
        self.lifecycle = LifecycleSteps(
            connection,
            mapping=mapping,
            crm=crm,
            store=store,
            pusher=self.pusher,
            linker=linker,
            customers=self.customers,
            clock=clock,
            core_now=self.core_clock.now,
        )
        self.outbound = Outbound(
            connection,
            crm=crm,
            store=store,
            mapping=mapping,
            options=lambda: core.options,
            pusher=self.pusher,
            writer=self.writer,
            settler=Settler(
                connection,
                store=store,
                fields=mapping.status_fields,
                writer=self.writer,
                history=self.history,
                closing=self.closing,
                fingerprints=ContentFingerprints(mapping),
                clock=clock,
            ),
            lifecycle=self.lifecycle,
            existing=self.existing,
            team=self.team,
            partners=self.partners,
            progress=progress,
            stop=self.stop,
            tuning=tuning,
        )
        self.pullback = PullBack(
            connection,
            core=core,
            store=store,
            mapping=mapping,
            writer=self.writer,
            linker=linker,
            incoming=self.lifecycle,
            closing=self.closing,
            history=self.history,
            core_clock=self.core_clock,
            clock=clock,
            stop=self.stop,
            concurrency=concurrency,
            tuning=tuning,
            seen=self.seen,
        )
        self.cycle = Cycle(
            ctx,
            history=self.history,
            existing=self.existing,
            writer=self.writer,
            pusher=self.pusher,
            outbound=self.outbound,
            pullback=self.pullback,
            countdown=self.countdown,
            closing=self.closing,
            team=self.team,
        )

    def run(self, *, dry_run: bool = False, full: bool = False) -> RunReport:
        """One cycle (see :mod:`connector.sync.cycle`)."""
        return self.cycle.run(dry_run=dry_run, full=full)

    def stages(self) -> dict[str, StageInfo]:
        """The CRM's stages by label and API name."""
        return stages_of(self.context)

    def api_calls(self) -> dict[str, int]:
        return api_calls(self.context)

    def process_records(
        self,
        records: Sequence[CrmOpportunity],
        stages: Mapping[str, StageInfo],
        report: RunReport,
        *,
        dry_run: bool = False,
    ) -> None:
        """Map, plan, push and mirror one page of records (see :mod:`connector.sync.outbound`)."""
        self.outbound.process_records(records, stages, report, dry_run=dry_run)
