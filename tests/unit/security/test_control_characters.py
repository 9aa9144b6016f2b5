"""C0 and C1 control characters never reach the core as text."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connector.mapping.apply import clean_text
from connector.mapping.load import load_mapping
from connector.model import CrmOpportunity
from connector.sync.lifecycle import answer_of

SHIPPED = load_mapping(Path(__file__).parents[3] / "mappings" / "salesforce.yaml")
#: decline reasons typed as free text (no picklist in the mapping): the text is sent
MAPPING = SHIPPED.model_copy(
    update={"inbound": SHIPPED.inbound.model_copy(update={"decline_reasons": {}})}
)
C1 = "".join(map(chr, range(0x80, 0xA0)))


def controls(text: str) -> list[str]:
    return [f"U+{ord(c):04X}" for c in text if unicodedata.category(c) == "Cc" and c not in "\n\t"]


@pytest.mark.parametrize(
    ("multiline", "expected"),
    [(False, "Deal 31m red end next"), (True, "Deal31m red end\nnext")],
)
def test_clean_text_drops_c1_as_it_drops_c0(multiline: bool, expected: str) -> None:
    # one line: a control character becomes a space; several: it is dropped
    text = clean_text(f"Deal\x9b31m red\x85{C1}\x00 end\nnext", multiline=multiline)
    assert text == expected


def test_a_decline_reason_reaches_the_core_without_control_characters() -> None:
    record = CrmOpportunity(
        "006A",
        datetime(2026, 5, 1, tzinfo=UTC),
        {
            "StageName": "Prospecting",
            "CoSell_Action__c": "Decline",
            "CoSell_Decline_Reason__c": f"No fit\x9b2J{C1}\x07 at all",
        },
    )
    answer = answer_of(record, MAPPING, "New", "Pending", None)
    assert answer.kind == "decline"
    (reason,) = [op["value"] for op in answer.ops if op["path"] == "/statusReason"]
    assert controls(reason) == [] and reason.startswith("No fit")


def test_a_decline_reason_of_control_characters_only_is_no_reason() -> None:
    record = CrmOpportunity(
        "006A",
        datetime(2026, 5, 1, tzinfo=UTC),
        {"StageName": "Prospecting", "CoSell_Action__c": "Decline", "CoSell_Decline_Reason__c": C1},
    )
    assert answer_of(record, MAPPING, "New", "Pending", None).kind == "refuse"
