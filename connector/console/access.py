"""Signing in and out, the stylesheet, and the audit trail page (admins)."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from connector.console.auth import Session
from connector.console.web import Request, Response, Router, url

if TYPE_CHECKING:
    from connector.console.app import Console

_CSS = resources.files("connector.console").joinpath("static/console.css")


def register(router: Router) -> None:
    router.add("GET", "/sign-in", sign_in_form, "public")
    router.add("POST", "/sign-in", sign_in, "public")
    router.add("POST", "/sign-out", sign_out)
    router.add("GET", "/static/console.css", stylesheet, "public")
    router.add("GET", "/audit", audit_page, "admin")


def local_path(target: str | None, default: str = "/") -> str:
    """Where to go after a form: a path of this console only (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def sign_in_form(
    app: Console,
    request: Request,
    session: Session | None,
    *,
    problem: str | None = None,
    status: int = 200,
) -> Response:
    if session is not None and problem is None:
        return Response.redirect(local_path(request.arg("next")))
    nonce = app.sessions.login_nonce()
    response = app.page(
        "sign_in.html",
        request,
        None,
        status=status,
        login_token=app.sessions.login_token(nonce),
        next=local_path(request.arg("next") or request.field("next")),
        problem=problem,
        roles=[role.label for role in app.credentials.roles],
    )
    response.set_cookie("console_login", nonce, max_age=600, secure=app.cookie_secure(request))
    return response


def sign_in(app: Console, request: Request, session: Session | None) -> Response:
    address = request.remote
    if not app.sessions.login_ok(request.cookies.get("console_login"), request.field("csrf")):
        app.audit(request, None, "sign_in", outcome="refused", detail="stale sign-in form")
        return sign_in_form(
            app,
            request,
            None,
            status=403,
            problem="The sign-in form was stale (or cookies are blocked); try again.",
        )
    if app.throttle.blocked(address):
        app.audit(request, None, "sign_in", outcome="refused", detail="too many failures")
        return sign_in_form(
            app,
            request,
            None,
            status=429,
            problem="Too many failed sign-ins from this address; wait a minute.",
        )
    role = app.credentials.role_for(request.field("secret") or "")
    if role is None:
        app.throttle.failed(address)
        app.audit(request, None, "sign_in", outcome="refused", detail="wrong token or password")
        return sign_in_form(
            app, request, None, status=401, problem="That token or password is not valid."
        )
    opened, cookie = app.sessions.open(role)
    app.audit(request, opened, "sign_in", detail=f"signed in as {role.label}")
    response = Response.redirect(local_path(request.field("next")))
    secure = app.cookie_secure(request)
    response.set_cookie("console_session", cookie, max_age=app.options.session_ttl_s, secure=secure)
    response.set_cookie("console_login", "", max_age=0, secure=secure)
    return response


def sign_out(app: Console, request: Request, session: Session | None) -> Response:
    assert session is not None
    app.sessions.close(session)
    app.audit(request, session, "sign_out")
    response = Response.redirect("/sign-in")
    response.set_cookie("console_session", "", max_age=0, secure=app.cookie_secure(request))
    return response


def stylesheet(app: Console, request: Request, session: Session | None) -> Response:
    response = Response(200, _CSS.read_bytes(), "text/css; charset=utf-8")
    return response


def audit_page(app: Console, request: Request, session: Session | None) -> Response:
    size = app.options.page_size
    before = request.int_arg("before")
    entries = app.reads.audit_entries(before=before, limit=size + 1)
    more = len(entries) > size
    entries = entries[:size]
    older = url("/audit", before=entries[-1].id) if more and entries else None
    return app.page("audit.html", request, session, entries=entries, older=older, nav="audit")
