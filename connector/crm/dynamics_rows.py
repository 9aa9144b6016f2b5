"""Dataverse rows to :class:`~connector.model.CrmOpportunity` (pure, no I/O).

What normalisation does to one ``opportunities`` row:

- ``@odata.*`` keys are dropped; ``@odata.etag`` becomes ``CrmOpportunity.etag``;
- formatted-value annotations become ``<column>@label`` (``salesstage@label = "Develop"``;
  for lookups the related row's primary name: ``parentaccountid@label``);
- a lookup ``_parentaccountid_value`` is kept and also exposed as ``parentaccountid``;
  columns of the related row become dotted keys (``parentaccountid.name``);
- JSON numbers with a fraction are Decimal, money columns always Decimal,
  ``YYYY-MM-DD`` strings are dates, ISO datetimes are aware datetimes;
- derived keys: ``is_won`` / ``is_closed`` from ``statecode`` (1 won, 2 lost) and
  ``stage``: the label of the configured stage column, or ``Won`` / ``Lost`` for closed rows.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from connector.errors import CrmError, MappingError
from connector.model import CrmOpportunity

FORMATTED = "OData.Community.Display.V1.FormattedValue"
STATE_WON, STATE_LOST = 1, 2
WON_LABEL, LOST_LABEL = "Won", "Lost"
#: keys the adapter adds itself; never selected from Dataverse
DERIVED = frozenset({"is_won", "is_closed", "stage"})
ALWAYS_SELECTED = ("opportunityid", "modifiedon", "statecode", "statuscode")
MONEY_COLUMNS = frozenset(
    {
        "estimatedvalue",
        "estimatedvalue_base",
        "actualvalue",
        "actualvalue_base",
        "budgetamount",
        "budgetamount_base",
        "totalamount",
        "totalamount_base",
    }
)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOOKUP_VALUE = re.compile(r"^_([A-Za-z0-9_]+)_value$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True, slots=True)
class LookupTarget:
    """Where a lookup column of ``opportunity`` points."""

    entity_set: str  # accounts
    key: str  # accountid
    bind: str  # the navigation property for @odata.bind: parentaccountid, customerid_account


DEFAULT_LOOKUPS: dict[str, LookupTarget] = {
    "parentaccountid": LookupTarget("accounts", "accountid", "parentaccountid"),
    # customerid is polymorphic (account or contact); the connector reads it as an account
    "customerid": LookupTarget("accounts", "accountid", "customerid_account"),
    "ownerid": LookupTarget("systemusers", "systemuserid", "ownerid"),
    "transactioncurrencyid": LookupTarget(
        "transactioncurrencies", "transactioncurrencyid", "transactioncurrencyid"
    ),
    "parentcontactid": LookupTarget("contacts", "contactid", "parentcontactid"),
}


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    """What to ``$select`` from opportunities and which related columns to fetch per lookup."""

    select: tuple[str, ...]
    related: Mapping[str, tuple[str, ...]]


def plan_columns(
    fields: Iterable[str], *, lookups: Mapping[str, LookupTarget], stage_column: str
) -> ColumnPlan:
    """The columns that give every requested field (``name``, ``x@label``, ``lookup.column``)."""
    select: dict[str, None] = dict.fromkeys((*ALWAYS_SELECTED, stage_column))
    related: dict[str, dict[str, None]] = {}
    for field in fields:
        name = field.removesuffix("@label")
        if name in DERIVED:
            continue
        root, _, rest = name.partition(".")
        for segment in (root, rest) if rest else (root,):
            if not _NAME.match(segment):
                raise MappingError(f"{field!r} is not a Dataverse column name")
        if rest:
            if root not in lookups:
                raise MappingError(
                    f"{field!r}: {root!r} is not a lookup the Dataverse adapter knows "
                    f"({', '.join(sorted(lookups))}); add it to the adapter's lookups"
                )
            if "." in rest:
                raise MappingError(f"{field!r}: only one hop (lookup.column) is supported")
            related.setdefault(root, {})[rest] = None
            select[f"_{root}_value"] = None
        elif root in lookups:
            select[f"_{root}_value"] = None
        else:
            select[root] = None
    return ColumnPlan(tuple(select), {k: tuple(v) for k, v in related.items()})


def coerce(column: str, value: Any, money_columns: Collection[str] = MONEY_COLUMNS) -> Any:
    """One JSON value as the canonical Python type (see the module docstring)."""
    if value is None or isinstance(value, bool):
        return value
    if column in money_columns and isinstance(value, int | float | Decimal):
        return Decimal(str(value))
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, str):
        if _DATE.match(value):
            try:
                return date.fromisoformat(value)
            except ValueError:
                return value
        if _DATETIME.match(value):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return value
    return value


def related_key(entity_set: str, record_id: str) -> tuple[str, str]:
    return entity_set, record_id.lower()


def normalise_row(
    raw: Mapping[str, Any],
    *,
    plan: ColumnPlan,
    lookups: Mapping[str, LookupTarget],
    related: Mapping[tuple[str, str], Mapping[str, Any]],
    stage_column: str,
    money_columns: Collection[str] = MONEY_COLUMNS,
) -> CrmOpportunity:
    """One ``opportunities`` row as a :class:`CrmOpportunity` (see the module docstring)."""
    record_id = raw.get("opportunityid")
    if not isinstance(record_id, str):
        raise CrmError(
            "Dataverse returned an opportunity row without opportunityid", code="malformed_row"
        )
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        column, at, annotation = key.partition("@")
        if not column:
            continue  # @odata.etag, @odata.context ...
        lookup = _LOOKUP_VALUE.match(column)
        name = lookup.group(1) if lookup else column
        if at:
            if annotation == FORMATTED:
                fields[f"{name}@label"] = value
            continue
        if lookup:
            fields[column] = value
            fields[name] = value
        else:
            fields[column] = coerce(column, value, money_columns)
    for lookup_name, columns in plan.related.items():
        target = lookups[lookup_name]
        ref = raw.get(f"_{lookup_name}_value")
        row = related.get(related_key(target.entity_set, ref)) if isinstance(ref, str) else None
        for column in columns:
            value = row.get(column) if row is not None else None
            fields[f"{lookup_name}.{column}"] = coerce(column, value, money_columns)
    state = fields.get("statecode")
    fields["is_won"] = state == STATE_WON
    fields["is_closed"] = state in (STATE_WON, STATE_LOST)
    fields["stage"] = stage_label(fields, stage_column)
    modstamp = fields.get("modifiedon")
    if not isinstance(modstamp, datetime):
        raise CrmError(
            f"Dataverse opportunity {record_id} has no readable modifiedon", code="malformed_row"
        )
    etag = raw.get("@odata.etag")
    return CrmOpportunity(
        id=record_id.lower(),
        modstamp=modstamp,
        fields=fields,
        etag=etag if isinstance(etag, str) else None,
    )


def stage_label(fields: Mapping[str, Any], stage_column: str) -> str | None:
    """The stage a mapping sees: Won/Lost for closed rows, else the stage column's label."""
    state = fields.get("statecode")
    if state == STATE_WON:
        return WON_LABEL
    if state == STATE_LOST:
        return LOST_LABEL
    label = fields.get(f"{stage_column}@label")
    if label is None:
        label = fields.get(stage_column)  # stepname is free text: no annotation
    return None if label is None else str(label)
