"""Before any create, trust what already exists: the CRM's link, the local link, the core.

The architecture's rule for idempotent creates. A CRM record gets a new referral only
when none of these knows one for it, asked in this order:

1. **The CRM record's own link**, the referral id the connector writes back into it
   (the mapping's ``status_fields.referral_id``). It outlives anything that happens to
   the state store. The referral is read (GET) and linked when its
   ``externalReferenceId`` names this record, or names none (the core may send it back
   empty); a referral naming another record is a copied field (a cloned opportunity)
   and is ignored. The record is then planned against what the core holds.
2. **The local link.** A *pending* link is a create intent whose outcome is unknown (a
   crash, or an answer lost, between the POST and the bookkeeping). While the run that
   wrote it is alive (it holds the connection's lease) the record is left to it;
   otherwise its referral is looked for in the core back to the intent's time, linked
   when found, and the intent is taken over to create it when not.
3. **The core.** A record about to be created without a link is looked for in the core's
   newest referrals, matched client-side on ``externalReferenceId``. The store is
   evidence for everything before its core cursor (every referral its runs created was
   pending or linked in it before the cursor passed it), so one newest-first listing
   back to that cursor covers what the store cannot know: a store restored from an
   older copy, a new or emptied store (no cursor: the whole listing), the pending links
   of a crash since. The listing is made once per run, when the first create or pending
   link needs it, and kept as an index ``externalReferenceId -> referral id``; a first
   sync on an empty core pays one call for it. An intent older than the cursor (a create
   that keeps failing) is looked for on its own, back to its time, when its record
   comes up: the run's listing does not go back that far for everyone.

Two runs at once (two ``sync --once``, or one beside the daemon) are kept apart by the
connection's lease; should they meet anyway, the store refuses a second intent for a
record that is pending under another run's intent, and the record is skipped as
``claimed_by_another_run`` (not a failure: that run creates it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from connector.dealcore.base import DealCore
from connector.errors import CoreError, NotFound
from connector.model import CrmOpportunity, ReferralState
from connector.state.store import Link, LinkState, Store

log = logging.getLogger(__name__)

#: the skip reason of a record that another run is creating (or has just created)
CLAIMED = "claimed_by_another_run"
#: what the listing asks of each referral (``$select``): enough to match and to stop
INDEX_FIELDS = ("id", "externalReferenceId", "updatedDateTime", "status")


class LinkReferral(Protocol):
    """The engine's way of turning a referral read from the core into a link."""

    def __call__(
        self,
        link: Link | None,
        referral: ReferralState,
        fingerprint: str | None,
        body: Mapping[str, Any] | None,
        *,
        crm_id: str | None = None,
    ) -> Link: ...


@dataclass
class Settled:
    """A page's links once every record's existing referral has been looked for."""

    links: dict[str, Link]
    #: records another live run is creating: left to it this cycle
    claimed: set[str] = field(default_factory=set)
    #: records whose evidence could not be read for now (the core failed): not created now
    failed: dict[str, CoreError] = field(default_factory=dict)


