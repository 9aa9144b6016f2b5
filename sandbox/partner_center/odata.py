"""The OData options of the sandbox's referral list: ``$filter``, ``$orderby``, ``$top``,
``$skip``, ``$select`` and the ``$skiptoken`` of ``@odata.nextLink``.

``$filter`` takes every documented example (GL19, GL20) and is as permissive as OData
where Microsoft is silent::

    expr     := and ("or" and)*
    and      := unary ("and" unary)*
    unary    := "not" unary | "(" expr ")" | path "/any(" var ":" expr ")" | path op literal
    op       := eq | ne | ge | gt | le | lt
    literal  := 'text' ('' escapes a quote) | GUID (unquoted, as in real answers' links)
              | 2026-01-01T00:00:00Z | number | true | false | null
    path     := name ("/" name)*      e.g. customerProfile/address/country, t/email

``email`` alone is the partner team's contact email (GL19). Comparisons on
``createdDateTime`` and ``updatedDateTime`` compare times. A filter that cannot be read
is a 400 ``invalidRequest`` naming the problem.

The ``$skiptoken`` carries the whole query (filter, order, select, what remains of
``$top``) and the position after the last item: the published next links carry nothing
else (``http://host/v1.0/referrals?$skiptoken=…``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from sandbox.partner_center import fields as f
from sandbox.partner_center.fields import ReferralError

TIME_FIELDS = ("updatedDateTime", "createdDateTime")
OPERATORS = ("eq", "ne", "ge", "gt", "le", "lt")

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lpar>\() | (?P<rpar>\)) | (?P<colon>:) |
        (?P<string>'(?:[^']|'')*') |
        (?P<time>\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?) |
        (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}) |
        (?P<number>-?\d+(?:\.\d+)?) |
        (?P<word>[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*) |
        (?P<bad>\S+)
    )""",
    re.VERBOSE,
)

Predicate = Callable[[dict[str, Any]], bool]
Token = tuple[str, str]


@dataclass(frozen=True)
class Comparison:
    path: tuple[str, ...]
    op: str
    value: Any  # str, int/float, bool, None, or microseconds for a time


@dataclass
class Query:
    """A parsed ``$filter``: a predicate, plus what the store can use from its indexes."""

    predicate: Predicate
    #: comparisons ANDed at the top level (index hints: equal ids, time bounds)
    top_level: tuple[Comparison, ...] = ()

    def equals(self, name: str) -> list[Any]:
        return [c.value for c in self.top_level if c.path == (name,) and c.op == "eq"]

    def time_bounds(self, name: str) -> tuple[int | None, int | None]:
        """Closed bounds in microseconds on ``name`` from its top-level comparisons."""
        low: int | None = None
        high: int | None = None
        for c in self.top_level:
            if c.path != (name,) or not isinstance(c.value, int) or isinstance(c.value, bool):
                continue
            if c.op in ("ge", "gt", "eq"):
                low = c.value if low is None else max(low, c.value)
            if c.op in ("le", "lt", "eq"):
                high = c.value if high is None else min(high, c.value)
        return low, high


def _everything(referral: dict[str, Any]) -> bool:
    return True


def parse_filter(text: str | None) -> Query:
    if text is None or not text.strip():
        return Query(_everything)
    parser = _Parser(_tokenize(text))
    predicate, top = parser.expression({})
    if parser.i != len(parser.tokens):
        raise _error(f"unexpected {parser.tokens[parser.i][1]!r} after a complete expression")
    return Query(predicate, tuple(top))


def _tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
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


