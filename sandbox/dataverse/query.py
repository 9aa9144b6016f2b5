"""Query options of the Dataverse sandbox: parsing, ordering, paging cookies and row shapes.

``$select``, ``$filter``, ``$orderby``, ``$top`` and ``$expand`` (single-valued
navigation properties with a nested ``$select``); ``$skip`` is refused as
Dataverse does. Pages are cut by keyset (the sort key of the last row sent),
so rows inserted or changed between two pages neither repeat nor vanish unless
a change moves a row's sort key across that key.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from operator import itemgetter
from typing import Any

from sandbox.dataverse import schema as s
from sandbox.dataverse.errors import BAD_QUERY, DataverseError
from sandbox.dataverse.filter import Predicate, compile_filter, parse_datetime

Row = dict[str, Any]
#: (entity set, id) → the stored row, or None
Resolver = Callable[[str, str | None], Row | None]

FORMATTED = "OData.Community.Display.V1.FormattedValue"
LOOKUP_LOGICAL_NAME = "Microsoft.Dynamics.CRM.lookuplogicalname"
NAVIGATION = "Microsoft.Dynamics.CRM.associatednavigationproperty"
MAX_PAGE_SIZE = 5000
_KNOWN_OPTIONS = {"$select", "$filter", "$orderby", "$top", "$expand", "$skiptoken", "$deltatoken"}
_PREFERENCE = re.compile(r'\s*([A-Za-z][\w.-]*)(?:\s*=\s*("[^"]*"|[^,;\s]*))?')


def bad(message: str) -> DataverseError:
    return DataverseError(400, BAD_QUERY, message)


def parse_prefer(headers: list[str]) -> dict[str, str]:
    """``Prefer`` headers → {preference: value} (value without quotes, "" when absent)."""
    prefs: dict[str, str] = {}
    for header in headers:
        for match in _PREFERENCE.finditer(header):
            prefs[match.group(1).lower()] = (match.group(2) or "").strip('"')
    return prefs


@dataclass(frozen=True)
class Annotations:
    """Which instance annotations the client asked for with ``odata.include-annotations``."""

    patterns: tuple[str, ...] = ()

    def wants(self, name: str) -> bool:
        for pattern in self.patterns:
            if pattern == "*" or pattern == name:
                return True
            if pattern.endswith(".*") and name.startswith(pattern[:-1]):
                return True
        return False

    @classmethod
    def from_preference(cls, value: str | None) -> Annotations:
        if not value:
            return cls()
        return cls(tuple(p.strip() for p in value.split(",") if p.strip()))


@dataclass(frozen=True)
class Expand:
    nav: str
    column: s.Column
    target: s.Table
    select: tuple[str, ...] | None


@dataclass
class Query:
    """The parsed query options of one request on ``table``."""

    table: s.Table
    select: tuple[str, ...] | None = None
    filter: Predicate | None = None
    orderby: tuple[tuple[str, bool], ...] = ()  # (column, descending)
    top: int | None = None
    expand: tuple[Expand, ...] = ()
    #: the options as received, to rebuild next and delta links
    raw: dict[str, str] = field(default_factory=dict)

    @property
    def sort(self) -> tuple[tuple[str, bool], ...]:
        """The ordering with the primary key as the final tie-breaker."""
        keys = tuple(k for k in self.orderby if k[0] != self.table.primary_id)
        return (*keys, (self.table.primary_id, False))


def _select(text: str, table: s.Table) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    for name in names:
        if name not in table.columns:
            raise bad(
                f"Could not find a property named '{name}' on type "
                f"'Microsoft.Dynamics.CRM.{table.logical_name}'."
            )
    return names


def _split_top_level(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _expand(text: str, table: s.Table) -> tuple[Expand, ...]:
    expands = []
    for item in _split_top_level(text, ","):
        nav, _, rest = item.partition("(")
        nav = nav.strip()
        column = table.lookup_by_nav(nav)
        if column is None or len(column.targets) != 1:
            raise bad(
                f"Could not find a single-valued navigation property named '{nav}' on type "
                f"'Microsoft.Dynamics.CRM.{table.logical_name}'."
            )
        target = s.TABLES[column.targets[0]]
        select = None
        for option in _split_top_level(rest.rstrip(")"), ";"):
            key, _, value = option.partition("=")
            if key.strip() != "$select":
                raise bad(f"The sandbox supports only $select inside $expand, not {key!r}.")
            select = _select(value, target)
        expands.append(Expand(nav, column, target, select))
    return tuple(expands)


def _orderby(text: str, table: s.Table) -> tuple[tuple[str, bool], ...]:
    keys = []
    for item in text.split(","):
        words = item.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise bad(f"Syntax error in $orderby: {item!r}")
        _select(words[0], table)
        keys.append((words[0], len(words) == 2 and words[1] == "desc"))
    return tuple(keys)


def parse_query(params: Mapping[str, str], table: s.Table) -> Query:
    """The query options of a request (400 for unknown, refused or malformed ones)."""
    for key in params:
        if key == "$skip":
            raise bad("The query parameter $skip is not supported; follow @odata.nextLink.")
        if key.startswith("$") and key not in _KNOWN_OPTIONS:
            raise bad(f"The query parameter {key} is not supported by the sandbox.")
    query = Query(table, raw={k: v for k, v in params.items() if k in _KNOWN_OPTIONS})
    if "$select" in params:
        query.select = _select(params["$select"], table)
    if "$filter" in params:
        query.filter = compile_filter(params["$filter"], table)
    if "$orderby" in params:
        query.orderby = _orderby(params["$orderby"], table)
    if "$top" in params:
        try:
            query.top = int(params["$top"])
        except ValueError:
            raise bad(f"$top must be a whole number, not {params['$top']!r}") from None
        if not 0 < query.top <= MAX_PAGE_SIZE:
            raise bad(f"$top must be between 1 and {MAX_PAGE_SIZE}")
    if "$expand" in params:
        query.expand = _expand(params["$expand"], table)
    return query


# --- ordering and keyset paging -------------------------------------------------------------


def _sort_value(kind: str) -> Callable[[Any], Any]:
    if kind == s.STRING:
        return lambda v: str(v).casefold()
    # stored GUIDs are lower case and stored datetimes share one format
    # ("2026-05-01T10:00:00Z"), so both sort as they are
    return _as_is


def _as_is(value: Any) -> Any:
    return value


def sort_key_function(
    sort: tuple[tuple[str, bool], ...], table: s.Table
) -> Callable[[Row], tuple[Any, ...]]:
    """Row → sort key: (has_value, value) per column, so nulls sort first ascending."""
    plan = [(name, _sort_value(table.columns[name].kind)) for name, _ in sort]

    def key(row: Row) -> tuple[Any, ...]:
        return tuple((0, 0) if row.get(n) is None else (1, convert(row[n])) for n, convert in plan)

    return key


class Descending:
    """A part of a sort key that orders in reverse (a descending ``$orderby`` column)."""

    __slots__ = ("part",)

    def __init__(self, part: Any) -> None:
        self.part = part

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Descending) and bool(self.part == other.part)

    def __lt__(self, other: Descending) -> bool:
        return bool(other.part < self.part)

    def __gt__(self, other: Descending) -> bool:
        return bool(self.part < other.part)

    def __repr__(self) -> str:
        return f"Descending({self.part!r})"


def comparable(sort: tuple[tuple[str, bool], ...]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """Sort key → a key whose natural order is the query's order (descending parts reversed).

    Keys end with the primary key, so no two rows compare equal: a row comes
    after ``last`` exactly when ``comparable(key) > comparable(last)``.
    """
    flags = tuple(desc for _, desc in sort)
    if not any(flags):
        return _as_is

    def wrap(key: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(Descending(p) if d else p for p, d in zip(key, flags, strict=True))

    return wrap


def ordered_keys(
    rows: list[Row], sort: tuple[tuple[str, bool], ...], table: s.Table
) -> list[tuple[Any, ...]]:
    """The comparable keys of ``rows`` (see ``comparable``), in the query's order."""
    key = sort_key_function(sort, table)
    keys = [key(r) for r in rows]
    if not any(desc for _, desc in sort):
        keys.sort()
        return keys
    # stable multi-pass sort in C: last column first, each with its own direction
    for index in range(len(sort) - 1, -1, -1):
        keys.sort(key=itemgetter(index), reverse=sort[index][1])
    wrap = comparable(sort)
    return [wrap(k) for k in keys]


