"""The structured filter compiles to SOQL with names whitelisted and values escaped."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import TypeAdapter

from connector.crm.salesforce.soql import compile_soql, soql_field, soql_literal
from connector.errors import MappingError
from connector.model import Condition, Filter

FILTER = TypeAdapter(Filter)


def cond(field: str, op: str, value: object) -> Condition:
    return Condition.model_validate({"field": field, "op": op, "value": value})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "'plain'"),
        ("O'Brien", r"'O\'Brien'"),
        ("back\\slash", r"'back\\slash'"),
        ('say "hi"', r"'say \"hi\"'"),
        ("line\nbreak\r\ttab", r"'line\nbreak\r\ttab'"),
        ("\b\f", r"'\b\f'"),
        ("' OR Id != null --", r"'\' OR Id != null --'"),
        ("\\' OR Name LIKE '%", r"'\\\' OR Name LIKE \'%'"),
        ("株式会社サンプル", "'株式会社サンプル'"),
        ("Müller GmbH", "'Müller GmbH'"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        (42, "42"),
        (-7, "-7"),
        (1000.5, "1000.5"),
        (1e20, "100000000000000000000"),
        (Decimal("12.340"), "12.340"),
        (date(2026, 5, 1), "2026-05-01"),
        (datetime(2026, 5, 1, 12, 34, 56, 789000, tzinfo=UTC), "2026-05-01T12:34:56Z"),
        (
            datetime(2026, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
            "2026-05-01T12:00:00Z",
        ),
    ],
)
def test_literals_are_quoted_and_escaped_as_soql_requires(value: object, expected: str) -> None:
    assert soql_literal(value) == expected


@pytest.mark.parametrize("value", [float("nan"), float("inf"), Decimal("NaN"), object(), [1]])
def test_values_that_have_no_soql_literal_are_refused(value: object) -> None:
    with pytest.raises(MappingError):
        soql_literal(value)


def test_naive_datetimes_are_refused_rather_than_guessed() -> None:
    with pytest.raises(MappingError, match="no timezone"):
        soql_literal(datetime(2026, 5, 1, 12, 0))


def test_an_escaped_string_cannot_close_its_quotes() -> None:
    """Every quote inside the literal is preceded by an odd number of backslashes."""
    hostile = "x\\' OR Id != null OR Name = \\\\'"
    literal = soql_literal(hostile)
    inner = literal[1:-1]
    i = 0
    while i < len(inner):
        if inner[i] == "\\":
            i += 2  # an escape pair
            continue
        assert inner[i] != "'", literal
        i += 1


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"field": "StageName", "op": "eq", "value": "Closed Won"}, "StageName = 'Closed Won'"),
        ({"field": "StageName", "op": "ne", "value": "O'Neil"}, r"StageName != 'O\'Neil'"),
        ({"field": "Amount", "op": "gt", "value": 1000}, "Amount > 1000"),
        ({"field": "Amount", "op": "ge", "value": 10.5}, "Amount >= 10.5"),
        ({"field": "Amount", "op": "lt", "value": 0}, "Amount < 0"),
        ({"field": "CloseDate", "op": "le", "value": "2026-05-01"}, "CloseDate <= '2026-05-01'"),
        (
            {"field": "Sync_with_Partner_Center__c", "op": "eq", "value": True},
            "Sync_with_Partner_Center__c = true",
        ),
        ({"field": "Amount", "op": "eq", "value": None}, "Amount = null"),
        ({"field": "Amount", "op": "ne", "value": None}, "Amount != null"),
        (
            {"field": "Account.BillingCountryCode", "op": "in", "value": ["US", "DE", None]},
            "Account.BillingCountryCode IN ('US', 'DE', null)",
        ),
        (
            {"field": "StageName", "op": "not_in", "value": ["Closed Lost", "It's over"]},
            r"StageName NOT IN ('Closed Lost', 'It\'s over')",
        ),
        ({"field": "Name", "op": "like", "value": "Acme%"}, "Name LIKE 'Acme%'"),
        (
            {"field": "Name", "op": "like", "value": "%' OR Id != null --"},
            r"Name LIKE '%\' OR Id != null --'",
        ),
    ],
)
def test_conditions(spec: dict[str, object], expected: str) -> None:
    assert compile_soql(FILTER.validate_python(spec)) == expected


def test_dates_and_datetimes_from_python_values_are_unquoted() -> None:
    assert compile_soql(cond("CloseDate", "ge", date(2026, 1, 31))) == "CloseDate >= 2026-01-31"
    stamp = datetime(2026, 5, 1, tzinfo=UTC)
    assert (
        compile_soql(cond("SystemModstamp", "gt", stamp)) == "SystemModstamp > 2026-05-01T00:00:00Z"
    )


def test_nested_all_any_not_are_parenthesised() -> None:
    flt = FILTER.validate_python(
        {
            "all": [
                {"field": "Sync_with_Partner_Center__c", "op": "eq", "value": True},
                {
                    "any": [
                        {"field": "Amount", "op": "ge", "value": 1000},
                        {"not": {"field": "StageName", "op": "in", "value": ["Closed Lost"]}},
                    ]
                },
            ]
        }
    )
    assert compile_soql(flt) == (
        "((Sync_with_Partner_Center__c = true) AND "
        "((Amount >= 1000) OR (NOT (StageName IN ('Closed Lost')))))"
    )


def test_not_of_a_group() -> None:
    flt = FILTER.validate_python(
        {"not": {"any": [{"field": "A", "value": 1}, {"field": "B", "value": 2}]}}
    )
    assert compile_soql(flt) == "(NOT ((A = 1) OR (B = 2)))"


@pytest.mark.parametrize(
    "spec",
    [
        {"field": "StageName", "op": "in", "value": []},
        {"field": "StageName", "op": "in", "value": "Closed Won"},
        {"field": "StageName", "op": "eq", "value": ["a", "b"]},
        {"field": "Amount", "op": "gt", "value": None},
        {"field": "Amount", "op": "like", "value": 5},
    ],
)
def test_misused_operators_are_mapping_errors(spec: dict[str, object]) -> None:
    with pytest.raises(MappingError, match=str(spec["field"])):
        compile_soql(FILTER.validate_python(spec))


@pytest.mark.parametrize(
    "name",
    ["Amount; DELETE", "Name = 'x' OR Id", "1Amount", "Account..Name", "", "Amount--", "A B"],
)
def test_field_names_outside_the_whitelist_are_refused(name: str) -> None:
    with pytest.raises(MappingError):
        soql_field(name)
    # even when a condition is built without validation (model_construct skips pydantic)
    with pytest.raises(MappingError):
        compile_soql(Condition.model_construct(field=name, op="eq", value=1))


def test_relationship_paths_are_accepted() -> None:
    assert soql_field("Primary_Contact__r.Email") == "Primary_Contact__r.Email"
