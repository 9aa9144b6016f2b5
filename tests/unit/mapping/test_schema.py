"""The JSON Schema editors use is the one the code validates with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connector.errors import MappingError
from connector.mapping.load import load_mapping
from connector.mapping.schema import MappingFile

ROOT = Path(__file__).parents[3]


def test_committed_schema_matches_the_model() -> None:
    committed = json.loads((ROOT / "mappings" / "mapping.schema.json").read_text())
    assert committed == MappingFile.model_json_schema(by_alias=True), (
        "regenerate it: connector mappings schema > mappings/mapping.schema.json"
    )


def test_default_mappings_point_editors_at_the_schema() -> None:
    for path in (ROOT / "mappings").glob("*.yaml"):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first == "# yaml-language-server: $schema=./mapping.schema.json", path


def test_tying_customers_needs_the_customer_read_through_related_records(tmp_path: Path) -> None:
    text = (ROOT / "mappings" / "salesforce.yaml").read_text()
    text = text.replace("customer_name: {field: Account.Name}", "customer_name: {field: Name}")
    text = text.replace("email: {field: Primary_Contact__r.Email}", "email: {field: Email__c}")
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    message = str(caught.value)
    assert "inbound.customer.account" in message and "Account.Name" in message
    assert "inbound.customer.contact" in message
