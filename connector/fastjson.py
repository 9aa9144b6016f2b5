"""JSON on the hot path: orjson, with the standard library where orjson says no.

A first sync encodes each referral's body several times (the create request, the link
and its create intent in the store, the record's history) and decodes each answer;
with the standard library that was about a tenth of the connector's CPU per referral.
orjson does the same in a fraction of the time. Where it refuses a value the standard
library accepts (an integer beyond 64 bits, a body with a byte-order mark, NaN in an
answer), the standard library does the work as before, so nothing that passed before
fails now.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_SORTED = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps_sorted(value: Any) -> str:
    """Compact JSON text with sorted keys (the state store's form)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return _SORTED.encode(value)


def dumps_body(value: Any) -> bytes:
    """A request body: compact UTF-8 JSON (as httpx's ``json=`` sends it)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return _COMPACT.encode(value).encode()


def loads(data: bytes | str) -> Any:
    """A JSON document; raises :class:`json.JSONDecodeError` (a ValueError) if it is none."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
