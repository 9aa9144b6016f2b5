"""The OData subset of the sandbox's referrals list: ``$filter``, ``$orderby``, ``$skiptoken``.

``$filter`` grammar (what the reference documents, nothing more)::

    filter     := primary ("and" primary)*
    primary    := "(" filter ")" | field op literal
    op         := "eq" | "ge" | "le"
    literal    := 'text' ('' escapes a quote) | null | 2026-01-01T00:00:00Z

String fields take quoted literals; ``updatedDateTime`` takes an unquoted
ISO 8601 date-time with an offset. Anything else is a :class:`ReferralError`
(400 ``invalidRequest``) that names the problem.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from connector.sandbox import partner_center_fields as f
from connector.sandbox.partner_center_fields import ReferralError

#: filterable field → allowed values (None: any string)
STRING_FIELDS: dict[str, frozenset[str] | None] = {
    "status": frozenset(f.STATUS_SUBSTATUS),
    "substatus": f.ALL_SUBSTATUSES,
    "type": f.TYPES,
    "direction": f.DIRECTIONS,
    "qualification": f.QUALIFICATIONS,
    "engagementId": None,
    "externalReferenceId": None,
}
TIME_FIELD = "updatedDateTime"
OPERATORS = ("eq", "ge", "le")

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lpar>\() | (?P<rpar>\)) |
        (?P<string>'(?:[^']|'')*') |
        (?P<time>\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?) |
        (?P<word>[A-Za-z_][A-Za-z0-9_/.]*) |
        (?P<bad>\S+)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: str | int | None  # int: microseconds, for updatedDateTime


@dataclass
class Query:
    """A parsed ``$filter``: conditions plus the hints the store uses to avoid full scans."""

    conditions: list[Condition] = field(default_factory=list)

    def equals(self, name: str) -> list[str | int | None]:
        return [c.value for c in self.conditions if c.field == name and c.op == "eq"]

    def time_bounds(self) -> tuple[int | None, int | None]:
        """Closed bounds (microseconds) on ``updatedDateTime`` from its ge/le/eq conditions."""
        low: int | None = None
        high: int | None = None
        for c in self.conditions:
            if c.field != TIME_FIELD or not isinstance(c.value, int):
                continue
            if c.op in ("ge", "eq"):
                low = c.value if low is None else max(low, c.value)
            if c.op in ("le", "eq"):
                high = c.value if high is None else min(high, c.value)
        return low, high

    def predicate(self) -> Callable[[dict[str, Any]], bool]:
        """Matches the string conditions (time bounds are applied through the index)."""
        checks = [c for c in self.conditions if c.field != TIME_FIELD]
        if not checks:
            return lambda referral: True
        return lambda referral: all(referral.get(c.field) == c.value for c in checks)


def parse_filter(text: str | None) -> Query:
    if text is None or not text.strip():
        return Query()
    tokens = _tokenize(text)
    conditions: list[Condition] = []
    position = _parse_and(tokens, 0, conditions)
    if position != len(tokens):
        raise _error(f"unexpected {tokens[position][1]!r} after a complete expression")
    return Query(conditions)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.lastgroup is None:
            raise _error(f"cannot read the filter at position {position}")
        kind, value = match.lastgroup, match.group(match.lastgroup)
        if kind == "bad":
            hint = " (unterminated string literal?)" if value.startswith("'") else ""
            raise _error(f"unexpected {value!r} at position {position}{hint}")
        tokens.append((kind, value))
        position = match.end()
    return tokens


def _parse_and(tokens: list[tuple[str, str]], i: int, out: list[Condition]) -> int:
    i = _parse_primary(tokens, i, out)
    while i < len(tokens) and tokens[i] == ("word", "and"):
        i = _parse_primary(tokens, i + 1, out)
    if i < len(tokens) and tokens[i][0] == "word" and tokens[i][1].lower() in ("or", "not"):
        raise _error(f"{tokens[i][1]!r} is not supported: combine conditions with 'and' only")
    return i


def _parse_primary(tokens: list[tuple[str, str]], i: int, out: list[Condition]) -> int:
    if i >= len(tokens):
        raise _error("the filter ends where a condition was expected")
    if tokens[i][0] == "lpar":
        i = _parse_and(tokens, i + 1, out)
        if i >= len(tokens) or tokens[i][0] != "rpar":
            raise _error("a '(' is not closed")
        return i + 1
    if i + 2 >= len(tokens):
        raise _error("incomplete condition: expected <field> <eq|ge|le> <value>")
    (kind, name), (_, op), literal = tokens[i], tokens[i + 1], tokens[i + 2]
    if kind != "word" or (name not in STRING_FIELDS and name != TIME_FIELD):
        fields = ", ".join([*STRING_FIELDS, TIME_FIELD])
        raise _error(f"cannot filter on {name!r}; filterable fields: {fields}")
    if op not in OPERATORS:
        raise _error(f"operator {op!r} is not supported on {name}; use eq, ge or le")
    out.append(Condition(name, op, _literal(name, op, literal)))
    return i + 3


def _literal(name: str, op: str, token: tuple[str, str]) -> str | int | None:
    kind, text = token
    if name == TIME_FIELD:
        if kind != "time":
            raise _error(
                f"{name} takes an unquoted ISO 8601 date-time such as 2026-01-01T00:00:00Z "
                f"(got {text})"
            )
        try:
            return f.micros(f.parse_time(text))
        except ValueError:
            raise _error(f"{text} is not a date-time with a UTC offset (e.g. …Z)") from None
    if op != "eq":
        raise _error(f"{name} supports eq only (got {op})")
    if kind == "word" and text == "null":
        return None
    if kind != "string":
        raise _error(f"{name} takes a quoted string literal such as 'Active' (got {text})")
    value = text[1:-1].replace("''", "'")
    allowed = STRING_FIELDS[name]
    if allowed is not None and value not in allowed:
        raise _error(f"{name} is one of {', '.join(sorted(allowed))} (got {value!r})")
    return value


def _error(message: str) -> ReferralError:
    return ReferralError(f"invalid $filter: {message}", target="$filter")


def parse_orderby(text: str | None) -> bool:
    """True for descending. Only ``updatedDateTime`` (asc or desc) is supported."""
    if text is None or not text.strip():
        return False
    parts = text.split()
    if (
        parts[0] != TIME_FIELD
        or len(parts) > 2
        or (len(parts) == 2 and parts[1] not in ("asc", "desc"))
    ):
        raise ReferralError(
            f"invalid $orderby {text!r}: use updatedDateTime asc or updatedDateTime desc",
            target="$orderby",
        )
    return len(parts) == 2 and parts[1] == "desc"


def parse_top(text: str | None, page_max: int) -> int:
    """``$top`` is the page size (1..100); larger values are served in pages of 100."""
    if text is None:
        return page_max
    if not text.isdigit() or int(text) < 1:
        raise ReferralError(f"invalid $top {text!r}: a positive integer", target="$top")
    return min(int(text), page_max)


def encode_skiptoken(key: tuple[int, str], descending: bool) -> str:
    raw = json.dumps([key[0], key[1], "d" if descending else "a"]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_skiptoken(token: str, descending: bool) -> tuple[int, str]:
    """The position key ``(updated µs, id)`` after which the next page starts."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        at, ident, order = json.loads(raw)
        if not isinstance(at, int) or not isinstance(ident, str) or order not in ("a", "d"):
            raise ValueError(token)
    except (ValueError, TypeError, binascii.Error):
        raise ReferralError(
            "invalid $skiptoken: follow @odata.nextLink verbatim", target="$skiptoken"
        ) from None
    if (order == "d") != descending:
        raise ReferralError(
            "the $skiptoken belongs to another $orderby: follow @odata.nextLink verbatim",
            target="$skiptoken",
        )
    return at, ident
