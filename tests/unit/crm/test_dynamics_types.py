"""Dataverse values are read by their column's type, never by what their text looks like."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import respx
from dynamics_fakes import (
    API,
    OPP1,
    OPP2,
    OPPORTUNITY_ATTRIBUTES,
    adapter,
    attributes,
    mocked_dataverse,
    row,
)

from connector.crm.dynamics.rows import (
    DEFAULT_LOOKUPS,
    UNREADABLE_STAMP,
    ColumnTypes,
    normalise_row,
    plan_columns,
)
from connector.mapping.apply import apply_mapping
from connector.mapping.load import load_mapping
from connector.model import CrmOpportunity, Rejection

ROOT = Path(__file__).parents[3]

DELTA = f"{API}/opportunities?$deltatoken=1"
TYPES = {
    "name": "String",
    "description": "Memo",
    "estimatedclosedate": "DateTime",
    "cosell_expiration": "DateTime",
    "estimatedvalue": "Money",
}


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with mocked_dataverse() as router:
        for entity in ("accounts", "systemusers", "transactioncurrencies", "contacts"):
            router.get(f"{API}/{entity}").respond(json={"value": []})
        yield router


def pull(rows: list[dict[str, object]], mock: respx.MockRouter) -> list[CrmOpportunity]:
    mock.get(f"{API}/opportunities").respond(json={"value": rows, "@odata.deltaLink": DELTA})
    crm = adapter()
    try:
        pages = list(
            crm.pull_changes(
                None,
                fields=["name", "description", "estimatedclosedate", "cosell_expiration"],
                select=None,
            )
        )
    finally:
        crm.close()
    return [r for p in pages for r in p.records]


def test_datetime_text_in_a_name_or_notes_stays_exactly_as_written(
    mock: respx.MockRouter,
) -> None:
    types = mock.get(OPPORTUNITY_ATTRIBUTES).respond(json=attributes(**TYPES))
    (record,) = pull(
        [
            row(
                OPP1,
                name="2026-05-01T12:34:56Z",
                description="2026-05-01",
                estimatedclosedate="2026-06-30",
                cosell_expiration="2026-07-01T08:30:00Z",
            )
        ],
        mock,
    )
    assert record.fields["name"] == "2026-05-01T12:34:56Z"
    assert record.fields["description"] == "2026-05-01"
    assert record.fields["estimatedclosedate"] == date(2026, 6, 30)
    assert record.fields["cosell_expiration"] == datetime(2026, 7, 1, 8, 30, tzinfo=UTC)
    assert record.problems == ()
    request = types.calls.last.request
    assert request.url.params["$select"] == "LogicalName,AttributeType"


def test_an_impossible_date_rejects_only_its_record_naming_the_column(
    mock: respx.MockRouter,
) -> None:
    mock.get(OPPORTUNITY_ATTRIBUTES).respond(json=attributes(**TYPES))
    bad, good = pull(
        [
            row(OPP1, estimatedclosedate="2024-02-30", name="Bad"),
            row(OPP2, estimatedclosedate="2026-06-30", name="Good"),
        ],
        mock,
    )
    assert bad.fields["estimatedclosedate"] == "2024-02-30"
    (problem,) = bad.problems
    assert problem.startswith("estimatedclosedate holds '2024-02-30'")
    assert "not a valid date" in problem
    assert good.problems == ()
    mapping = load_mapping(ROOT / "mappings" / "dynamics.yaml")
    rejection = apply_mapping(bad, mapping, {})
    assert isinstance(rejection, Rejection) and rejection.reasons == (problem,)


def test_types_are_asked_once_and_only_when_a_value_needs_them(
    mock: respx.MockRouter,
) -> None:
    types = mock.get(OPPORTUNITY_ATTRIBUTES).respond(json=attributes(**TYPES))
    mock.get(DELTA).respond(
        json={"value": [row(OPP2, estimatedclosedate="2026-06-30")], "@odata.deltaLink": DELTA}
    )
    mock.get(f"{API}/opportunities").respond(
        json={"value": [row(OPP1, name="Plain")], "@odata.deltaLink": DELTA}
    )
    crm = adapter()
    list(crm.pull_changes(None, fields=["name"], select=None))
    assert types.call_count == 0  # modifiedon is a DateTime by definition; nothing else needs it
    for _ in range(2):
        list(crm.pull_changes(f"delta:{DELTA}", fields=["estimatedclosedate"], select=None))
    crm.close()
    assert types.call_count == 1


PLAN = plan_columns(
    ["name", "estimatedvalue", "parentaccountid.name"],
    lookups=DEFAULT_LOOKUPS,
    stage_column="salesstage",
)


def known(**tables: dict[str, str]) -> ColumnTypes:
    types = ColumnTypes()
    for table, columns in tables.items():
        types.learn(table, columns)
    return types


def test_an_unreadable_change_stamp_rejects_the_row_instead_of_the_page() -> None:
    record = normalise_row(
        row(OPP1, modifiedon="2026-13-45T99:99:99Z"),
        plan=PLAN,
        lookups=DEFAULT_LOOKUPS,
        related={},
        stage_column="salesstage",
        types=known(opportunity=TYPES),
    )
    assert record.modstamp == UNREADABLE_STAMP
    assert len(record.problems) == 1 and record.problems[0].startswith("modifiedon holds")


def test_money_that_is_not_a_number_is_a_problem_and_related_text_stays_text() -> None:
    related = {("accounts", "aaaaaaaa-0000-0000-0000-000000000001"): {"name": "2026-05-01"}}
    record = normalise_row(
        row(
            OPP1,
            estimatedvalue="lots",
            _parentaccountid_value="aaaaaaaa-0000-0000-0000-000000000001",
        ),
        plan=PLAN,
        lookups=DEFAULT_LOOKUPS,
        related=related,
        stage_column="salesstage",
        types=known(opportunity=TYPES, account={"name": "String"}),
    )
    assert record.fields["parentaccountid.name"] == "2026-05-01"
    assert record.problems == ("estimatedvalue holds 'lots', which is not a number (Money)",)
    typed = normalise_row(
        row(OPP1, estimatedvalue=12.5),
        plan=PLAN,
        lookups=DEFAULT_LOOKUPS,
        related={},
        stage_column="salesstage",
        types=known(opportunity=TYPES),
    )
    assert typed.fields["estimatedvalue"] == Decimal("12.5")
