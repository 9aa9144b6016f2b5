"""Reconciliation: referrals whose CRM record no longer exists.

A pull does not see every deletion: Salesforce's ``queryAll`` forgets a record once it
is purged from the recycle bin (and ``getDeleted`` looks back 15 days at most), a
Dataverse table read by ``modifiedon`` shows no deletion at all, and an expired delta
token resyncs without the deletions in between. So every ``reconcile_every`` of the
CRM adapter (the connection's ``crm.reconcile_interval_s``), a cycle asks the CRM which
of its linked records still exist, a few hundred ids a query, and handles the
referral of each one that is gone (deleted, in Salesforce's recycle bin, or purged) as
the mapping's ``on_record_deleted`` says:

- ``flag`` (the default): the referral is left as it is and an open dead letter
  ``record_deleted`` names it, for an operator to close it in Partner Center or
  discard the letter. A record is flagged once: a discarded letter stays discarded.
- ``close_lost``: the referral is closed as Lost (``If-Match``; after a ``412`` it is
  read again and closed unless it is already closed); the link becomes terminal. A
  referral the core will not close (a pending incoming deal, say) is flagged instead.

Only links of open referrals are checked; terminal ones have nothing left to do. The
time of the last complete check is kept as the ``crm_reconcile`` cursor; a check cut
short (a stop, an error, a transient core failure) is done again next cycle.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from connector.errors import ConnectorError, CoreError
from connector.model import ReferralState
from connector.state.store import Link, LinkState

if TYPE_CHECKING:
    from connector.sync.context import SyncContext
    from connector.sync.report import RunReport

log = logging.getLogger(__name__)

#: the cursor holding the time of the last complete reconciliation
RECONCILE_CURSOR = "crm_reconcile"
#: the dead-letter reason (and report key) of a referral whose CRM record is gone
GONE_CODE = "record_deleted"
#: links handed to the CRM adapter at once (it chunks its own queries)
LINK_BATCH = 1000
#: ``mirrored_fingerprint`` of a link whose record is gone: nothing to write back
NOTHING_TO_MIRROR = "record_gone"


def reconcile_deleted_records(engine: SyncContext, report: RunReport) -> None:
    """Check the linked records when the interval has passed; handle those that are gone."""
    every = engine.crm.reconcile_every
    if not isinstance(every, timedelta):
        return
    now = engine.clock()
    if not _due(engine.store.get_cursor(engine.connection, RECONCILE_CURSOR), now, every):
        return
    check = _Check(engine, report)
    for links in _batches(engine.store.iter_links(engine.connection, LinkState.LINKED)):
        if engine.stop.is_set():
            log.info("%s: reconciliation stopped; it starts again next cycle", engine.connection)
            return
        check.batch([link for link in links if link.referral_id])
    log.info(
        "%s: reconciliation: %d linked records checked, %d gone",
        engine.connection,
        check.checked,
        check.gone,
    )
    if check.complete:
        engine.store.set_cursor(engine.connection, RECONCILE_CURSOR, now.isoformat())


def _due(stored: str | None, now: datetime, every: timedelta) -> bool:
    if stored is None:
        return True
    try:
        return now - datetime.fromisoformat(stored) >= every
    except (ValueError, TypeError):
        return True  # an unreadable time: check now, and store a good one


def _batches(links: Iterable[Link]) -> Iterator[list[Link]]:
    iterator = iter(links)
    while batch := list(itertools.islice(iterator, LINK_BATCH)):
        yield batch


class _Check:
    """One reconciliation: what it found, and whether it may be recorded as done."""

    def __init__(self, engine: SyncContext, report: RunReport) -> None:
        self.engine = engine
        self.report = report
        self.checked = self.gone = 0
        self.complete = True
        self._flagged: set[str] | None = None

    def batch(self, links: list[Link]) -> None:
        if not links:
            return
        missing = self.engine.crm.missing_records([link.crm_id for link in links])
        self.checked += len(links)
        for link in links:
            if link.crm_id in missing:
                self.gone += 1
                self._gone(link)

    def _gone(self, link: Link) -> None:
        engine = self.engine
        if engine.mapping.on_record_deleted == "close_lost":
            problem = self._close_lost(link)
            if problem is None:
                return
        else:
            problem = "on_record_deleted is flag"
        self._flag(link, problem)

    def _close_lost(self, link: Link) -> str | None:
        """Close the referral as Lost; None when done, else why it was not."""
        engine, referral_id = self.engine, str(link.referral_id)
        try:
            referral = engine.pusher.close_lost(link)
        except CoreError as exc:
            if exc.transient:
                self.complete = False  # the core is unwell: try again next cycle
                log.warning(
                    "%s: %s: closing referral %s failed (%s); retried next cycle",
                    engine.connection,
                    link.crm_id,
                    referral_id,
                    exc.message,
                )
                return None
            return f"Partner Center would not close it as Lost ({exc.code}: {exc.message})"
        self._closed(link, referral)
        return None

    def _closed(self, link: Link, referral: ReferralState) -> None:
        engine = self.engine
        closed = engine.linker(link, referral, link.fingerprint, link.sent_body)
        # the record is gone: there is nowhere to write its status (a restored record that
        # changes is read again, found terminal, and written then)
        engine.store.save_link(
            engine.connection, replace(closed, mirrored_fingerprint=NOTHING_TO_MIRROR)
        )
        engine.store.resolve_dead_letter(engine.connection, link.crm_id)
        self.report.closed += 1
        log.info(
            "%s: %s: the CRM record is gone; referral %s closed as %s",
            engine.connection,
            link.crm_id,
            referral.id,
            referral.substatus.value if referral.substatus else referral.status.value,
        )

    def _flag(self, link: Link, why: str) -> None:
        engine = self.engine
        if link.crm_id in self._already_flagged():
            self.report.skipped[GONE_CODE] += 1
            return
        status = "/".join(s for s in (link.status, link.substatus) if s)
        message = (
            f"the CRM record no longer exists (deleted or purged); referral {link.referral_id} "
            f"is still {status or 'open'} in Partner Center ({why}). Close it there, or set "
            "on_record_deleted: close_lost in the mapping; then discard this letter"
        )
        try:
            engine.store.add_dead_letter(engine.connection, link.crm_id, GONE_CODE, message)
        except ConnectorError as exc:
            self.complete = False
            log.error("%s: %s: cannot flag: %s", engine.connection, link.crm_id, exc.message)
            return
        self.report.failed[GONE_CODE] += 1
        log.warning("%s: %s: %s", engine.connection, link.crm_id, message)

    def _already_flagged(self) -> set[str]:
        """Records with a ``record_deleted`` letter, open or resolved (read once per check)."""
        if self._flagged is None:
            letters = self.engine.store.list_dead_letters(
                self.engine.connection, include_resolved=True
            )
            self._flagged = {d.crm_id for d in letters if d.reason_code.endswith(GONE_CODE)}
        return self._flagged
