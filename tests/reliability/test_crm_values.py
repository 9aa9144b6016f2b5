"""CRM values are read by their field's type, never by what their text looks like.

A text field holding an impossible date (``2026-13-45T99:99:99Z``, ``2024-02-30T10:00:00Z``,
an offset ``+9999``) once made every Salesforce cycle fail before a record was pulled,
naming none; a valid one (``2026-05-01T12:34:56Z``) in a name or notes was rewritten to
``2026-05-01 12:34:56+00:00`` on its way to the referral, in both CRMs. Each case here
syncs with the text exactly as written, and the other records sync beside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from guard_world import GuardWorld, guard_world

from connector.sync.report import Outcome

TEXTS = [
    "2026-13-45T99:99:99Z",
    "2024-02-30T10:00:00Z",
    "2026-05-01T12:34:56+9999",
    "2026-05-01T12:34:56Z",
]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[GuardWorld]:
    with guard_world(tmp_path, opportunities=40) as w:
        yield w


def by_record(world: GuardWorld) -> dict[str, dict[str, Any]]:
    return {r["externalReferenceId"]: r for r in world.referrals()}


def test_salesforce_text_shaped_like_dates_syncs_exactly_as_written(world: GuardWorld) -> None:
    defects = world.get("/_sandbox/salesforce/defects")["defects"]
    template = next(
        o
        for o in world.sf_opportunities()
        if o["Sync_with_Partner_Center__c"]
        and o["Id"] not in defects
        and o["Primary_Contact__c"]
        and not o["IsClosed"]
    )
    keep = ("AccountId", "Primary_Contact__c", "StageName", "CloseDate", "Amount")
    keep += ("CurrencyIsoCode", "Sync_with_Partner_Center__c", "CoSell_Solutions__c", "OwnerId")
    ids = {
        text: world.post(
            "/_sandbox/salesforce/opportunities",
            {**{k: template[k] for k in keep}, "Name": text, "Description": f"{text}"},
        )["Id"]
        for text in TEXTS
    }

    report = world.sync(world.config("salesforce"))

    assert report.outcome == Outcome.PARTIAL, report.error  # the seeded defects only
    assert report.failed == {} and report.pulled > len(TEXTS)
    referrals = by_record(world)
    records = {o["Id"]: o for o in world.sf_opportunities()}
    for text, record_id in ids.items():
        assert referrals[record_id]["name"] == text
        assert referrals[record_id]["details"]["notes"] == text
        assert records[record_id]["Referral_Identifier__c"] == referrals[record_id]["id"]
        assert not records[record_id]["CoSell_Sync_Error__c"]
    assert len(referrals) > 20  # the seeded records synced beside them


def test_dataverse_text_shaped_like_dates_syncs_exactly_as_written(world: GuardWorld) -> None:
    defects = world.get("/_sandbox/dataverse/defects")
    template = next(
        o
        for o in world.dv_opportunities()
        if o["cosell_syncwithpartnercenter"]
        and o["opportunityid"] not in defects
        and o["statecode"] == 0
        and o.get("_parentcontactid_value")
        and o.get("estimatedvalue")
    )
    skip = {"opportunityid", "versionnumber", "createdon", "modifiedon", "name", "description"}
    base = {
        k: v
        for k, v in template.items()
        if k not in skip and not k.startswith("@") and not k.startswith("cosell_referral")
    }
    ids = {
        text: world.post(
            "/_sandbox/dataverse/opportunities", {**base, "name": text, "description": text}
        )["opportunityid"]
        for text in TEXTS
    }

    report = world.sync(world.config("dynamics"))

    assert report.outcome == Outcome.PARTIAL, report.error
    assert report.failed == {}
    referrals = by_record(world)
    rows = {o["opportunityid"]: o for o in world.dv_opportunities()}
    for text, row_id in ids.items():
        assert referrals[row_id]["name"] == text
        assert referrals[row_id]["details"]["notes"] == text
        assert rows[row_id]["cosell_referralid"] == referrals[row_id]["id"]
    assert len(referrals) > 20
