"""The sandbox's Partner Center referrals API ("core"), written from ``deal-core-api.md``.

Public API under ``/v1.0/engagements/referrals`` (bearer token of audience ``core``):
create, list (OData, pages of 100, ``@odata.nextLink`` in the published form
``http://host/v1.0/referrals?$skiptoken=…``, served too), read, JSON Patch with
``If-Match``. Admin API under ``/_sandbox/core/`` plays the other side (incoming
referrals, Microsoft's answers, registration reviews) and sets what Microsoft leaves
open (:class:`~sandbox.partner_center.store.CoreBehaviour`). Conventions and
their sources are listed in ``docs/sandbox-core.md``.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sandbox.context import SandboxContext
from sandbox.http import strict_json
from sandbox.partner_center import fields as f
from sandbox.partner_center import odata
from sandbox.partner_center.fields import ReferralError
from sandbox.partner_center.store import ReferralStore

BASE = "/v1.0/engagements/referrals"
#: where the published next links point (``http://host/v1.0/referrals?$skiptoken=…``)
NEXT_LINK_PATH = "/v1.0/referrals"
ADMIN = "/_sandbox/core"
_ECHOED = ("client-request-id", "ms-correlationid")

Handler = Callable[[Request], Awaitable[Response]]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(content, status_code=status, headers=headers, media_type="application/json")


async def _body(request: Request, *, optional: bool = False) -> Any:
    raw = await request.body()
    if not raw.strip():
        if optional:
            return {}
        raise ReferralError("the request has no JSON body", target="body")
    try:
        # strictly: NaN, a lone surrogate or an overflowing number would be stored and
        # then fail every read of the referral (the core's .NET reader refuses them)
        return strict_json(raw, finite_numbers=True)
    except ValueError as exc:
        raise ReferralError(f"the body is not valid JSON: {exc}", target="body") from None


class PartnerCenterPart:
    """The "core" part of the sandbox (see :class:`sandbox.app.Part`)."""

    api = "core"

    def __init__(self, ctx: SandboxContext) -> None:
        self.ctx = ctx
        self.store = ReferralStore(ctx.clock.now)

    # --- the Part protocol ---------------------------------------------------------------

    @property
    def routes(self) -> list[BaseRoute]:
        every = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        admin = self._admin
        return [
            Route(BASE, self._api(self._collection), methods=every),
            Route(BASE + "/{id}", self._api(self._item), methods=every),
            Route(NEXT_LINK_PATH, self._api(self._next_page), methods=every),
            Route("/v1.0/engagements/{rest:path}", self._api(self._unknown), methods=every),
            Route(ADMIN + "/incoming", admin(self._incoming), methods=["POST"]),
            Route(ADMIN + "/microsoft/{id}/{action}", admin(self._microsoft), methods=["POST"]),
            Route(ADMIN + "/microsoft-policy", admin(self._policy), methods=["GET", "PUT"]),
            Route(
                ADMIN + "/registrations/{id}/{action}", admin(self._registration), methods=["POST"]
            ),
            Route(ADMIN + "/referrals", admin(self._everything), methods=["GET"]),
            Route(ADMIN + "/reset", admin(self._reset), methods=["POST"]),
            Route(ADMIN + "/eligible-solutions", admin(self._eligible), methods=["GET", "PUT"]),
            Route(ADMIN + "/settings", admin(self._settings), methods=["GET", "PUT"]),
        ]

    def error_response(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> Response:
        headers = {} if retry_after is None else {"Retry-After": str(math.ceil(retry_after))}
        return _json(self._error_body(code, message, None), status, headers)

    def dump(self) -> dict[str, Any]:
        return self.store.dump()

    def load(self, data: dict[str, Any]) -> None:
        self.store.load(data)

    def seed(self, n: int, seed: int) -> None:
        """A few incoming referrals (one per 100 opportunities, at least one), deterministic."""
        rng = random.Random(seed)
        for i in range(max(1, n // 100)):
            sender = "Partner" if i % 4 == 3 else "Microsoft"
            try:
                self.store.send_incoming({}, sender, rng)
            except ReferralError:  # seeded twice with the same seed: the referral exists
                continue

    def tick(self) -> None:
        self.store.housekeep()

    # --- plumbing ------------------------------------------------------------------------

    def _error_body(self, code: str, message: str, target: str | None) -> dict[str, Any]:
        inner = {"date": f.format_time(self.ctx.clock.now()), "request-id": str(uuid.uuid4())}
        return {"error": {"code": code, "message": message, "target": target, "innerError": inner}}

    def _render(self, exc: ReferralError) -> Response:
        body = self._error_body(exc.code, exc.message, exc.target)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _json(body, exc.status, headers)

    def _api(self, handler: Handler) -> Handler:
        """Bearer token of audience "core", error rendering, request id echo."""

        async def endpoint(request: Request) -> Response:
            try:
                if not self.ctx.tokens.check(request.headers.get("authorization"), "core"):
                    raise ReferralError(
                        "the bearer token is missing, expired or not issued for "
                        "api.partner.microsoft.com: get a new access token",
                        status=401,
                        code="unauthenticated",
                    )
                response = await handler(request)
            except ReferralError as exc:
                response = self._render(exc)
            for name in _ECHOED:
                value = request.headers.get(name)
                if value is not None:
                    response.headers[name] = value
            return response

        return endpoint

    def _admin(self, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except ReferralError as exc:
                return self._render(exc)

        return endpoint

    def _not_allowed(self, method: str, allowed: str, why: str) -> Response:
        response = self._render(ReferralError(f"{method} is not served here: {why}", status=405))
        response.headers["Allow"] = allowed
        return response

    # --- public API ----------------------------------------------------------------------

    async def _collection(self, request: Request) -> Response:
        if request.method == "POST":
            referral = self.store.create(await _body(request))
            location = f"{request.url.scheme}://{request.url.netloc}{BASE}/{referral['id']}"
            return _json(
                self._shown(referral),
                self.store.behaviour.create_code,
                {"ETag": referral["eTag"], "Location": location},
            )
        if request.method != "GET":
            return self._not_allowed(request.method, "GET, POST", "list or create referrals")
        return self._list(request)

    async def _next_page(self, request: Request) -> Response:
        if request.method != "GET":
            return self._not_allowed(request.method, "GET", "next pages of a referral list")
        return self._list(request)

    def _list(self, request: Request) -> Response:
        """A page of referrals; every query option the docs show, others ignored."""
        params = {k.lower(): v for k, v in request.query_params.items()}
        token = params.get("$skiptoken")
        skip = 0
        if token:
            state = odata.decode_skiptoken(token)
            text, order_text, select_text = state.filter, state.orderby, state.select
            remaining, after = state.remaining, state.after
        else:
            text, order_text = params.get("$filter"), params.get("$orderby")
            select_text = params.get("$select")
            remaining, after = odata.parse_count(params.get("$top"), "$top"), None
            skip = odata.parse_count(params.get("$skip"), "$skip") or 0
        behaviour = self.store.behaviour
        if select_text and behaviour.refuse_select:
            raise ReferralError("$select is not supported here", target="$select")
        query = odata.parse_filter(text)
        order, descending = odata.parse_orderby(order_text)
        select = odata.parse_select(select_text)
        size = behaviour.page_size if remaining is None else min(behaviour.page_size, remaining)
        items, next_key = (
            self.store.page(query, order, descending, size, after, skip) if size else ([], None)
        )
        # The published shapes: an http context and next link, the count of this page.
        origin = f"http://{request.url.netloc}"
        value = [self._shown(r, select) for r in items]
        body: dict[str, Any] = {
            "@odata.context": f"{origin}/v1.0/$metadata#Referrals",
            "@odata.count": len(value),
            "value": value,
        }
        left = None if remaining is None else remaining - len(items)
        if next_key is not None and (left is None or left > 0):
            state = odata.Continuation(text, order_text, select_text, left, next_key)
            body["@odata.nextLink"] = (
                f"{origin}{NEXT_LINK_PATH}?$skiptoken={odata.encode_skiptoken(state)}"
            )
        return _json(body)

    def _shown(self, referral: dict[str, Any], select: list[str] | None = None) -> Any:
        """A referral as answered: its sales stage in the configured format, ``$select``."""
        fmt = self.store.behaviour.sales_stage
        if fmt != "percent":
            stage = referral.get("salesStage")
            shown = None if fmt == "null" else f.NAME_OF_PERCENT.get(str(stage))
            referral = {**referral, "salesStage": shown}
        if select is not None:
            return {k: referral[k] for k in select if k in referral}
        return referral

    async def _item(self, request: Request) -> Response:
        ident = request.path_params["id"]
        if request.method == "GET":
            referral = self.store.get(ident)
            return _json(self._shown(referral), headers={"ETag": referral["eTag"]})
        if request.method == "PATCH":
            ops = await _body(request)
            referral = self.store.patch(ident, ops, request.headers.get("if-match"))
            headers = {"ETag": referral["eTag"]}
            if "return=representation" in request.headers.get("prefer", ""):
                headers["Preference-Applied"] = "return=representation"
                return _json(self._shown(referral), 200, headers)
            return Response(status_code=204, headers=headers)
        if request.method == "PUT":
            return self._not_allowed("PUT", "GET, PATCH", "full update is deprecated, use PATCH")
        return self._not_allowed(
            request.method, "GET, PATCH", "referrals are never deleted, close them instead"
        )

    async def _unknown(self, request: Request) -> Response:
        raise ReferralError(f"no such resource {request.url.path}", status=404, code="itemNotFound")

    # --- admin API -----------------------------------------------------------------------

    async def _incoming(self, request: Request) -> Response:
        body = await _body(request, optional=True)
        if not isinstance(body, dict):
            raise ReferralError("the body must be an object of referral fields")
        sender = body.pop("from", "Microsoft")
        return _json(self.store.send_incoming(body, sender), 201)

    async def _microsoft(self, request: Request) -> Response:
        body = await _body(request, optional=True)
        if request.path_params["action"] == "notes":
            notes = body.get("notes") if isinstance(body, dict) else None
            return _json(self.store.microsoft_notes(request.path_params["id"], notes))
        reason = body.get("statusReason") if isinstance(body, dict) else None
        side = self.store.microsoft(
            request.path_params["id"], request.path_params["action"], reason
        )
        return _json(side)

    async def _policy(self, request: Request) -> Response:
        if request.method == "PUT":
            return _json(self.store.set_policy(await _body(request)))
        return _json(self.store.policy)

    async def _registration(self, request: Request) -> Response:
        deal = self.store.set_registration(request.path_params["id"], request.path_params["action"])
        return _json(deal)

    async def _everything(self, request: Request) -> Response:
        return _json({"value": self.store.all()})

    async def _reset(self, request: Request) -> Response:
        self.store.reset()
        return _json({"ok": True})

    async def _eligible(self, request: Request) -> Response:
        if request.method == "PUT":
            return _json(self.store.set_eligible(await _body(request)))
        return _json(self.store.eligible)

    async def _settings(self, request: Request) -> Response:
        behaviour = self.store.behaviour
        if request.method == "PUT":
            changes = await _body(request)
            with self.store.lock:
                behaviour.update(changes)
        return _json(vars(behaviour))


def create(ctx: SandboxContext) -> PartnerCenterPart:
    """Build the "core" part for the sandbox app."""
    return PartnerCenterPart(ctx)
