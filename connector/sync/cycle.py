"""One sync cycle of one connection: its phases, its report, its cursor commits.

start (left-over status writes, dead letters to retry, reconciliation, team changes)
-> outbound (:mod:`connector.sync.outbound`) -> pull-back (:mod:`connector.sync.pullback`)
-> countdown -> status writes (:mod:`connector.sync.status_writer`) -> the run record.
The stages are built by :class:`connector.sync.engine.SyncEngine`; the cycle only
orders them and turns what stops a run into its outcome.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from connector.errors import ConnectorError, CrmError, QuotaExhausted, Throttled
from connector.model import CrmOpportunity, StageInfo
from connector.state.store import RETRY_PREFIX, TRANSIENT_PREFIX
from connector.sync.closing import Closing
from connector.sync.context import SyncContext
from connector.sync.countdown import Countdown
from connector.sync.existing import ExistingReferrals
from connector.sync.history import HistoryRecorder
from connector.sync.outbound import Outbound
from connector.sync.pullback import PullBack
from connector.sync.pusher import Pusher
from connector.sync.reconcile import reconcile_deleted_records
from connector.sync.report import CYCLE_LOG_LEVEL, Outcome, RunReport, log_settled_writes
from connector.sync.status_writer import StatusWriter
from connector.sync.team import TeamStep

#: the logger name these lines had before the stages were split out of the engine
#: (the "logger" field of the JSON logs operators filter on)
log = logging.getLogger("connector.sync.engine")


def stages_of(ctx: SyncContext) -> dict[str, StageInfo]:
    """The CRM's stages by label and by API name."""
    stages: dict[str, StageInfo] = {}
    for info in ctx.crm.stage_metadata():
        stages[info.label] = info
        stages.setdefault(info.api_name, info)
    return stages


def api_calls(ctx: SyncContext) -> dict[str, int]:
    """Calls made so far to the CRM and to the core."""
    core_calls = ctx.core.calls
    total_core = sum(core_calls.values()) if isinstance(core_calls, Mapping) else int(core_calls)
    return {ctx.crm.system: ctx.crm.usage.calls, "core": total_core}


def quota_shares(ctx: SyncContext) -> dict[str, float]:
    """The share of the CRM's allowance (or of this run's budget) used, when known."""
    usage = ctx.crm.usage
    if usage.used is None or not usage.limit:
        return {}
    return {ctx.crm.system: round(usage.used / usage.limit, 4)}


