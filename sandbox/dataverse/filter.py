"""An OData ``$filter`` parser for the Dataverse sandbox: text → a predicate over a row.

Grammar (OData v4, the part Dataverse users write)::

    expr    := and ('or' and)*
    and     := unary ('and' unary)*
    unary   := 'not' unary | compare
    compare := operand (('eq'|'ne'|'gt'|'ge'|'lt'|'le') operand)?
    operand := '(' expr ')' | function | literal | column

Functions: ``contains``, ``startswith``, ``endswith`` and
``Microsoft.Dynamics.CRM.In`` / ``NotIn(PropertyName='x',PropertyValues=['a','b'])``.
Like Dataverse (SQL underneath), string comparisons ignore case and ``ne``
with a value never matches a null column.

A compiled filter also tells, when it can, which values of one column a kept
row must have (:class:`Candidates`): ``eq`` and ``In`` give them, ``or`` joins
those of one column and ``and`` keeps the narrowest. The read indexes look
those rows up by key instead of testing every row of the table; the filter
itself still decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sandbox.dataverse import schema as s
from sandbox.dataverse.errors import BAD_QUERY, DataverseError

Row = dict[str, Any]
Predicate = Callable[[Row], bool]

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>'(?:[^']|'')*')
    | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\b
    | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)
    | (?P<date>\d{4}-\d{2}-\d{2})
    | (?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)[mMdDfFlL]?
    | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
    | (?P<punct>[(),=\[\]])
    )""",
    re.VERBOSE,
)
_COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le")
_NUMERIC = (s.INT, s.BIGINT, s.MONEY, s.PICKLIST, s.STATE, s.STATUS)


@dataclass(frozen=True)
class Token:
    kind: str  # str guid datetime date num ident punct end
    text: str


@dataclass(frozen=True)
class Literal:
    kind: str  # str guid datetime date num null bool
    value: Any


@dataclass(frozen=True)
class Candidates:
    """Every row a filter keeps has ``column`` (compared as ``kind``, see :func:`normalize`)
    equal to one of ``values`` (None for a null column)."""

    column: str
    kind: str
    values: frozenset[Any]


class Condition:
    """A compiled filter: a predicate over a row, with the candidates it allows if known."""

    __slots__ = ("candidates", "test")

    def __init__(self, test: Predicate, candidates: Candidates | None = None) -> None:
        self.test = test
        self.candidates = candidates

    def __call__(self, row: Row) -> bool:
        return self.test(row)


def bad(message: str) -> DataverseError:
    return DataverseError(400, BAD_QUERY, message)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.lastgroup is None:
            raise bad(f"Syntax error in $filter at position {pos}: {text[pos : pos + 20]!r}")
        tokens.append(Token(match.lastgroup, match.group(match.lastgroup)))
        pos = match.end()
    tokens.append(Token("end", ""))
    return tokens


def parse_datetime(text: str) -> datetime:
    """An ISO datetime (``Z``, an offset, or naive meaning UTC) as an aware UTC datetime."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def normalize(kind: str, value: Any) -> Any:
    """A stored value in the form comparisons use (None stays None)."""
    if value is None:
        return None
    if kind == s.STRING:
        return str(value).casefold()
    if kind in (s.GUID, s.LOOKUP):
        return str(value).lower()
    if kind == s.DATETIME:
        return parse_datetime(str(value))
    if kind == s.DATE:
        return str(value)[:10]
    if kind == s.MONEY:
        return float(value)
    if kind in _NUMERIC:
        return int(value)
    return value


def coerce(column: s.Column, lit: Literal) -> Any:
    """A literal converted to ``column``'s comparison form, or a 400 when the types differ."""
    kind = column.kind
    if lit.kind == "null":
        return None
    try:
        if kind == s.STRING and lit.kind == "str":
            return str(lit.value).casefold()
        if kind in (s.GUID, s.LOOKUP) and lit.kind in ("guid", "str"):
            return str(lit.value).lower()
        if kind == s.BOOL and lit.kind == "bool":
            return lit.value
        if kind in _NUMERIC and lit.kind in ("num", "str"):
            number = float(lit.value)
            return number if kind == s.MONEY else int(number)
        if kind == s.DATE and lit.kind in ("date", "datetime", "str"):
            return str(lit.value)[:10]
        if kind == s.DATETIME and lit.kind in ("datetime", "date", "str"):
            return parse_datetime(str(lit.value))
    except ValueError:
        pass
    raise bad(
        f"A binary operator with incompatible types was detected: column '{column.name}' "
        f"({kind}) compared with the literal {lit.value!r}."
    )


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "eq":
        return bool(a == b)
    if op == "ne":
        return a is not None if b is None else (a is not None and a != b)
    if a is None or b is None:
        return False
    if op == "gt":
        return bool(a > b)
    if op == "ge":
        return bool(a >= b)
    if op == "lt":
        return bool(a < b)
    return bool(a <= b)


