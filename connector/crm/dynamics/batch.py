"""OData ``$batch`` bodies for Dataverse: build the multipart request, parse the answer (pure).

A request holds operations either as one atomic *changeset* (Dataverse rolls all
of them back when one fails and answers only the failing one, identified by its
``Content-ID``) or as independent parts (sent with ``Prefer: odata.continue-on-error``,
answered ``200`` with one response per part, in order). Without that preference a
batch stops at the first failure and answers ``400`` with a multipart body holding the
failed request's answer (Microsoft's "Execute batch operations using the Web API",
"Handling errors"). Lines end with CRLF, as the format wants.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

_CRLF = "\r\n"
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_BOUNDARY = re.compile(r'boundary="?([^";,\s]+)"?', re.IGNORECASE)
#: the first line of a multipart body: ``--<boundary>``
_LEADING_DELIMITER = re.compile(rb"\s*--([!-~]{1,70})\r?\n")


@dataclass(frozen=True, slots=True)
class BatchOperation:
    """One request inside a ``$batch``; ``content_id`` ties it to its response."""

    content_id: str
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class BatchResponse:
    """One answer inside a ``$batch`` response."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    content_id: str | None = None


def build_batch(
    operations: Sequence[BatchOperation], *, changeset: bool, boundary: str | None = None
) -> tuple[bytes, str]:
    """The request body and its Content-Type header value."""
    batch = boundary or f"batch_{uuid.uuid4()}"
    lines: list[str] = []
    if changeset:
        inner = f"changeset_{uuid.uuid4()}"
        lines += [f"--{batch}", f"Content-Type: multipart/mixed; boundary={inner}", ""]
        for op in operations:
            lines += [f"--{inner}", *_operation(op)]
        lines.append(f"--{inner}--")
    else:
        for op in operations:
            lines += [f"--{batch}", *_operation(op)]
    lines += [f"--{batch}--", ""]
    return _CRLF.join(lines).encode("utf-8"), f"multipart/mixed; boundary={batch}"


def _operation(op: BatchOperation) -> list[str]:
    lines = [
        "Content-Type: application/http",
        "Content-Transfer-Encoding: binary",
        f"Content-ID: {op.content_id}",
        "",
        f"{op.method} {op.url} HTTP/1.1",
    ]
    lines += [f"{name}: {value}" for name, value in op.headers.items()]
    lines.append("")
    lines.append(op.body.decode("utf-8") if op.body is not None else "")
    return lines


def is_multipart(content: bytes, content_type: str) -> bool:
    """Whether a ``$batch`` answer is multipart (else it is a JSON error for the whole batch).

    Microsoft's own client goes by the Content-Type's boundary; the published ``400``
    example shows none, so a body that opens with a delimiter line counts too.
    """
    if _BOUNDARY.search(content_type) and content_type.lower().startswith("multipart/"):
        return True
    return _LEADING_DELIMITER.match(content) is not None


def parse_batch(content: bytes, content_type: str) -> list[BatchResponse]:
    """Every response in a ``$batch`` answer, changeset answers flattened, in order."""
    boundary = _boundary(content_type, content)
    responses: list[BatchResponse] = []
    for part in _parts(content, boundary):
        head, body = _split_head(part)
        headers = _headers(head)
        part_type = headers.get("content-type", "")
        if part_type.lower().startswith("multipart/"):
            responses.extend(parse_batch(body, part_type))  # a change set's answers
        else:
            responses.append(_http_response(body, headers.get("content-id")))
    return responses


def _boundary(content_type: str, content: bytes = b"") -> str:
    match = _BOUNDARY.search(content_type)
    if match is not None:
        return match.group(1)
    leading = _LEADING_DELIMITER.match(content)
    if leading is None:
        raise ValueError("the $batch answer has no multipart boundary")
    return leading.group(1).decode("latin-1")


def _parts(content: bytes, boundary: str) -> list[bytes]:
    delimiter = b"--" + boundary.encode("latin-1")
    pieces = content.split(delimiter)
    parts: list[bytes] = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break  # the closing delimiter
        parts.append(_trim_newlines(piece))
    return parts


def _trim_newlines(piece: bytes) -> bytes:
    if piece.startswith(b"\r\n"):
        piece = piece[2:]
    elif piece.startswith(b"\n"):
        piece = piece[1:]
    if piece.endswith(b"\r\n"):
        piece = piece[:-2]
    elif piece.endswith(b"\n"):
        piece = piece[:-1]
    return piece


def _split_head(part: bytes) -> tuple[bytes, bytes]:
    pieces = _BLANK_LINE.split(part, maxsplit=1)
    return (pieces[0], pieces[1]) if len(pieces) == 2 else (pieces[0], b"")


def _headers(head: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines():
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _http_response(message: bytes, content_id: str | None) -> BatchResponse:
    head, body = _split_head(message)
    status_line, _, header_lines = head.decode("latin-1").partition("\n")
    fields = status_line.split()
    if len(fields) < 2 or not fields[1].isdigit():
        raise ValueError(f"unreadable status line in a $batch answer: {status_line[:80]!r}")
    headers = _headers(header_lines.encode("latin-1"))
    return BatchResponse(
        status=int(fields[1]),
        headers=headers,
        body=body.strip(),
        content_id=content_id or headers.get("content-id"),
    )