class Cycle:
    """Runs the phases of a cycle in order."""

    def __init__(
        self,
        ctx: SyncContext,
        *,
        history: HistoryRecorder,
        existing: ExistingReferrals,
        writer: StatusWriter,
        pusher: Pusher,
        outbound: Outbound,
        pullback: PullBack,
        countdown: Countdown,
        closing: Closing,
        team: TeamStep,
    ) -> None:
        self.ctx = ctx
        self.history = history
        self.existing = existing
        self.writer = writer
        self.pusher = pusher
        self.outbound = outbound
        self.pullback = pullback
        self.countdown = countdown
        self.closing = closing
        self.team = team

    def run(self, *, dry_run: bool = False, full: bool = False) -> RunReport:
        ctx = self.ctx
        connection, state, stop = ctx.connection, ctx.state, ctx.stop
        report = RunReport(connection, dry_run=dry_run)
        self.pusher.halted = None
        if self.pusher.seen is not None:
            self.pusher.seen.clear()  # a hit is trusted for the cycle that saw it only
        started = time.monotonic()
        run_id = None if dry_run else state.runs.start()
        self.history.begin(run_id, ctx.clock())
        calls_before = api_calls(ctx)
        log.info(
            "%s: cycle started%s",
            connection,
            " (dry run)" if dry_run else "",
            extra={"event": "cycle_start", "connection": connection},
        )
        try:
            with report.phase("start"):
                stages = stages_of(ctx)
                if not dry_run:
                    self.existing.start(ctx.clock())
                    self.writer.mirror_left_over(report, ctx.clock())
                    self._retry_dead_letters(stages, report)
                    reconcile_deleted_records(ctx, report)
                    self.team.process_changes(stages, report, self.outbound.process_records)
            outbound_started = ctx.clock()
            with report.phase("outbound"):
                self.outbound.run(stages, report, dry_run=dry_run, full=full)
            if not dry_run and not stop.is_set():
                writing = report.phases.get("crm_status_calls", 0.0)
                with report.phase("pull_back"):
                    self.pullback.run(report, outbound_started)
                report.phases["pull_back_crm_status_calls"] = (
                    report.phases.get("crm_status_calls", 0.0) - writing
                )
                with report.phase("countdown"):
                    self.countdown.refresh(report)
            if not dry_run:
                with report.phase("status_writes"):
                    if stop.is_set():
                        self.writer.queue([], report)  # linked writes wait for next run
                    self.writer.flush(report, everything=True)
                    # after the status writes: a record closed in Dataverse is read-only
                    self.closing.close(report)
            if stop.is_set():
                report.outcome = Outcome.INTERRUPTED
        except QuotaExhausted as exc:
            report.outcome = Outcome.QUOTA
            report.error = exc.message
            log.warning("%s: stopped at the API quota guard: %s", connection, exc.message)
        except Throttled as exc:
            report.outcome = Outcome.THROTTLED
            report.error = exc.message
            log.warning("%s: stopped, throttled: %s", connection, exc.message)
        except ConnectorError as exc:
            error = self.pusher.run_stop(exc) or exc
            # the CRM refused a request as such (HTTP 400): a field the mapping names?
            report.crm_refused_request = isinstance(exc, CrmError) and exc.status == 400
            report.outcome = Outcome.FAILED
            report.error = error.message
            log.error("%s: the run failed: %s", connection, error.message)
        finally:
            if self.pusher.seen is not None:
                self.pusher.seen.clear()
            report.duration_s = time.monotonic() - started
            report.api_calls = {
                system: n - calls_before.get(system, 0) for system, n in api_calls(ctx).items()
            }
            report.quota = quota_shares(ctx)
            report.finish_outcome()
            if run_id is not None:
                state.runs.finish(
                    run_id,
                    report.outcome,
                    report.counts(),
                    report.api_calls,
                    report.duration_s,
                    report.error,
                )
                self.history.end(report)
        log_settled_writes(connection, self.writer.settled)
        log.log(
            CYCLE_LOG_LEVEL.get(report.outcome, logging.INFO),
            "%s: cycle %s in %.1fs: created=%d updated=%d closed=%d mirrored=%d skipped=%d "
            "rejected=%d failed=%d",
            connection,
            report.outcome,
            report.duration_s,
            report.created,
            report.updated,
            report.closed,
            report.mirrored,
            sum(report.skipped.values()),
            sum(report.rejected.values()),
            sum(report.failed.values()),
            extra={"event": "cycle", "connection": connection, **report.log_fields()},
        )
        return report

    def _retry_dead_letters(self, stages: Mapping[str, StageInfo], report: RunReport) -> None:
        """Transient failures, and those an operator asked to retry, are tried again now."""
        ctx = self.ctx
        letters = [
            d
            for d in ctx.store.list_dead_letters(ctx.connection)
            if d.reason_code.startswith((TRANSIENT_PREFIX, RETRY_PREFIX))
        ]
        records: list[CrmOpportunity] = []
        for letter in letters:
            if ctx.stop.is_set():
                break  # the rest are retried by the next cycle
            record = ctx.crm.fetch(letter.crm_id, fields=self.outbound.pulled_fields())
            if record is None:
                ctx.state.dead_letters.resolve(letter.crm_id)
            else:
                records.append(record)
        if records:
            self.outbound.process_records(records, stages, report)