class ExistingReferrals:
    """Finds the referral a record already has before the engine creates one (one run)."""

    def __init__(
        self,
        connection: str,
        *,
        store: Store,
        core: DealCore,
        holder: str,
        link_field: str | None,
        linked: LinkReferral,
        overlap: timedelta,
        concurrency: int,
    ) -> None:
        self.connection = connection
        self.store = store
        self.core = core
        self.holder = holder
        self.link_field = link_field
        self.linked = linked
        self.overlap = overlap
        self.concurrency = concurrency
        #: externalReferenceId -> referral id, from this run's listing (None: not yet)
        self._index: dict[str, str] | None = None
        self._started: datetime | None = None
        self._cursor: datetime | None = None

    def start(self, now: datetime) -> None:
        """Read what bounds this run's look into the core, before the run marks anything."""
        self._index = None
        self._started = now
        stored = self.store.get_cursor(self.connection, "core")
        self._cursor = datetime.fromisoformat(stored) if stored else None

    # ------------------------------------------------------------------ before planning

    def settle(self, records: Sequence[CrmOpportunity], links: dict[str, Link]) -> Settled:
        """Links for a page's records: adopted from the CRM's link, pending ones resolved."""
        settled = Settled(links, claimed=self._claimed(links))
        unlinked = [
            r.id
            for r in records
            if r.id not in settled.claimed and _without_referral(links.get(r.id))
        ]
        carried = self._carried(records, unlinked)
        if carried:
            self._adopt(carried, settled, source="the CRM record's referral id")
        pending = [
            link
            for link in links.values()
            if link.state is LinkState.PENDING_CREATE and link.crm_id not in settled.claimed
        ]
        if pending:
            self._resolve_pending(pending, settled)
        return settled

    def _claimed(self, links: Mapping[str, Link]) -> set[str]:
        """Pending records whose intent belongs to the run holding the lease (not us)."""
        others = [
            link
            for link in links.values()
            if link.state is LinkState.PENDING_CREATE and link.intent_by not in (None, self.holder)
        ]
        if not others:
            return set()
        lease = self.store.current_lease(self.connection)
        alive = lease[0] if lease is not None and lease[0] != self.holder else None
        claimed = {link.crm_id for link in others if link.intent_by == alive}
        for crm_id in sorted(claimed):
            log.info("%s: %s: another run (%s) is creating it", self.connection, crm_id, alive)
        return claimed

    def _carried(self, records: Sequence[CrmOpportunity], ids: Sequence[str]) -> dict[str, str]:
        """Referral ids the CRM records carry in the mapping's referral-id field."""
        if not self.link_field or not ids:
            return {}
        wanted = set(ids)
        carried: dict[str, str] = {}
        for record in records:
            value = record.fields.get(self.link_field)
            if record.id in wanted and isinstance(value, str) and value.strip():
                carried[record.id] = value.strip()
        return carried

    def _resolve_pending(self, pending: Sequence[Link], settled: Settled) -> None:
        """Pending links of runs that are gone: linked when the core has their referral,
        otherwise taken over (the record is then planned as a create)."""
        found: dict[str, str] = {}
        for link in pending:
            referral_id = self._look_up(link)
            if referral_id is not None:
                found[link.crm_id] = referral_id
        if found:
            self._adopt(found, settled, source="a pending create's referral in the core")
        # not found, or found but not this record's: nothing of it in the core
        missing = [
            link
            for link in pending
            if settled.links[link.crm_id].state is LinkState.PENDING_CREATE
            and link.crm_id not in settled.failed
        ]
        taken = self.store.take_over_intents(self.connection, missing, self.holder)
        for link in missing:
            del settled.links[link.crm_id]  # never created: planned as a create again
            if link.crm_id not in taken:
                settled.claimed.add(link.crm_id)  # another run took it over meanwhile

    def _look_up(self, link: Link) -> str | None:
        """The referral of a pending create: from the run's index when it covers the
        intent (made before the run, after the store's cursor), else by its own listing
        back to the intent's time."""
        intent = link.intent_at or link.updated
        since = None if intent is None else self.core.core_time(intent) - self.core.match_margin
        covered = self._since()
        if (
            intent is not None
            and self._started is not None
            and intent < self._started
            and (covered is None or (since is not None and since >= covered))
        ):
            return self._indexed().get(link.crm_id)
        referral = self.core.find_created(link.crm_id, since)
        return None if referral is None else referral.id

    # ------------------------------------------------------------------ before creating

    def before_create(self, crm_ids: Sequence[str], links: dict[str, Link]) -> Settled:
        """Links adopted from the core for records about to be created without a link."""
        settled = Settled(links)
        if not crm_ids:
            return settled
        index = self._indexed()
        found = {crm_id: index[crm_id] for crm_id in crm_ids if crm_id in index}
        if found:
            self._adopt(found, settled, source="the core's referral for it")
        return settled

    def _indexed(self) -> dict[str, str]:
        """This run's index of the core's newest referrals by ``externalReferenceId``."""
        if self._index is not None:
            return self._index
        since = self._since()
        index: dict[str, str] = {}
        listed = 0
        for referral in self.core.list_recent(since, select=INDEX_FIELDS):
            listed += 1
            if referral.external_reference_id:
                index.setdefault(referral.external_reference_id, referral.id)
        log.info(
            "%s: listed %d referrals of the core (back to %s) before creating: %d carry an "
            "externalReferenceId",
            self.connection,
            listed,
            since.isoformat() if since else "the first one, the store knowing none",
            len(index),
        )
        self._index = index
        return index

    def _since(self) -> datetime | None:
        """How far back the core may hold referrals of this connection the store lacks."""
        if self._cursor is None:
            return None  # a new or emptied store knows nothing: the whole listing
        return self._cursor - self.overlap

    # ------------------------------------------------------------------ adopting

    def _adopt(self, found: Mapping[str, str], settled: Settled, *, source: str) -> None:
        """Read the referrals ``found`` (CRM id -> referral id) and link them."""
        owners = self.store.links_by_referral(self.connection, list(found.values()))
        wanted = {}
        for crm_id, referral_id in found.items():
            owner = owners.get(referral_id)
            if owner is not None and owner.crm_id != crm_id:
                log.warning(
                    "%s: %s: %s names referral %s, which is linked to CRM record %s (is "
                    "this record a copy?); not linked to it",
                    self.connection,
                    crm_id,
                    source,
                    referral_id,
                    owner.crm_id,
                )
                continue
            wanted[crm_id] = referral_id
        adopted: list[Link] = []
        for crm_id, result in self._read(wanted).items():
            if isinstance(result, CoreError):
                settled.failed[crm_id] = result
                continue
            if result is None:
                log.warning(
                    "%s: %s: %s, %s, is not in the core; not linked to it",
                    self.connection,
                    crm_id,
                    source,
                    wanted[crm_id],
                )
                continue
            if result.external_reference_id not in (None, "", crm_id):
                log.warning(
                    "%s: %s: %s, %s, belongs to CRM record %s (is this record a copy?); not "
                    "linked to it",
                    self.connection,
                    crm_id,
                    source,
                    result.id,
                    result.external_reference_id,
                )
                continue
            adopted.append(self._link(settled.links.get(crm_id), result, crm_id))
            log.info(
                "%s: %s: linked to referral %s (%s) instead of creating one",
                self.connection,
                crm_id,
                result.id,
                source,
            )
        if adopted:
            self.store.save_links(self.connection, adopted)
            settled.links.update({link.crm_id: link for link in adopted})

    def _link(self, link: Link | None, referral: ReferralState, crm_id: str) -> Link:
        if link is not None and link.state is LinkState.PENDING_CREATE and referral.is_terminal:
            # closed: nothing will be sent; keep what the intent meant to send
            return self.linked(link, referral, link.fingerprint, link.sent_body, crm_id=crm_id)
        # Planned against what the core really holds: a crash may have come between the
        # POST and the PATCH that brings a new referral to the CRM's stage (or closes it).
        return self.linked(link, referral, None, dict(referral.raw), crm_id=crm_id)

    def _read(self, wanted: Mapping[str, str]) -> dict[str, ReferralState | CoreError | None]:
        """GET each referral (in parallel): None when the core will not give it (404, or
        another permanent refusal, say of an id that is not one), the error when it
        failed for now (the record then waits for a later cycle)."""

        def read(referral_id: str) -> ReferralState | CoreError | None:
            try:
                return self.core.get(referral_id)
            except NotFound:
                return None
            except CoreError as exc:
                if exc.transient:
                    return exc
                log.warning("%s: reading referral %s: %s", self.connection, referral_id, exc)
                return None

        if not wanted:
            return {}
        with ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(wanted)), thread_name_prefix="adopt"
        ) as pool:
            results = list(pool.map(read, wanted.values()))
        return dict(zip(wanted, results, strict=True))


def _without_referral(link: Link | None) -> bool:
    return link is None or link.state is LinkState.PENDING_CREATE
