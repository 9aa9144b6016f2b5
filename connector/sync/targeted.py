"""A targeted cycle: the records a change event named, through the same pipeline.

A scheduled cycle pulls everything changed since its cursors; a targeted cycle reads
only the named records, by id, and hands them to the engine's own steps, so that the
rules are the same ones: mapping and planning, the idempotent create, fingerprints
(an unchanged record costs no core call), terminal deals, dead letters, the status
write-back, history. No cursor moves: the next scheduled cycle still lists everything
since its cursor, which is the safety net for an event that was lost.

- CRM ids: each record is read (``CrmAdapter.fetch``, as the dead-letter retry does)
  with the fields the mapping reads and those its ``select`` filter reads; a record
  the filter would not select is left alone (the scheduled pull would not see it
  either), as is one read again unchanged since it was dead-lettered;
- referral ids: each referral is read (``GET``) and mirrored as the pull-back
  mirrors a listed one (linked records' status, an incoming deal's new opportunity,
  Microsoft's side of an engagement).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from connector.crm.base import StageInfo
from connector.crm.odata_filter import filter_fields, matches
from connector.errors import ConnectorError, NotFound, QuotaExhausted, Throttled
from connector.model import CrmOpportunity, ReferralState
from connector.sync.engine import SyncEngine
from connector.sync.report import Outcome, RunReport

log = logging.getLogger(__name__)


def run_targeted(
    engine: SyncEngine,
    *,
    crm_ids: Sequence[str] = (),
    referral_ids: Sequence[str] = (),
    stages: Mapping[str, StageInfo] | None = None,
) -> RunReport:
    """Sync the named records and referrals; every failure becomes the report's outcome."""
    report = RunReport(engine.connection)
    started = time.monotonic()
    run_id = engine.store.start_run(engine.connection)
    engine.history.begin(run_id, engine.clock())
    calls_before = engine.api_calls()
    try:
        engine.existing.start(engine.clock())  # bounds the look into the core before creates
        if crm_ids:
            with report.phase("targeted_crm"):
                records = selected_records(engine, crm_ids)
                report.pulled += len(records)
                records = engine.outbound.changed_since_letter(records, report)
                if records:
                    engine.process_records(records, stages or engine.stages(), report)
        if referral_ids and not engine.stop.is_set():
            with report.phase("targeted_core"):
                referrals = read_referrals(engine, referral_ids)
                if referrals:
                    engine.pullback.mirror(referrals, report, {})
        with report.phase("status_writes"):
            engine.writer.flush(report, everything=True)
        if engine.stop.is_set():
            report.outcome = Outcome.INTERRUPTED
    except QuotaExhausted as exc:
        report.outcome = Outcome.QUOTA
        report.error = exc.message
    except Throttled as exc:
        report.outcome = Outcome.THROTTLED
        report.error = exc.message
    except ConnectorError as exc:
        # a refused credential is named once, as the scheduled cycle names it
        error = engine.pusher.run_stop(exc) or exc
        report.outcome = Outcome.FAILED
        report.error = error.message
        log.error("%s: the targeted cycle failed: %s", engine.connection, error.message)
    finally:
        report.duration_s = time.monotonic() - started
        report.api_calls = {
            system: n - calls_before.get(system, 0) for system, n in engine.api_calls().items()
        }
        report.finish_outcome()
        engine.store.finish_run(
            run_id,
            report.outcome,
            {**report.counts(), "trigger": "events"},
            report.api_calls,
            report.duration_s,
            report.error,
        )
        engine.history.end(report)
    log.info(
        "%s: targeted cycle %s in %.2fs: records=%d referrals=%d created=%d updated=%d "
        "closed=%d mirrored=%d",
        engine.connection,
        report.outcome,
        report.duration_s,
        len(crm_ids),
        len(referral_ids),
        report.created,
        report.updated,
        report.closed,
        report.mirrored,
        extra={"event": "targeted_cycle", "connection": engine.connection, **report.log_fields()},
    )
    return report


def selected_records(engine: SyncEngine, crm_ids: Sequence[str]) -> list[CrmOpportunity]:
    """The named records that exist and that the mapping's ``select`` filter selects."""
    select = engine.mapping.select
    fields = engine.outbound.pulled_fields()  # the referral id the record carries too
    if select is not None:
        fields = [*fields, *sorted(filter_fields(select) - set(fields))]
    found = []
    for crm_id in dict.fromkeys(crm_ids):
        if engine.stop.is_set():
            break  # a scheduled cycle lists them all
        try:
            record = engine.crm.fetch(crm_id, fields=fields)
        except ConnectorError as exc:
            if exc.transient or exc.code == "quota_exhausted":
                raise
            log.warning("%s: %s cannot be read: %s", engine.connection, crm_id, exc.message)
            continue
        if record is None:
            continue  # gone: a deletion is the scheduled pull's to report
        if select is not None and not record.deleted and not matches(select, record.fields):
            continue
        found.append(record)
    return found


def read_referrals(engine: SyncEngine, referral_ids: Sequence[str]) -> list[ReferralState]:
    """The named referrals, read in parallel; one that is not found is left out."""
    unique = list(dict.fromkeys(referral_ids))

    def read(referral_id: str) -> ReferralState | None:
        if engine.stop.is_set():
            return None
        try:
            return engine.core.get(referral_id)
        except NotFound:
            log.warning(
                "%s: referral %s was named by an event but not found",
                engine.connection,
                referral_id,
            )
            return None

    workers = max(1, min(engine.concurrency, len(unique)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="event-read") as pool:
        return [r for r in pool.map(read, unique) if r is not None]
