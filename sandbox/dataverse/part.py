"""The sandbox's Dynamics 365 / Dataverse Web API: ``create(ctx) -> DataversePart``.

Serves ``/api/data/v9.2/`` (tables, query options, change tracking, writes,
``$batch``, Win/Lose actions, option-set metadata) behind the shared token
endpoint (audience "dataverse") and Dataverse's service protection limits, and
an admin API under ``/_sandbox/dataverse/`` for tests to act as a CRM user.
docs/sandbox-dataverse.md describes both.

Modules of sandbox.dataverse: schema (tables), filter / query (query options),
store (rows), index (ordered rows of paged queries), writes (write rules), api
(request → response), batch, metadata, limits, seed.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.context import SandboxContext
from sandbox.dataverse import schema as s
from sandbox.dataverse import seed as dataverse_seed
from sandbox.dataverse.api import API_PREFIX, DataverseApi, DvRequest, DvResponse
from sandbox.dataverse.batch import run_batch
from sandbox.dataverse.errors import UNAUTHORIZED, DataverseError, error_response
from sandbox.dataverse.limits import ServiceProtection
from sandbox.dataverse.store import FIRST_VERSION, DataverseStore
from sandbox.dataverse.writes import check_value, is_guid
from sandbox.http import strict_json

ADMIN_PREFIX = "/_sandbox/dataverse"
_METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE"]


def _to_response(answer: DvResponse) -> Response:
    return Response(answer.body, status_code=answer.status, headers=answer.headers)


class DataversePart:
    """The imitated Dataverse environment: data, Web API routes, admin routes."""

    api = "dataverse"

    def __init__(self, ctx: SandboxContext) -> None:
        self.ctx = ctx
        self.store = DataverseStore(ctx.clock)
        self.protection = ServiceProtection(ctx.clock)
        self.web = DataverseApi(self.store, self.protection.limits)
        #: opportunity id → the defect the seed gave it (invalid for co-sell)
        self.defects: dict[str, str] = {}

    # --- the Part protocol ---------------------------------------------------------------------

    @property
    def routes(self) -> list[BaseRoute]:
        admin = ADMIN_PREFIX
        return [
            Route(API_PREFIX + "{path:path}", self._web_api, methods=_METHODS),
            Route(f"{admin}/opportunities", self._admin_opportunities, methods=["GET", "POST"]),
            Route(
                f"{admin}/opportunities/{{row_id}}",
                self._admin_opportunity,
                methods=["GET", "POST", "DELETE"],
            ),
            Route(f"{admin}/expire-delta-tokens", self._admin_expire, methods=["POST"]),
            Route(f"{admin}/change-tracking", self._admin_tracking, methods=["GET", "PUT"]),
            Route(f"{admin}/limits", self._admin_limits, methods=["GET", "PUT"]),
            Route(f"{admin}/defects", self._admin_defects, methods=["GET"]),
            Route(f"{admin}/reset", self._admin_reset, methods=["POST"]),
            # accounts, contacts, systemusers, connections, connectionroles
            Route(f"{admin}/rows/{{entity_set}}", self._admin_rows, methods=["GET", "POST"]),
            Route(
                f"{admin}/rows/{{entity_set}}/{{row_id}}",
                self._admin_row,
                methods=["GET", "POST", "DELETE"],
            ),
        ]

    def error_response(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> Response:
        return error_response(status, code, message, retry_after)

    def seed(self, n: int, seed: int) -> None:
        """Replace all data with ``n`` deterministic opportunities and their related rows."""
        with self.store.lock:
            self.store.clear()
            self.store.version = FIRST_VERSION  # a new environment: row versions start again
            self.defects = dataverse_seed.build(self.store, n, seed, self.ctx.clock.now())
            self.web.expire_delta_tokens()  # tokens of the old data mean nothing now

    def dump(self) -> dict[str, Any]:
        with self.store.lock:
            return {
                "store": self.store.dump(),
                "limits": dict(vars(self.protection.limits)),
                "tokens_invalid_upto": self.web.tokens_invalid_upto,
                "tracked_tables": sorted(self.web.tracked_tables),
                "defects": dict(self.defects),
            }

    def load(self, data: dict[str, Any]) -> None:
        with self.store.lock:
            self.store.load(data.get("store", {}))
            self.protection.configure(data.get("limits", {}))
            self.web.tokens_invalid_upto = data.get("tokens_invalid_upto")
            self.web.tracked_tables = set(data.get("tracked_tables", ["opportunity"]))
            self.defects = dict(data.get("defects", {}))

    def tick(self) -> None:
        self.protection.prune()

    # --- the Web API -------------------------------------------------------------------------

    async def _web_api(self, request: Request) -> Response:
        auth = request.headers.get("authorization")
        if not self.ctx.tokens.check(auth, "dataverse"):
            return error_response(
                401,
                UNAUTHORIZED,
                "The access token is missing, expired or not issued for Dataverse: "
                "get a new token for the environment's scope.",
            )
        token = str(auth)
        try:
            self.protection.admit(token)
        except DataverseError as err:
            return error_response(err.status, err.code, err.message, err.retry_after)
        self.protection.enter(token)
        try:
            delay = self.protection.limits.execution_ms
            if delay > 0:
                await asyncio.sleep(delay / 1000.0)
            req = DvRequest(
                request.method,
                request.path_params["path"],
                dict(parse_qsl(request.url.query, keep_blank_values=True)),
                {k.lower(): v for k, v in request.headers.items() if k.lower() != "prefer"}
                | {"prefer": ",".join(request.headers.getlist("prefer"))},
                await request.body(),
                f"{request.url.scheme}://{request.url.netloc}{API_PREFIX}",
            )
            if req.path == "$batch" and req.method == "POST":
                try:
                    answer = run_batch(self.web, req)
                except DataverseError as err:
                    answer = DvResponse.of_error(err)
            else:
                answer = self.web.handle(req)
        finally:
            self.protection.leave(token)
        return _to_response(answer)

    # --- the admin API -------------------------------------------------------------------------

    @staticmethod
    async def _json(request: Request) -> dict[str, Any]:
        body = await request.body()
        if not body.strip():
            return {}
        try:
            data = strict_json(body)
        except ValueError as exc:  # stored, it would break every later read
            raise DataverseError(400, "bad_request", f"the body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise DataverseError(400, "bad_request", "the body must be a JSON object")
        return data

    @staticmethod
    def _user_values(body: dict[str, Any], table: s.Table = s.OPPORTUNITY) -> dict[str, Any]:
        """Columns as a CRM user sets them: any column, lookups as ``_x_value`` GUIDs."""
        values: dict[str, Any] = {}
        for key, value in body.items():
            column = table.columns.get(key)
            if column is None or (not column.writable and key != table.primary_id):
                raise DataverseError(400, "bad_request", f"unknown or read-only column {key!r}")
            if column.kind == s.LOOKUP:
                if value is not None and not (isinstance(value, str) and is_guid(value)):
                    raise DataverseError(400, "bad_request", f"{key} must be a GUID or null")
                values[key] = value.lower() if isinstance(value, str) else None
            else:
                values[key] = check_value(table, column, value)
        return values

    async def _admin(self, request: Request, action: Any) -> Response:
        try:
            body = await self._json(request)
            with self.store.lock:
                return JSONResponse(action(body))
        except DataverseError as err:
            return JSONResponse({"error": err.message}, status_code=err.status)
        except (ValueError, TypeError) as err:
            return JSONResponse({"error": str(err)}, status_code=400)

    async def _admin_opportunities(self, request: Request) -> Response:
        if request.method == "GET":
            with self.store.lock:
                return JSONResponse({"value": self.store.all("opportunities")})

        def create(body: dict[str, Any]) -> dict[str, Any]:
            values = self._user_values(body)
            values.setdefault("opportunityid", dataverse_seed.new_id())
            values.setdefault("statecode", s.OPEN)
            values.setdefault("statuscode", 1)
            if self.store.get("opportunities", values["opportunityid"]) is not None:
                raise DataverseError(409, "conflict", "an opportunity with that id exists")
            return self.store.insert("opportunities", values)

        return await self._admin(request, create)

    async def _admin_opportunity(self, request: Request) -> Response:
        row_id = request.path_params["row_id"].lower()

        def act(body: dict[str, Any]) -> dict[str, Any]:
            row = self.store.get("opportunities", row_id)
            if row is None:
                raise DataverseError(404, "not_found", f"no opportunity {row_id}")
            if request.method == "GET":
                return row
            if request.method == "DELETE":
                self.store.delete("opportunities", row_id)
                return {"deleted": row_id}
            values = self._user_values(body)
            values.pop("opportunityid", None)
            return self.store.update("opportunities", row_id, values)

        return await self._admin(request, act)

    def _table(self, request: Request) -> s.Table:
        table = s.TABLES.get(request.path_params["entity_set"])
        if table is None or table is s.OPPORTUNITY:
            raise DataverseError(404, "not_found", "no such table (opportunities have their own)")
        return table

    async def _admin_rows(self, request: Request) -> Response:
        """Rows of another table (GET, filtered by ``?column=value``), or a new one (POST)."""

        def act(body: dict[str, Any]) -> Any:
            table = self._table(request)
            if request.method == "GET":
                wanted = dict(request.query_params)
                return {
                    "value": [
                        row
                        for row in self.store.all(table.entity_set)
                        if all(str(row.get(k)).lower() == v.lower() for k, v in wanted.items())
                    ]
                }
            values = self._user_values(body, table)
            values.setdefault(table.primary_id, dataverse_seed.new_id())
            if self.store.get(table.entity_set, values[table.primary_id]) is not None:
                raise DataverseError(
                    409, "conflict", f"a row with that id exists in {table.entity_set}"
                )
            return self.store.insert(table.entity_set, values)

        return await self._admin(request, act)

    async def _admin_row(self, request: Request) -> Response:
        def act(body: dict[str, Any]) -> Any:
            table = self._table(request)
            row_id = request.path_params["row_id"].lower()
            row = self.store.get(table.entity_set, row_id)
            if row is None:
                raise DataverseError(404, "not_found", f"no row {row_id} in {table.entity_set}")
            if request.method == "GET":
                return row
            if request.method == "DELETE":
                self.store.delete(table.entity_set, row_id)
                return {"deleted": row_id}
            values = self._user_values(body, table)
            values.pop(table.primary_id, None)
            return self.store.update(table.entity_set, row_id, values)

        return await self._admin(request, act)

    async def _admin_expire(self, request: Request) -> Response:
        self.web.expire_delta_tokens()
        return JSONResponse({"expired_upto_version": self.web.tokens_invalid_upto})

    async def _admin_tracking(self, request: Request) -> Response:
        """``{"opportunity": true}``: which tables have change tracking ("Track changes")."""

        def act(body: dict[str, Any]) -> dict[str, Any]:
            if request.method == "PUT":
                for name, enabled in body.items():
                    if name != s.OPPORTUNITY.logical_name or not isinstance(enabled, bool):
                        raise DataverseError(
                            400, "bad_request", "only opportunity can be tracked: true or false"
                        )
                    if enabled:
                        self.web.tracked_tables.add(name)
                    else:
                        self.web.tracked_tables.discard(name)
            return {t: t in self.web.tracked_tables for t in s.BY_LOGICAL_NAME}

        return await self._admin(request, act)

    async def _admin_limits(self, request: Request) -> Response:
        def act(body: dict[str, Any]) -> dict[str, Any]:
            if request.method == "PUT":
                self.protection.configure(body)
            return dict(vars(self.protection.limits))

        return await self._admin(request, act)

    async def _admin_defects(self, request: Request) -> Response:
        return JSONResponse(self.defects)

    async def _admin_reset(self, request: Request) -> Response:
        def act(body: dict[str, Any]) -> dict[str, Any]:
            self.protection.reset()
            self.web.tokens_invalid_upto = None
            self.web.tracked_tables = {s.OPPORTUNITY.logical_name}
            self.seed(int(body.get("opportunities", 0)), int(body.get("seed", self.ctx.seed)))
            return {"opportunities": len(self.store.rows["opportunities"])}

        return await self._admin(request, act)


def create(ctx: SandboxContext) -> DataversePart:
    """The Dataverse part of the sandbox app."""
    return DataversePart(ctx)
