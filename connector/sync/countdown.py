"""The days left before an incoming or invited deal expires, kept right in the CRM.

Partner Center expires an unanswered deal 14 days after it was sent (the seed), on its
own clock. The days left (``status_fields.days_to_expiry``) are counted in whole days on
the core's clock, from its day to the day of the expiry (UTC), so the value changes at
the core's midnight and nowhere else. Two parts:

- :class:`CoreClock`: the core's time as the connector last saw it (the ``Date`` of its
  answers), kept as an offset from the local clock in the state store so that every
  cycle, even before its first call to the core, counts on the core's clock;
- :class:`Countdown`: once per core day, the first cycle of the day writes the new value
  of every open deal whose expiry is pending (an incoming deal still New, or Microsoft
  invited and not answering yet) and only where it changed, in the cycle's batched
  status writes. Any other cycle reads one cursor from the store and writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from connector.errors import StateError
from connector.state.lifecycle_reads import links_with_countdown
from connector.state.store import Link, Store
from connector.sync.mirror import CoreFacts
from connector.sync.report import RunReport

if TYPE_CHECKING:
    from connector.mapping.schema import StatusFields
    from connector.sync.status_writer import Pending, StatusWriter

log = logging.getLogger(__name__)

#: the store cursor holding the last core day the countdown was written for
DAY_CURSOR = "countdown_day"
#: the store cursor holding the core clock's offset from the local one (seconds)
SKEW_CURSOR = "core_clock_skew"
#: the dead-letter message suffix of an error not yet written (connector.sync.engine)
_NOT_WRITTEN = " [not yet written"


class CoreClock:
    """The core's time, from the local clock and the last offset seen between them."""

    def __init__(self, store: Store, connection: str, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.connection = connection
        self.clock = clock
        self.skew = timedelta(0)
        try:
            stored = store.get_cursor(connection, SKEW_CURSOR)
            self.skew = timedelta(seconds=float(stored)) if stored else timedelta(0)
        except (StateError, ValueError):
            self.skew = timedelta(0)  # a local clock is the best guess left

    def now(self) -> datetime:
        return self.clock() + self.skew

    def saw(self, server_time: datetime | None) -> None:
        """The core answered with ``server_time`` just now: remember the offset."""
        if server_time is None:
            return
        skew = server_time - self.clock()
        # the Date header has whole seconds: keep the stored offset unless it moved
        if abs((skew - self.skew).total_seconds()) >= 2:
            self.skew = skew
            self.store.set_cursor(self.connection, SKEW_CURSOR, f"{skew.total_seconds():.0f}")


class Countdown:
    """The daily refresh of the days left (see the module docstring)."""

    def __init__(
        self,
        connection: str,
        *,
        store: Store,
        fields: StatusFields,
        core_clock: CoreClock,
        clock: Callable[[], datetime],
        writer: StatusWriter,
    ) -> None:
        self.connection = connection
        self.store = store
        self.fields = fields
        self.core_clock = core_clock
        self.clock = clock
        self.writer = writer

    def refresh(self, report: RunReport) -> int:
        """Queue the day's new values; returns how many records get one (0 most cycles)."""
        fields = self.fields
        if fields.days_to_expiry is None:
            return 0
        now = self.core_clock.now()
        day = now.date().isoformat()
        store, conn = self.store, self.connection
        if store.get_cursor(conn, DAY_CURSOR) == day:
            return 0
        failed_before = _write_failures(report)
        local = self.clock()
        page: list[Link] = []
        queued = 0
        for link in links_with_countdown(store, conn):
            page.append(link)
            if len(page) >= 200:
                queued += self._queue(page, now, local, report)
                page = []
        queued += self._queue(page, now, local, report)
        self.writer.flush(report, everything=True)
        if _write_failures(report) == failed_before:
            store.set_cursor(conn, DAY_CURSOR, day)
        log.info("%s: countdown for %s: %d record(s) written", conn, day, queued)
        return queued

    def _queue(self, links: list[Link], now: datetime, local: datetime, report: RunReport) -> int:
        letters = self.store.open_dead_letters(self.connection, [k.crm_id for k in links])
        updates: list[Pending] = []
        for link in links:
            if self.writer.is_pending(link.crm_id) or link.core_facts is None:
                continue  # written this cycle already, with today's values
            facts = CoreFacts.from_json(link.core_facts)
            letter = letters.get(link.crm_id)
            error = letter.message.split(_NOT_WRITTEN)[0] if letter is not None else facts.notice
            write = self.writer.for_link(link, facts, local, error=error, core_now=now)
            if write is not None:
                updates.append(write)
        self.writer.queue(updates, report)
        return len(updates)


def _write_failures(report: RunReport) -> int:
    return sum(n for reason, n in report.failed.items() if reason.startswith("crm_write:"))
