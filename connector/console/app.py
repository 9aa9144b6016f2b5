"""The console's WSGI application: access rules first, then the page.

Every request goes through :meth:`Console.handle`: the Host header is checked (a
console on loopback answers only to loopback names, which defeats DNS rebinding),
an anonymous visitor is sent to sign in, every POST must come from the console's own
origin and carry its session's CSRF token, and admin pages refuse the read-only role.
Refusals of actions and every action taken are written to the audit trail. Pages are
Jinja2 templates with autoescaping; known secret values are scrubbed from every page as
a last line of defence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import jinja2

from connector.console import access, dead_letter_pages, mapping_pages, overview
from connector.console.auth import Credentials, Role, Session, Sessions, SignInThrottle
from connector.console.live import LiveState
from connector.console.views import age, pretty, stamp, total
from connector.console.web import BodyTooLarge, Request, Response, Router, StartResponse, url
from connector.errors import ConnectorError
from connector.logs import scrub
from connector.settings import LOOPBACK_HOSTS, ConfigFile, ConnectionSettings, Settings
from connector.state.console_reads import ConsoleReads
from connector.state.history import RecordHistory
from connector.state.store import Store

log = logging.getLogger(__name__)

SESSION_COOKIE = "console_session"
LOGIN_COOKIE = "console_login"


class Console:
    """The admin console over one state store (and, under ``connector run``, the daemon)."""

    def __init__(
        self,
        *,
        config: ConfigFile,
        settings: Settings,
        store: Store,
        credentials: Credentials,
        live: LiveState | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.settings = settings
        self.options = config.console
        self.store = store
        self.reads = ConsoleReads(store)
        self.history = RecordHistory(store)
        self.credentials = credentials
        self.live = live
        self.clock = clock
        self.sessions = Sessions(self.options.session_ttl_s)
        self.throttle = SignInThrottle()
        self.mappings = mapping_pages.MappingFiles()
        #: the port actually bound (set by the server; the Host check needs it)
        self.port: int = self.options.port
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("connector.console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            stamp=stamp, pretty=pretty, total=total, segment=lambda text: quote(str(text), safe="")
        )
        self.router = Router()
        for pages in (access, overview, dead_letter_pages, mapping_pages):
            pages.register(self.router)

    # ------------------------------------------------------------------ WSGI

    def __call__(
        self, environ: Mapping[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        try:
            request = Request.from_environ(environ)
        except BodyTooLarge:
            return Response.text(413, "the form is too large").send(start_response)
        response = self.handle(request)
        if response.content_type.startswith("text/"):
            response.body = scrub(response.body.decode()).encode()
        return response.send(start_response)

    def handle(self, request: Request) -> Response:
        if not self._host_ok(request.host):
            return Response.text(400, "unknown host: open the console at its own address")
        route, params, other_method = self.router.match(request.method, request.path)
        if route is None:
            if other_method:
                return Response.text(405, "method not allowed")
            return self.page(
                "error.html",
                request,
                None,
                status=404,
                title="Not found",
                message="There is no such page.",
            )
        session = self.sessions.find(request.cookies.get(SESSION_COOKIE))
        if route.access != "public":
            refused = self._refusal(request, session, route.access)
            if refused is not None:
                return refused
        try:
            return route.handler(self, request, session, **params)
        except ConnectorError as exc:
            return self.page(
                "error.html",
                request,
                session,
                status=502,
                title="The request failed",
                message=exc.message,
            )
        except Exception:
            log.exception("console: %s %s failed", request.method, request.path)
            return self.page(
                "error.html",
                request,
                session,
                status=500,
                title="Unexpected error",
                message="The page could not be built; the console's log has the details.",
            )

    def _refusal(self, request: Request, session: Session | None, access: str) -> Response | None:
        """Why this request may not go on, as the response to send; None when it may."""
        if session is None:
            if request.method == "GET":
                query = urlencode([(k, v) for k, vs in request.query.items() for v in vs])
                wanted = request.path + (f"?{query}" if query else "")
                return Response.redirect(url("/sign-in", next=wanted))
            self._audit_refusal(request, None, "not signed in")
            return Response.text(403, "sign in first")
        posted = request.method == "POST"
        if posted and not (
            self._same_origin(request) and self.sessions.csrf_ok(session, request.field("csrf"))
        ):
            self._audit_refusal(request, session, "missing or wrong CSRF token or origin")
            return Response.text(403, "the form is stale or came from another site; reload")
        if access == "admin" and session.role is not Role.ADMIN:
            if posted:
                self._audit_refusal(request, session, f"{session.role.label} role")
            return self.page(
                "error.html",
                request,
                session,
                status=403,
                title="Not allowed",
                message=f"The {session.role.label} role cannot do this; sign in as an admin.",
            )
        return None

    def _audit_refusal(self, request: Request, session: Session | None, why: str) -> None:
        action = request.path.rsplit("/", 1)[-1] or "page"
        self.audit(request, session, action, target=request.path, outcome="refused", detail=why)

    def _host_ok(self, host: str | None) -> bool:
        if self.options.host not in LOOPBACK_HOSTS:
            return True
        if not host:
            return False
        name = urlsplit(f"//{host}").hostname or ""
        return name in LOOPBACK_HOSTS

    def _same_origin(self, request: Request) -> bool:
        """A browser names the page a form came from; it must be this console."""
        if request.origin is None:
            return True  # not sent by every browser on same-origin POSTs; the token decides
        origin = urlsplit(request.origin)
        return origin.netloc == (request.host or "")

    # ------------------------------------------------------------------ for the pages

    def page(
        self,
        template: str,
        request: Request,
        session: Session | None,
        *,
        status: int = 200,
        **context: Any,
    ) -> Response:
        now = self.clock()
        context.setdefault("nav", "")
        html = self.env.get_template(template).render(
            user=session,
            csrf=session.csrf if session else "",
            path=request.path,
            connection_names=[c.name for c in self.config.connections],
            now=now,
            age=lambda when: age(when, now),
            url=url,
            **context,
        )
        return Response(status, html.encode())

    def connection(self, name: str) -> ConnectionSettings | None:
        return next((c for c in self.config.connections if c.name == name), None)

    def audit(
        self,
        request: Request,
        session: Session | None,
        action: str,
        *,
        target: str | None = None,
        outcome: str = "ok",
        detail: str | None = None,
    ) -> None:
        """Record a console action; a store failure is logged, never shown as the page."""
        try:
            self.reads.audit(
                at=self.clock(),
                actor=session.role.value if session else "anonymous",
                session=session.tag if session else None,
                address=request.remote,
                action=action,
                target=target,
                outcome=outcome,
                detail=detail,
            )
        except ConnectorError as exc:
            log.error("console: could not audit %s: %s", action, exc.message)

    def cookie_secure(self, request: Request) -> bool:
        return request.secure or self.options.secure_cookies
