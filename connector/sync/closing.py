"""Incoming deals declined or expired in Partner Center are closed in the CRM too.

Without this step a declined or expired incoming deal stays open in the CRM's "on hold"
stage. ``inbound.close`` names the CRM's lost stage (Salesforce) or lost status reason
(Dataverse) for each ending, and a field for the reason; left out, the record stays as
it is (the behaviour before the setting existed).

The engine hands every link it saves to :meth:`Closing.consider`; the records to close
are closed once the cycle's status writes are done (a closed Dataverse row is
read-only), in one call. A closed record is remembered in the link's facts
(``crm_closed``), so it is closed once; one the CRM reports closed already counts as
done. Links a crash left unclosed are found once a day in the store.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from connector.crm.base import LostClosing
from connector.state.lifecycle_reads import links_to_close
from connector.state.store import Link
from connector.sync.mirror import CoreFacts
from connector.sync.report import RunReport

if TYPE_CHECKING:
    from connector.sync.context import SyncContext

log = logging.getLogger(__name__)

#: the store cursor of the last core day the store was searched for deals left open
SWEEP_CURSOR = "closing_day"
#: the reason written when the core gives an expired deal none
EXPIRED_REASON = "Not answered within the 14 days Partner Center allows"
#: the CRM answers that mean the record is closed already
_DONE = frozenset({"read_only_closed"})


class Closing:
    """Closes the CRM records of declined and expired incoming deals (module docstring)."""

    def __init__(self, engine: SyncContext) -> None:
        self.engine = engine
        self._todo: dict[str, Link] = {}

    def _lost_as(self, link: Link) -> str | None:
        close = self.engine.mapping.inbound.close
        return {"Declined": close.declined, "Expired": close.expired}.get(link.substatus or "")

    def consider(self, links: Iterable[Link | None]) -> None:
        """Note the links whose record should be closed now."""
        for link in links:
            if (
                link is None
                or link.direction != "Incoming"
                or link.status != "Closed"
                or link.core_facts is None
                or self._lost_as(link) is None
                or CoreFacts.from_json(link.core_facts).crm_closed
            ):
                continue
            self._todo[link.crm_id] = link

    def close(self, report: RunReport) -> int:
        """Close the records noted (and, first thing each day, any a crash left open)."""
        engine = self.engine
        mapping = engine.mapping
        if mapping.inbound.close.declined is None and mapping.inbound.close.expired is None:
            return 0
        day = engine.core_clock.now().date().isoformat()
        if engine.store.get_cursor(engine.connection, SWEEP_CURSOR) != day:
            self.consider(links_to_close(engine.store, engine.connection))
            engine.store.set_cursor(engine.connection, SWEEP_CURSOR, day)
        todo, self._todo = list(self._todo.values()), {}
        if not todo:
            return 0
        reason_field = mapping.inbound.close.reason_field
        items = []
        for link in todo:
            lost_as = self._lost_as(link)
            assert lost_as is not None and link.core_facts is not None
            facts = CoreFacts.from_json(link.core_facts)
            reason = facts.status_reason or (
                EXPIRED_REASON if link.substatus == "Expired" else None
            )
            values = {reason_field: reason} if reason_field and reason else {}
            items.append(LostClosing(link.crm_id, lost_as, mapping.stages.field, values, reason))
        results = engine.crm.close_lost(items)
        closed: list[Link] = []
        # the links as stored now (their status writes recorded since they were noted)
        fresh = engine.store.get_links(engine.connection, [k.crm_id for k in todo])
        for link, result in zip(todo, results, strict=True):
            if not result.ok and result.error_code not in _DONE:
                report.failed[f"crm_write:{result.error_code}"] += 1
                log.warning(
                    "%s: %s: closing the CRM record of the %s referral failed: %s %s",
                    engine.connection,
                    link.crm_id,
                    (link.substatus or "").lower(),
                    result.error_code,
                    result.message,
                )
                continue
            link = fresh.get(link.crm_id, link)
            assert link.core_facts is not None
            facts = replace(CoreFacts.from_json(link.core_facts), crm_closed=link.substatus)
            closed.append(replace(link, core_facts=facts.as_json()))
            log.info(
                "%s: %s: closed in the CRM (referral %s %s)",
                engine.connection,
                link.crm_id,
                link.referral_id,
                link.substatus,
            )
        # the facts only gain crm_closed: the CRM's status values (and their fingerprint)
        # are unchanged, so nothing is written again
        engine.store.save_links(engine.connection, closed)
        return len(closed)
