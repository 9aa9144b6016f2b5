"""Batched status writes to the CRM, without echo.

Every stage that has something to mirror hands the writer a link and its core facts;
:meth:`StatusWriter.for_link` turns them into the status values, their fingerprint and
the stamped update in one place (``status_values -> values_fingerprint -> stamp``), and
nothing is written when the fingerprint is the one the link was last mirrored with.
Writes wait for a full CRM batch; during the pull-back full batches go out on background
threads while the listing goes on, their results recorded in the order sent.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from connector.crm.base import CrmAdapter, WriteResult
from connector.errors import AUTHENTICATION_CODES, ConnectorError, QuotaExhausted
from connector.logs import record_fields
from connector.mapping.schema import StatusFields
from connector.model import CrmStatusUpdate
from connector.state.store import Link, Store
from connector.sync.mirror import CoreFacts, status_values, values_fingerprint
from connector.sync.report import RunReport
from connector.sync.stops import credentials_refused
from connector.sync.tuning import DEFAULT_TUNING, Tuning

#: the logger name these lines had before the stages were split out of the engine
#: (the "logger" field of the JSON logs operators filter on)
log = logging.getLogger("connector.sync.engine")

#: status writes the CRM refuses for good, as the skip reason they are counted under:
#: a won/lost Dataverse row is read-only (the connector never reopens one), a deleted
#: row cannot be written. The link remembers the values as settled, so the write is
#: not tried again every cycle; a row that is reopened or edited is read again and
#: written then.
SETTLED_WRITE_CODES = {"read_only_closed": "read_only_closed", "not_found": "deleted"}
#: marks a dead letter whose message could not be written to the record's error field
NOT_WRITTEN = " [not yet written to the CRM]"

#: a status write: the update, the link it mirrors (none for an error of an unlinked
#: record) and the fingerprint of the values
Pending = tuple[CrmStatusUpdate, Link | None, str]
ProgressFn = Callable[[str, int], None]


def stamped(fields: StatusFields, values: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """``values`` with the last-sync stamp, when the mapping has one (pure)."""
    out = dict(values)
    if fields.last_sync:
        out[fields.last_sync] = now
    return out


class StatusWriter:
    """Queues, batches and records the CRM status writes of one connection's run."""

    def __init__(
        self,
        connection: str,
        *,
        crm: CrmAdapter,
        store: Store,
        fields: StatusFields,
        core_now: Callable[[], datetime],
        progress: ProgressFn,
        stop: threading.Event,
        tuning: Tuning = DEFAULT_TUNING,
    ) -> None:
        self.connection = connection
        self.crm = crm
        self.store = store
        self.fields = fields
        self.core_now = core_now
        self.progress = progress
        self.stop = stop
        self.tuning = tuning
        #: status writes waiting for a full CRM batch, by CRM id (a later one replaces an
        #: earlier one); links needing a write are also marked in the store, so a crash
        #: loses none of them
        self._pending: dict[str, Pending] = {}
        #: during the pull-back, status batches go to the CRM on these threads while the
        #: listing goes on; their results are recorded on the main thread, in order sent
        self._writer: ThreadPoolExecutor | None = None
        self._writes: collections.deque[tuple[Sequence[Pending], Future[list[WriteResult]]]] = (
            collections.deque()
        )
        #: status writes the CRM refused for good this run, by skip reason (logged once)
        self.settled: collections.Counter[str] = collections.Counter()

    # ------------------------------------------------------------------ what to write

    def for_link(
        self,
        link: Link,
        facts: CoreFacts,
        now: datetime,
        *,
        error: str | None = None,
        core_now: datetime | None = None,
        always: bool = False,
    ) -> Pending | None:
        """The write that mirrors ``facts`` to ``link``'s record; none when the record
        shows these values already (no echo), unless ``always``."""
        values = status_values(
            facts, self.fields, core_now if core_now is not None else self.core_now(), error
        )
        fingerprint = values_fingerprint(values)
        if not always and fingerprint == link.mirrored_fingerprint:
            return None
        update = CrmStatusUpdate(link.crm_id, stamped(self.fields, values, now))
        return update, link, fingerprint

    def is_pending(self, crm_id: str) -> bool:
        return crm_id in self._pending

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------------ queue and flush

    def queue(self, updates: Sequence[Pending], report: RunReport) -> None:
        """Queue status writes; full CRM batches go out at once, the rest at the run's end.

        After a stop, a linked record's write is left to the next run (its link is
        marked as not mirrored, see :meth:`mirror_left_over`): only the errors of
        records without a link, which nothing else remembers, are still written.
        """
        if self.stop.is_set():
            updates = self._defer_linked(updates)
        for update in updates:
            self._pending.pop(update[0].crm_id, None)
            self._pending[update[0].crm_id] = update
        self.flush(report, everything=False)

    def _defer_linked(self, updates: Sequence[Pending]) -> list[Pending]:
        """Mark linked records' writes for the next run; return the others."""
        queued = [u for u in self._pending.values() if u[1] is not None]
        for update in queued:
            del self._pending[update[0].crm_id]
        deferred = [u for u in [*queued, *updates] if u[1] is not None]
        if deferred:
            self.store.set_mirrored(self.connection, {u[0].crm_id: None for u in deferred})
        return [u for u in updates if u[1] is None]

    def flush(self, report: RunReport, *, everything: bool) -> None:
        batch = self.tuning.write_batch
        while len(self._pending) >= batch or (everything and self._pending):
            keys = list(itertools.islice(self._pending, batch))
            self.write_now([self._pending.pop(k) for k in keys], report)

    def flush_unlinked(self, report: RunReport) -> None:
        """Errors of records with no link are not marked in the store: write them before
        the page's cursor is committed, topped up with linked writes to fill the batch."""
        unlinked = [k for k, (_, link, _) in self._pending.items() if link is None]
        if not unlinked:
            return
        batch = self.tuning.write_batch
        size = -(-len(unlinked) // batch) * batch
        linked = [k for k, (_, link, _) in self._pending.items() if link is not None]
        keys = unlinked + linked[: size - len(unlinked)]
        for start in range(0, len(keys), batch):
            self.write_now([self._pending.pop(k) for k in keys[start : start + batch]], report)

    def mirror_left_over(self, report: RunReport, now: datetime) -> None:
        """Status writes a crashed or stopped run left undone are written first."""
        while not self.stop.is_set():
            links = [
                link
                for link in self.store.links_to_mirror(self.connection)
                if link.crm_id not in self._pending
            ]
            if not links:
                return
            updates: list[Pending] = []
            for link in links:
                assert link.core_facts is not None
                facts = CoreFacts.from_json(link.core_facts)
                write = self.for_link(link, facts, now, error=facts.notice, always=True)
                assert write is not None
                updates.append(write)
            self.queue(updates, report)
            self.flush(report, everything=True)
            if len(links) < 5000:
                return

    # ------------------------------------------------------------------ writing

    @contextmanager
    def in_background(self, report: RunReport) -> Iterator[None]:
        """Within: full batches go out on :attr:`Tuning.write_threads` threads (at most
        :attr:`Tuning.writes_in_flight` unrecorded, a record in one batch at a time); on
        leaving, every result is recorded, also on an error (which goes on)."""
        writer = ThreadPoolExecutor(
            max_workers=self.tuning.write_threads, thread_name_prefix="crm-write"
        )
        self._writer = writer
        try:
            yield
        except BaseException:
            self._writer = None
            try:
                self.drain(report)  # record what was written; the error goes on
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
        self.drain(report)

    def write_now(self, updates: Sequence[Pending], report: RunReport) -> None:
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
            while len(self._writes) > self.tuning.writes_in_flight:
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
        self, updates: Sequence[Pending], future: Future[list[WriteResult]], report: RunReport
    ) -> None:
        with report.phase("crm_status_calls"):
            results = future.result()
        self._record_writes(updates, results, report)

    def drain(self, report: RunReport) -> None:
        while self._writes:
            self._record_write(*self._writes.popleft(), report)

    def _record_writes(
        self, updates: Sequence[Pending], results: Sequence[WriteResult], report: RunReport
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
                self.settled[settled] += 1
                if link is not None:
                    saved[link.crm_id] = fp
                # one line per cycle says how many (see the cycle); each one when debugging
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
