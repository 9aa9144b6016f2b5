"""Evaluating parsed SOQL (:mod:`sandbox.salesforce.soql`) over the sandbox org's records.

A :class:`Plan` checks a query against the schema; from it come a predicate
(WHERE), a sort (ORDER BY) and a row builder (SELECT) that nests relationship
fields the way the REST API does. Relationships are followed with a ``fetch``
function, so this module holds no data of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sandbox.salesforce.schema import (
    NUMBER_TYPES,
    SCHEMA,
    TEXT_TYPES,
    FieldSpec,
    ObjectSpec,
    format_datetime,
    is_date,
    normalize_id,
    parse_datetime,
)
from sandbox.salesforce.soql import (
    BoolOp,
    Compare,
    Node,
    Not,
    OrderItem,
    Query,
    SoqlError,
    Token,
    decode_string,
    malformed,
    parse,
)

Record = dict[str, Any]
#: looks a record up by object name and id (the evaluator follows relationships with it)
Fetch = Callable[[str, str], Record | None]
Predicate = Callable[[Record], bool]


# --- resolution against the schema -----------------------------------------


@dataclass(frozen=True)
class Path:
    """A resolved field path: the relationships to follow, then the field."""

    hops: tuple[FieldSpec, ...]  # reference fields, in order
    field: FieldSpec
    names: tuple[str, ...]  # canonical relationship names, then the field name


def resolve(obj: ObjectSpec, text: str) -> Path:
    parts = text.split(".")
    hops: list[FieldSpec] = []
    names: list[str] = []
    current = obj
    for rel in parts[:-1]:
        ref = current.relationship(rel)
        if ref is None or ref.reference_to is None or ref.relationship_name is None:
            raise SoqlError(
                "INVALID_FIELD",
                f"Didn't understand relationship '{rel}' in field path '{text}' on entity "
                f"'{current.name}'. If you are attempting to use a custom relationship, be "
                "sure to append the '__r' after the custom relationship name.",
            )
        hops.append(ref)
        names.append(ref.relationship_name)
        current = SCHEMA[ref.reference_to.lower()]
    spec = current.field(parts[-1])
    if spec is None:
        raise SoqlError(
            "INVALID_FIELD",
            f"No such column '{parts[-1]}' on entity '{current.name}'. If you are attempting "
            "to use a custom field, be sure to append the '__c' after the custom field name.",
        )
    names.append(spec.name)
    return Path(tuple(hops), spec, tuple(names))


def getter(path: Path, fetch: Fetch) -> Callable[[Record], Any]:
    name = path.field.name
    if not path.hops:
        return lambda record: record.get(name)
    hops = [(h.name, h.reference_to or "") for h in path.hops]

    def get(record: Record) -> Any:
        current: Record | None = record
        for fk, target in hops:
            ref = current.get(fk) if current is not None else None
            if ref is None:
                return None
            current = fetch(target, ref)
        return None if current is None else current.get(name)

    return get


# --- literals --------------------------------------------------------------


def literal_value(spec: FieldSpec, tok: Token) -> Any:
    """The stored form of a literal compared with ``spec``; raises on a type mismatch."""
    if tok.is_word("NULL"):
        return None
    kind = spec.type
    if kind in TEXT_TYPES:
        if tok.kind != "string":
            raise SoqlError(
                "INVALID_FIELD",
                f"value of filter criterion for field '{spec.name}' must be of type "
                f"{kind} and should be enclosed in quotes",
            )
        value = decode_string(tok)
        if kind in ("id", "reference"):
            normalized = normalize_id(value)
            if normalized is None:
                raise SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {value}")
            return normalized
        return value
    expected = {"boolean": "boolean", "date": "date", "datetime": "dateTime"}.get(kind, "number")
    mismatch = SoqlError(
        "INVALID_FIELD",
        f"value of filter criterion for field '{spec.name}' must be of type {expected} "
        "and should not be enclosed in quotes",
    )
    if kind == "boolean":
        if not tok.is_word("TRUE", "FALSE"):
            raise mismatch
        return tok.text.upper() == "TRUE"
    if kind in NUMBER_TYPES:
        if tok.kind != "number":
            raise mismatch
        return float(tok.text)
    if kind == "date":
        if tok.kind != "date":
            raise mismatch
        if not is_date(tok.text):
            raise malformed(f"invalid date: {tok.text}")
        return tok.text
    if tok.kind != "datetime":  # datetime fields
        raise mismatch
    parsed = parse_datetime(tok.text)
    if parsed is None:
        raise malformed(f"invalid datetime: {tok.text}")
    return format_datetime(parsed)


def _like_regex(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "%_":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


# --- predicates ------------------------------------------------------------


def _fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def compile_where(obj: ObjectSpec, node: Node, fetch: Fetch) -> Predicate:
    """A predicate over stored records of ``obj``."""
    if isinstance(node, BoolOp):
        parts = [compile_where(obj, item, fetch) for item in node.items]
        if node.op == "AND":

            def every(record: Record) -> bool:
                # plain loops: twice as fast as all()/any() over a generator on 100k rows
                for part in parts:  # noqa: SIM110
                    if not part(record):
                        return False
                return True

            return every

        def some(record: Record) -> bool:
            for part in parts:  # noqa: SIM110
                if part(record):
                    return True
            return False

        return some
    if isinstance(node, Not):
        inner = compile_where(obj, node.item, fetch)
        return lambda r: not inner(r)
    return _compile_compare(obj, node, fetch)


def _compile_compare(obj: ObjectSpec, node: Compare, fetch: Fetch) -> Predicate:
    path = resolve(obj, node.path)
    spec = path.field
    if not spec.filterable:
        raise SoqlError("INVALID_FIELD", f"field '{spec.name}' can not be filtered in a query call")
    get = getter(path, fetch)
    text = spec.type in TEXT_TYPES
    op = node.op
    if op in ("IN", "NOT IN"):
        assert isinstance(node.value, tuple)
        values = {_fold(literal_value(spec, t)) for t in node.value}
        if op == "IN":
            return lambda r: _fold(get(r)) in values
        return lambda r: _fold(get(r)) not in values
    assert isinstance(node.value, Token)
    if op == "LIKE":
        if not text or spec.type in ("id", "reference") or node.value.kind != "string":
            raise SoqlError(
                "INVALID_QUERY_FILTER_OPERATOR",
                f"invalid operator LIKE on field '{spec.name}' of type {spec.type}",
            )
        rx = _like_regex(decode_string(node.value, like=True))
        return lambda r: (v := get(r)) is not None and rx.fullmatch(v) is not None
    value = literal_value(spec, node.value)
    if spec.type == "boolean" and op not in ("=", "!="):
        raise SoqlError(
            "INVALID_QUERY_FILTER_OPERATOR",
            f"invalid operator {op} on boolean field '{spec.name}'",
        )
    if value is None:
        if op not in ("=", "!="):
            raise malformed(f"null can only be compared with = or != (field '{spec.name}')")
        return (lambda r: get(r) is None) if op == "=" else (lambda r: get(r) is not None)
    target = _fold(value) if text else value
    fold = _fold if text else _same
    if op == "=":
        return lambda r: fold(get(r)) == target
    if op == "!=":
        return lambda r: fold(get(r)) != target
    cmp = _ORDERING[op]
    return lambda r: (v := get(r)) is not None and cmp(fold(v), target)


def _same(value: Any) -> Any:
    return value


_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


# --- ordering and projection -----------------------------------------------


def sort_records(
    obj: ObjectSpec, order: Sequence[OrderItem], records: list[Record], fetch: Fetch
) -> list[Record]:
    """Sort as SOQL does: text ignoring case (ids as they are), nulls placed as asked."""
    keys = []
    for item in order:
        path = resolve(obj, item.path)
        if not path.field.filterable:
            raise SoqlError(
                "INVALID_FIELD", f"field '{path.field.name}' can not be sorted in a query call"
            )
        fold = _fold if path.field.type in TEXT_TYPES - {"id", "reference"} else _same
        # a null sorts below (0,) or above (2,) every (1, value)
        null_key: tuple[Any, ...] = (0,) if item.nulls_first != item.descending else (2,)
        keys.append((getter(path, fetch), fold, null_key, item.descending))

    def key_of(
        k: tuple[Callable[[Record], Any], Callable[[Any], Any], tuple[Any, ...], bool],
    ) -> Callable[[Record], tuple[Any, ...]]:
        get, fold, null_key, _ = k
        return lambda r: null_key if (v := get(r)) is None else (1, fold(v))

    if len({k[3] for k in keys}) == 1:  # one direction: a single sort on a tuple key
        funcs = [key_of(k) for k in keys]
        return sorted(records, key=lambda r: tuple(f(r) for f in funcs), reverse=keys[0][3])
    result = list(records)
    for k in reversed(keys):  # stable sorts, least significant key first
        result.sort(key=key_of(k), reverse=k[3])
    return result


def projector(
    obj: ObjectSpec, fields: Sequence[str], version: str, fetch: Fetch
) -> Callable[[Record], Record]:
    """Turns a stored record into the JSON row the REST API returns for ``fields``."""
    tree: dict[str, Any] = {}  # canonical name -> None (a field) or (object, subtree)
    seen: set[str] = set()
    for text in fields:
        path = resolve(obj, text)
        key = ".".join(path.names).lower()
        if key in seen:
            raise malformed(f"duplicate field selected: {text}")
        seen.add(key)
        node = tree
        for hop, rel in zip(path.hops, path.names, strict=False):
            target = hop.reference_to or ""
            entry = node.setdefault(rel, (hop.name, target, {}))
            node = entry[2]
        node[path.field.name] = None
    return _builder(obj.name, tree, f"/services/data/v{version}/sobjects/", fetch)


def _builder(
    type_name: str, tree: dict[str, Any], base: str, fetch: Fetch
) -> Callable[[Record], Record]:
    """A row builder for one level of the select tree (compiled once per query)."""
    url = base + type_name + "/"
    flat = [name for name, sub in tree.items() if sub is None]
    nested = [
        (name, sub[0], sub[1], _builder(sub[1], sub[2], base, fetch))
        for name, sub in tree.items()
        if sub is not None
    ]
    order = list(tree)

    def build(record: Record) -> Record:
        get = record.get
        row: Record = {"attributes": {"type": type_name, "url": url + record["Id"]}}
        if not nested:
            for name in flat:
                row[name] = get(name)
            return row
        values: dict[str, Any] = {name: get(name) for name in flat}
        for name, fk, target, child in nested:
            ref = get(fk)
            parent = fetch(target, ref) if ref is not None else None
            values[name] = None if parent is None else child(parent)
        for name in order:  # the order of the SELECT list
            row[name] = values[name]
        return row

    return build


@dataclass(frozen=True)
class Plan:
    """A query checked against the schema, ready to run over stored records."""

    query: Query
    obj: ObjectSpec

    def predicate(self, fetch: Fetch) -> Predicate | None:
        return (
            None if self.query.where is None else compile_where(self.obj, self.query.where, fetch)
        )


def plan(text: str) -> Plan:
    """Parse and check ``text``: unknown objects answer INVALID_TYPE, unknown fields INVALID_FIELD."""
    query = parse(text)
    obj = SCHEMA.get(query.sobject.lower())
    if obj is None:
        raise SoqlError(
            "INVALID_TYPE",
            f"sObject type '{query.sobject}' is not supported. If you are attempting to use "
            "a custom object, be sure to append the '__c' after the entity name.",
        )
    return Plan(query, obj)
