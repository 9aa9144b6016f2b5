"""The structured ``select`` filter as an OData ``$filter`` string, and evaluated in memory.

Two halves that must agree:

- :func:`compile_filter` turns a :data:`~connector.model.Filter` into an
  OData expression for Dataverse: strings quoted with single quotes doubled,
  GUID columns as bare GUIDs, dates and datetimes as OData literals, dotted
  paths (``parentaccountid.name``) as navigation paths (``parentaccountid/name``),
  lookups (``parentaccountid``) as their value column (``_parentaccountid_value``).
  Field names are checked against an identifier pattern (and an optional
  whitelist) so that no data ever becomes syntax.
- :func:`matches` evaluates the same filter against a normalised record's
  fields; it is used in change-tracking mode, where Dataverse refuses ``$filter``.
  Strings compare case-insensitively, as Dataverse's SQL collation does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from connector.errors import MappingError
from connector.model import AllOf, AnyOf, Condition, Filter, Not

GUID_PATTERN = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}


def is_guid(value: object) -> bool:
    return isinstance(value, str) and GUID_PATTERN.match(value) is not None


def column_of(field: str, lookups: Collection[str] = ()) -> str:
    """The OData property for a mapping field name (``parentaccountid.name`` → ``parentaccountid/name``)."""
    segments = field.split(".")
    for segment in segments:
        if not _SEGMENT.match(segment):
            raise MappingError(
                f"select: {field!r} is not a Dataverse column name; use logical names "
                "(letters, digits, underscores) joined with dots for related tables"
            )
    if len(segments) == 1 and field in lookups:
        return f"_{field}_value"
    return "/".join(segments)


def literal(value: object, *, guid: bool = False) -> str:
    """One value as an OData literal; raises MappingError for what OData cannot express."""
    if guid:
        if not is_guid(value):
            raise MappingError(f"select: {value!r} is not a GUID; this column holds record ids")
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MappingError(f"select: {value!r} is not a number OData can compare with")
        return repr(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise MappingError(f"select: {value!r} is not a number OData can compare with")
        return format(value, "f")
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise MappingError(f"select: values of type {type(value).__name__} cannot be compared")


def _is_guid_column(field: str, lookups: Collection[str], guid_columns: Collection[str]) -> bool:
    return field in lookups or field in guid_columns or field.endswith("_value")


def compile_filter(
    flt: Filter,
    *,
    lookups: Collection[str] = (),
    guid_columns: Collection[str] = ("opportunityid",),
    allowed: Collection[str] | None = None,
) -> str:
    """An OData ``$filter`` expression for ``flt``.

    ``lookups`` names lookup columns (compiled to ``_<name>_value``, compared with
    bare GUIDs); ``allowed``, when given, is the whitelist of root field names.
    """
    if isinstance(flt, AllOf):
        return (
            "("
            + " and ".join(
                compile_filter(f, lookups=lookups, guid_columns=guid_columns, allowed=allowed)
                for f in flt.all
            )
            + ")"
        )
    if isinstance(flt, AnyOf):
        return (
            "("
            + " or ".join(
                compile_filter(f, lookups=lookups, guid_columns=guid_columns, allowed=allowed)
                for f in flt.any
            )
            + ")"
        )
    if isinstance(flt, Not):
        return (
            "(not "
            + compile_filter(flt.not_, lookups=lookups, guid_columns=guid_columns, allowed=allowed)
            + ")"
        )
    return _compile_condition(flt, lookups, guid_columns, allowed)


def _compile_condition(
    cond: Condition,
    lookups: Collection[str],
    guid_columns: Collection[str],
    allowed: Collection[str] | None,
) -> str:
    root = cond.field.split(".")[0]
    if allowed is not None and root not in allowed and cond.field not in allowed:
        raise MappingError(
            f"select: {cond.field!r} is not a column this connection may filter on; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    column = column_of(cond.field, lookups)
    guid = _is_guid_column(cond.field, lookups, guid_columns)
    if cond.op in _COMPARISONS:
        if isinstance(cond.value, list):
            raise MappingError(f"select: {cond.field} {cond.op} takes one value, not a list")
        value = literal(cond.value, guid=guid and cond.value is not None)
        return f"{column} {cond.op} {value}"
    if cond.op in ("in", "not_in"):
        values = cond.value if isinstance(cond.value, list) else [cond.value]
        if not values:
            raise MappingError(f"select: {cond.field} {cond.op} needs at least one value")
        op, joiner = ("eq", " or ") if cond.op == "in" else ("ne", " and ")
        parts = [f"{column} {op} {literal(v, guid=guid and v is not None)}" for v in values]
        return "(" + joiner.join(parts) + ")"
    return _compile_like(cond, column)


def _compile_like(cond: Condition, column: str) -> str:
    pattern = cond.value
    if not isinstance(pattern, str):
        raise MappingError(f"select: {cond.field} like needs a text pattern")
    body = pattern.strip("%")
    if "%" in body or not body:
        raise MappingError(
            f"select: {cond.field} like {pattern!r}: only 'text%', '%text' and '%text%' "
            "patterns are supported for Dataverse"
        )
    quoted = literal(body)
    starts, ends = pattern.startswith("%"), pattern.endswith("%")
    if starts and ends:
        return f"contains({column},{quoted})"
    if ends:
        return f"startswith({column},{quoted})"
    if starts:
        return f"endswith({column},{quoted})"
    return f"{column} eq {quoted}"


def filter_fields(flt: Filter) -> set[str]:
    """Every field name the filter reads (so that the adapter can select them)."""
    if isinstance(flt, AllOf):
        return set().union(*(filter_fields(f) for f in flt.all))
    if isinstance(flt, AnyOf):
        return set().union(*(filter_fields(f) for f in flt.any))
    if isinstance(flt, Not):
        return filter_fields(flt.not_)
    return {flt.field}


def matches(flt: Filter, fields: Mapping[str, Any]) -> bool:
    """Whether a normalised record passes ``flt`` (the in-memory twin of :func:`compile_filter`)."""
    if isinstance(flt, AllOf):
        return all(matches(f, fields) for f in flt.all)
    if isinstance(flt, AnyOf):
        return any(matches(f, fields) for f in flt.any)
    if isinstance(flt, Not):
        return not matches(flt.not_, fields)
    actual = fields.get(flt.field)
    op = flt.op
    if op in ("in", "not_in"):
        values = flt.value if isinstance(flt.value, list) else [flt.value]
        found = any(_compare(actual, v) == 0 for v in values)
        return found if op == "in" else not found
    if op == "like":
        return _like(actual, flt.value)
    if isinstance(flt.value, list):
        return False
    order = _compare(actual, flt.value)
    if op == "eq":
        return order == 0
    if op == "ne":
        return order != 0
    if order is None:  # OData: an ordering comparison with null is false
        return False
    return {"gt": order > 0, "ge": order >= 0, "lt": order < 0, "le": order <= 0}[op]


def _like(actual: object, pattern: object) -> bool:
    if not isinstance(actual, str) or not isinstance(pattern, str):
        return False
    text, body = actual.casefold(), pattern.strip("%").casefold()
    starts, ends = pattern.startswith("%"), pattern.endswith("%")
    if starts and ends:
        return body in text
    if ends:
        return text.startswith(body)
    if starts:
        return text.endswith(body)
    return text == body


def _compare(actual: object, expected: object) -> int | None:
    """-1/0/1, or None when the two cannot be ordered (null or different kinds)."""
    if actual is None or expected is None:
        return 0 if actual is None and expected is None else None
    a, b = _comparable(actual), _comparable(expected)
    if a is None or b is None or type(a) is not type(b):
        return None
    return int((a > b) - (a < b))


def _comparable(value: object) -> Any:
    if isinstance(value, bool):
        return (value,)  # a tuple keeps booleans apart from numbers
    if isinstance(value, int | float | Decimal):
        try:
            return Decimal(str(value))
        except InvalidOperation:
            return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        return value.casefold()
    return None
