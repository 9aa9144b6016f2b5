"""The seam every CRM adapter implements; the engine talks to nothing else of a CRM."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any, Protocol

from connector.mapping.filters import Filter
from connector.model import CrmOpportunity, CrmStatusUpdate


@dataclass(frozen=True, slots=True)
class CrmPage:
    """One page of changed records and the cursor that is safe once it is handled."""

    records: Sequence[CrmOpportunity]
    #: opaque to the engine; committed only after every record of the page is handled
    cursor: str | None
    #: ids of rows deleted since the last cursor (Dataverse change tracking)
    deleted_ids: Sequence[str] = ()
    #: how many records the whole pull holds, when the CRM says (Salesforce's
    #: ``totalSize``); None when unknown. Only for showing progress.
    total: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class CrmField:
    """One field of a CRM object as the CRM describes it (``mappings check --against-crm``).

    ``target`` is set for a relationship (Salesforce ``Account`` of ``AccountId``) or a
    lookup (Dataverse ``parentaccountid``): the object it leads to, whose fields a
    mapping reaches as ``Account.Name`` / ``parentaccountid.name``. ``writable`` is
    None when the CRM does not say.
    """

    name: str
    target: str | None = None
    writable: bool | None = None


@dataclass(frozen=True, slots=True)
class StageInfo:
    """One sales stage as the CRM defines it."""

    label: str
    api_name: str
    probability: Decimal | None
    is_closed: bool
    is_won: bool
    active: bool = True
    sort_order: int = 0


#: the error code of a write to a record that no longer exists (deleted, in Salesforce's
#: recycle bin, or purged): the engine settles it instead of retrying it every cycle
RECORD_GONE = "not_found"


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of writing one record (``error_code`` :data:`RECORD_GONE` when it is gone)."""

    crm_id: str | None
    ok: bool
    error_code: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class NewOpportunity:
    """A CRM opportunity to create for an incoming referral (CRM field → value)."""

    referral_id: str
    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class LostClosing:
    """An open opportunity to close as lost (an incoming deal declined or expired).

    ``lost_as`` is the mapping's word for it: a lost stage of ``stage_field``
    (Salesforce) or a lost status reason (Dataverse's ``statuscode`` label, closed with
    ``LoseOpportunity``). ``values`` are written on the record first (the reason field).
    """

    crm_id: str
    lost_as: str
    stage_field: str
    values: Mapping[str, Any]
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class TeamMember:
    """A person on an opportunity's team in the CRM (a user), with the role given there."""

    first_name: str
    last_name: str
    email: str
    phone: str = ""
    role: str = ""


@dataclass(frozen=True, slots=True)
class RelatedRow:
    """A record related to opportunities (an account, a contact): its id and the columns read."""

    id: str
    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class NewRelated:
    """A related record to create; a contact is put under ``account_id`` when given."""

    values: Mapping[str, Any]
    account_id: str | None = None


class RelatedRecords(Protocol):
    """What the lifecycle steps need of a CRM beyond its opportunities.

    ``relation`` is the relationship the mapping reads a related record through: the
    first part of a path such as ``Account.Name`` or ``Primary_Contact__r.Email``
    (Salesforce) or ``parentaccountid.name`` (Dataverse).
    """

    def find(
        self, relation: str, column: str, values: Sequence[str], *, columns: Sequence[str]
    ) -> list[RelatedRow]:
        """Records behind ``relation`` whose ``column`` equals one of ``values`` (the
        CRM's own comparison: case-insensitive in both)."""
        ...

    def create(self, relation: str, rows: Sequence[NewRelated]) -> list[WriteResult]:
        """Create records behind ``relation``; one result per row (``crm_id`` = new id)."""
        ...

    def link_values(self, relation: str, row_id: str) -> dict[str, Any]:
        """The opportunity values that point ``relation`` at the record ``row_id``."""
        ...

    def opportunity_teams(self, record_ids: Sequence[str]) -> dict[str, list[TeamMember]]:
        """The team members (users) of each opportunity, sorted by email."""
        ...

    def team_changes(self, cursor: str | None) -> tuple[list[str], str | None]:
        """Opportunities whose team changed since ``cursor``, and the cursor to keep."""
        ...

    def fetch_many(
        self, record_ids: Sequence[str], *, fields: Sequence[str]
    ) -> list[CrmOpportunity]:
        """Opportunities by id (the ones that exist), read as a change pull reads them."""
        ...


@dataclass
class ApiUsage:
    """API calls this adapter made, and the CRM's own usage figures when it reports them."""

    calls: int = 0
    used: int | None = None
    limit: int | None = None
    by_kind: dict[str, int] = field(default_factory=dict)
    #: the value of ``used`` at which the adapter's own guard stops the run (the quota
    #: share, the per-run budget); None when no guard is set
    guard_at: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def headroom(self) -> int | None:
        """Calls left before the guard stops the run; None when unknown or unguarded."""
        if self.guard_at is None or self.used is None:
            return None
        return max(0, self.guard_at - self.used)

    def count(self, kind: str) -> None:
        with self._lock:  # the status writer may call beside the main thread
            self.calls += 1
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1


class CrmAdapter(Protocol):
    """Pull changes, read stage metadata, write status, create opportunities."""

    system: str
    usage: ApiUsage
    #: how often the engine asks which linked records still exist (None: never)
    reconcile_every: timedelta | None

    @property
    def stage_column(self) -> str | None:
        """The column a derived stage is read from and written to (Dataverse's choice
        column, e.g. salesstage); None where the stage field is a plain column."""
        ...

    @property
    def related(self) -> RelatedRecords:
        """Accounts, contacts, opportunity teams (connector.crm.salesforce_related,
        connector.crm.dynamics_related)."""
        ...

    def pull_changes(
        self, cursor: str | None, *, fields: Sequence[str], select: Filter | None
    ) -> Iterator[CrmPage]:
        """Pages of opportunities changed since ``cursor`` (everything when None)."""
        ...

    def fetch(self, record_id: str, *, fields: Sequence[str]) -> CrmOpportunity | None:
        """One record by id, or None when it does not exist."""
        ...

    def stage_metadata(self) -> list[StageInfo]:
        """The org's active sales stages."""
        ...

    def write_status(self, updates: Sequence[CrmStatusUpdate]) -> list[WriteResult]:
        """Write status fields; one result per update, in order."""
        ...

    def create_opportunities(self, items: Sequence[NewOpportunity]) -> list[WriteResult]:
        """Create opportunities; one result per item, in order (``crm_id`` = the new id)."""
        ...

    def find_by_referral_ids(self, field: str, referral_ids: Sequence[str]) -> dict[str, str]:
        """Live records whose ``field`` holds one of ``referral_ids``: referral id → record id.

        Looked up before creating opportunities for incoming referrals, so a crash
        between a create and its bookkeeping never creates a second record.
        """
        ...

    def missing_records(self, crm_ids: Sequence[str]) -> set[str]:
        """Those of ``crm_ids`` whose record no longer exists: deleted (in Salesforce, in
        the recycle bin too) or purged. Ids that are not this CRM's record ids are left out.
        """
        ...

    def describe_fields(self, entity: str | None = None) -> list[CrmField]:
        """The fields of ``entity`` (the opportunity object when None), as the CRM
        describes them (``connector mappings check --against-crm``)."""
        ...

    def close_lost(self, items: Sequence[LostClosing]) -> list[WriteResult]:
        """Close open opportunities as lost; one result per item, in order. A record the
        CRM reports closed already answers ``read_only_closed``."""
        ...

    def close(self) -> None: ...
