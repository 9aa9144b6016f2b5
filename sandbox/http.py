"""Small request helpers shared by the imitated APIs."""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (last value wins)."""
    body = await request.body()
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


def strict_json(raw: bytes, *, finite_numbers: bool = False) -> Any:
    """A request body parsed as the real services' JSON readers do: strictly.

    Python's :func:`json.loads` also takes ``NaN``/``Infinity``, lone UTF-16
    surrogate escapes (``"\\ud800"``) and numbers too large for a double (read as
    infinity): none of them can be stored and answered again as JSON, so a store
    holding one would fail every later read. This raises :class:`ValueError` naming
    the problem instead. A number too large for a double is kept as infinity for the
    field's own check to refuse (Salesforce names the field), unless
    ``finite_numbers`` refuses it here.
    """
    data = json.loads(
        raw,
        parse_constant=_refuse_constant,
        parse_float=_finite_float if finite_numbers else float,
    )
    # Only a \u escape can make a lone surrogate (raw UTF-8 cannot encode one).
    if (b"\\ud" in raw or b"\\uD" in raw) and not _encodable(data):
        raise ValueError("a string holds a lone UTF-16 surrogate, which is not valid Unicode")
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def _encodable(value: Any) -> bool:
    """Whether every string in ``value`` is valid Unicode (iterative: a deeply nested
    body cannot exhaust the stack)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True
