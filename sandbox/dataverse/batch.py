"""``POST /api/data/v9.2/$batch``: multipart/mixed requests, change sets, per-operation answers.

A change set is atomic: when one of its operations fails, the writes of the
others are undone and the change set answers with that one error. Without
``Prefer: odata.continue-on-error`` processing stops at the first failure and the
batch answers ``400 Bad Request`` with a multipart body (Microsoft's documented
example); the sandbox lists the answers of the requests processed before it too,
which the documentation leaves open. With the preference the batch answers ``200``
and every request its own status. Operations in a change set may refer to an
earlier one's result by ``$<Content-ID>``.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

from sandbox.dataverse.api import API_PREFIX, DataverseApi, DvRequest, DvResponse
from sandbox.dataverse.errors import BAD_QUERY, DataverseError
from sandbox.dataverse.query import parse_prefer

MAX_OPERATIONS = 1000
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_BLANK_LINE = re.compile(r"\r?\n\r?\n")


@dataclass
class Operation:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None = None


@dataclass
class ChangeSet:
    operations: list[Operation] = field(default_factory=list)


def _boundary(content_type: str) -> str:
    match = _BOUNDARY.search(content_type)
    if match is None or "multipart/mixed" not in content_type.lower():
        raise DataverseError(
            400, BAD_QUERY, "A $batch request needs Content-Type: multipart/mixed; boundary=..."
        )
    return match.group(1)


def _split(body: str, boundary: str) -> list[str]:
    parts = []
    for segment in body.split(f"--{boundary}")[1:]:
        if segment.startswith("--"):
            break
        parts.append(
            segment.removeprefix("\r\n").removeprefix("\n").removesuffix("\n").rstrip("\r")
        )
    return parts


def _headers(block: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _head_and_body(text: str) -> tuple[str, str]:
    pieces = _BLANK_LINE.split(text, maxsplit=1)
    return pieces[0], pieces[1] if len(pieces) > 1 else ""


def _operation(part: str) -> Operation:
    head, rest = _head_and_body(part)
    part_headers = _headers(head)
    request_head, body = _head_and_body(rest)
    lines = request_head.splitlines()
    if not lines or len(lines[0].split()) < 2:
        raise DataverseError(400, BAD_QUERY, "A $batch part has no request line.")
    method, url = lines[0].split()[:2]
    return Operation(
        method.upper(),
        url,
        _headers("\n".join(lines[1:])),
        body.rstrip("\r\n").encode("utf-8"),
        part_headers.get("content-id"),
    )


def parse_batch(content_type: str, body: bytes) -> list[Operation | ChangeSet]:
    """The operations and change sets of a ``$batch`` body, in order."""
    text = body.decode("utf-8")
    items: list[Operation | ChangeSet] = []
    for part in _split(text, _boundary(content_type)):
        head, inner_body = _head_and_body(part)
        inner_type = _headers(head).get("content-type", "")
        if inner_type.lower().startswith("multipart/mixed"):
            changeset = ChangeSet(
                [_operation(p) for p in _split(inner_body, _boundary(inner_type))]
            )
            items.append(changeset)
        else:
            items.append(_operation(part))
    count = sum(len(i.operations) if isinstance(i, ChangeSet) else 1 for i in items)
    if count > MAX_OPERATIONS:
        raise DataverseError(
            400,
            BAD_QUERY,
            f"The batch holds {count} operations; the limit is {MAX_OPERATIONS}. Split it.",
        )
    return items


def _relative(url: str, entity_ids: dict[str, str]) -> str:
    """An operation's URL as a path relative to the service root ($n references resolved)."""
    if url.startswith("$"):
        ref, _, rest = url[1:].partition("/")
        if ref not in entity_ids:
            raise DataverseError(400, BAD_QUERY, f"Content-ID reference ${ref} is not defined.")
        url = entity_ids[ref] + (f"/{rest}" if rest else "")
    path = urlsplit(url).path if "://" in url else url.split("?")[0]
    if API_PREFIX in path:
        return path.split(API_PREFIX, 1)[1]
    return path.lstrip("/")


def _run(api: DataverseApi, op: Operation, base: str, entity_ids: dict[str, str]) -> DvResponse:
    query = urlsplit(op.url).query if "?" in op.url else ""
    request = DvRequest(
        op.method,
        _relative(op.url, entity_ids),
        dict(parse_qsl(query, keep_blank_values=True)),
        op.headers,
        op.body,
        base,
    )
    return api.handle(request)


def _render(response: DvResponse, content_id: str | None) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}"]
    lines += [f"{k}: {v}" for k, v in response.headers.items()]
    lines += ["", response.body.decode("utf-8")]
    return "\r\n".join(lines)


def _multipart(boundary: str, parts: list[str]) -> str:
    return "".join(f"--{boundary}\r\n{p}\r\n" for p in parts) + f"--{boundary}--\r\n"


def run_batch(api: DataverseApi, req: DvRequest) -> DvResponse:
    """Answer a ``$batch`` request with a multipart/mixed body of per-operation responses."""
    items = parse_batch(req.headers.get("content-type", ""), req.body)
    keep_going = "odata.continue-on-error" in parse_prefer([req.headers.get("prefer", "")])
    batch_boundary = f"batchresponse_{uuid.uuid4()}"
    parts: list[str] = []
    stopped = False
    with api.store.lock:
        for item in items:
            if isinstance(item, Operation):
                response = _run(api, item, req.base, {})
                parts.append(_render(response, item.content_id))
                failed = response.status >= 400
            else:
                part, failed = _run_changeset(api, item, req.base)
                parts.append(part)
            if failed and not keep_going:
                stopped = True
                break
    headers = {
        "OData-Version": "4.0",
        "Content-Type": f"multipart/mixed; boundary={batch_boundary}",
    }
    body = _multipart(batch_boundary, parts).encode("utf-8")
    return DvResponse(400 if stopped else 200, headers, body)


def _run_changeset(api: DataverseApi, changeset: ChangeSet, base: str) -> tuple[str, bool]:
    boundary = f"changesetresponse_{uuid.uuid4()}"
    entity_ids: dict[str, str] = {}
    answers: list[str] = []
    api.store.begin()
    for op in changeset.operations:
        if op.method == "GET":
            response = DvResponse.of_error(
                DataverseError(400, BAD_QUERY, "GET requests are not allowed inside a change set.")
            )
        else:
            response = _run(api, op, base, entity_ids)
        if response.status >= 400:
            api.store.rollback()
            return _render(response, op.content_id), True
        entity_id = response.headers.get("OData-EntityId")
        if op.content_id is not None and entity_id:
            entity_ids[op.content_id] = entity_id
        answers.append(_render(response, op.content_id))
    api.store.commit()
    header = f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n"
    return header + _multipart(boundary, answers).rstrip("\r\n"), False
