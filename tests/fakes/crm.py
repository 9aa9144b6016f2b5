"""An in-memory CRM (the :class:`~connector.crm.base.CrmAdapter` protocol).

Opportunities live in a dict of plain field values; ``pull_changes`` pages them by
(modstamp, id) after the cursor; ``write_status`` merges the values (and moves the
modstamp, as a real CRM does). Knobs:

- ``write_fail_next``: error codes the next written records get, in order
  (``"throttled"`` as a 429 refusal of one record, ``"read_only_closed"`` …);
- ``write_fail_probability``: the share of records whose status write fails;
- ``raise_next``: errors the next calls raise (any method).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from connector.crm.base import (
    ApiUsage,
    CrmField,
    CrmPage,
    LostClosing,
    NewOpportunity,
    RelatedRecords,
    StageInfo,
    WriteResult,
)
from connector.mapping.filters import Filter
from connector.model import CrmOpportunity, CrmStatusUpdate

SALESFORCE_STAGES = [
    StageInfo("Prospecting", "Prospecting", Decimal(10), False, False),
    StageInfo("Needs Analysis", "Needs Analysis", Decimal(20), False, False),
    StageInfo("Negotiation/Review", "Negotiation/Review", Decimal(90), False, False),
    StageInfo("Closed Won", "Closed Won", Decimal(100), True, True),
    StageInfo("Closed Lost", "Closed Lost", Decimal(0), True, False),
]


def salesforce_fields(**overrides: Any) -> dict[str, Any]:
    """A record the shipped Salesforce mapping syncs (overrides change any field)."""
    fields: dict[str, Any] = {
        "Name": "Contoso – Azure migration",
        "Amount": Decimal("50000"),
        "CurrencyIsoCode": "USD",
        "CloseDate": datetime(2026, 12, 31, tzinfo=UTC).date(),
        "StageName": "Needs Analysis",
        "IsWon": False,
        "IsClosed": False,
        "Description": "Needs a POC",
        "Account.Name": "Contoso Ltd",
        "Account.BillingCountryCode": "US",
        "Account.BillingCity": "Redmond",
        "Owner.FirstName": "Sue",
        "Owner.LastName": "Smith",
        "Owner.Email": "sue@partner.example",
        "Owner.Phone": "+1 555 0100",
        "Primary_Contact__r.FirstName": "Ann",
        "Primary_Contact__r.LastName": "Lee",
        "Primary_Contact__r.Email": "ann@contoso.example",
        "Primary_Contact__r.Phone": "+1 555 0199",
        "CoSell_Solutions__c": "SOL-34104-EBB",
        "How_can_Microsoft_help__c": None,
        "Sync_with_Partner_Center__c": True,
    }
    fields.update(overrides)
    return fields


@dataclass
class FakeCrm:
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    stages: list[StageInfo] = field(default_factory=lambda: list(SALESFORCE_STAGES))
    page_size: int = 50
    system: str = "salesforce"
    usage: ApiUsage = field(default_factory=ApiUsage)
    reconcile_every: timedelta | None = None
    stage_column: str | None = None
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    stamps: dict[str, datetime] = field(default_factory=dict)
    written: list[CrmStatusUpdate] = field(default_factory=list)
    write_fail_next: list[str] = field(default_factory=list)
    write_fail_probability: float = 0.0
    raise_next: list[Exception] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    def _call(self, kind: str) -> None:
        self.usage.count(kind)
        if self.raise_next:
            raise self.raise_next.pop(0)

    def add(self, crm_id: str, **fields: Any) -> None:
        """A record as the seller saved it now."""
        self.records[crm_id] = {**self.records.get(crm_id, salesforce_fields()), **fields}
        self.stamps[crm_id] = self.clock()

    def _opportunity(self, crm_id: str) -> CrmOpportunity:
        return CrmOpportunity(crm_id, self.stamps[crm_id], dict(self.records[crm_id]))

    @property
    def related(self) -> RelatedRecords:
        raise NotImplementedError("the fake CRM has no related records")

    def pull_changes(
        self, cursor: str | None, *, fields: Sequence[str], select: Filter | None
    ) -> Iterator[CrmPage]:
        since = datetime.fromisoformat(cursor) if cursor else None
        order = sorted(self.stamps, key=lambda i: (self.stamps[i], i))
        changed = [i for i in order if since is None or self.stamps[i] >= since]
        for start in range(0, len(changed), self.page_size):
            self._call("query")
            ids = changed[start : start + self.page_size]
            yield CrmPage(
                [self._opportunity(i) for i in ids],
                self.stamps[ids[-1]].isoformat(),
                total=len(changed),
            )

    def fetch(self, record_id: str, *, fields: Sequence[str]) -> CrmOpportunity | None:
        self._call("fetch")
        return self._opportunity(record_id) if record_id in self.records else None

    def stage_metadata(self) -> list[StageInfo]:
        self._call("stages")
        return list(self.stages)

    def write_status(self, updates: Sequence[CrmStatusUpdate]) -> list[WriteResult]:
        self._call("write")
        results = []
        for update in updates:
            code = self.write_fail_next.pop(0) if self.write_fail_next else None
            if code is None and self.random.random() < self.write_fail_probability:
                code = "unavailable"
            if code is not None:
                results.append(WriteResult(update.crm_id, False, code, f"refused: {code}"))
                continue
            self.written.append(update)
            if update.crm_id in self.records:
                self.records[update.crm_id].update(update.values)
                self.stamps[update.crm_id] = self.clock()
            results.append(WriteResult(update.crm_id, True))
        return results

    def create_opportunities(self, items: Sequence[NewOpportunity]) -> list[WriteResult]:
        raise NotImplementedError("the fake CRM does not receive incoming deals")

    def find_by_referral_ids(self, field: str, referral_ids: Sequence[str]) -> dict[str, str]:
        wanted = set(referral_ids)
        return {v[field]: k for k, v in self.records.items() if v.get(field) in wanted}

    def missing_records(self, crm_ids: Sequence[str]) -> set[str]:
        return {i for i in crm_ids if i not in self.records}

    def describe_fields(self, entity: str | None = None) -> list[CrmField]:
        return []

    def close_lost(self, items: Sequence[LostClosing]) -> list[WriteResult]:
        return [WriteResult(item.crm_id, True) for item in items]

    def close(self) -> None:
        return None
