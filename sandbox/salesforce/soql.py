"""A SOQL subset: a hand-written tokenizer, a recursive-descent parser and an evaluator.

Supported::

    SELECT COUNT() | field [, field ...]            (fields may be paths: Account.Name)
    FROM Opportunity | Account | Contact | User | OpportunityStage
    [WHERE cond]       cond: AND / OR / NOT, parentheses, = != <> < <= > >=,
                       [NOT] IN (...), LIKE; null, true, false, 'strings' with
                       SOQL's backslash escapes, numbers, 2026-05-01,
                       2026-05-01T00:00:00Z and 2026-05-01T00:00:00+02:00
    [ORDER BY path [ASC|DESC] [NULLS FIRST|LAST], ...] [LIMIT n] [OFFSET n]

As in Salesforce: keywords and names are case-insensitive, string comparisons
and LIKE ignore case, ``!=`` matches nulls, mixing AND and OR at one level
without parentheses is malformed, and a literal must fit its field's type
(datetimes unquoted). Errors carry Salesforce's error codes. This module parses;
:mod:`sandbox.salesforce.soql_eval` checks a query against the schema and runs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class SoqlError(Exception):
    """A query Salesforce would refuse; ``code`` is its errorCode."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def malformed(message: str) -> SoqlError:
    return SoqlError("MALFORMED_QUERY", message)


