"""The Dataverse Web API of the sandbox, as plain request → response functions.

Kept apart from Starlette so that ``$batch`` can run the operations it carries
through the very same code. Paths are relative to ``/api/data/v9.2/``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from sandbox.dataverse import metadata
from sandbox.dataverse import schema as s
from sandbox.dataverse.errors import (
    BAD_QUERY,
    DELTA_TOKEN_EXPIRED,
    JSON_TYPE,
    ODATA_HEADERS,
    DataverseError,
)
from sandbox.dataverse.index import QueryIndexes
from sandbox.dataverse.limits import Limits
from sandbox.dataverse.query import (
    MAX_PAGE_SIZE,
    Annotations,
    Query,
    decode_cookie,
    encode_cookie,
    etag,
    is_tracking_cookie,
    key_from_json,
    parse_prefer,
    parse_query,
    shape,
    sort_key_function,
)
from sandbox.dataverse.store import DataverseStore
from sandbox.dataverse.writes import Writer, is_guid, not_found
from sandbox.http import strict_json

Row = dict[str, Any]
API_PREFIX = "/api/data/v9.2/"
_ENTITY = re.compile(r"^(?P<set>[a-z]+)(?:\((?P<id>[^)]*)\))?$")
_DELTA_TOKEN = re.compile(r"^(\d+)!(\d{2})/(\d{2})/(\d{4}) (\d{2}):(\d{2}):(\d{2})$")
_TRACKING_REFUSED = ("$filter", "$orderby", "$top", "$expand")


@dataclass
class DvRequest:
    """One Web API request: ``path`` is relative to ``/api/data/v9.2/``."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    base: str  # absolute ``https://host:port/api/data/v9.2/``

    def json(self) -> Any:
        if not self.body.strip():
            return {}
        try:
            return strict_json(self.body)
        except ValueError as exc:
            raise DataverseError(
                400, BAD_QUERY, f"The request body is not valid JSON: {exc}."
            ) from None


@dataclass
class DvResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def of_json(cls, status: int, data: Any, headers: dict[str, str] | None = None) -> DvResponse:
        all_headers = {**ODATA_HEADERS, "Content-Type": JSON_TYPE, **(headers or {})}
        return cls(status, all_headers, json.dumps(data, ensure_ascii=False).encode("utf-8"))

    @classmethod
    def of_error(cls, err: DataverseError) -> DvResponse:
        return cls.of_json(err.status, err.body(), err.headers())


def delta_token(version: int, at: datetime) -> str:
    """Dataverse's token shape: ``<rowversion>!<MM/dd/yyyy HH:mm:ss>`` (UTC)."""
    return f"{version}!{at.strftime('%m/%d/%Y %H:%M:%S')}"


