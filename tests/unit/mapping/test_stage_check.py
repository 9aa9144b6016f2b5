"""The mapping's stages against a CRM's stage list (pure)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from connector.mapping.load import load_mapping, parse_mapping
from connector.mapping.stage_check import check_stages
from connector.model import StageInfo

ROOT = Path(__file__).parents[3]
TEXT = (ROOT / "mappings" / "salesforce.yaml").read_text(encoding="utf-8")

ORG = [
    StageInfo("Prospecting", "Prospecting", Decimal(10), False, False),
    StageInfo("Technical Win", "Technical Win", Decimal(65), False, False),
    StageInfo("Closed Won", "Closed Won", Decimal(100), True, True),
    StageInfo("Closed Lost", "Closed Lost", Decimal(0), True, False),
    StageInfo("Lost to Competitor", "Lost to Competitor", Decimal(0), True, False),
]


def test_each_stage_says_what_it_becomes() -> None:
    check = check_stages(load_mapping(ROOT / "mappings" / "salesforce.yaml"), ORG)
    becomes = {line.label: line.maps_to for line in check.lines}
    assert becomes == {
        "Prospecting": "Created (mapped)",
        "Technical Win": "by probability -> Proposed",
        "Closed Won": "Won (mapped)",
        "Closed Lost": "Lost (mapped)",
        "Lost to Competitor": "closed -> Lost",
    }
    assert check.problems == []
    assert any("'Needs Analysis'" in w for w in check.warnings)  # mapped, not in this org


def test_an_unmapped_stage_is_a_problem_under_reject() -> None:
    m = parse_mapping(TEXT.replace("unmapped: by_probability", "unmapped: reject"), "m.yaml")
    check = check_stages(m, ORG)
    assert [line.maps_to for line in check.lines if line.label == "Technical Win"] == ["UNMAPPED"]
    assert check.problems == [
        "stage 'Technical Win' is not in stages.map and unmapped stages are rejected, so "
        "records in it will be rejected; add 'Technical Win: <standard stage>' (or "
        "'Technical Win: ignore') under stages.map"
    ]
    assert check.problem_paths == [("stages", "map")]


def test_an_ignored_stage_is_shown_as_ignored_and_is_no_problem() -> None:
    text = TEXT.replace("unmapped: by_probability", "unmapped: reject").replace(
        "    Closed Won: Won\n", "    Technical Win: ignore\n    Closed Won: Won\n"
    )
    check = check_stages(parse_mapping(text, "m.yaml"), ORG)
    assert [line.maps_to for line in check.lines if line.label == "Technical Win"] == [
        "ignored (records skipped)"
    ]
    assert check.problems == []


def test_contradictions_between_crm_and_mapping_are_problems() -> None:
    text = TEXT.replace("Closed Won: Won", "Closed Won: Negotiated")
    text = text.replace("Closed Lost: Lost", "Closed Lost: Won")
    text = text.replace("Prospecting: Created", "Prospecting: Lost")
    check = check_stages(parse_mapping(text, "m.yaml"), ORG)
    assert check.problems == [
        "stage 'Prospecting' is an open stage in the CRM but the mapping sends it to Lost, "
        "which would close the deal in Partner Center while it is still open: map it to an "
        "open stage",
        "stage 'Closed Won' is a won stage in the CRM but the mapping sends it to Negotiated; "
        "a won stage may only map to Won",
        "stage 'Closed Lost' is a lost stage in the CRM but the mapping sends it to Won; "
        "a lost stage may only map to Lost",
    ]


def test_by_probability_needs_a_probability() -> None:
    dataverse_like = [StageInfo("Security Review", "100000007", None, False, False)]
    check = check_stages(load_mapping(ROOT / "mappings" / "salesforce.yaml"), dataverse_like)
    assert check.lines[0].maps_to == "UNMAPPED"
    assert "the CRM gives it no probability" in check.problems[0]


def test_the_inbound_stage_must_exist_and_be_open() -> None:
    text = TEXT.replace("create_opportunities: false", "create_opportunities: true")
    check = check_stages(
        parse_mapping(text.replace("stage: Prospecting", "stage: Prospect"), "m"), ORG
    )
    assert any("inbound.stage 'Prospect' is not a stage of the CRM" in p for p in check.problems)
    check = check_stages(
        parse_mapping(text.replace("stage: Prospecting", "stage: Closed Won"), "m"), ORG
    )
    assert any("inbound.stage 'Closed Won' is a closed stage" in p for p in check.problems)
