"""The versioned REST resources of the imitated Salesforce: query, sObjects, composite, limits.

Answers follow Salesforce: error bodies are arrays ``[{"message", "errorCode",
"fields"}]``; collection writes answer one ``{"id", "success", "errors"}`` per
record, in order, with ``statusCode`` in each error (a record refused on its own has
no ``id``; one rolled back by ``allOrNone`` keeps it).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.http import strict_json
from sandbox.salesforce import soql, soql_eval
from sandbox.salesforce.schema import (
    PREFIXES,
    SCHEMA,
    ObjectSpec,
    make_id,
    normalize_id,
    parse_datetime,
)
from sandbox.salesforce.store import Record, RecordError, RequestError

if TYPE_CHECKING:
    from sandbox.salesforce.part import SalesforcePart

WRITABLE = frozenset({"Opportunity", "Account", "Contact", "OpportunityTeamMember"})
MAX_COLLECTION = 200
CURSOR_IDLE = timedelta(minutes=15)
MAX_CURSORS = 50
_ROLLED_BACK = RecordError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using "
    "AllOrNone header",
)
_BATCH = re.compile(r"batchSize\s*=\s*(\d+)", re.IGNORECASE)


def sf_error(status: int, code: str, message: str, fields: list[str] | None = None) -> Response:
    """Salesforce's error body: a JSON array of one error."""
    body: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        body["fields"] = fields
    return JSONResponse([body], status_code=status)


def _record_errors(status: int, errors: list[RecordError]) -> Response:
    return JSONResponse(
        [{"message": e.message, "errorCode": e.status_code, "fields": e.fields} for e in errors],
        status_code=status,
    )


# --- query cursors -----------------------------------------------------------


@dataclass
class Cursor:
    rows: list[Record]
    project: Callable[[Record], Record]
    batch: int
    version: str
    touched: datetime


