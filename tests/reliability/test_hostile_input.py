"""Hostile input: odd records in the CRM, and servers that lie.

Every case must end in a clear per-record rejection (its reason written to the
record) or a clean, explained run failure; the rest of the batch syncs; nothing is
half-written once the run is over (no referral without its link, no CRM status
naming a referral that does not exist).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from guard_world import ROOT, GuardWorld, guard_world

from connector.state.store import Store
from connector.sync.report import Outcome

SF = "sandbox-salesforce"
DV = "sandbox-dynamics"
MB = 1_000_000


@pytest.fixture
def world(tmp_path: Path) -> Iterator[GuardWorld]:
    with guard_world(tmp_path, opportunities=40) as w:
        yield w


def referrals_by_record(world: GuardWorld) -> dict[str, dict[str, Any]]:
    per_record = Counter(r["externalReferenceId"] for r in world.referrals())
    assert all(n == 1 for n in per_record.values()), per_record.most_common(3)
    return {r["externalReferenceId"]: r for r in world.referrals()}


def assert_consistent(world: GuardWorld, connection: str) -> None:
    """No referral without its link; no CRM status naming a referral that does not exist."""
    referrals = referrals_by_record(world)
    store = Store.open(world.state_url)
    try:
        links = store.connection(connection).links.get_many(list(referrals))
    finally:
        store.close()
    assert {c: links[c].referral_id if c in links else None for c in referrals} == {
        c: r["id"] for c, r in referrals.items()
    }
    existing = {r["id"] for r in referrals.values()}
    if connection == SF:
        claimed = {o["Referral_Identifier__c"] for o in world.sf_opportunities()}
    else:
        claimed = {o["cosell_referralid"] for o in world.dv_opportunities()}
    assert claimed - {None, ""} <= existing


# ---------------------------------------------------------------------------- odd records


def sf_template(world: GuardWorld) -> dict[str, Any]:
    """The fields of a healthy, selected, open Salesforce record to build variants from."""
    defects = world.get("/_sandbox/salesforce/defects")["defects"]
    healthy = next(
        o
        for o in world.sf_opportunities()
        if o["Sync_with_Partner_Center__c"]
        and o["Id"] not in defects
        and o["Primary_Contact__c"]
        and not o["IsClosed"]
    )
    keys = (
        "AccountId",
        "Primary_Contact__c",
        "StageName",
        "CloseDate",
        "Amount",
        "CurrencyIsoCode",
        "How_can_Microsoft_help__c",
        "Sync_with_Partner_Center__c",
        "CoSell_Solutions__c",
        "OwnerId",
    )
    return {k: healthy[k] for k in keys}


#: name -> (field overrides, expected: "synced" or a fragment of the rejection reason)
SF_RECORDS: dict[str, tuple[dict[str, Any], str]] = {
    "longest name of emoji": ({"Name": "🚀" * 120}, "synced"),
    "control characters": (
        {"Name": "Deal\x00\x07\x1b[31m\u202e", "Description": "a\x00b\x08c\r\nd\x7f"},
        "synced",
    ),
    "emoji and scripts": (
        {"Name": "Deal 🚀 ünïcødé 中文 עברית", "Description": "👍" * 500},
        "synced",
    ),
    "html in notes": (
        {"Description": "<script>alert(document.cookie)</script><img src=x onerror=alert(1)>"},
        "synced",
    ),
    "soql injection name": ({"Name": "x' OR Id != null --"}, "synced"),
    "metacharacters name": ({"Name": "a\\' \\\\ % _ ( ) \" ' \\n"}, "synced"),
    "longest notes": ({"Description": "<b>" + "D" * 31_990}, "the core accepts at most"),
    "bad currency": ({"CurrencyIsoCode": "XXX"}, "ISO 4217"),
    "negative amount": ({"Amount": -5}, "negative"),
    "missing contact": (
        {"Primary_Contact__c": None, "How_can_Microsoft_help__c": "General or Other"},
        "customer contact",
    ),
}

#: values Salesforce itself refuses (so they never reach the connector from it)
SF_REFUSED = {
    "1 MB name": {"Name": "N" * MB},
    "1 MB notes": {"Description": "D" * MB},
    "non-numeric amount": {"Amount": "lots"},
    "impossible date": {"CloseDate": "2026-02-30"},
}


def test_odd_salesforce_records_are_synced_or_rejected_one_by_one(world: GuardWorld) -> None:
    template = sf_template(world)
    for values in SF_REFUSED.values():
        answer = world.admin.post("/_sandbox/salesforce/opportunities", json={**template, **values})
        assert answer.status_code == 400
    ids: dict[str, str] = {}
    for case, (values, _) in SF_RECORDS.items():
        record = world.post(
            "/_sandbox/salesforce/opportunities", {**template, "Name": case, **values}
        )
        ids[case] = record["Id"]
    healthy = world.config("salesforce")
    baseline_ids = {o["Id"] for o in world.sf_opportunities() if o["Id"] not in set(ids.values())}

    report = world.sync(healthy)

    assert report.outcome == Outcome.PARTIAL  # the seeded defects and ours are rejected
    assert report.failed == {}
    referrals = referrals_by_record(world)
    records = {o["Id"]: o for o in world.sf_opportunities()}
    for case, (values, expected) in SF_RECORDS.items():
        record = records[ids[case]]
        if expected == "synced":
            referral = referrals[ids[case]]
            assert record["Referral_Identifier__c"] == referral["id"], case
            assert not record["CoSell_Sync_Error__c"], case
            sent = values.get("Name", case)
            # Control characters become spaces; every other character arrives as written.
            assert not any(unicodedata.category(ch) == "Cc" for ch in referral["name"]), case
            visible = "".join(ch for ch in sent if unicodedata.category(ch) != "Cc")
            assert referral["name"].replace(" ", "") == visible.replace(" ", ""), case
        else:
            assert ids[case] not in referrals, case
            assert expected in (record["CoSell_Sync_Error__c"] or ""), case
            assert record["Referral_Identifier__c"] is None, case
    # The seeded records fared as they would have without the hostile ones.
    synced_seeded = {c for c in referrals if c in baseline_ids}
    assert len(synced_seeded) > 20
    assert all(records[c]["Referral_Identifier__c"] == referrals[c]["id"] for c in synced_seeded)
    assert_consistent(world, SF)


#: every C1 control character (U+0080-U+009F), among text: U+009B is a terminal's CSI
C1 = "".join(map(chr, range(0x80, 0xA0)))


def _strings(data: Any) -> Iterator[str]:
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(data, list):
        for item in data:
            yield from _strings(item)


def test_no_control_character_reaches_partner_center(world: GuardWorld) -> None:
    template = sf_template(world)
    sf = world.post(
        "/_sandbox/salesforce/opportunities",
        {
            **template,
            "Name": f"Deal\x9b31m red\x85{C1} end",
            "Description": f"line one\x9b2J\nline two\x00{C1}\ttabbed",
        },
    )
    dv_template_row = dv_template(world)
    dv = world.post(
        "/_sandbox/dataverse/opportunities",
        {**dv_template_row, "name": f"Dv\x9b deal{C1}", "description": f"notes\x9f{C1}"},
    )

    world.sync(world.config("salesforce"))
    world.sync(world.config("dynamics"))

    referrals = referrals_by_record(world)
    for crm_id in (sf["Id"], dv["opportunityid"]):
        texts = list(_strings(referrals[crm_id]))
        controls = {
            f"U+{ord(ch):04X}"
            for text in texts
            for ch in text
            if unicodedata.category(ch) == "Cc" and ch not in "\n\t"
        }
        assert controls == set(), (crm_id, controls)
    name = referrals[sf["Id"]]["name"]
    assert name.split() == ["Deal", "31m", "red", "end"]  # the text kept, the controls dropped


HOSTILE_NAMES = [
    "x' OR Id != null --",
    "a\\' \\\\ % _ ( ) \" '",
    "50% off (_maybe_)",
    'O\'Brien \\\\ "quoted"',
]


def test_metacharacters_in_the_select_filter_select_exactly_the_named_records(
    world: GuardWorld, tmp_path: Path
) -> None:
    template = sf_template(world)
    wanted = {
        world.post("/_sandbox/salesforce/opportunities", {**template, "Name": n})["Id"]
        for n in HOSTILE_NAMES
    }
    # Near misses that a badly escaped filter would also match.
    for near in ("x", "a", "50X off (Xmaybe_)", "O'Brien", "anything"):
        world.post("/_sandbox/salesforce/opportunities", {**template, "Name": near})
    mapping = yaml.safe_load((ROOT / "mappings" / "salesforce.yaml").read_text(encoding="utf-8"))
    mapping["select"] = {
        "all": [
            {"field": "Sync_with_Partner_Center__c", "op": "eq", "value": True},
            {
                "any": [
                    {"field": "Name", "op": "eq", "value": HOSTILE_NAMES[0]},
                    {"field": "Name", "op": "in", "value": HOSTILE_NAMES[1:3]},
                    {"field": "Name", "op": "eq", "value": HOSTILE_NAMES[3]},
                ]
            },
        ]
    }
    path = tmp_path / "hostile-select.yaml"
    path.write_text(yaml.safe_dump(mapping, allow_unicode=True), encoding="utf-8")

    report = world.sync(world.config("salesforce", mapping=path))

    assert report.pulled == len(HOSTILE_NAMES)
    assert set(referrals_by_record(world)) == wanted
    assert_consistent(world, SF)


def dv_template(world: GuardWorld) -> dict[str, Any]:
    defects = world.get("/_sandbox/dataverse/defects")
    healthy = next(
        o
        for o in world.dv_opportunities()
        if o["cosell_syncwithpartnercenter"]
        and o["opportunityid"] not in defects
        and o["statecode"] == 0
        and o.get("_parentcontactid_value")
        and o.get("estimatedvalue")
    )
    skip = {"opportunityid", "versionnumber", "createdon", "modifiedon", "name", "description"}
    return {
        k: v
        for k, v in healthy.items()
        if k not in skip and not k.startswith("@") and not k.startswith("cosell_referral")
    }


DV_RECORDS: dict[str, tuple[dict[str, Any], str]] = {
    "control characters": ({"name": "Deal\x00\x07\x1b[31m"}, "synced"),
    "html in notes": ({"description": "<script>alert(1)</script>"}, "synced"),
    "odata metacharacters": ({"name": "x' or 1 eq 1 or name eq '"}, "synced"),
    "negative value": ({"estimatedvalue": -10}, "negative"),
    "missing contact": ({"_parentcontactid_value": None, "cosell_helpneeded": 1}, "contact"),
}


def test_odd_dataverse_records_are_synced_or_rejected_one_by_one(world: GuardWorld) -> None:
    template = dv_template(world)
    huge = world.admin.post(
        "/_sandbox/dataverse/opportunities", json={**template, "name": "N" * MB}
    )
    assert huge.status_code == 400  # Dataverse refuses a name past its column length
    ids: dict[str, str] = {}
    for case, (values, _) in DV_RECORDS.items():
        row = world.post("/_sandbox/dataverse/opportunities", {**template, "name": case, **values})
        ids[case] = row["opportunityid"]

    report = world.sync(world.config("dynamics"))

    assert report.outcome == Outcome.PARTIAL
    referrals = referrals_by_record(world)
    rows = {o["opportunityid"]: o for o in world.dv_opportunities()}
    for case, (_, expected) in DV_RECORDS.items():
        row = rows[ids[case]]
        if expected == "synced":
            assert row["cosell_referralid"] == referrals[ids[case]]["id"], case
        else:
            assert ids[case] not in referrals, case
            assert expected in (row["cosell_syncerror"] or ""), case
    assert len(referrals) > 20
    assert_consistent(world, DV)


# ---------------------------------------------------------------------------- lying servers

#: (api, corrupt kind, path fragment, method): one answer kind on one kind of request
LIES = [
    ("salesforce", "malformed_json", "/query", "GET"),
    ("salesforce", "truncated", "/query", "GET"),
    ("salesforce", "error_in_200", "/query", "GET"),
    ("salesforce", "wrong_types", "/query", "GET"),
    ("salesforce", "missing_fields", "/query", "GET"),
    ("salesforce", "malformed_json", "/composite/sobjects", "PATCH"),
    ("salesforce", "error_in_200", "/composite/sobjects", "PATCH"),
    ("salesforce", "wrong_types", "/composite/sobjects", "PATCH"),
    ("core", "malformed_json", "/v1.0/engagements", "POST"),
    ("core", "truncated", "/v1.0/engagements", "PATCH"),
    ("core", "wrong_types", "/v1.0/engagements", "POST"),
    ("core", "missing_fields", "/v1.0/engagements", "POST"),
    ("core", "error_in_200", "/v1.0/engagements", "GET"),
    ("core", "wrong_types", "/v1.0/engagements", "GET"),
    ("entra", "malformed_json", "/oauth2/", "POST"),
]


@pytest.mark.parametrize(("api", "kind", "path", "method"), LIES)
def test_a_lying_server_fails_the_run_or_the_record_cleanly(
    world: GuardWorld, api: str, kind: str, path: str, method: str
) -> None:
    config = world.config("salesforce")
    world.put(
        "/_sandbox/faults",
        {api: {f"rate_{kind}": 1.0, "corrupt_path": path, "corrupt_method": method}},
    )

    lied = world.sync(config)

    if path == "/query" or api == "entra":
        # A lie about what changed or who we are cannot be worked around: the run
        # fails and says why (read as "nothing changed", it would lose changes).
        assert lied.outcome == Outcome.FAILED
        assert lied.error and len(lied.error) < 1000 and "Traceback" not in lied.error
        assert world.referrals() == []
    else:
        # A lie about one write: the records concerned fail (or the connector
        # re-reads and corrects); the run goes on with the rest.
        assert lied.outcome in {Outcome.FAILED, Outcome.PARTIAL}
    # No CRM status names a referral that does not exist, even right after the lie.
    claimed = {o["Referral_Identifier__c"] for o in world.sf_opportunities()} - {None, ""}
    assert claimed <= {r["id"] for r in world.referrals()}

    world.put("/_sandbox/faults", {api: {}})
    honest = world.sync(config)

    # Only the seeded rejects fail, and each one's reason is in the CRM: a record whose
    # error write had an unknown fate is processed again, one that is shown is left alone.
    assert honest.outcome in {Outcome.OK, Outcome.PARTIAL} and honest.failed == {}
    with Store.open(world.state_url) as store:
        letters = store.list_dead_letters(SF)
    errors = {o["Id"]: o["CoSell_Sync_Error__c"] for o in world.sf_opportunities()}
    assert letters and all(errors[d.crm_id] for d in letters)
    referrals = referrals_by_record(world)
    status = {o["Id"]: o["Referral_Identifier__c"] for o in world.sf_opportunities()}
    assert len(referrals) > 20
    assert all(status[c] == r["id"] for c, r in referrals.items())
    assert_consistent(world, SF)
