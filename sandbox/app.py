"""The sandbox ASGI app: one server, three imitated APIs, an admin API under ``/_sandbox/``.

A thin ASGI middleware in front of the router counts calls per API and method,
holds each answer until the configured latency has passed since the request
arrived, and injects faults before a request reaches its API.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox import corrupt
from sandbox.context import (
    APIS,
    SANDBOX_CLIENT_SECRET,
    FaultSettings,
    Persistent,
    SandboxContext,
    Throttle,
)
from sandbox.heap import settle_heap

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Part(Persistent, Protocol):
    """One imitated API: its routes, its error shape, its data."""

    api: str

    @property
    def routes(self) -> list[BaseRoute]: ...

    def error_response(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> Response: ...


def api_of(path: str) -> str | None:
    """Which imitated system a request path belongs to (None for the admin API)."""
    if path.startswith(("/v1.0/engagements", "/v1.0/referrals", "/webhooks/")):
        return "core"
    if path.startswith(("/services/", "/cometd/")):
        return "salesforce"
    if path.startswith("/api/data/"):
        return "dataverse"
    if "/oauth2/" in path:
        return "entra"
    return None


class FaultMiddleware:
    """Counts, delays and breaks requests as the admin API configured."""

    def __init__(self, app: ASGIApp, ctx: SandboxContext, parts: dict[str, Part]) -> None:
        self.app = app
        self.ctx = ctx
        self.parts = parts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _dated(send, self.ctx)
        path: str = scope["path"]
        api = api_of(path)
        if api is None:
            await self.app(scope, receive, send)
            return
        ctx = self.ctx
        method: str = scope["method"]
        auth = _header(scope, b"authorization")
        now = time.monotonic()
        stats = ctx.stats
        stats.counts[(api, method)] += 1
        key = (api, auth)
        receive, request = await _identify(scope, receive)
        throttle = stats.retry_not_before.get(key)
        if throttle is not None:
            if throttle.is_early(now, request):
                stats.early_retries += 1
            elif now + 0.005 >= throttle.not_before:
                del stats.retry_not_before[key]
        fault = ctx.pick_fault(api) if api in self.parts or api == "entra" else None
        if fault in corrupt.KINDS and not ctx.faults[api].corrupts(method, path):
            fault = None
        stats.arrivals.append(_arrival(api, method, path, now, auth, fault))
        settings = ctx.faults[api]
        delay_ms = ctx.latency_ms.get(api, 0.0)
        if fault == "slow":
            delay_ms += settings.slow_ms
        if delay_ms > 0:
            send = _held(send, now + delay_ms / 1000.0)
        if fault is not None:
            stats.faults[(api, fault)] += 1
        if fault is None or fault == "slow":  # a slow answer is only held longer
            await self.app(scope, receive, send)
            return
        part = self.parts.get(api)
        if fault in corrupt.KINDS:
            recorded = corrupt.BodyRecorder()
            await self.app(scope, receive, recorded)
            error = part.error_response(500, "internalError", "sandbox fault") if part else None
            await corrupt.send_rewritten(
                send, recorded, corrupt.rewrite(fault, recorded.body, error)
            )
            return
        if fault == "reset":
            # Start a response that promises more bytes than it sends, then fail:
            # the server drops the connection and the client sees it broken mid-way.
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"4096"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b'{"value": [', "more_body": True})
            raise ConnectionResetError("sandbox fault: connection reset")
        if part is None:  # faults on the token endpoint: plain OAuth-style errors
            response: Response = JSONResponse(
                {"error": "temporarily_unavailable", "error_description": f"sandbox fault {fault}"},
                status_code=503,
            )
        elif fault == "429":
            response = part.error_response(
                429, "throttled", "Too many requests (sandbox fault)", settings.retry_after_s
            )
            _retry_after_as(response, settings, ctx)
            await response(scope, receive, send)
            stats.retry_not_before[key] = Throttle(
                now + settings.retry_after_s, time.monotonic(), request
            )
            return
        elif fault == "token_expiry":
            ctx.tokens.revoke(auth)
            response = part.error_response(
                401, "unauthenticated", "The token expired (sandbox fault)"
            )
        else:
            wait = (
                settings.retry_after_s if fault == "503" and settings.retry_after_on_503 else None
            )
            response = part.error_response(
                int(fault), "serviceNotAvailable", f"Sandbox fault {fault}", wait
            )
            if wait is not None:
                _retry_after_as(response, settings, ctx)
        await response(scope, receive, send)


def _retry_after_as(response: Response, settings: FaultSettings, ctx: SandboxContext) -> None:
    """``Retry-After`` in the form the fault settings ask for: seconds, an HTTP date, none."""
    if settings.retry_after_format == "none":
        del response.headers["Retry-After"]
    elif settings.retry_after_format == "http_date":
        # one second later than the wait: an HTTP date has whole seconds
        when = ctx.clock.now() + timedelta(seconds=settings.retry_after_s + 1)
        response.headers["Retry-After"] = email.utils.format_datetime(when, usegmt=True)


def _dated(send: Send, ctx: SandboxContext) -> Send:
    """Responses carry the sandbox clock's ``Date``, as a real server's carry its own.

    Clients cap their cursors at server time; after the admin API moves the clock
    forward, they must see the moved clock, not the host's.
    """

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            date = email.utils.format_datetime(ctx.clock.now(), usegmt=True).encode()
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"date"]
            message = {**message, "headers": [*headers, (b"date", date)]}
        await send(message)

    return wrapped


def _held(send: Send, deadline: float) -> Send:
    """The response starts no earlier than ``deadline`` (monotonic seconds).

    The configured latency is the time from a request's arrival to its answer, as a
    real server's response time is: the sandbox does the request's work at once and
    holds the answer until the latency has passed, so its own handling (parsing,
    the imitated API's work, JSON) falls inside the latency instead of adding to it
    and a benchmark's bound, N × latency / concurrency, is the one the connector
    faces. Work that outlasts the latency answers late, as a busy server would.
    """

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            wait = deadline - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        await send(message)

    return wrapped


async def _identify(scope: Scope, receive: Receive) -> tuple[Receive, str]:
    """Read the body once: a fingerprint of the request, and a ``receive`` that replays it."""
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = bool(message.get("more_body", False))
    body = b"".join(chunks)
    query = scope.get("query_string", b"").decode("latin-1")
    request = f"{scope['method']} {scope['path']}?{query} {hashlib.sha256(body).hexdigest()}"
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay, request


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return str(v.decode("latin-1"))
    return None


def _arrival(
    api: str, method: str, path: str, at: float, auth: str | None, fault: str | None
) -> Any:
    from sandbox.context import Arrival

    return Arrival(api, method, path, at, auth, fault)


def admin_routes(
    ctx: SandboxContext, parts: dict[str, Part], state_file: Path | None
) -> list[BaseRoute]:
    async def stats(request: Request) -> Response:
        data = ctx.stats.as_json()
        data["clock"] = ctx.clock.now().isoformat()
        return JSONResponse(data)

    async def stats_reset(request: Request) -> Response:
        ctx.stats.reset()
        return JSONResponse({"ok": True})

    async def arrivals(request: Request) -> Response:
        api = request.query_params.get("api")
        rows = [
            {"api": a.api, "method": a.method, "path": a.path, "at": a.at, "fault": a.fault}
            for a in ctx.stats.arrivals
            if api is None or a.api == api
        ]
        return JSONResponse({"arrivals": rows})

    async def clock(request: Request) -> Response:
        if request.method == "POST":
            body = await request.json()
            delta = timedelta(
                days=float(body.get("days", 0)),
                hours=float(body.get("hours", 0)),
                minutes=float(body.get("minutes", 0)),
                seconds=float(body.get("seconds", 0)),
            )
            if delta < timedelta():
                return JSONResponse({"error": "the clock only moves forward"}, status_code=400)
            ctx.clock.advance(delta)
            for part in parts.values():
                tick = getattr(part, "tick", None)
                if tick is not None:
                    tick()
        return JSONResponse({"now": ctx.clock.now().isoformat()})

    async def faults(request: Request) -> Response:
        if request.method == "PUT":
            body = await request.json()
            for api, settings in body.items():
                if api not in APIS:
                    return JSONResponse({"error": f"unknown api {api!r}"}, status_code=400)
                try:
                    ctx.faults[api] = FaultSettings(**settings)
                except TypeError as exc:
                    return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({api: vars(f) for api, f in ctx.faults.items()})

    async def latency(request: Request) -> Response:
        if request.method == "PUT":
            body = await request.json()
            for api, ms in body.items():
                if api not in APIS:
                    return JSONResponse({"error": f"unknown api {api!r}"}, status_code=400)
                ctx.latency_ms[api] = float(ms)
        return JSONResponse(ctx.latency_ms)

    async def seed(request: Request) -> Response:
        body = await request.json()
        n = int(body.get("opportunities", 0))
        s = int(body.get("seed", ctx.seed))
        only = body.get("apis")
        for name, part in parts.items():
            if only is None or name in only:
                part.seed(n, s)
        if ctx.settle_heap_after_seed:
            settle_heap()
        return JSONResponse({"seeded": n, "seed": s})

    async def client_secrets(request: Request) -> Response:
        # {"accept": [...]}: the client secrets the token endpoints accept besides `sandbox`
        if request.method == "PUT":
            body = await request.json()
            accepted = body.get("accept")
            if not isinstance(accepted, list) or not all(isinstance(v, str) for v in accepted):
                return JSONResponse({"error": "accept must be a list of strings"}, status_code=400)
            ctx.client_secrets = {SANDBOX_CLIENT_SECRET, *accepted}
        return JSONResponse({"accepted": len(ctx.client_secrets)})

    async def save(request: Request) -> Response:
        if state_file is None:
            return JSONResponse({"error": "started without --state"}, status_code=400)
        save_state(state_file, ctx, parts)
        return JSONResponse({"saved": str(state_file)})

    return [
        Route("/_sandbox/stats", stats, methods=["GET"]),
        Route("/_sandbox/stats/reset", stats_reset, methods=["POST"]),
        Route("/_sandbox/arrivals", arrivals, methods=["GET"]),
        Route("/_sandbox/clock", clock, methods=["GET", "POST"]),
        Route("/_sandbox/faults", faults, methods=["GET", "PUT"]),
        Route("/_sandbox/latency", latency, methods=["GET", "PUT"]),
        Route("/_sandbox/seed", seed, methods=["POST"]),
        Route("/_sandbox/save", save, methods=["POST"]),
        Route("/_sandbox/secrets", client_secrets, methods=["GET", "PUT"]),
    ]


def save_state(path: Path, ctx: SandboxContext, parts: dict[str, Part]) -> None:
    data = {
        "clock_offset_s": ctx.clock.offset_seconds,
        "parts": {name: part.dump() for name, part in parts.items()},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    tmp.replace(path)


def load_state(path: Path, ctx: SandboxContext, parts: dict[str, Part]) -> bool:
    if not path.exists():
        return False
    data = json.loads(path.read_text(encoding="utf-8"))
    ctx.clock.advance(timedelta(seconds=float(data.get("clock_offset_s", 0))))
    for name, part_data in data.get("parts", {}).items():
        if name in parts:
            parts[name].load(part_data)
    return True


def build_parts(ctx: SandboxContext) -> dict[str, Part]:
    """Create the three imitated APIs."""
    parts: dict[str, Part] = {}
    from sandbox.dataverse import part as dataverse
    from sandbox.partner_center import part as partner_center
    from sandbox.salesforce import part as salesforce

    parts["core"] = partner_center.create(ctx)
    parts["salesforce"] = salesforce.create(ctx)
    parts["dataverse"] = dataverse.create(ctx)
    for name, part in parts.items():
        ctx.parts[name] = part
    return parts


def create_app(
    ctx: SandboxContext | None = None,
    *,
    opportunities: int = 0,
    state_file: Path | None = None,
) -> Starlette:
    """Build the sandbox app; seeds ``opportunities`` records unless a state file is loaded."""
    from sandbox import entra
    from sandbox.events.hub import SandboxEvents

    ctx = ctx or SandboxContext()
    parts = build_parts(ctx)
    loaded = state_file is not None and load_state(state_file, ctx, parts)
    if not loaded and opportunities:
        for part in parts.values():
            part.seed(opportunities, ctx.seed)
    events = SandboxEvents(ctx, parts)
    routes: list[BaseRoute] = [*admin_routes(ctx, parts, state_file), *entra.routes(ctx)]
    routes.extend(events.routes())
    for part in parts.values():
        routes.extend(part.routes)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        events.close()
        if state_file is not None:
            save_state(state_file, ctx, parts)

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.ctx = ctx
    app.state.parts = parts
    app.state.events = events
    app.add_middleware(FaultMiddleware, ctx=ctx, parts=parts)
    return app
