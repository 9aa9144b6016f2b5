"""The console's HTTP plumbing: a WSGI request, a response, a small router.

Standard library only (the console must not need the sandbox's web stack). Every
response carries headers that keep pages out of caches and frames and allow only the
console's own stylesheet (no script at all).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode

#: a form is a few fields; anything larger is refused before it is read
MAX_BODY = 64 * 1024

SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)

StartResponse = Callable[..., Any]


class BodyTooLarge(Exception):
    pass


@dataclass
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    form: Mapping[str, list[str]]
    cookies: Mapping[str, str]
    remote: str
    host: str | None
    origin: str | None
    secure: bool

    @classmethod
    def from_environ(cls, environ: Mapping[str, Any]) -> Request:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        form: dict[str, list[str]] = {}
        if method == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > MAX_BODY:
                raise BodyTooLarge
            raw = environ["wsgi.input"].read(length) if length > 0 else b""
            form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        cookies: dict[str, str] = {}
        try:
            jar: SimpleCookie = SimpleCookie(str(environ.get("HTTP_COOKIE", "")))
            cookies = {name: morsel.value for name, morsel in jar.items()}
        except CookieError:
            cookies = {}
        path = str(environ.get("PATH_INFO") or "/")
        # WSGI hands PATH_INFO as latin-1 decoded bytes: give back the UTF-8 text
        path = path.encode("latin-1", "replace").decode("utf-8", "replace")
        return cls(
            method=method,
            path=path,
            query=parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True),
            form=form,
            cookies=cookies,
            remote=str(environ.get("REMOTE_ADDR", "")),
            host=environ.get("HTTP_HOST"),
            origin=environ.get("HTTP_ORIGIN"),
            secure=environ.get("wsgi.url_scheme") == "https",
        )

    def arg(self, name: str) -> str | None:
        """A query parameter (the first, stripped), or None when absent or empty."""
        values = self.query.get(name)
        value = values[0].strip() if values else ""
        return value or None

    def int_arg(self, name: str) -> int | None:
        value = self.arg(name)
        return int(value) if value is not None and value.isdigit() else None

    def field(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[0] if values else None

    def fields(self, name: str) -> list[str]:
        return list(self.form.get(name, []))


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def redirect(cls, location: str) -> Response:
        # 303: the browser follows with a GET, so a POST is never repeated by a reload
        return cls(303, b"", headers=[("Location", location)])

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        return cls(status, text.encode(), "text/plain; charset=utf-8")

    def set_cookie(self, name: str, value: str, *, max_age: int | None, secure: bool) -> None:
        parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if secure:
            parts.append("Secure")
        self.headers.append(("Set-Cookie", "; ".join(parts)))

    def send(self, start_response: StartResponse) -> Iterable[bytes]:
        reason = HTTPStatus(self.status).phrase
        headers = [
            ("Content-Type", self.content_type),
            ("Content-Length", str(len(self.body))),
            *SECURITY_HEADERS,
            *self.headers,
        ]
        start_response(f"{self.status} {reason}", headers)
        return [self.body]


def url(path: str, **params: object) -> str:
    """``path`` with the parameters that are set (None and "" left out)."""
    given = {k: v for k, v in params.items() if v is not None and v != ""}
    return f"{path}?{urlencode(given)}" if given else path


Handler = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    #: "public", "read" (any signed-in role) or "admin"
    access: str


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, path: str, handler: Handler, access: str = "read") -> None:
        # {name} matches one path segment
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
        self.routes.append(Route(method, re.compile(f"^{regex}$"), handler, access))

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """The route, its path parameters, and whether the path exists for another method."""
        other_method = False
        for route in self.routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            if route.method == method:
                return route, found.groupdict(), False
            other_method = True
        return None, {}, other_method
