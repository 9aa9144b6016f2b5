"""Dataverse rows to :class:`~connector.model.CrmOpportunity` (pure, no I/O).

What normalisation does to one ``opportunities`` row:

- ``@odata.*`` keys are dropped; ``@odata.etag`` becomes ``CrmOpportunity.etag``;
- formatted-value annotations become ``<column>@label`` (``salesstage@label = "Develop"``;
  for lookups the related row's primary name: ``parentaccountid@label``);
- a lookup ``_parentaccountid_value`` is kept and also exposed as ``parentaccountid``;
  columns of the related row become dotted keys (``parentaccountid.name``);
- values are read by their column's type (``AttributeType`` from the table's
  definition, see :class:`ColumnTypes`), never by what their text looks like: a
  ``DateTime`` column gives a date (``DateOnly``) or an aware datetime, ``Money``,
  ``Decimal`` and ``Double`` give Decimal, JSON numbers with a fraction are Decimal;
  a text column's ``2026-05-01T12:34:56Z`` stays text. A value that does not read as
  its type is kept as text and named in ``CrmOpportunity.problems``;
- derived keys: ``is_won`` / ``is_closed`` from ``statecode`` (1 won, 2 lost) and
  ``stage``: the label of the configured stage column, or ``Won`` / ``Lost`` for closed rows.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
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

#: the table whose rows this adapter reads
OPPORTUNITY = "opportunity"
#: the opportunity's change stamp: a DateTime column by definition, read without asking
MODSTAMP_COLUMN = "modifiedon"
#: the stamp given to a row whose ``modifiedon`` cannot be read (the row is rejected)
UNREADABLE_STAMP = datetime(1970, 1, 1, tzinfo=UTC)
TEMPORAL_TYPES = frozenset({"DateTime"})
NUMBER_TYPES = frozenset({"Money", "Decimal", "Double"})

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOOKUP_VALUE = re.compile(r"^_([A-Za-z0-9_]+)_value$")
#: text that could be a DateTime column's value; any other text is text whatever the type
_TEMPORAL_SHAPE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class LookupTarget:
    """Where a lookup column of ``opportunity`` points."""

    entity_set: str  # accounts
    key: str  # accountid
    bind: str  # the navigation property for @odata.bind: parentaccountid, customerid_account

    @property
    def table(self) -> str:
        """The target table's logical name (Dataverse names a key ``<table>id``)."""
        return self.key.removesuffix("id")


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


class ColumnTypes:
    """``AttributeType`` of the columns of each table read so far (table → column → type).

    Filled by the adapter from the tables' definitions, only for a table one of whose
    values could be a date: text of another shape is text whatever its column's type,
    so asking would change nothing.
    """

    def __init__(self) -> None:
        self._tables: dict[str, dict[str, str]] = {}

    def __contains__(self, table: object) -> bool:
        return table in self._tables

    def learn(self, table: str, types: Mapping[str, str]) -> None:
        self._tables[table] = dict(types)

    def of(self, table: str, column: str) -> str | None:
        return self._tables.get(table, {}).get(column)


def needs_types(value: Any) -> bool:
    """Whether reading ``value`` depends on its column's type (text shaped like a date)."""
    return isinstance(value, str) and _TEMPORAL_SHAPE.match(value) is not None


def coerce(
    column: str,
    value: Any,
    kind: str | None,
    money_columns: Collection[str] = MONEY_COLUMNS,
) -> tuple[Any, str | None]:
    """One JSON value read as its column's type ``kind``: (value, problem or None).

    A value that does not read as its type comes back as it was, with a problem
    naming the column.
    """
    if value is None or isinstance(value, bool):
        return value, None
    if kind in NUMBER_TYPES or column in money_columns:
        if isinstance(value, int | float | Decimal):
            return Decimal(str(value)), None
        try:
            return Decimal(str(value).strip()), None
        except InvalidOperation:
            return value, f"{column} holds {str(value)[:40]!r}, which is not a number ({kind})"
    if isinstance(value, float):
        return Decimal(str(value)), None
    if kind in TEMPORAL_TYPES and isinstance(value, str):
        return _temporal(column, value)
    return value, None


def _temporal(column: str, text: str) -> tuple[Any, str | None]:
    try:
        if _DATE_ONLY.match(text):
            return date.fromisoformat(text), None  # a DateOnly column
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        return text, f"{column} holds {text[:40]!r}, which is not a valid date or time ({exc})"
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)), None


def related_key(entity_set: str, record_id: str) -> tuple[str, str]:
    return entity_set, record_id.lower()


def normalise_row(
    raw: Mapping[str, Any],
    *,
    plan: ColumnPlan,
    lookups: Mapping[str, LookupTarget],
    related: Mapping[tuple[str, str], Mapping[str, Any]],
    stage_column: str,
    types: ColumnTypes | None = None,
    money_columns: Collection[str] = MONEY_COLUMNS,
) -> CrmOpportunity:
    """One ``opportunities`` row as a :class:`CrmOpportunity` (see the module docstring)."""
    record_id = raw.get("opportunityid")
    if not isinstance(record_id, str):
        raise CrmError(
            "Dataverse returned an opportunity row without opportunityid", code="malformed_row"
        )
    types = types or ColumnTypes()
    fields: dict[str, Any] = {}
    problems: list[str] = []
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
        elif column != MODSTAMP_COLUMN:
            fields[column], problem = coerce(
                column, value, types.of(OPPORTUNITY, column), money_columns
            )
            problems += [problem] if problem else []
    for lookup_name, columns in plan.related.items():
        target = lookups[lookup_name]
        ref = raw.get(f"_{lookup_name}_value")
        row = related.get(related_key(target.entity_set, ref)) if isinstance(ref, str) else None
        for column in columns:
            value = row.get(column) if row is not None else None
            key = f"{lookup_name}.{column}"
            fields[key], problem = coerce(key, value, types.of(target.table, column), ())
            problems += [problem] if problem else []
    modstamp, problem = coerce(MODSTAMP_COLUMN, raw.get(MODSTAMP_COLUMN), "DateTime")
    fields[MODSTAMP_COLUMN] = modstamp
    if not isinstance(modstamp, datetime):
        problems.append(problem or f"{MODSTAMP_COLUMN} is empty or not a date and time")
        modstamp = UNREADABLE_STAMP
    state = fields.get("statecode")
    fields["is_won"] = state == STATE_WON
    fields["is_closed"] = state in (STATE_WON, STATE_LOST)
    fields["stage"] = stage_label(fields, stage_column)
    etag = raw.get("@odata.etag")
    return CrmOpportunity(
        id=record_id.lower(),
        modstamp=modstamp,
        fields=fields,
        etag=etag if isinstance(etag, str) else None,
        problems=tuple(problems),
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
