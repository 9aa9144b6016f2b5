"""The admin API of the imitated Salesforce org, under ``/_sandbox/salesforce/``.

For tests and demos, it acts as a user in the org (or as the org's admin)::

    GET  opportunities[?Field=value&deleted=include&limit=N]   raw records (all fields)
    GET  opportunities/{id}                      one raw record, deleted or not
    POST opportunities                           create as a user ({"Name": …})
    POST opportunities/{id}                      edit as a user: bumps SystemModstamp;
                                                 system fields (SystemModstamp, IsDeleted…)
                                                 may be set explicitly to stage a late commit
    DELETE opportunities/{id}[?purge=true]       soft delete (or purge: gone for good)
    (the same for accounts, contacts, opportunity-team-members; users are read)
    GET|POST stages                              list / add an OpportunityStage
    GET|PUT validation-rules                     {"rules": [{"field", "equals", "message"}
                                                 | {"ids": [...], "message"}]}
    GET|PUT limits                               {"max": N, "used": N}
    GET  defects                                 seeded co-sell defects by opportunity id
    POST reset                                   {"opportunities"?, "seed"?}: re-seed

Admin writes skip validation rules. Errors: ``{"error": …}`` with 400 or 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.http import strict_json
from sandbox.salesforce.schema import SCHEMA, normalize_id
from sandbox.salesforce.store import RequestError, ValidationRule

if TYPE_CHECKING:
    from sandbox.salesforce.part import SalesforcePart

PREFIX = "/_sandbox/salesforce"
COLLECTIONS = {
    "opportunities": "Opportunity",
    "accounts": "Account",
    "contacts": "Contact",
    "opportunity-team-members": "OpportunityTeamMember",
    "users": "User",
}


def _error(message: str, status: int = 400, **extra: Any) -> Response:
    return JSONResponse({"error": message, **extra}, status_code=status)


async def _json(request: Request) -> Any:
    raw = await request.body()
    return strict_json(raw) if raw.strip() else {}


def raw_record(obj_name: str, record: dict[str, Any]) -> dict[str, Any]:
    """Every field of a stored record, nulls included."""
    return {spec.name: record.get(spec.name) for spec in SCHEMA[obj_name.lower()].fields.values()}


def routes(part: SalesforcePart) -> list[BaseRoute]:
    org = part.org

    def collection(request: Request) -> str | None:
        return COLLECTIONS.get(request.path_params["collection"])

    async def records(request: Request) -> Response:
        obj_name = collection(request)
        if obj_name is None:
            return _error(
                f"unknown collection: use one of {', '.join(COLLECTIONS)}",
                404,
            )
        obj = SCHEMA[obj_name.lower()]
        if request.method == "POST":
            return await write(obj_name, None, request)
        params = dict(request.query_params)
        include_deleted = params.pop("deleted", "") == "include"
        limit = int(params.pop("limit", "0") or 0)
        filters = {}
        for name, wanted in params.items():
            spec = obj.field(name)
            if spec is None:
                return _error(f"no field {name!r} on {obj_name}")
            filters[spec.name] = wanted.lower()
        rows = []
        with org.lock:
            for record in org.records[obj_name].values():
                if record.get("IsDeleted") and not include_deleted:
                    continue
                if all(_text(record.get(f)) == w for f, w in filters.items()):
                    rows.append(raw_record(obj_name, record))
                    if limit and len(rows) >= limit:
                        break
        return JSONResponse({"totalSize": len(rows), "records": rows})

    async def one(request: Request) -> Response:
        obj_name = collection(request)
        record_id = normalize_id(request.path_params["id"])
        if obj_name is None or record_id is None:
            return _error("unknown collection or malformed id", 404)
        record = org.fetch(obj_name, record_id)
        if record is None:
            return _error(f"no {obj_name} with id {record_id}", 404)
        if request.method == "GET":
            return JSONResponse(raw_record(obj_name, record))
        if request.method == "DELETE":
            with org.lock:
                if request.query_params.get("purge") == "true":
                    org.purge(SCHEMA[obj_name.lower()], record_id)
                else:
                    org.soft_delete(SCHEMA[obj_name.lower()], record_id)
            return JSONResponse({"deleted": record_id})
        return await write(obj_name, record_id, request)

    async def write(obj_name: str, record_id: str | None, request: Request) -> Response:
        try:
            values = await _json(request)
        except ValueError as exc:  # stored, it would break every later read
            return _error(f"the body is not valid JSON: {exc}")
        return store(obj_name, record_id, values)

    def store(obj_name: str, record_id: str | None, values: Any) -> Response:
        if not isinstance(values, dict):
            return _error("the body must be a JSON object of field values")
        obj = SCHEMA[obj_name.lower()]
        with org.lock:
            try:
                result = org.prepare(obj, record_id, values, admin=True)
            except RequestError as exc:
                return _error(exc.message)
            if isinstance(result, list):
                return _error("the write was refused", errors=[e.as_json() for e in result])
            org.commit(obj, result)
        return JSONResponse(raw_record(obj_name, result), status_code=200 if record_id else 201)

    async def stages(request: Request) -> Response:
        if request.method == "POST":
            body = await _json(request)
            label = body.get("MasterLabel") or body.get("ApiName")
            if not label:
                return _error("a stage needs a MasterLabel")
            existing = org.records["OpportunityStage"].values()
            values = {
                "MasterLabel": label,
                "ApiName": body.get("ApiName", label),
                "IsActive": body.get("IsActive", True),
                "SortOrder": body.get(
                    "SortOrder", 1 + max((s["SortOrder"] for s in existing), default=0)
                ),
                "IsClosed": body.get("IsClosed", False),
                "IsWon": body.get("IsWon", False),
                "DefaultProbability": body.get("DefaultProbability", 0),
                "ForecastCategoryName": body.get("ForecastCategoryName", "Pipeline"),
            }
            return store("OpportunityStage", None, values)
        rows = [raw_record("OpportunityStage", s) for s in org.records["OpportunityStage"].values()]
        return JSONResponse({"records": rows})

    async def validation_rules(request: Request) -> Response:
        if request.method == "PUT":
            body = await _json(request)
            items = body.get("rules", []) if isinstance(body, dict) else body
            try:
                org.rules = [ValidationRule.from_json(r) for r in items]
            except (ValueError, TypeError, AttributeError) as exc:
                return _error(f"bad validation rule: {exc}")
        return JSONResponse({"rules": [r.as_json() for r in org.rules]})

    async def limits(request: Request) -> Response:
        if request.method == "PUT":
            body = await _json(request)
            max_requests, used = body.get("max"), body.get("used")
            part.set_limits(
                None if max_requests is None else int(max_requests),
                None if used is None else int(used),
            )
        return JSONResponse({"max": part.limit_max, "used": part.limit_used})

    async def defects(request: Request) -> Response:
        return JSONResponse({"defects": part.defects})

    async def reset(request: Request) -> Response:
        body = await _json(request)
        n = int(body.get("opportunities", part.last_seed[0]))
        seed = int(body.get("seed", part.last_seed[1]))
        part.seed(n, seed)
        org.rules = []
        part.set_limits(used=0)
        return JSONResponse({"seeded": n, "seed": seed})

    return [
        Route(f"{PREFIX}/stages", stages, methods=["GET", "POST"]),
        Route(f"{PREFIX}/validation-rules", validation_rules, methods=["GET", "PUT"]),
        Route(f"{PREFIX}/limits", limits, methods=["GET", "PUT"]),
        Route(f"{PREFIX}/defects", defects, methods=["GET"]),
        Route(f"{PREFIX}/reset", reset, methods=["POST"]),
        Route(f"{PREFIX}/{{collection}}", records, methods=["GET", "POST"]),
        Route(f"{PREFIX}/{{collection}}/{{id}}", one, methods=["GET", "POST", "DELETE"]),
    ]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value).lower()
