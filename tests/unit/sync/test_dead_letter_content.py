"""A record read again after it failed: unchanged (stamp or content) or changed (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from connector.mapping.load import load_mapping
from connector.model import CrmOpportunity
from connector.state.records import LetterStamp
from connector.sync.dead_letters import ContentFingerprints, split_unchanged

ROOT = Path(__file__).parents[3]
MAPPING = load_mapping(ROOT / "mappings" / "salesforce.yaml")
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
T1 = datetime(2026, 1, 5, 9, 1, tzinfo=UTC)


def record(stamp: datetime = T0, **fields: object) -> CrmOpportunity:
    base: dict[str, object] = {"Name": "Contoso", "Amount": 100.0, "StageName": "Prospecting"}
    return CrmOpportunity("006A", stamp, {**base, **fields})


FP = ContentFingerprints(MAPPING)
LETTER = LetterStamp(T0, FP.of(record()))


@pytest.mark.parametrize(
    ("again", "unchanged"),
    [
        (record(), True),  # the same stamp
        (record(T1), True),  # the stamp moved: the connector wrote the error field
        (record(T1, CoSell_Sync_Error__c="no contact"), True),  # a status field: not read
        (record(T1, Unrelated__c="x"), True),  # a field the mapping does not read
        (record(T1, Amount=250.0), False),  # a field the mapping reads
        (record(T1, StageName="Qualification"), False),
    ],
)
def test_a_record_is_unchanged_when_its_stamp_or_its_content_is(
    again: CrmOpportunity, unchanged: bool
) -> None:
    changed, same = split_unchanged([again], {"006A": LETTER}, FP)
    assert (same == [again]) is unchanged
    assert (changed == [again]) is not unchanged


def test_a_letter_from_before_content_hashes_compares_the_stamp_only() -> None:
    old = LetterStamp(T0, None)
    assert split_unchanged([record()], {"006A": old}, FP)[1]
    assert split_unchanged([record(T1)], {"006A": old}, FP)[0]


def test_an_edited_mapping_makes_the_record_changed() -> None:
    edited = MAPPING.model_copy(update={"version": 1})
    stages = MAPPING.stages.model_copy(update={"unmapped": "reject"})
    other = ContentFingerprints(edited.model_copy(update={"stages": stages}))
    assert other.of(record()) != FP.of(record())
    assert ContentFingerprints(edited).of(record()) == FP.of(record())


def test_a_record_without_a_letter_is_processed() -> None:
    changed, same = split_unchanged([record()], {}, FP)
    assert changed == [record()] and same == []
