"""Writing to Dataverse opportunities: status PATCHes (single or ``$batch``) and creates.

Policy for won/lost rows: Dataverse keeps closed opportunities read-only until they
are reopened, and the connector never reopens one. Before writing, the statecode
of every target row is read (one query per 50 ids); a closed row is not written
and is reported with code ``read_only_closed``; a missing row with ``not_found``
(``If-Match: *`` would refuse it anyway: a PATCH must never create a row). A write
that Dataverse still refuses as closed (the row closed in between) is reported the
same way.

When the run's request budget is spent mid-way, the records not yet written are
reported with code ``quota_exhausted`` (transient) and :attr:`DataverseWriter.quota_exhausted`
turns true: the caller learns exactly which writes happened, and stops the run.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeVar

import httpx

from connector.crm.base import NewOpportunity, WriteResult
from connector.crm.dynamics.batch import (
    BatchOperation,
    BatchResponse,
    build_batch,
    is_multipart,
    parse_batch,
)
from connector.crm.dynamics.odata import is_guid
from connector.crm.dynamics.rows import STATE_LOST, STATE_WON, LookupTarget
from connector.crm.dynamics.transport import DataverseTransport, body_of, error_of, page_of
from connector.errors import CrmError, QuotaExhausted
from connector.model import CrmStatusUpdate

log = logging.getLogger(__name__)

#: Dataverse's code for a write to a closed (read-only) opportunity
CLOSED_ROW_CODE = "0x80040203"
_ENTITY_ID = re.compile(r"\(([0-9a-fA-F-]{36})\)\s*$")
_BIND_PATH = re.compile(r"^/[A-Za-z_]+\([0-9a-fA-F-]{36}\)$")
STATE_CHUNK = 50

T = TypeVar("T")


class DataverseWriter:
    """Status updates and creates for one environment's opportunities."""

    def __init__(
        self,
        transport: DataverseTransport,
        *,
        lookups: Mapping[str, LookupTarget],
        executor: Executor | None = None,
        batch_size: int = 20,
        batch_threshold: int = 2,
        batch_changesets: bool = False,
        guard_closed: bool = True,
    ) -> None:
        if not 1 <= batch_size <= 1000:
            raise ValueError("batch_size must be 1..1000 (Dataverse's $batch limit)")
        self.transport = transport
        self.lookups = lookups
        self._executor = executor
        self.batch_size = batch_size
        self.batch_threshold = batch_threshold
        self.batch_changesets = batch_changesets
        self.guard_closed = guard_closed
        self.quota_exhausted = False

    def _map(
        self, fn: Callable[[T], WriteResult | list[WriteResult]], items: Sequence[T]
    ) -> list[Any]:
        """``fn`` over ``items``, in parallel when an executor was given (the transport caps it)."""
        if self._executor is None or len(items) < 2:
            return [fn(item) for item in items]
        return list(self._executor.map(fn, items))

    def create_many(self, items: Sequence[NewOpportunity]) -> list[WriteResult]:
        """Create every item (in parallel); one result per item, in order."""
        return list(self._map(self.create, items))

    # -- status -----------------------------------------------------------------

    def write_status(self, updates: Sequence[CrmStatusUpdate]) -> list[WriteResult]:
        """PATCH each update with ``If-Match: *``; one result per update, in order."""
        results: dict[int, WriteResult] = {}
        todo: list[tuple[int, str, bytes]] = []
        for index, update in enumerate(updates):
            record = update.crm_id.lower()
            if not is_guid(record):
                results[index] = _failed(update.crm_id, "invalid_id", "not a Dataverse GUID")
                continue
            try:
                todo.append((index, record, self.payload(update.values)))
            except CrmError as exc:
                results[index] = _failed(record, exc.code, exc.message)
        if self.guard_closed and todo:
            try:
                states = self._states([record for _, record, _ in todo])
            except QuotaExhausted as exc:
                self.quota_exhausted = True
                results.update({index: _quota(record, exc) for index, record, _ in todo})
                todo = []
            else:
                todo = self._skip_unwritable(todo, states, results)
        if len(todo) >= self.batch_threshold:
            chunks = [todo[i : i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
            for chunk, chunk_results in zip(chunks, self._map(self._batch, chunks), strict=True):
                results.update(zip((i for i, _, _ in chunk), chunk_results, strict=True))
        else:
            for index, record, body in todo:
                results[index] = self._patch(record, body)
        return [results[i] for i in range(len(updates))]

    def _skip_unwritable(
        self,
        todo: list[tuple[int, str, bytes]],
        states: Mapping[str, int],
        results: dict[int, WriteResult],
    ) -> list[tuple[int, str, bytes]]:
        keep = []
        for index, record, body in todo:
            state = states.get(record)
            if state is None:
                results[index] = _failed(
                    record, "not_found", "the opportunity does not exist (deleted?); not written"
                )
            elif state in (STATE_WON, STATE_LOST):
                results[index] = _failed(
                    record,
                    "read_only_closed",
                    "the opportunity is closed (won/lost) and read-only; the connector "
                    "never reopens it, so its status fields were not written",
                )
            else:
                keep.append((index, record, body))
        return keep

    def _states(self, records: Sequence[str]) -> dict[str, int]:
        """statecode of each existing row among ``records``: one query per 50 ids, the
        queries in parallel when an executor was given."""
        chunks = [records[i : i + STATE_CHUNK] for i in range(0, len(records), STATE_CHUNK)]
        if self._executor is None or len(chunks) < 2:
            found = [self._chunk_states(chunk) for chunk in chunks]
        else:
            found = list(self._executor.map(self._chunk_states, chunks))
        return {record: state for part in found for record, state in part.items()}

    def _chunk_states(self, chunk: Sequence[str]) -> dict[str, int]:
        condition = " or ".join(f"opportunityid eq {r}" for r in chunk)
        what = "GET opportunities (statecode before writing)"
        response = self.transport.send(
            "GET",
            "opportunities",
            kind="read_state",
            what=what,
            params={"$select": "opportunityid,statecode", "$filter": condition},
        )
        if response.status_code != 200:
            raise error_of(response, what)
        return {
            str(row["opportunityid"]).lower(): int(row.get("statecode") or 0)
            for row in page_of(response, what).get("value", [])
        }

    def _patch(self, record: str, body: bytes) -> WriteResult:
        what = f"PATCH opportunity {record}"
        try:
            response = self.transport.send(
                "PATCH",
                f"opportunities({record})",
                kind="write",
                what=what,
                headers={"Content-Type": "application/json", "If-Match": "*"},
                content=body,
            )
        except QuotaExhausted as exc:
            self.quota_exhausted = True
            return _quota(record, exc)
        except CrmError as exc:
            return _failed(record, exc.code, exc.message)
        return _write_result(record, response.status_code, response, what)

    def _batch(self, chunk: Sequence[tuple[int, str, bytes]]) -> list[WriteResult]:
        """One ``$batch`` for a chunk; writes its answer does not settle are sent again.

        A write is settled by its own answer, found by ``Content-ID`` (or by position in
        a complete ``200`` answer without them). A change set that failed on one write
        was rolled back, and a batch that stopped at a failure (top-level ``400``) did not
        run what came after: those writes go in the next round, without the settled
        ones. When the answers cannot be tied to the writes, each is sent on its own
        (``If-Match: *`` makes writing a value twice harmless).
        """
        ops = {
            str(n): BatchOperation(
                content_id=str(n),
                method="PATCH",
                url=self.transport.url(f"opportunities({record})"),
                headers={"Content-Type": "application/json", "If-Match": "*"},
                body=body,
            )
            for n, (_, record, body) in enumerate(chunk, start=1)
        }
        record_of = {str(n): record for n, (_, record, _) in enumerate(chunk, start=1)}
        done: dict[str, WriteResult] = {}
        pending = list(ops)
        for _ in range(len(ops)):  # each round settles at least one operation
            if not pending:
                break
            try:
                status, answers = self._send_batch([ops[c] for c in pending])
            except QuotaExhausted as exc:
                self.quota_exhausted = True
                done.update({c: _quota(record_of[c], exc) for c in pending})
                break
            except CrmError as exc:
                done.update({c: _failed(record_of[c], exc.code, exc.message) for c in pending})
                break
            settled = self._settle(pending, status, answers, record_of)
            if settled is None:
                log.warning(
                    "dataverse $batch answer (%d) cannot be tied to its %d writes; "
                    "sending them one by one",
                    status,
                    len(pending),
                )
                done.update({c: self._single(record_of[c], ops[c]) for c in pending})
                break
            done.update(settled)
            remaining = [c for c in pending if c not in settled]
            if len(remaining) == len(pending):
                done.update(
                    {
                        c: _failed(
                            record_of[c],
                            "batch_unanswered",
                            "the $batch answer did not cover this write; it will be retried",
                        )
                        for c in remaining
                    }
                )
                break
            pending = remaining
        return [done[c] for c in ops]

    def _single(self, record: str, op: BatchOperation) -> WriteResult:
        return self._patch(record, op.body or b"{}")

    def _settle(
        self,
        pending: list[str],
        status: int,
        answers: list[BatchResponse],
        record_of: Mapping[str, str],
    ) -> dict[str, WriteResult] | None:
        """The writes ``answers`` settle, by Content-ID; None when they cannot be tied."""
        by_id = {a.content_id: a for a in answers if a.content_id in pending}
        if len(by_id) < len(answers):
            # Answers without our Content-IDs are in request order, one per request, only
            # in a complete 200 answer (continue-on-error); anything else is ambiguous.
            if by_id or status != 200 or len(answers) != len(pending):
                return None
            by_id = dict(zip(pending, answers, strict=True))
        failures = [c for c, a in by_id.items() if a.status >= 300]
        if self.batch_changesets and failures:
            # The change set was rolled back: only the failing writes are settled.
            return {c: self._answer(record_of[c], by_id[c]) for c in failures}
        return {c: self._answer(record_of[c], a) for c, a in by_id.items()}

    def _answer(self, record: str, answer: BatchResponse) -> WriteResult:
        response = httpx.Response(answer.status, headers=dict(answer.headers), content=answer.body)
        return _write_result(record, answer.status, response, f"PATCH opportunity {record}")

    def _send_batch(self, ops: Sequence[BatchOperation]) -> tuple[int, list[BatchResponse]]:
        """The top-level status and every answer of one ``$batch``.

        Dataverse answers ``200``, or ``400`` with a multipart body holding the failed
        request's answer when a batch stops at a failure (no continue-on-error);
        a ``400`` with a JSON error refused the batch as a whole.
        """
        what = f"$batch of {len(ops)} writes"
        content, content_type = build_batch(ops, changeset=self.batch_changesets)
        headers = {"Content-Type": content_type}
        if not self.batch_changesets:
            headers["Prefer"] = "odata.continue-on-error"
        response = self.transport.send(
            "POST", "$batch", kind="batch", what=what, headers=headers, content=content
        )
        multipart = is_multipart(response.content, response.headers.get("content-type", ""))
        if response.status_code not in (200, 400) or not multipart:
            raise error_of(response, what)
        try:
            answers = parse_batch(response.content, response.headers.get("content-type", ""))
        except ValueError as exc:
            raise CrmError(f"{what}: unreadable answer ({exc})", code="malformed_batch") from exc
        return response.status_code, answers

    # -- create -----------------------------------------------------------------

    def create(self, item: NewOpportunity) -> WriteResult:
        """POST one opportunity; the result's ``crm_id`` is the new row's id."""
        what = f"POST opportunity for referral {item.referral_id}"
        try:
            body = self.payload(item.values)
            response = self.transport.send(
                "POST",
                "opportunities",
                kind="create",
                what=what,
                params={"$select": "opportunityid"},
                headers={"Content-Type": "application/json", "Prefer": "return=representation"},
                content=body,
            )
        except QuotaExhausted as exc:
            self.quota_exhausted = True
            return _quota(None, exc)
        except CrmError as exc:
            return _failed(None, exc.code, exc.message)
        if response.status_code not in (200, 201, 204):
            error = error_of(response, what)
            return _failed(None, error.code, error.message)
        new_id = _created_id(response)
        if new_id is None:
            return _failed(None, "malformed_create", f"{what}: Dataverse did not return the new id")
        return WriteResult(crm_id=new_id, ok=True)

    # -- payload ----------------------------------------------------------------

    def payload(self, values: Mapping[str, Any]) -> bytes:
        """JSON for a write; lookups (``ownerid: <guid>``) become ``@odata.bind`` references."""
        body: dict[str, Any] = {}
        for key, value in values.items():
            name = key.removesuffix("@odata.bind")
            if name.startswith("_") and name.endswith("_value"):
                name = name[1:-6]
            target = self.lookups.get(name)
            if key.endswith("@odata.bind") or target is not None:
                bind_key, ref = self._bind(key, name, target, value)
                body[bind_key] = ref
            elif "." in key or "@" in key:
                raise CrmError(f"{key!r} is not a writable opportunity column", code="not_writable")
            else:
                body[key] = _json_value(value)
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @staticmethod
    def _bind(key: str, name: str, target: LookupTarget | None, value: Any) -> tuple[str, Any]:
        if value is None:
            return f"{target.bind if target else name}@odata.bind", None
        if target is not None and is_guid(value):
            return f"{target.bind}@odata.bind", f"/{target.entity_set}({str(value).lower()})"
        if isinstance(value, str) and _BIND_PATH.match(value):
            return f"{target.bind if target else name}@odata.bind", value
        raise CrmError(
            f"{key!r}: {value!r} is neither a GUID nor an /entityset(<guid>) reference",
            code="invalid_lookup",
        )


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


def _write_result(record: str, status: int, response: httpx.Response, what: str) -> WriteResult:
    if status < 300:
        return WriteResult(crm_id=record, ok=True)
    error = error_of(response, what)
    if status == 400 and error.code == CLOSED_ROW_CODE:
        return _failed(record, "read_only_closed", error.message)
    return _failed(record, error.code, error.message)


def _created_id(response: httpx.Response) -> str | None:
    if response.content.strip():
        try:
            body = body_of(response, "POST opportunity")
        except CrmError:
            body = None  # the OData-EntityId header still names the row
        found = body.get("opportunityid") if isinstance(body, dict) else None
        if is_guid(found):
            return str(found).lower()
    match = _ENTITY_ID.search(response.headers.get("OData-EntityId", ""))
    return match.group(1).lower() if match else None


def _failed(record: str | None, code: str, message: str) -> WriteResult:
    return WriteResult(crm_id=record, ok=False, error_code=code, message=message)


def _quota(record: str | None, exc: QuotaExhausted) -> WriteResult:
    return _failed(record, "quota_exhausted", exc.message)