class _Parser:
    def __init__(self, text: str, table: s.Table) -> None:
        self.tokens = tokenize(text)
        self.pos = 0
        self.table = table

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, text: str) -> None:
        token = self.take()
        if token.text != text:
            raise bad(f"Syntax error in $filter: expected {text!r}, found {token.text!r}")

    def is_word(self, word: str) -> bool:
        token = self.peek()
        return token.kind == "ident" and token.text == word

    def parse(self) -> Condition:
        condition = self.expr()
        if self.peek().kind != "end":
            raise bad(f"Syntax error in $filter: unexpected {self.peek().text!r}")
        return condition

    def expr(self) -> Condition:
        parts = [self.conjunction()]
        while self.is_word("or"):
            self.take()
            parts.append(self.conjunction())
        if len(parts) == 1:
            return parts[0]
        tests = [p.test for p in parts]
        return Condition(lambda row: any(t(row) for t in tests), _union(parts))

    def conjunction(self) -> Condition:
        parts = [self.unary()]
        while self.is_word("and"):
            self.take()
            parts.append(self.unary())
        if len(parts) == 1:
            return parts[0]
        tests = [p.test for p in parts]
        narrow = [p.candidates for p in parts if p.candidates is not None]
        return Condition(
            lambda row: all(t(row) for t in tests),
            min(narrow, key=lambda c: len(c.values)) if narrow else None,
        )

    def unary(self) -> Condition:
        if self.is_word("not"):
            self.take()
            inner = self.unary().test
            return Condition(lambda row: not inner(row))
        return self.comparison()

    def comparison(self) -> Condition:
        left = self.operand()
        token = self.peek()
        if token.kind == "ident" and token.text in _COMPARISONS:
            self.take()
            return self.binary(token.text, left, self.operand())
        if isinstance(left, Condition):
            return left
        raise bad("Syntax error in $filter: a column or literal is not a condition by itself")

    def binary(self, op: str, left: Any, right: Any) -> Condition:
        if isinstance(left, Literal) and isinstance(right, s.Column):
            left, right = right, left
            op = {"gt": "lt", "lt": "gt", "ge": "le", "le": "ge"}.get(op, op)
        if not (isinstance(left, s.Column) and isinstance(right, Literal)):
            raise bad("The sandbox supports comparisons of one column with one literal only.")
        column, value = left, coerce(left, right)
        name, kind = column.name, column.kind
        candidates = Candidates(name, kind, frozenset((value,))) if op == "eq" else None
        return Condition(
            lambda row: _compare(op, normalize(kind, row.get(name)), value), candidates
        )

    def operand(self) -> Any:
        token = self.take()
        if token.text == "(" and token.kind == "punct":
            inner = self.expr()
            self.expect(")")
            return inner
        if token.kind == "ident":
            if self.peek().text == "(":
                return self.function(token.text)
            if token.text == "null":
                return Literal("null", None)
            if token.text in ("true", "false"):
                return Literal("bool", token.text == "true")
            return self.column(token.text)
        if token.kind == "str":
            return Literal("str", token.text[1:-1].replace("''", "'"))
        if token.kind in ("guid", "datetime", "date", "num"):
            return Literal(token.kind, token.text)
        raise bad(f"Syntax error in $filter near {token.text!r}")

    def column(self, name: str) -> s.Column:
        column = self.table.columns.get(name)
        if column is None:
            raise bad(
                f"Could not find a property named '{name}' on type "
                f"'Microsoft.Dynamics.CRM.{self.table.logical_name}'."
            )
        return column

    def function(self, name: str) -> Condition:
        self.expect("(")
        if name in ("contains", "startswith", "endswith"):
            column = self.operand()
            self.expect(",")
            needle = self.operand()
            self.expect(")")
            if not (isinstance(column, s.Column) and column.kind == s.STRING):
                raise bad(f"{name}() needs a text column as its first argument")
            if not (isinstance(needle, Literal) and needle.kind == "str"):
                raise bad(f"{name}() needs a string literal as its second argument")
            return Condition(_text_match(name, column.name, str(needle.value).casefold()))
        short = name.removeprefix("Microsoft.Dynamics.CRM.")
        if short in ("In", "NotIn"):
            return self.in_function(short == "NotIn")
        raise bad(f"The function '{name}' is not supported by the sandbox.")

    def in_function(self, negate: bool) -> Condition:
        args: dict[str, Any] = {}
        while True:
            key = self.take()
            self.expect("=")
            if self.peek().text == "[":
                self.take()
                items: list[Literal] = []
                while self.peek().text != "]":
                    items.append(self.operand())
                    if self.peek().text == ",":
                        self.take()
                self.take()
                args[key.text] = items
            else:
                args[key.text] = self.operand()
            if self.take().text == ")":
                break
        prop, values = args.get("PropertyName"), args.get("PropertyValues")
        if not isinstance(prop, Literal) or not isinstance(values, list):
            raise bad("In() needs PropertyName='column' and PropertyValues=[...]")
        column = self.column(str(prop.value))
        wanted = {coerce(column, v) for v in values}
        name, kind = column.name, column.kind
        if negate:
            return Condition(lambda row: normalize(kind, row.get(name)) not in wanted)
        return Condition(
            lambda row: normalize(kind, row.get(name)) in wanted,
            Candidates(name, kind, frozenset(wanted)),
        )


def _union(parts: list[Condition]) -> Candidates | None:
    """The candidates of an ``or``: known when every part names the same column."""
    first = parts[0].candidates
    if first is None:
        return None
    values: set[Any] = set()
    for part in parts:
        c = part.candidates
        if c is None or c.column != first.column or c.kind != first.kind:
            return None
        values |= c.values
    return Candidates(first.column, first.kind, frozenset(values))


def _text_match(function: str, name: str, needle: str) -> Predicate:
    def match(row: Row) -> bool:
        value = row.get(name)
        if value is None:
            return False
        text = str(value).casefold()
        if function == "contains":
            return needle in text
        if function == "startswith":
            return text.startswith(needle)
        return text.endswith(needle)

    return match


def compile_filter(text: str, table: s.Table) -> Condition:
    """``$filter`` text → a predicate over ``table``'s stored rows (400 on any error)."""
    return _Parser(text, table).parse()