def key_from_json(data: Any) -> tuple[Any, ...]:
    """A sort key that went through a paging cookie (JSON lists) back as tuples."""
    return tuple(tuple(part) for part in data)


def encode_cookie(state: dict[str, Any], page: int, *, tracking: bool = False) -> str:
    """An opaque ``$skiptoken``, shaped like Dataverse's paging cookie."""
    blob = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
    return f'<cookie pagenumber="{page}" pagingcookie="{blob}" istracking="{tracking}" />'


def is_tracking_cookie(token: str) -> bool:
    return 'istracking="True"' in token


def decode_cookie(token: str) -> tuple[dict[str, Any], int]:
    match = re.search(r'pagenumber="(\d+)" pagingcookie="([A-Za-z0-9_=-]+)"', token)
    if match is None:
        raise bad("The $skiptoken is not valid; start again from the first page.")
    try:
        state = json.loads(base64.urlsafe_b64decode(match.group(2)))
    except ValueError:
        raise bad("The $skiptoken is not valid; start again from the first page.") from None
    return dict(state), int(match.group(1))


# --- the shape of a row in a response -------------------------------------------------------


def etag(row: Row) -> str:
    return f'W/"{row["versionnumber"]}"'


def _money(value: float, currency: Row | None) -> str:
    symbol = currency.get("currencysymbol", "") if currency else ""
    precision = int(currency.get("currencyprecision", 2)) if currency else 2
    text = f"{abs(value):,.{precision}f}"
    return f"-{symbol}{text}" if value < 0 else f"{symbol}{text}"