# --- tokens ----------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # datetime, date, number, string, ident, op, punct, end
    text: str
    pos: int

    def is_word(self, *words: str) -> bool:
        return self.kind == "ident" and self.text.upper() in words


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
   |(?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:\d{2}))(?![\w:.])
   |(?P<baddatetime>\d{4}-\d{2}-\d{2}T[\w:.+-]*)
   |(?P<date>\d{4}-\d{2}-\d{2})(?![\w:.-])
   |(?P<number>[+-]?\d+(?:\.\d+)?)(?![\w.])
   |(?P<string>'(?:[^'\\]|\\.)*')
   |(?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
   |(?P<op><=|>=|!=|<>|=|<|>)
   |(?P<punct>[(),])
    """,
    re.VERBOSE | re.DOTALL,
)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.lastgroup is None:
            near = text[pos : pos + 20]
            raise malformed(f"unexpected token at position {pos}: {near!r}")
        kind = m.lastgroup
        if kind == "baddatetime":
            raise malformed(
                f"invalid datetime literal {m.group()!r}: use 2026-05-01T00:00:00Z "
                "or an offset such as +02:00"
            )
        if kind != "ws":
            tokens.append(Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}


def decode_string(token: Token, *, like: bool = False) -> str:
    """The value of a quoted literal; in LIKE patterns ``\\%`` / ``\\_`` stay escaped."""
    body = token.text[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt.lower() in _ESCAPES:
            out.append(_ESCAPES[nxt.lower()])
        elif like and nxt in "%_":
            out.append("\\" + nxt)
        else:
            raise malformed(f"invalid escape sequence \\{nxt} in string literal {token.text}")
        i += 2
    return "".join(out)


# --- syntax tree -----------------------------------------------------------


@dataclass(frozen=True)
class Compare:
    path: str
    op: str  # = != < <= > >= IN NOT IN LIKE
    value: Token | tuple[Token, ...]


@dataclass(frozen=True)
class BoolOp:
    op: str  # AND / OR
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


Node = Compare | BoolOp | Not


@dataclass(frozen=True)
class OrderItem:
    path: str
    descending: bool
    nulls_first: bool


@dataclass(frozen=True)
class Query:
    fields: tuple[str, ...]  # empty for COUNT()
    sobject: str
    where: Node | None
    order_by: tuple[OrderItem, ...]
    limit: int | None
    offset: int

    @property
    def is_count(self) -> bool:
        return not self.fields


_KEYWORDS = {
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "ORDER", "BY", "ASC",
    "DESC", "NULLS", "FIRST", "LAST", "LIMIT", "OFFSET", "NULL", "TRUE", "FALSE",
}  # fmt: skip


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect_word(self, word: str) -> None:
        if not self.tok.is_word(word):
            raise self.unexpected(f"expecting {word}")

    def unexpected(self, hint: str = "") -> SoqlError:
        tok = self.tok
        shown = tok.text or "end of query"
        extra = f" ({hint})" if hint else ""
        return malformed(f"unexpected token: '{shown}' at position {tok.pos}{extra}")

    def name(self) -> str:
        tok = self.tok
        if tok.kind != "ident" or tok.text.upper() in _KEYWORDS:
            raise self.unexpected("expecting a field name")
        self.i += 1
        return tok.text

    def integer(self) -> int:
        tok = self.advance()
        if tok.kind != "number" or not tok.text.isdigit():
            self.i -= 1
            raise self.unexpected("expecting a non-negative integer")
        return int(tok.text)

    def query(self) -> Query:
        self.expect_word("SELECT")
        self.i += 1
        fields: list[str] = []
        if self.tok.is_word("COUNT"):
            self.i += 1
            for punct in "()":
                if self.advance().text != punct:
                    self.i -= 1
                    raise self.unexpected("only COUNT() is supported")
        else:
            fields.append(self.name())
            while self.tok.text == ",":
                self.i += 1
                fields.append(self.name())
        self.expect_word("FROM")
        self.i += 1
        sobject = self.name()
        where = None
        if self.tok.is_word("WHERE"):
            self.i += 1
            where = self.condition()
        order: list[OrderItem] = []
        if self.tok.is_word("ORDER"):
            self.i += 1
            self.expect_word("BY")
            self.i += 1
            order.append(self.order_item())
            while self.tok.text == ",":
                self.i += 1
                order.append(self.order_item())
        limit = offset = None
        if self.tok.is_word("LIMIT"):
            self.i += 1
            limit = self.integer()
        if self.tok.is_word("OFFSET"):
            self.i += 1
            offset = self.integer()
        if self.tok.kind != "end":
            raise self.unexpected()
        return Query(tuple(fields), sobject, where, tuple(order), limit, offset or 0)

    def order_item(self) -> OrderItem:
        path = self.name()
        descending = False
        if self.tok.is_word("ASC", "DESC"):
            descending = self.advance().text.upper() == "DESC"
        nulls_first = not descending
        if self.tok.is_word("NULLS"):
            self.i += 1
            if not self.tok.is_word("FIRST", "LAST"):
                raise self.unexpected("expecting FIRST or LAST")
            nulls_first = self.advance().text.upper() == "FIRST"
        return OrderItem(path, descending, nulls_first)

    def condition(self) -> Node:
        items = [self.unary()]
        connective: str | None = None
        while self.tok.is_word("AND", "OR"):
            word = self.tok.text.upper()
            if connective is not None and word != connective:
                raise self.unexpected("use parentheses to mix AND and OR")
            connective = word
            self.i += 1
            items.append(self.unary())
        return items[0] if connective is None else BoolOp(connective, tuple(items))

    def unary(self) -> Node:
        if self.tok.is_word("NOT"):
            self.i += 1
            return Not(self.unary())
        if self.tok.text == "(":
            self.i += 1
            node = self.condition()
            if self.tok.text != ")":
                raise self.unexpected("expecting ')'")
            self.i += 1
            return node
        return self.comparison()

    def comparison(self) -> Compare:
        path = self.name()
        tok = self.tok
        if tok.kind == "op":
            self.i += 1
            op = "!=" if tok.text == "<>" else tok.text
            return Compare(path, op, self.literal())
        if tok.is_word("LIKE"):
            self.i += 1
            return Compare(path, "LIKE", self.literal())
        negated = tok.is_word("NOT")
        if negated:
            self.i += 1
        if not self.tok.is_word("IN"):
            raise self.unexpected("expecting an operator")
        self.i += 1
        if self.tok.text != "(":
            raise self.unexpected("expecting '(' after IN")
        self.i += 1
        values = [self.literal()]
        while self.tok.text == ",":
            self.i += 1
            values.append(self.literal())
        if self.tok.text != ")":
            raise self.unexpected("expecting ')'")
        self.i += 1
        return Compare(path, "NOT IN" if negated else "IN", tuple(values))

    def literal(self) -> Token:
        tok = self.tok
        if tok.kind in ("string", "number", "date", "datetime") or tok.is_word(
            "NULL", "TRUE", "FALSE"
        ):
            self.i += 1
            return tok
        raise self.unexpected("expecting a value")


def parse(text: str) -> Query:
    """Parse SOQL text into a :class:`Query`; raises :class:`SoqlError` (MALFORMED_QUERY)."""
    return _Parser(text).query()
