"""The structured filter compiled to OData, and its in-memory twin."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import TypeAdapter

from connector.crm.dynamics.odata import compile_filter, filter_fields, literal, matches
from connector.errors import MappingError
from connector.model import Filter

LOOKUPS = ("parentaccountid", "ownerid")
GUID = "8f2c1a9e-0b7d-4e3f-9a21-5c6d7e8f9a0b"


def flt(data: Any) -> Filter:
    return TypeAdapter(Filter).validate_python(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"field": "cosell_syncwithpartnercenter", "value": True},
            "cosell_syncwithpartnercenter eq true",
        ),
        ({"field": "statecode", "op": "ne", "value": 2}, "statecode ne 2"),
        ({"field": "estimatedvalue", "op": "ge", "value": 1000.5}, "estimatedvalue ge 1000.5"),
        ({"field": "name", "value": None}, "name eq null"),
        ({"field": "name", "value": "O'Brien"}, "name eq 'O''Brien'"),
        # hostile: quotes, an injected clause, OData syntax, unicode, percent signs
        (
            {"field": "name", "value": "x' or 1 eq 1 or name eq '"},
            "name eq 'x'' or 1 eq 1 or name eq '''",
        ),
        ({"field": "name", "value": "a)&$filter=(b"}, "name eq 'a)&$filter=(b'"),
        ({"field": "name", "value": "''"}, "name eq ''''''"),
        ({"field": "name", "value": "Zürich €"}, "name eq 'Zürich €'"),
        (
            {"field": "estimatedclosedate", "op": "lt", "value": date(2026, 5, 1)},
            "estimatedclosedate lt 2026-05-01",
        ),
        (
            {
                "field": "modifiedon",
                "op": "ge",
                "value": datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
            },
            "modifiedon ge 2026-05-01T10:00:00Z",
        ),
        (
            {"field": "parentaccountid.name", "value": "Contoso"},
            "parentaccountid/name eq 'Contoso'",
        ),
        ({"field": "parentaccountid", "value": GUID.upper()}, f"_parentaccountid_value eq {GUID}"),
        ({"field": "parentaccountid", "value": None}, "_parentaccountid_value eq null"),
        (
            {"field": "salesstage", "op": "in", "value": [0, 1]},
            "(salesstage eq 0 or salesstage eq 1)",
        ),
        (
            {"field": "name", "op": "not_in", "value": ["a'b", "c"]},
            "(name ne 'a''b' and name ne 'c')",
        ),
        ({"field": "name", "op": "like", "value": "Con%"}, "startswith(name,'Con')"),
        ({"field": "name", "op": "like", "value": "%'so"}, "endswith(name,'''so')"),
        ({"field": "name", "op": "like", "value": "%to%"}, "contains(name,'to')"),
        (
            {
                "all": [
                    {"field": "statecode", "value": 0},
                    {"any": [{"field": "a", "value": 1}, {"not": {"field": "b", "value": "x"}}]},
                ]
            },
            "(statecode eq 0 and (a eq 1 or (not b eq 'x')))",
        ),
    ],
)
def test_compiles(data: Any, expected: str) -> None:
    assert compile_filter(flt(data), lookups=LOOKUPS) == expected


@pytest.mark.parametrize(
    "data",
    [
        {"field": "parentaccountid", "value": "not-a-guid' or 1 eq 1"},
        {"field": "opportunityid", "value": "x"},
        {"field": "name", "op": "in", "value": []},
        {"field": "name", "op": "like", "value": "a%b"},
        {"field": "name", "op": "like", "value": "%"},
        {"field": "estimatedvalue", "value": float("nan")},
        {"field": "name", "op": "eq", "value": ["a", "b"]},
    ],
)
def test_refuses_what_odata_cannot_express_safely(data: Any) -> None:
    with pytest.raises(MappingError):
        compile_filter(flt(data), lookups=LOOKUPS)


def test_whitelist_refuses_unknown_fields() -> None:
    with pytest.raises(MappingError, match="not a column this connection may filter on"):
        compile_filter(flt({"field": "secret", "value": 1}), allowed={"name"})
    assert compile_filter(flt({"field": "name", "value": "a"}), allowed={"name"}) == "name eq 'a'"


def test_field_names_are_checked_even_without_pydantic() -> None:
    bad = flt({"field": "name", "value": 1}).model_copy(update={"field": "name eq 1 or x"})
    with pytest.raises(MappingError, match="not a Dataverse column name"):
        compile_filter(bad)


def test_literals() -> None:
    assert literal(Decimal("12.50")) == "12.50"
    assert literal(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"  # naive = UTC
    assert literal(False) == "false"


def test_filter_fields() -> None:
    data = {"all": [{"field": "a", "value": 1}, {"not": {"field": "b.c", "value": 1}}]}
    assert filter_fields(flt(data)) == {"a", "b.c"}


ROW = {
    "cosell_syncwithpartnercenter": True,
    "estimatedvalue": Decimal("1500.00"),
    "name": "Contoso ERP",
    "statecode": 0,
    "estimatedclosedate": date(2026, 6, 30),
    "modifiedon": datetime(2026, 5, 1, 10, 0, tzinfo=UTC),
    "parentaccountid.cosell_countrycode": "US",
    "description": None,
}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"field": "cosell_syncwithpartnercenter", "value": True}, True),
        ({"field": "cosell_syncwithpartnercenter", "value": False}, False),
        ({"field": "estimatedvalue", "op": "ge", "value": 1000}, True),
        ({"field": "estimatedvalue", "op": "gt", "value": 1500.0}, False),
        ({"field": "name", "value": "contoso erp"}, True),  # case-insensitive like Dataverse
        ({"field": "name", "op": "like", "value": "%erp"}, True),
        ({"field": "name", "op": "like", "value": "erp%"}, False),
        ({"field": "statecode", "op": "in", "value": [0, 1]}, True),
        ({"field": "statecode", "op": "not_in", "value": [0]}, False),
        ({"field": "estimatedclosedate", "op": "lt", "value": date(2026, 7, 1)}, True),
        (
            {
                "field": "modifiedon",
                "op": "ge",
                "value": datetime(2026, 5, 1, 11, 0, tzinfo=timezone(timedelta(hours=2))),
            },
            True,
        ),
        ({"field": "description", "value": None}, True),
        ({"field": "description", "op": "gt", "value": "a"}, False),  # null never orders
        ({"field": "missing", "op": "ne", "value": 1}, True),
        ({"field": "cosell_syncwithpartnercenter", "value": 1}, False),  # bool is not a number
        ({"field": "parentaccountid.cosell_countrycode", "value": "us"}, True),
        (
            {"all": [{"field": "statecode", "value": 0}, {"not": {"field": "name", "value": "x"}}]},
            True,
        ),
        ({"any": [{"field": "statecode", "value": 2}, {"field": "name", "value": "x"}]}, False),
    ],
)
def test_matches(data: Any, expected: bool) -> None:
    assert matches(flt(data), ROW) is expected