class QueryCursors:
    """Open query locators: the matched rows are kept, so later pages are slices."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now
        self._open: OrderedDict[str, Cursor] = OrderedDict()
        self._count = 0

    def clear(self) -> None:
        self._open.clear()

    def open(self, cursor: Cursor) -> str:
        self._count += 1
        locator = make_id("01g", self._count)
        self._open[locator] = cursor
        while len(self._open) > MAX_CURSORS:
            self._open.popitem(last=False)
        return locator

    def get(self, locator: str) -> Cursor | None:
        cursor = self._open.get(locator)
        now = self._now()
        if cursor is None or now - cursor.touched > CURSOR_IDLE:
            self._open.pop(locator, None)
            return None
        cursor.touched = now
        self._open.move_to_end(locator)
        return cursor


def _page(part: SalesforcePart, cursor: Cursor, locator: str | None, offset: int) -> Response:
    rows = cursor.rows[offset : offset + cursor.batch]
    end = offset + len(rows)
    body: dict[str, Any] = {"totalSize": len(cursor.rows), "done": end >= len(cursor.rows)}
    if not body["done"]:
        locator = locator or part.cursors.open(cursor)
        body["nextRecordsUrl"] = f"/services/data/v{cursor.version}/query/{locator}-{end}"
    body["records"] = [cursor.project(r) for r in rows]
    return JSONResponse(body)


def _batch_size(header: str | None) -> int:
    m = _BATCH.search(header or "")
    return 2000 if m is None else max(200, min(2000, int(m.group(1))))


async def _query(part: SalesforcePart, request: Request, version: str, deleted: bool) -> Response:
    text = request.query_params.get("q")
    if not text:
        return sf_error(400, "MALFORMED_QUERY", "The 'q' parameter with a SOQL query is required")
    try:
        result = part.org.query(text, include_deleted=deleted)
        query = result.plan.query
        if query.is_count:
            return JSONResponse({"totalSize": len(result.rows), "done": True, "records": []})
        project = soql_eval.projector(result.plan.obj, query.fields, version, part.org.fetch)
    except soql.SoqlError as exc:
        return sf_error(400, exc.code, exc.message)
    batch = _batch_size(request.headers.get("sforce-query-options"))
    cursor = Cursor(result.rows, project, batch, version, part.ctx.clock.now())
    return _page(part, cursor, None, 0)


def _query_more(part: SalesforcePart, token: str) -> Response:
    locator, _, offset = token.rpartition("-")
    cursor = part.cursors.get(locator) if offset.isdigit() else None
    if cursor is None or int(offset) > len(cursor.rows):
        return sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
    return _page(part, cursor, locator, int(offset))


# --- sObjects ------------------------------------------------------------------


def _object(name: str) -> ObjectSpec | None:
    return SCHEMA.get(name.lower())


def full_record(part: SalesforcePart, obj: ObjectSpec, record: Record, version: str) -> Record:
    row: Record = {
        "attributes": {
            "type": obj.name,
            "url": f"/services/data/v{version}/sobjects/{obj.name}/{record['Id']}",
        }
    }
    for spec in obj.fields.values():
        row[spec.name] = record.get(spec.name)
    return row


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return strict_json(raw or b"null")
    except ValueError as exc:
        raise RequestError(
            "JSON_PARSER_ERROR", f"The request body is not valid JSON: {exc}"
        ) from None


async def _sobject(
    part: SalesforcePart, request: Request, version: str, obj: ObjectSpec, raw_id: str
) -> Response:
    record_id = normalize_id(raw_id)
    org = part.org
    stored = org.fetch(obj.name, record_id) if record_id else None
    if stored is None:
        return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
    if stored.get("IsDeleted"):
        return sf_error(404, "ENTITY_IS_DELETED", f"entity is deleted: {stored['Id']}")
    method = request.method
    if method == "GET":
        row = full_record(part, obj, stored, version)
        wanted = request.query_params.get("fields")
        if wanted:
            names = {f.strip().lower() for f in wanted.split(",")}
            row = {k: v for k, v in row.items() if k == "attributes" or k.lower() in names}
        return JSONResponse(row)
    if obj.name not in WRITABLE:
        return sf_error(
            405, "METHOD_NOT_ALLOWED", f"{obj.name} records are read-only in the sandbox"
        )
    if method == "DELETE":
        with org.lock:
            error = org.soft_delete(obj, stored["Id"])
        return Response(status_code=204) if error is None else _record_errors(400, [error])
    if method != "PATCH":
        return sf_error(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed")
    body = await _body(request)
    if not isinstance(body, dict):
        raise RequestError("JSON_PARSER_ERROR", "The request body must be a JSON object")
    with org.lock:
        result = org.prepare(obj, stored["Id"], body)
        if isinstance(result, list):
            return _record_errors(400, result)
        org.commit(obj, result)
    return Response(status_code=204)


async def _create(part: SalesforcePart, request: Request, obj: ObjectSpec) -> Response:
    if obj.name not in WRITABLE:
        return sf_error(
            400, "INVALID_TYPE_FOR_OPERATION", f"entity type {obj.name} does not support create"
        )
    body = await _body(request)
    if not isinstance(body, dict):
        raise RequestError("JSON_PARSER_ERROR", "The request body must be a JSON object")
    with part.org.lock:
        result = part.org.prepare(obj, None, body)
        if isinstance(result, list):
            return _record_errors(400, result)
        part.org.commit(obj, result)
    return JSONResponse({"id": result["Id"], "success": True, "errors": []}, status_code=201)


def describe(part: SalesforcePart, obj: ObjectSpec) -> Response:
    fields = []
    for spec in obj.fields.values():
        entry: dict[str, Any] = {
            "name": spec.name,
            "type": spec.type,
            "updateable": spec.updateable and obj.name in WRITABLE,
            "createable": spec.updateable and obj.name in WRITABLE,
            "nillable": spec.name not in obj.required and spec.type != "boolean",
            "filterable": spec.filterable,
            "length": spec.length if spec.type not in ("boolean", "date", "datetime") else 0,
            "referenceTo": [spec.reference_to] if spec.reference_to else [],
            "relationshipName": spec.relationship_name,
        }
        values = spec.picklist
        if spec.name == "StageName":
            values = tuple(s["MasterLabel"] for s in part.org.records["OpportunityStage"].values())
        if values is not None:
            entry["picklistValues"] = [{"value": v, "label": v, "active": True} for v in values]
            entry["restrictedPicklist"] = True
        fields.append(entry)
    return JSONResponse(
        {
            "name": obj.name,
            "keyPrefix": obj.key_prefix,
            "updateable": obj.name in WRITABLE,
            "fields": fields,
        }
    )


def _deleted(part: SalesforcePart, request: Request, obj: ObjectSpec) -> Response:
    start = parse_datetime(request.query_params.get("start", ""))
    end = parse_datetime(request.query_params.get("end", ""))
    if start is None or end is None:
        return sf_error(400, "MALFORMED_QUERY", "start and end must be ISO datetimes")
    earliest = part.ctx.clock.now() - timedelta(days=15)
    if start < earliest:
        return sf_error(
            400, "INVALID_REPLICATION_DATE", "start date cannot be more than 15 days ago"
        )
    rows = [
        {"id": r["Id"], "deletedDate": r["SystemModstamp"]}
        for r in part.org.records[obj.name].values()
        if r.get("IsDeleted") and start <= (parse_datetime(r["SystemModstamp"]) or start) <= end
    ]
    return JSONResponse(
        {
            "deletedRecords": rows,
            "earliestDateAvailable": earliest.isoformat(),
            "latestDateCovered": end.isoformat(),
        }
    )


# --- composite/sobjects ------------------------------------------------------


async def _collection(part: SalesforcePart, request: Request) -> Response:
    method = request.method
    if method == "DELETE":
        ids = [i for i in request.query_params.get("ids", "").split(",") if i]
        all_or_none = request.query_params.get("allOrNone", "false").lower() == "true"
        items: list[Any] = [{"id": i} for i in ids]
    else:
        body = await _body(request)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise RequestError("JSON_PARSER_ERROR", "The body needs a 'records' array")
        items = body["records"]
        all_or_none = bool(body.get("allOrNone", False))
    if len(items) > MAX_COLLECTION:
        return sf_error(
            400,
            "EXCEEDED_ID_LIMIT",
            f"record limit reached: {len(items)} records sent, at most {MAX_COLLECTION} per call",
        )
    org = part.org
    with org.lock:
        prepared: list[tuple[ObjectSpec | None, str | None, Record | list[RecordError]]] = []
        seen: set[str] = set()
        for item in items:
            prepared.append(_prepare_item(part, method, item, seen))
        failed = any(isinstance(p, list) for _, _, p in prepared)
        results = []
        for obj, given_id, outcome in prepared:
            if isinstance(outcome, list):
                # a record refused on its own has no id in its result (Salesforce's published
                # example; a SaveResult's id is set only when the record was saved)
                results.append({"success": False, "errors": [e.as_json() for e in outcome]})
            elif failed and all_or_none:
                results.append(
                    {"id": given_id, "success": False, "errors": [_ROLLED_BACK.as_json()]}
                )
            else:
                assert obj is not None
                if method == "DELETE":
                    error = org.soft_delete(obj, outcome["Id"])
                    assert error is None
                else:
                    org.commit(obj, outcome)
                results.append({"id": outcome["Id"], "success": True, "errors": []})
    return JSONResponse(results)


def _prepare_item(
    part: SalesforcePart, method: str, item: Any, seen: set[str]
) -> tuple[ObjectSpec | None, str | None, Record | list[RecordError]]:
    if not isinstance(item, dict):
        raise RequestError("JSON_PARSER_ERROR", "every record must be a JSON object")
    values = {k: v for k, v in item.items() if k.lower() != "id"}
    raw_id = next((str(v) for k, v in item.items() if k.lower() == "id" and v is not None), None)
    record_id = normalize_id(raw_id) if raw_id else None
    obj: ObjectSpec | None = None
    if method == "DELETE" or method == "PATCH":
        if raw_id is None:
            return (
                None,
                None,
                [RecordError("MISSING_ARGUMENT", "Id not specified in an update call")],
            )
        obj = PREFIXES.get(record_id[:3]) if record_id else None
        if record_id is None or obj is None:
            return None, raw_id, [RecordError("MALFORMED_ID", f"malformed id {raw_id}", ["Id"])]
        if record_id in seen:
            return (
                obj,
                record_id,
                [RecordError("DUPLICATE_VALUE", f"duplicate id in list: {record_id}", ["Id"])],
            )
        seen.add(record_id)
        if method == "DELETE":
            stored = part.org.fetch(obj.name, record_id)
            if stored is None:
                return (
                    obj,
                    record_id,
                    [
                        RecordError(
                            "INVALID_CROSS_REFERENCE_KEY",
                            f"invalid cross reference id: {record_id}",
                        )
                    ],
                )
            if stored.get("IsDeleted"):
                return (
                    obj,
                    record_id,
                    [RecordError("ENTITY_IS_DELETED", f"entity is deleted: {record_id}")],
                )
            return obj, record_id, stored
    elif raw_id is not None:
        return (
            None,
            raw_id,
            [RecordError("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])],
        )
    attributes = item.get("attributes")
    type_name = attributes.get("type") if isinstance(attributes, dict) else None
    declared = _object(str(type_name)) if type_name else None
    if declared is None:
        return None, record_id, [RecordError("INVALID_TYPE", "Must send a concrete entity type.")]
    if method == "PATCH" and obj is not declared:
        return (
            declared,
            record_id,
            [RecordError("MALFORMED_ID", f"malformed id {raw_id} for {declared.name}", ["Id"])],
        )
    if declared.name not in WRITABLE:
        return (
            declared,
            record_id,
            [
                RecordError(
                    "INVALID_TYPE_FOR_OPERATION",
                    f"entity type {declared.name} does not support this operation",
                )
            ],
        )
    return declared, record_id, part.org.prepare(declared, record_id, values)


# --- dispatch ----------------------------------------------------------------


async def handle(part: SalesforcePart, request: Request, version: str, path: str) -> Response:
    """Answer ``/services/data/v{version}/{path}``."""
    parts = [p for p in path.split("/") if p]
    method = request.method
    try:
        return await _dispatch(part, request, version, parts, method)
    except RequestError as exc:
        return sf_error(400, exc.code, exc.message)


async def _dispatch(
    part: SalesforcePart, request: Request, version: str, parts: list[str], method: str
) -> Response:
    head = parts[0] if parts else ""
    if not parts and method == "GET":
        resources = ("query", "queryAll", "sobjects", "composite", "limits")
        return JSONResponse({r: f"/services/data/v{version}/{r}" for r in resources})
    if head in ("query", "queryAll") and method == "GET":
        if len(parts) == 1:
            return await _query(part, request, version, deleted=head == "queryAll")
        if len(parts) == 2:
            return _query_more(part, parts[1])
    if head == "limits" and len(parts) == 1 and method == "GET":
        remaining = max(0, part.limit_max - part.limit_used)
        return JSONResponse({"DailyApiRequests": {"Max": part.limit_max, "Remaining": remaining}})
    if parts == ["composite", "sobjects"] and method in ("POST", "PATCH", "DELETE"):
        return await _collection(part, request)
    if head == "sobjects":
        if len(parts) == 1 and method == "GET":
            return JSONResponse(
                {"sobjects": [{"name": o.name, "keyPrefix": o.key_prefix} for o in SCHEMA.values()]}
            )
        obj = _object(parts[1]) if len(parts) > 1 else None
        if obj is not None:
            if len(parts) == 2 and method == "POST":
                return await _create(part, request, obj)
            if len(parts) == 3 and parts[2] == "describe" and method == "GET":
                return describe(part, obj)
            if len(parts) == 3 and parts[2] == "deleted" and method == "GET":
                return _deleted(part, request, obj)
            if len(parts) == 3:
                return await _sobject(part, request, version, obj, parts[2])
    return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
