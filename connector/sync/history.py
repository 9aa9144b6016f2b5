"""Per-record sync history, written by the engine once per page (the console reads it).

:func:`outcome_entries` (pure) turns a page's record outcomes into history entries:
what was sent to the core (the create body, or the changes of an update), what the
core answered (its facts about the referral) and the referral's status;
:func:`crm_values_of` gives the values the CRM's status fields hold after that sync.
:class:`HistoryRecorder` writes entries and keeps the table bounded (``history``
settings of the config file).

A record read again unchanged (the pull's overlap window, a record whose status was
written back) gives no entry: nothing happened to it, and the window would otherwise
fill every record's history with the same line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from connector.dealcore.payload import patch_ops
from connector.errors import ConnectorError
from connector.mapping.schema import StatusFields
from connector.settings import HistorySettings
from connector.state.history import HistoryEntry, RecordHistory
from connector.state.store import Link, Store
from connector.sync.mirror import CoreFacts, status_values
from connector.sync.outcome import RecordOutcome
from connector.sync.report import RunReport

log = logging.getLogger(__name__)

_PUSHED = frozenset({"created", "updated", "closed"})
_TROUBLED = frozenset({"rejected", "failed"})


def outcome_entries(
    conn: str,
    run_id: int,
    outcomes: Sequence[RecordOutcome],
    before: Mapping[str, Link],
    now: datetime,
) -> list[HistoryEntry]:
    """One entry per outcome that did something (see the module docstring).

    ``before`` holds the records' links as they were before the page was pushed: an
    update's changes are the difference between the body sent last time and now.
    """
    entries = []
    for o in outcomes:
        if o.kind == "skipped" and o.reason == "unchanged" and o.notice is None:
            continue
        previous = before.get(o.crm_id)
        link = o.link or previous
        entries.append(
            HistoryEntry(
                connection=conn,
                crm_id=o.crm_id,
                run_id=run_id,
                at=now,
                kind=o.kind,
                reason=o.reason,
                message=o.message or o.notice,
                referral_id=link.referral_id if link else None,
                core_status=link.status if link else None,
                core_substatus=link.substatus if link else None,
                sent=_sent(o, previous),
                # only what the core said in this sync: a rejection never reached it
                answer=_answer(o.link) if o.link is not None else None,
            )
        )
    return entries


def mirrored_entries(
    conn: str, run_id: int, changed: Sequence[Link], now: datetime
) -> list[HistoryEntry]:
    """Entries for linked records whose referral changed in the core (the pull-back)."""
    return [
        HistoryEntry(
            connection=conn,
            crm_id=link.crm_id,
            run_id=run_id,
            at=now,
            kind="mirrored",
            referral_id=link.referral_id,
            core_status=link.status,
            core_substatus=link.substatus,
            answer=_answer(link),
        )
        for link in changed
        if link.core_facts is not None
    ]


def crm_values_of(entry: HistoryEntry, fields: StatusFields) -> dict[str, Any] | None:
    """The CRM status fields' values after the entry's sync (pure, as the mirror wrote them).

    Derived from what the core answered, so the history stores it once: the engine's
    mirror writes :func:`~connector.sync.mirror.status_values` of the same facts, with
    the error of a failed record (or the notice of a skipped one) in the sync-error field.
    """
    error = entry.message
    if entry.answer is None:
        troubled = entry.kind in _TROUBLED
        return {fields.sync_error: error} if troubled and fields.sync_error else None
    facts = CoreFacts.from_json(entry.answer)
    return status_values(facts, fields, entry.at, error)


def _sent(o: RecordOutcome, previous: Link | None) -> Any:
    if o.kind not in _PUSHED or o.link is None or o.link.sent_body is None:
        return None
    body = o.link.sent_body
    if o.kind == "created" or previous is None or previous.sent_body is None:
        return dict(body)
    return {"changes": patch_ops(previous.sent_body, body)}


def _answer(link: Link) -> dict[str, Any]:
    answer: dict[str, Any] = dict(link.core_facts or {})
    answer["etag"] = link.etag
    return answer


class HistoryRecorder:
    """Writes the engine's record outcomes to the store's history, bounded.

    Does nothing until :meth:`begin` gives it a run id (a dry run has none). A failure
    to write history is logged and never fails the sync: the history is for people,
    the sync's own bookkeeping is elsewhere.
    """

    def __init__(self, store: Store, conn: str, settings: HistorySettings | None = None) -> None:
        self.conn = conn
        self.settings = settings or HistorySettings()
        self.run_id: int | None = None
        self._history = RecordHistory(store)

    def begin(self, run_id: int | None, now: datetime) -> None:
        """A run starts: entries of runs older than ``keep_days`` go (also when disabled)."""
        self.run_id = None
        if run_id is None:
            return
        try:
            before = now - timedelta(days=self.settings.keep_days)
            dropped = self._history.drop_runs_before(self.conn, before)
            if dropped:
                log.info("%s: %d history entries older than %s deleted", self.conn, dropped, before)
        except ConnectorError as exc:
            log.warning("%s: could not delete old history: %s", self.conn, exc.message)
        if self.settings.enabled:
            self.run_id = run_id

    def record(
        self,
        outcomes: Sequence[RecordOutcome],
        before: Mapping[str, Link],
        now: datetime,
    ) -> None:
        if self.run_id is None:
            return
        self._write(outcome_entries(self.conn, self.run_id, outcomes, before, now))

    def mirrored(self, changed: Sequence[Link], now: datetime) -> None:
        if self.run_id is None:
            return
        self._write(mirrored_entries(self.conn, self.run_id, changed, now))

    def end(self, report: RunReport) -> None:
        """The run's phases and quota share, which the runs table does not hold."""
        if self.run_id is None:
            return
        try:
            self._history.save_run_details(
                self.run_id, {k: round(v, 3) for k, v in report.phases.items()}, report.quota
            )
        except ConnectorError as exc:
            log.warning("%s: could not record the run's details: %s", self.conn, exc.message)
        finally:
            self.run_id = None

    def _write(self, entries: list[HistoryEntry]) -> None:
        if not entries:
            return
        try:
            self._history.add(entries)
            self._history.trim_records(
                self.conn, [e.crm_id for e in entries], self.settings.keep_per_record
            )
        except ConnectorError as exc:
            log.warning("%s: could not record the history of a page: %s", self.conn, exc.message)
