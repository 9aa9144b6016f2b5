"""Every field a mapping names, looked up in what the CRM describes (pure, with a fake CRM)."""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML

from connector.mapping.field_check import FieldChecker, field_uses
from connector.model import CrmField

ROOT = Path(__file__).parents[3]

OBJECTS = {
    None: [
        CrmField("Name"),
        CrmField("Description"),
        CrmField("AccountId"),
        CrmField("Account", "Account", False),
        CrmField("Referral_Link__c", writable=True),
        CrmField("SystemModstamp", writable=False),
    ],
    "Account": [CrmField("Name"), CrmField("BillingCity")],
}


def describe(entity: str | None) -> list[CrmField]:
    return OBJECTS[entity]


def checker() -> FieldChecker:
    return FieldChecker(describe, root="Opportunity", case_sensitive=False)


def test_every_field_of_the_default_mapping_is_found_in_the_file_with_its_place() -> None:
    data = YAML(typ="safe").load((ROOT / "mappings" / "salesforce.yaml").read_text("utf-8"))
    uses = {use.path: use for use in field_uses(data)}
    assert uses[("select", "field")].name == "Sync_with_Partner_Center__c"
    assert uses[("fields", "notes", "field")].name == "Description"
    assert uses[("fields", "team_member", "email", "field")].name == "Owner.Email"
    assert uses[("status_fields", "referral_link")].writes
    assert len(uses) > 30


def test_names_are_followed_through_relationships_and_misspellings_are_named() -> None:
    data = {
        "fields": {
            "name": {"field": "name"},  # Salesforce names are case-insensitive
            "notes": {"field": "Descriptoin"},
            "customer_city": {"field": "Account.BillingCity"},
            "customer_name": {"field": "Acount.Name"},
            "customer_state": {"field": "Account.BillingStat"},
        },
        "status_fields": {"referral_link": "Referal_Link__c", "last_sync": "SystemModstamp"},
    }
    problems = dict(checker().check(field_uses(data)))
    assert set(problems) == {
        ("fields", "notes", "field"),
        ("fields", "customer_name", "field"),
        ("fields", "customer_state", "field"),
        ("status_fields", "referral_link"),
        ("status_fields", "last_sync"),
    }
    assert "did you mean 'Description'?" in problems[("fields", "notes", "field")]
    assert "not a relationship of Opportunity" in problems[("fields", "customer_name", "field")]
    assert "not a field of Account" in problems[("fields", "customer_state", "field")]
    assert "read-only in the CRM" in problems[("status_fields", "last_sync")]


def test_each_object_is_described_once() -> None:
    calls: list[str | None] = []

    def counted(entity: str | None) -> list[CrmField]:
        calls.append(entity)
        return describe(entity)

    data = {"fields": {f"f{i}": {"field": "Account.Name"} for i in range(5)}}
    FieldChecker(counted, root="Opportunity", case_sensitive=False).check(field_uses(data))
    assert calls == [None, "Account"]


def test_a_file_with_broken_blocks_still_yields_the_names_it_holds() -> None:
    data = {"fields": "not a block", "stages": {"field": "StageName"}, "select": [1, 2]}
    assert [use.name for use in field_uses(data)] == ["StageName"]
