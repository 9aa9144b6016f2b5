"""A structured record filter, compiled by each adapter to SOQL or OData with escaped values.

In YAML::

    select:
      all:
        - {field: Sync_with_Partner_Center__c, op: eq, value: true}
        - any:
            - {field: Amount, op: ge, value: 1000}
            - not: {field: StageName, op: in, value: [Closed Lost]}
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from connector.mapping.schema_docs import document

Scalar = Union[bool, int, float, str, date, datetime, None]  # noqa: UP007 - pydantic union order
Op = Literal["eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "like"]

#: a field name or relationship path: ``Amount``, ``Account.BillingCountry``
FIELD_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*){0,4}$"


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=document)

    field: str = Field(pattern=FIELD_PATTERN)
    op: Op = "eq"
    value: Scalar | list[Scalar]


class AllOf(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=document)

    all: list[Filter] = Field(min_length=1)


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=document)

    any: list[Filter] = Field(min_length=1)


class Not(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=document)

    not_: Filter = Field(alias="not")


def _filter_kind(value: Any) -> str:
    """Pick the filter form from its keys, so errors speak of one form only."""
    if isinstance(value, dict):
        for key in ("all", "any", "not"):
            if key in value:
                return key
        return "condition"
    if isinstance(value, AllOf):
        return "all"
    if isinstance(value, AnyOf):
        return "any"
    if isinstance(value, Not):
        return "not"
    return "condition"


Filter = Annotated[
    Union[  # noqa: UP007
        Annotated[Condition, Tag("condition")],
        Annotated[AllOf, Tag("all")],
        Annotated[AnyOf, Tag("any")],
        Annotated[Not, Tag("not")],
    ],
    Discriminator(_filter_kind),
]

AllOf.model_rebuild()
AnyOf.model_rebuild()
Not.model_rebuild()