class DataverseApi:
    """Serves the tables of ``store``; ``limits`` gives the delta-token age."""

    def __init__(self, store: DataverseStore, limits: Limits) -> None:
        self.store = store
        self.limits = limits
        self.writer = Writer(store)
        self.indexes = QueryIndexes(store)
        #: delta tokens for this row version or older are refused (admin "expire")
        self.tokens_invalid_upto: int | None = None
        #: logical names of the tables with change tracking on ("Track changes")
        self.tracked_tables: set[str] = {s.OPPORTUNITY.logical_name}

    def expire_delta_tokens(self) -> None:
        """Invalidate every delta token issued so far; later ones stay valid."""
        with self.store.lock:
            self.tokens_invalid_upto = self.store.version
            self.store.version += 1  # so that a token issued next is distinguishable

    def handle(self, req: DvRequest) -> DvResponse:
        """Answer one request; every error becomes Dataverse's error shape."""
        try:
            with self.store.lock:
                return self._dispatch(req)
        except DataverseError as err:
            return DvResponse.of_error(err)

    def _dispatch(self, req: DvRequest) -> DvResponse:
        path, method = req.path.strip("/"), req.method
        if metadata.is_metadata_path(path):
            if method != "GET":
                raise DataverseError(405, BAD_QUERY, "Metadata is read-only in the sandbox.")
            body = metadata.answer(path, req.params, req.base, self.tracked_tables)
            return DvResponse.of_json(200, body)
        if path in ("WinOpportunity", "LoseOpportunity") and method == "POST":
            self.writer.close(req.json(), won=path == "WinOpportunity")
            return DvResponse(204, dict(ODATA_HEADERS))
        match = _ENTITY.match(path)
        table = s.TABLES.get(match.group("set")) if match else None
        if match is None or table is None:
            raise DataverseError(
                404, BAD_QUERY, f"Resource not found for the segment '{path.split('/')[0]}'."
            )
        row_id = match.group("id")
        if row_id is None:
            if method == "GET":
                return self._collection(table, req)
            if method == "POST":
                row = self.writer.create(table, req.json())
                return self._written(table, row, req, 201)
        else:
            if not is_guid(row_id):
                raise DataverseError(400, BAD_QUERY, f"'{row_id}' is not a valid record key.")
            if method == "GET":
                return self._single(table, row_id, req)
            if method == "PATCH":
                row, created = self.writer.patch(
                    table,
                    row_id,
                    req.json(),
                    req.headers.get("if-match"),
                    req.headers.get("if-none-match"),
                )
                return self._written(table, row, req, 201 if created else 200)
            if method == "DELETE":
                self.writer.delete(table, row_id)
                return DvResponse(204, dict(ODATA_HEADERS))
        raise DataverseError(405, BAD_QUERY, f"{method} is not supported on {path}.")

    # --- single rows and writes ---------------------------------------------------------------

    def _resolve(self, entity_set: str, row_id: str | None) -> Row | None:
        return self.store.get(entity_set, row_id)

    def _context(self, req: DvRequest, table: s.Table, query: Query, suffix: str = "") -> str:
        parts = list(query.select or ())
        parts += [f"{e.nav}({','.join(e.select or ())})" for e in query.expand]
        cols = f"({','.join(parts)})" if parts else ""
        return f"{req.base}$metadata#{table.entity_set}{cols}{suffix}"

    def _single(self, table: s.Table, row_id: str, req: DvRequest) -> DvResponse:
        query = parse_query(
            {k: v for k, v in req.params.items() if k in ("$select", "$expand")}, table
        )
        row = self.store.get(table.entity_set, row_id)
        if row is None:
            raise not_found(table, row_id)
        if req.headers.get("if-none-match", "").strip() == etag(row):
            return DvResponse(304, dict(ODATA_HEADERS))
        annotations, applied = self._annotations(req)
        body = {
            "@odata.context": self._context(req, table, query, "/$entity"),
            **shape(table, row, query.select, annotations, self._resolve, query.expand),
        }
        return DvResponse.of_json(200, body, applied)

    def _written(self, table: s.Table, row: Row, req: DvRequest, status: int) -> DvResponse:
        """204 with OData-EntityId, or the row itself with ``Prefer: return=representation``."""
        url = f"{req.base}{table.entity_set}({row[table.primary_id]})"
        prefs = parse_prefer([req.headers.get("prefer", "")])
        headers = {**ODATA_HEADERS, "OData-EntityId": url, "ETag": etag(row)}
        if prefs.get("return") != "representation":
            return DvResponse(204, headers)
        query = parse_query({k: v for k, v in req.params.items() if k == "$select"}, table)
        annotations, applied = self._annotations(req)
        body = {
            "@odata.context": self._context(req, table, query, "/$entity"),
            **shape(table, row, query.select, annotations, self._resolve),
        }
        headers.update(applied)
        headers["Preference-Applied"] = ",".join(
            p for p in ("return=representation", applied.get("Preference-Applied")) if p
        )
        return DvResponse.of_json(status, body, headers)

    # --- collections ---------------------------------------------------------------------------

    @staticmethod
    def _annotations(req: DvRequest) -> tuple[Annotations, dict[str, str]]:
        prefs = parse_prefer([req.headers.get("prefer", "")])
        value = prefs.get("odata.include-annotations")
        if not value:
            return Annotations(), {}
        return Annotations.from_preference(value), {
            "Preference-Applied": f'odata.include-annotations="{value}"'
        }

    def _collection(self, table: s.Table, req: DvRequest) -> DvResponse:
        prefs = parse_prefer([req.headers.get("prefer", "")])
        applied: list[str] = []
        size = MAX_PAGE_SIZE
        if "odata.maxpagesize" in prefs:
            try:
                size = max(1, min(int(prefs["odata.maxpagesize"]), MAX_PAGE_SIZE))
                applied.append(f"odata.maxpagesize={size}")
            except ValueError:
                pass
        annotations, annotation_header = self._annotations(req)
        if annotation_header:
            applied.append(annotation_header["Preference-Applied"])
        tracking = (
            "odata.track-changes" in prefs
            or "$deltatoken" in req.params
            or is_tracking_cookie(req.params.get("$skiptoken", ""))
        )
        if tracking:
            applied.append("odata.track-changes")
            body = self._tracked(table, req, size, annotations)
        else:
            body = self._page(table, req, size, annotations)
        headers = {"Preference-Applied": ",".join(applied)} if applied else {}
        return DvResponse.of_json(200, body, headers)

    def _link(self, req: DvRequest, table: s.Table, options: dict[str, str]) -> str:
        query = urlencode(options, quote_via=quote, safe="$,()'")
        return f"{req.base}{table.entity_set}?{query}"

    def _page(self, table: s.Table, req: DvRequest, size: int, notes: Annotations) -> Row:
        query = parse_query(req.params, table)
        sort = query.sort
        page_number = 1
        last = None
        if "$skiptoken" in req.params:
            state, page_number = decode_cookie(req.params["$skiptoken"])
            try:
                last = key_from_json(state["last"])
            except (KeyError, TypeError):
                raise DataverseError(
                    400, BAD_QUERY, "The $skiptoken does not fit this query."
                ) from None
            if len(last) != len(sort):
                raise DataverseError(400, BAD_QUERY, "The $skiptoken does not fit this query.")
        limit = query.top if query.top is not None else size
        page, more = self.indexes.page(table, query, last, limit)
        more = more and query.top is None
        body: Row = {
            "@odata.context": self._context(req, table, query),
            "value": [
                shape(table, r, query.select, notes, self._resolve, query.expand) for r in page
            ],
        }
        if more:
            last_key = sort_key_function(sort, table)(page[-1])
            cookie = encode_cookie({"last": last_key}, page_number + 1)
            options = {k: v for k, v in query.raw.items() if k != "$skiptoken"}
            body["@odata.nextLink"] = self._link(req, table, {**options, "$skiptoken": cookie})
        return body

    # --- change tracking -----------------------------------------------------------------------

    def _since(self, token: str) -> int:
        """The row version a delta token stands for; 400 when too old or invalidated."""
        match = _DELTA_TOKEN.match(token)
        if match is None:
            raise DataverseError(400, BAD_QUERY, "The $deltatoken is not valid.")
        month, day, year, hour, minute, second = (int(g) for g in match.groups()[1:])
        issued = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        version = int(match.group(1))
        age = self.store.clock.now() - issued
        too_old = age > timedelta(days=self.limits.delta_token_max_age_days)
        revoked = self.tokens_invalid_upto is not None and version <= self.tokens_invalid_upto
        if too_old or revoked:
            raise DataverseError(
                400,
                DELTA_TOKEN_EXPIRED,
                f"The delta token {token} has expired or is no longer valid "
                f"(tokens last {self.limits.delta_token_max_age_days:g} days): "
                "drop it and start a full sync with Prefer: odata.track-changes.",
            )
        return version

    def _tracked(self, table: s.Table, req: DvRequest, size: int, notes: Annotations) -> Row:
        if table is not s.OPPORTUNITY or table.logical_name not in self.tracked_tables:
            raise DataverseError(
                400,
                BAD_QUERY,
                f"Change tracking is not enabled for the {table.logical_name} table.",
            )
        refused = [k for k in _TRACKING_REFUSED if k in req.params]
        if refused:
            raise DataverseError(
                400,
                BAD_QUERY,
                f"{', '.join(refused)} cannot be used with change tracking "
                "(Prefer: odata.track-changes or $deltatoken).",
            )
        query = parse_query({k: v for k, v in req.params.items() if k == "$select"}, table)
        if "$skiptoken" in req.params:
            state, page_number = decode_cookie(req.params["$skiptoken"])
            since, snapshot, issued = state.get("since"), int(state["snapshot"]), state["issued"]
            after = str(state.get("after", ""))
        else:
            since = self._since(req.params["$deltatoken"]) if "$deltatoken" in req.params else None
            snapshot, page_number, after = self.store.version, 1, ""
            issued = self.store.clock.now().isoformat()
        page, more = self.indexes.changes(table, since, after, size)
        deleted_context = f"{req.base}$metadata#{table.entity_set}/$deletedEntity"
        body: Row = {
            "@odata.context": self._context(req, table, query, "/$delta" if since else ""),
            "value": [
                {"@odata.context": deleted_context, "id": row_id, "reason": "deleted"}
                if row is None
                else shape(table, row, query.select, notes, self._resolve)
                for row_id, row in page
            ],
        }
        select = {"$select": req.params["$select"]} if "$select" in req.params else {}
        if more:
            state = {"since": since, "snapshot": snapshot, "issued": issued, "after": page[-1][0]}
            cookie = encode_cookie(state, page_number + 1, tracking=True)
            body["@odata.nextLink"] = self._link(req, table, {**select, "$skiptoken": cookie})
        else:
            token = delta_token(snapshot, datetime.fromisoformat(issued))
            body["@odata.deltaLink"] = self._link(req, table, {**select, "$deltatoken": token})
        return body