def formatted(column: s.Column, value: Any, row: Row, resolve: Resolver) -> str | None:
    """The label Dataverse shows for ``value`` (None: this kind carries no label)."""
    kind = column.kind
    if kind in s.OPTION_KINDS:
        return column.labels.get(int(value))
    if kind == s.BOOL:
        return "Yes" if value else "No"
    if kind == s.MONEY:
        return _money(
            float(value), resolve("transactioncurrencies", row.get("_transactioncurrencyid_value"))
        )
    if kind == s.INT:
        return f"{int(value):,}"
    if kind == s.DATE:
        d = date.fromisoformat(str(value)[:10])
        return f"{d.month}/{d.day}/{d.year}"
    if kind == s.DATETIME:
        t = parse_datetime(str(value))
        hour = t.hour % 12 or 12
        return f"{t.month}/{t.day}/{t.year} {hour}:{t.minute:02d} {'AM' if t.hour < 12 else 'PM'}"
    return None


def _lookup_target(column: s.Column, value: str, resolve: Resolver) -> tuple[s.Table, Row | None]:
    for entity_set in column.targets:
        target = resolve(entity_set, value)
        if target is not None:
            return s.TABLES[entity_set], target
    return s.TABLES[column.targets[0]], None


def shape(
    table: s.Table,
    row: Row,
    select: tuple[str, ...] | None,
    annotations: Annotations,
    resolve: Resolver,
    expand: tuple[Expand, ...] = (),
) -> Row:
    """A stored row as the Web API returns it: etag, selected columns, annotations, expands."""
    out: Row = {"@odata.etag": etag(row)}
    names = select if select is not None else tuple(table.columns)
    want_label = annotations.wants(FORMATTED)
    want_nav = annotations.wants(NAVIGATION)
    want_logical = annotations.wants(LOOKUP_LOGICAL_NAME)
    columns = table.columns
    for name in (*names, table.primary_id) if table.primary_id not in names else names:
        value = row.get(name)
        if value is None or not (want_label or want_nav or want_logical):
            out[name] = value
            continue
        column = columns[name]
        if column.kind == s.LOOKUP:
            target_table, target = _lookup_target(column, value, resolve)
            if want_label and target is not None:
                out[f"{name}@{FORMATTED}"] = target.get(target_table.primary_name)
            if want_nav:
                out[f"{name}@{NAVIGATION}"] = name[1:-6]
            if want_logical:
                out[f"{name}@{LOOKUP_LOGICAL_NAME}"] = target_table.logical_name
        elif want_label:
            label = formatted(column, value, row, resolve)
            if label is not None:
                out[f"{name}@{FORMATTED}"] = label
        out[name] = value
    for item in expand:
        target = resolve(item.target.entity_set, row.get(item.column.name))
        out[item.nav] = (
            None
            if target is None
            else shape(item.target, target, item.select, annotations, resolve)
        )
    return out
