"""Compile the structured record filter (:mod:`connector.model`) to a SOQL condition.

Field names are checked against :data:`~connector.model.FIELD_PATTERN`
(they cannot be quoted in SOQL, so only safe names pass); every value goes through
:func:`soql_literal`, which quotes and escapes strings exactly as SOQL requires
(simple-salesforce's escape table) and writes numbers, booleans, ``null``, dates and
datetimes as unquoted literals. No data is ever pasted into the query text as is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from simple_salesforce.format import quote_soql_value

from connector.errors import MappingError
from connector.model import FIELD_PATTERN, AllOf, AnyOf, Condition, Filter, Not

_FIELD_RE = re.compile(FIELD_PATTERN)

_COMPARISONS = {"eq": "=", "ne": "!=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_SET_OPS = {"in": "IN", "not_in": "NOT IN"}


def soql_field(name: str) -> str:
    """``name`` when it is a safe field name or relationship path, else :class:`MappingError`."""
    if not isinstance(name, str) or not _FIELD_RE.fullmatch(name):
        raise MappingError(
            f"{name!r} is not a valid Salesforce field name or relationship path "
            "(letters, digits and underscores, dot-separated); fix it in the mapping file"
        )
    return name


def soql_literal(value: Any) -> str:
    """One value as a SOQL literal: strings quoted and escaped, everything else unquoted.

    Datetimes must be timezone-aware and are written in UTC with ``Z``; naive ones are
    refused because the org would read them as UTC silently.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return str(quote_soql_value(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float | Decimal):
        return _number_literal(value)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise MappingError(
                f"datetime {value.isoformat()} has no timezone; write it with one, "
                "e.g. 2026-05-01T00:00:00Z"
            )
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    raise MappingError(f"a value of type {type(value).__name__} cannot be used in a filter")


def _number_literal(value: float | Decimal) -> str:
    # str(1e20) is "1e+20", which SOQL does not accept: write plain digits.
    number = Decimal(str(value)) if isinstance(value, float) else value
    if not number.is_finite():
        raise MappingError(f"{value} is not a finite number; a filter needs a real number")
    return format(number, "f")


def compile_soql(flt: Filter) -> str:
    """The SOQL condition for a structured filter (without ``WHERE``)."""
    if isinstance(flt, Condition):
        return _condition(flt)
    if isinstance(flt, AllOf):
        return _join(flt.all, "AND")
    if isinstance(flt, AnyOf):
        return _join(flt.any, "OR")
    if isinstance(flt, Not):
        return f"(NOT {_grouped(flt.not_)})"
    raise MappingError(f"unknown filter node {type(flt).__name__}")


def _join(parts: Sequence[Filter], keyword: str) -> str:
    if not parts:
        raise MappingError(f"an '{keyword.lower()}' filter needs at least one condition")
    return "(" + f" {keyword} ".join(_grouped(p) for p in parts) + ")"


def _grouped(flt: Filter) -> str:
    text = compile_soql(flt)
    # Conditions get their own parentheses so NOT / AND / OR never bind the wrong way.
    return f"({text})" if isinstance(flt, Condition) else text


def _condition(cond: Condition) -> str:
    field = soql_field(cond.field)
    value = cond.value
    if cond.op in _SET_OPS:
        if not isinstance(value, list) or not value:
            raise MappingError(f"filter on {field}: '{cond.op}' needs a non-empty list of values")
        items = ", ".join(soql_literal(v) for v in value)
        return f"{field} {_SET_OPS[cond.op]} ({items})"
    if isinstance(value, list):
        raise MappingError(f"filter on {field}: '{cond.op}' takes one value, not a list (use 'in')")
    if cond.op == "like":
        if not isinstance(value, str):
            raise MappingError(f"filter on {field}: 'like' needs a text pattern")
        # % and _ stay wildcards on purpose: the pattern is the admin's; quotes are escaped.
        return f"{field} LIKE {soql_literal(value)}"
    if value is None and cond.op not in ("eq", "ne"):
        raise MappingError(f"filter on {field}: null can only be compared with eq or ne")
    return f"{field} {_COMPARISONS[cond.op]} {soql_literal(value)}"