class _Parser:
    """Recursive descent over the tokens; builds predicates as closures."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def _peek_word(self, *words: str) -> bool:
        return (
            self.i < len(self.tokens)
            and self.tokens[self.i][0] == "word"
            and self.tokens[self.i][1].lower() in words
        )

    def expression(self, scope: dict[str, int]) -> tuple[Predicate, list[Comparison]]:
        parts = [self._and(scope)]
        while self._peek_word("or"):
            self.i += 1
            parts.append(self._and(scope))
        if len(parts) == 1:
            return parts[0]
        preds = [p for p, _ in parts]
        return (lambda r: any(p(r) for p in preds)), []

    def _and(self, scope: dict[str, int]) -> tuple[Predicate, list[Comparison]]:
        parts = [self._unary(scope)]
        while self._peek_word("and"):
            self.i += 1
            parts.append(self._unary(scope))
        if len(parts) == 1:
            return parts[0]
        preds = [p for p, _ in parts]
        return (lambda r: all(p(r) for p in preds)), [c for _, cs in parts for c in cs]

    def _unary(self, scope: dict[str, int]) -> tuple[Predicate, list[Comparison]]:
        if self.i >= len(self.tokens):
            raise _error("the filter ends where a condition was expected")
        if self._peek_word("not"):
            self.i += 1
            inner, _ = self._unary(scope)
            return (lambda r: not inner(r)), []
        kind, text = self.tokens[self.i]
        if kind == "lpar":
            self.i += 1
            result = self.expression(scope)
            self._expect("rpar", "a '(' is not closed")
            return result
        if kind != "word":
            raise _error(f"expected a field name, got {text!r}")
        self.i += 1
        path = tuple(text.split("/"))
        if (
            path[-1].lower() == "any"
            and self.i < len(self.tokens)
            and self.tokens[self.i][0] == "lpar"
        ):
            return self._any(path[:-1], scope), []
        return self._comparison(path, scope)

    def _expect(self, kind: str, message: str) -> str:
        if self.i >= len(self.tokens) or self.tokens[self.i][0] != kind:
            raise _error(message)
        self.i += 1
        return self.tokens[self.i - 1][1]

    def _any(self, path: tuple[str, ...], scope: dict[str, int]) -> Predicate:
        self._expect("lpar", "any needs (variable: condition)")
        variable = self._expect(
            "word", "any needs a variable name, as in team/any(t: t/email eq 'x')"
        )
        self._expect("colon", "any needs ':' after its variable")
        depth = len(scope)
        inner, _ = self.expression({**scope, variable: depth})
        self._expect("rpar", "any( is not closed")

        def matches(referral: dict[str, Any]) -> bool:
            items = _resolve(referral, path, scope)
            if not isinstance(items, list):
                return False
            # the lambda variable is bound by carrying it in a reserved key
            return any(inner({**referral, f"\x00{depth}": item}) for item in items)

        return matches

    def _comparison(
        self, path: tuple[str, ...], scope: dict[str, int]
    ) -> tuple[Predicate, list[Comparison]]:
        if self.i + 1 >= len(self.tokens):
            raise _error(f"incomplete condition after {'/'.join(path)}: expected <op> <value>")
        op = self.tokens[self.i][1].lower()
        if self.tokens[self.i][0] != "word" or op not in OPERATORS:
            raise _error(
                f"operator {self.tokens[self.i][1]!r} is not supported; use {', '.join(OPERATORS)}"
            )
        literal = self.tokens[self.i + 1]
        self.i += 2
        timed = path[-1] in TIME_FIELDS and len(path) == 1
        value = _literal(literal, timed)
        comparison = Comparison(path, op, value)
        if path == ("email",) and not scope:
            return _team_email(op, value), []
        compare = _COMPARE[op]

        def matches(referral: dict[str, Any]) -> bool:
            found = _resolve(referral, path, scope)
            if timed and isinstance(found, str):
                try:
                    found = f.micros(f.parse_time(found))
                except ValueError:
                    return False
            return compare(found, value)

        return matches, ([comparison] if not scope else [])


def _resolve(referral: dict[str, Any], path: tuple[str, ...], scope: dict[str, int]) -> Any:
    node: Any = referral
    keys = path
    if path and path[0] in scope:
        node = referral.get(f"\x00{scope[path[0]]}")
        keys = path[1:]
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _team_email(op: str, value: Any) -> Predicate:
    compare = _COMPARE[op]

    def matches(referral: dict[str, Any]) -> bool:
        team = referral.get("team")
        return isinstance(team, list) and any(
            isinstance(m, dict) and compare(m.get("email"), value) for m in team
        )

    return matches


def _ordered(a: Any, b: Any, test: Callable[[Any, Any], bool]) -> bool:
    if a is None or b is None or isinstance(a, bool) != isinstance(b, bool):
        return False
    try:
        return test(a, b)
    except TypeError:
        return False


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str) and f.is_guid(a) and f.is_guid(b):
        return a.lower() == b.lower()
    return bool(a == b)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": _equal,
    "ne": lambda a, b: not _equal(a, b),
    "ge": lambda a, b: _ordered(a, b, lambda x, y: x >= y),
    "gt": lambda a, b: _ordered(a, b, lambda x, y: x > y),
    "le": lambda a, b: _ordered(a, b, lambda x, y: x <= y),
    "lt": lambda a, b: _ordered(a, b, lambda x, y: x < y),
}


def _literal(token: Token, timed: bool) -> Any:
    kind, text = token
    if kind == "string":
        value: Any = text[1:-1].replace("''", "'")
        if timed:
            try:
                return f.micros(f.parse_time(value))
            except ValueError:
                raise _error(f"{text} is not an ISO 8601 date-time") from None
        return value
    if kind == "time":
        try:
            moment = f.parse_time(text)
        except ValueError:
            raise _error(f"{text} is not an ISO 8601 date-time") from None
        return f.micros(moment) if timed else text
    if kind == "guid":
        return text
    if kind == "number":
        return float(text) if "." in text else int(text)
    if kind == "word" and text.lower() in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[text.lower()]
    raise _error(f"expected a value such as 'Active', a GUID or a date-time, got {text!r}")


def _error(message: str) -> ReferralError:
    return ReferralError(f"invalid $filter: {message}", target="$filter")


# --- $orderby, $top, $skip, $select -----------------------------------------------------------


def parse_orderby(text: str | None) -> tuple[str, bool]:
    """(field, descending): ``updatedDateTime`` (the default) or ``createdDateTime``."""
    if text is None or not text.strip():
        return "updatedDateTime", False
    parts = text.split()
    field = next((name for name in TIME_FIELDS if name.lower() == parts[0].lower()), None)
    if (
        field is None
        or len(parts) > 2
        or (len(parts) == 2 and parts[1].lower() not in ("asc", "desc"))
    ):
        raise ReferralError(
            f"invalid $orderby {text!r}: use createdDateTime or updatedDateTime, asc or desc",
            target="$orderby",
        )
    return field, len(parts) == 2 and parts[1].lower() == "desc"


def parse_count(text: str | None, name: str) -> int | None:
    """A non-negative integer option (``$top``, ``$skip``), None when absent."""
    if text is None or not text.strip():
        return None
    if not text.strip().isdigit():
        raise ReferralError(f"invalid {name} {text!r}: a non-negative integer", target=name)
    return int(text)


def parse_select(text: str | None) -> list[str] | None:
    if text is None or not text.strip():
        return None
    return [n.strip() for n in text.split(",") if n.strip()]


# --- $skiptoken -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Continuation:
    """What a next link must remember: the query and where the last page ended."""

    filter: str | None
    orderby: str | None
    select: str | None
    #: items still to answer under ``$top`` (None: no ``$top``)
    remaining: int | None
    #: the (time µs, id) key of the last item answered
    after: tuple[int, str]


#: a version before the token: a ``/`` that travels as ``%2f``, as in the published links
_TOKEN_VERSION = "1/"


def encode_skiptoken(state: Continuation) -> str:
    """Standard base64, percent-encoded (``%2f``, ``%2b``, ``%3d``), as the published tokens are."""
    raw = json.dumps(
        [state.filter, state.orderby, state.select, state.remaining, list(state.after)]
    ).encode()
    encoded = quote(_TOKEN_VERSION + base64.b64encode(raw).decode(), safe="")
    return encoded.replace("%2F", "%2f").replace("%2B", "%2b").replace("%3D", "%3d")


def decode_skiptoken(token: str) -> Continuation:
    """The query and position a next link's ``$skiptoken`` (already URL-decoded once) carries."""
    try:
        text = unquote(token) if "%" in token else token
        if not text.startswith(_TOKEN_VERSION):
            raise ValueError(token)
        text = text.removeprefix(_TOKEN_VERSION)
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        filt, order, select, remaining, (at, ident) = json.loads(raw)
        if not isinstance(at, int) or not isinstance(ident, str):
            raise ValueError(token)
        if remaining is not None and not isinstance(remaining, int):
            raise ValueError(token)
    except (ValueError, TypeError, binascii.Error):
        raise ReferralError(
            "invalid $skiptoken: follow @odata.nextLink as sent", target="$skiptoken"
        ) from None
    return Continuation(filt, order, select, remaining, (at, ident))
