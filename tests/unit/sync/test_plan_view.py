"""The dry-run plan as a person reads it: changes first, names, before → after (pure)."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from rich.console import Console

from connector.dealcore.payload import referral_body
from connector.mapping.load import load_mapping
from connector.model import (
    Contact,
    CrmOpportunity,
    Customer,
    DealDraft,
    Rejection,
    StandardStage,
)
from connector.sync.plan import Skip, SkipReason, plan_outbound
from connector.sync.plan_view import describe, ordered, print_plan, record_name

ROOT = Path(__file__).parents[3]


def draft(crm_id: str, name: str, **overrides: object) -> DealDraft:
    base = DealDraft(
        crm_id=crm_id,
        name=name,
        value=Decimal(1000),
        currency="USD",
        close_date=date(2026, 12, 1),
        customer=Customer("Contoso", "US", contacts=(Contact("A", "B", "1", "a@b.example"),)),
        team=(Contact("S", "T", "2", "s@p.example"),),
        solutions=("SOL-1",),
        stage=StandardStage.QUALIFIED,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


class Link:
    def __init__(self, d: DealDraft) -> None:
        self.referral_id = "ref-1"
        self.fingerprint = d.fingerprint()
        self.sent_body = referral_body(d)
        self.status, self.substatus = "Active", "Accepted"
        self.direction, self.etag = "Outgoing", '"e1"'


def plan() -> list[dict[str, object]]:
    before = draft("006B", "Beta renewal")
    changed = plan_outbound(replace(before, value=Decimal(2500)), Link(before))
    created = plan_outbound(draft("006C", "Contoso new"), None)
    same = draft("006A", "Alpha")
    unchanged = plan_outbound(same, Link(same))
    rejected = plan_outbound(Rejection("006D", ("the close date is empty",)), None)
    return [
        describe(unchanged, Link(same).sent_body, name="Alpha"),
        describe(changed, Link(before).sent_body),
        describe(rejected, None, name="Delta"),
        describe(created),
    ]


def test_an_update_names_each_changed_field_with_its_value_before_and_after() -> None:
    update = next(item for item in plan() if item["action"] == "update")
    assert update["name"] == "Beta renewal"
    assert {"field": "details.dealValue", "before": 1000, "after": 2500} in update["changes"]


def test_changes_come_first_then_the_skips() -> None:
    actions = [item["action"] for item in ordered(plan())]
    assert actions == ["create", "update", "reject", "skip"]


def test_the_printed_plan_shows_names_and_before_after_and_counts_the_skips() -> None:
    out = io.StringIO()
    print_plan(plan(), Console(file=out, width=200))
    text = out.getvalue()
    assert "Beta renewal" in text and "details.dealValue: 1000 → 2500" in text
    assert "Contoso new" in text and "Delta" in text and "the close date is empty" in text
    assert "skip unchanged: 1 record(s)" in text
    assert "{" not in text  # no Python dict text
    assert text.index("Contoso new") < text.index("Beta renewal") < text.index("Delta")


def test_the_printed_plan_says_how_to_see_it_whole() -> None:
    items = [describe(Skip(f"006{i}", SkipReason.UNCHANGED), None) for i in range(3)]
    items += [describe(plan_outbound(draft(f"007{i}", f"New {i}"), None)) for i in range(5)]
    out = io.StringIO()
    print_plan(items, Console(file=out, width=200), limit=2)
    assert "the first 2 changes shown (--json for the whole plan)" in out.getvalue()


def test_a_rejected_record_is_named_from_the_crm_field() -> None:
    mapping = load_mapping(ROOT / "mappings" / "salesforce.yaml")
    record = CrmOpportunity("006A", datetime(2026, 1, 1, tzinfo=UTC), {"Name": "Fabrikam"})
    assert record_name(record, mapping) == "Fabrikam"
