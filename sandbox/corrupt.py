"""Servers that lie: a real answer from an imitated API, rewritten into nonsense.

The fault injector (:class:`sandbox.app.FaultMiddleware`) lets the request
reach its API (so a POST really creates what it creates), then rewrites the answer
with one of these kinds, all with status 200 and a consistent ``Content-Length``:

    malformed_json   an HTML error page served as application/json
    truncated        the first half of the real body (a page cut mid-way)
    error_in_200     the API's own error shape, with status 200
    wrong_types      lists become strings, numbers and booleans become strings
    missing_fields   the identity and paging fields removed (Id, id, records, value, ...)
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.responses import Response

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

#: the fault names of :class:`~sandbox.context.FaultSettings` that rewrite a body
KINDS = ("malformed_json", "truncated", "error_in_200", "wrong_types", "missing_fields")

#: the fields ``missing_fields`` removes wherever they appear
_IDENTITY_FIELDS = frozenset(
    {
        "Id",
        "id",
        "opportunityid",
        "records",
        "value",
        "SystemModstamp",
        "modifiedon",
        "eTag",
        "@odata.etag",
        "status",
        "done",
    }
)


class BodyRecorder:
    """An ASGI ``send`` that keeps the response instead of sending it."""

    def __init__(self) -> None:
        self.status = 200
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            self.body += bytes(message.get("body", b""))


def rewrite(kind: str, body: bytes, error: Response | None) -> bytes:
    """The lying body of ``kind`` for the real ``body`` (``error``: the API's error shape)."""
    if kind == "malformed_json":
        return b"<html><body><h1>502 Bad Gateway</h1>upstream timed out</body></html>"
    if kind == "truncated":
        return body[: max(1, len(body) // 2)]
    if kind == "error_in_200":
        return bytes(error.body) if error is not None else b'{"error": "sandbox fault"}'
    try:
        data = json.loads(body or b"null")
    except ValueError:
        return body
    if kind == "wrong_types":
        data = _wrong_types(data, top=True)
    elif kind == "missing_fields":
        data = _without_identity(data)
    return json.dumps(data).encode()


async def send_rewritten(send: Send, recorded: BodyRecorder, body: bytes) -> None:
    """Send ``body`` with status 200 and the recorded headers (length fixed, JSON type)."""
    skip = {b"content-length", b"content-type"}
    headers = [(k, v) for k, v in recorded.headers if k.lower() not in skip]
    headers += [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _wrong_types(value: Any, *, top: bool = False) -> Any:
    if isinstance(value, list):
        return "n/a" if not top else {"unexpected": "n/a"}
    if isinstance(value, dict):
        return {k: _wrong_types(v) for k, v in value.items()}
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value} units"
    return value


def _without_identity(value: Any) -> Any:
    if isinstance(value, list):
        return [_without_identity(v) for v in value]
    if isinstance(value, dict):
        return {k: _without_identity(v) for k, v in value.items() if k not in _IDENTITY_FIELDS}
    return value
