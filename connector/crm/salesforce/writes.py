"""Writing Salesforce records through ``composite/sobjects`` collections of 200.

Each record is checked before it is sent (its id, field names and values, see
:mod:`connector.crm.salesforce.records`); a refused one gets its own result and the
rest go out. Results come back one per record, in order. Creates are never retried
(a retried POST after a lost answer would duplicate records); updates are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from simple_salesforce.api import Salesforce

from connector.crm.base import NewOpportunity, WriteResult
from connector.crm.salesforce.records import RECORD_ID_RE, record_body, refused_write, write_result
from connector.errors import CrmError, QuotaExhausted
from connector.model import CrmStatusUpdate

T = TypeVar("T")

#: records per ``composite/sobjects`` call (Salesforce's limit)
COLLECTION_SIZE = 200


class Call(Protocol):
    """The adapter's one way to call Salesforce (guarded, counted, classified, retried)."""

    def __call__(
        self, kind: str, request: Callable[[Salesforce], T], *, what: str, retry: bool = True
    ) -> T: ...


class SalesforceWriter:
    """Status updates and creates for one object of one org."""

    def __init__(self, call: Call, *, object_name: str, timeout: float) -> None:
        self._call = call
        self.object_name = object_name
        self.timeout = timeout

    def write_status(self, updates: Sequence[CrmStatusUpdate]) -> list[WriteResult]:
        """PATCH status fields in collections of 200; one result per update, in order."""
        items: list[tuple[str | None, dict[str, Any] | WriteResult]] = []
        for update in updates:
            if not isinstance(update.crm_id, str) or not RECORD_ID_RE.fullmatch(update.crm_id):
                items.append(
                    (update.crm_id, refused_write(update.crm_id, "not a Salesforce record id"))
                )
                continue
            try:
                body = record_body(update.values)
            except ValueError as exc:
                items.append((update.crm_id, refused_write(update.crm_id, str(exc))))
                continue
            record = {"attributes": {"type": self.object_name}, "id": update.crm_id, **body}
            items.append((update.crm_id, record))
        return self.write_collections("PATCH", items, idempotent=True)

    def create(self, items: Sequence[NewOpportunity]) -> list[WriteResult]:
        """POST new records in collections of 200; ``crm_id`` of each result is the new id."""
        prepared: list[tuple[str | None, dict[str, Any] | WriteResult]] = []
        for item in items:
            try:
                body = record_body(item.values)
            except ValueError as exc:
                prepared.append((None, refused_write(None, f"referral {item.referral_id}: {exc}")))
                continue
            prepared.append((None, {"attributes": {"type": self.object_name}, **body}))
        return self.write_collections("POST", prepared, idempotent=False)

    def write_collections(
        self,
        method: str,
        items: Sequence[tuple[str | None, dict[str, Any] | WriteResult]],
        *,
        idempotent: bool,
    ) -> list[WriteResult]:
        results: list[WriteResult] = []
        for start in range(0, len(items), COLLECTION_SIZE):
            chunk = items[start : start + COLLECTION_SIZE]
            sendable = [
                (i, cid, rec) for i, (cid, rec) in enumerate(chunk) if isinstance(rec, dict)
            ]
            outcomes: dict[int, WriteResult] = {
                i: rec for i, (_, rec) in enumerate(chunk) if isinstance(rec, WriteResult)
            }
            if sendable:
                sent = self._send_collection(method, sendable, idempotent=idempotent)
                outcomes.update(zip((i for i, _, _ in sendable), sent, strict=True))
            results.extend(outcomes[i] for i in range(len(chunk)))
        return results

    def _send_collection(
        self,
        method: str,
        sendable: Sequence[tuple[int, str | None, dict[str, Any]]],
        *,
        idempotent: bool,
    ) -> list[WriteResult]:
        verb = "updating" if method == "PATCH" else "creating"
        what = f"{verb} {len(sendable)} {self.object_name} records"
        payload = {"allOrNone": False, "records": [rec for _, _, rec in sendable]}

        def send(sf: Salesforce) -> Any:
            return sf.restful(
                "composite/sobjects", method=method, json=payload, timeout=self.timeout
            )

        try:
            answer = self._call("composite", send, what=what, retry=idempotent)
        except QuotaExhausted:
            raise
        except CrmError as exc:
            if exc.transient or exc.status != 400:
                raise
            # The whole collection was refused as malformed: each record fails for good.
            return [WriteResult(cid, False, exc.code, exc.message) for _, cid, _ in sendable]
        if not isinstance(answer, list) or len(answer) != len(sendable):
            message = f"Salesforce answered {what} without one result per record; retry later"
            return [WriteResult(cid, False, "bad_response", message) for _, cid, _ in sendable]
        return [write_result(cid, row) for (_, cid, _), row in zip(sendable, answer, strict=True)]
