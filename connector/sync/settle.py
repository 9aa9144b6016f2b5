"""A page's outcomes settled: counted in the report, dead-lettered or resolved, and
handed to the status writer (the record's error, or the core's facts of its link)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from connector.mapping.schema import StatusFields
from connector.model import CrmOpportunity, CrmStatusUpdate
from connector.state.store import TRANSIENT_PREFIX, Link, Store
from connector.sync.dead_letters import ContentFingerprints
from connector.sync.existing import CLAIMED
from connector.sync.history import HistoryRecorder
from connector.sync.mirror import CoreFacts
from connector.sync.outcome import RecordOutcome
from connector.sync.report import RunReport
from connector.sync.status_writer import Pending, StatusWriter


class ClosingStep(Protocol):
    def consider(self, links: Iterable[Link | None]) -> None: ...


class Settler:
    """Settles the outcomes of one connection's pages."""

    def __init__(
        self,
        connection: str,
        *,
        store: Store,
        fields: StatusFields,
        writer: StatusWriter,
        history: HistoryRecorder,
        closing: ClosingStep,
        fingerprints: ContentFingerprints,
        clock: Callable[[], datetime],
    ) -> None:
        self.connection = connection
        self.store = store
        self.fields = fields
        self.writer = writer
        self.history = history
        self.closing = closing
        self.fingerprints = fingerprints
        self.clock = clock

    def settle(
        self,
        outcomes: Sequence[RecordOutcome],
        links: Mapping[str, Link],
        records: Mapping[str, CrmOpportunity],
        report: RunReport,
    ) -> None:
        updates: list[Pending] = []
        now = self.clock()
        fields = self.fields
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
                content = self.fingerprints.of(record) if record and o.kind == "rejected" else None
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
            write = self.writer.for_link(link, facts, now, error=error)
            if write is not None:
                updates.append(write)
        self.store.add_dead_letters(self.connection, letters)
        self.history.record(outcomes, links, now)
        self.writer.queue(updates, report)
        self.closing.consider(o.link for o in outcomes)
