"""The JSON Schema editors use is the one the code validates with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connector.errors import MappingError
from connector.mapping.load import load_mapping, parse_mapping
from connector.mapping.schema import MappingFile
from connector.model import ASSISTANCE_CODES

ROOT = Path(__file__).parents[3]
BASE = (ROOT / "mappings" / "salesforce.yaml").read_text(encoding="utf-8")


def test_committed_schema_matches_the_model() -> None:
    committed = json.loads((ROOT / "mappings" / "mapping.schema.json").read_text())
    assert committed == MappingFile.model_json_schema(by_alias=True), (
        "regenerate it: connector mappings schema > mappings/mapping.schema.json"
    )


def test_default_mappings_point_editors_at_the_schema() -> None:
    for path in (ROOT / "mappings").glob("*.yaml"):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first == "# yaml-language-server: $schema=./mapping.schema.json", path


def _objects(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = [("(root)", schema)]
    found += list(schema.get("$defs", {}).items())
    return [(name, s) for name, s in found if "properties" in s]


def test_every_key_has_a_description_and_an_example_for_editors_to_show() -> None:
    schema = MappingFile.model_json_schema(by_alias=True)
    missing = [
        f"{name}.{key}"
        for name, obj in _objects(schema)
        for key, prop in obj["properties"].items()
        if not prop.get("description") or not prop.get("examples")
    ]
    assert missing == []
    assert len([1 for _, obj in _objects(schema) for _ in obj["properties"]]) > 60


def test_the_schema_allows_exactly_the_stage_targets_the_checker_allows() -> None:
    schema = MappingFile.model_json_schema(by_alias=True)
    stage_map = schema["$defs"]["StageMap"]["properties"]["map"]["additionalProperties"]
    targets = schema["$defs"][stage_map["$ref"].rsplit("/", 1)[1]]["enum"]
    assert "Accepted" not in targets and "ignore" in targets
    for target in targets:  # each one the schema offers, the checker takes
        text = BASE.replace("Prospecting: Created", f"Prospecting: {target}")
        parse_mapping(text, "ok.yaml")
    with pytest.raises(MappingError):
        parse_mapping(BASE.replace("Prospecting: Created", "Prospecting: Accepted"), "x.yaml")


def test_the_schema_lists_the_assistance_codes_the_checker_takes() -> None:
    schema = MappingFile.model_json_schema(by_alias=True)
    values = schema["$defs"]["DealTypeRule"]["properties"]["help_values"]["additionalProperties"]
    assert values["anyOf"][0]["enum"] == list(ASSISTANCE_CODES)
    with pytest.raises(MappingError) as caught:
        parse_mapping(BASE.replace("ProofOfConceptOrDemo", "ProofOfConcept"), "x.yaml")
    assert "is not an assistance code" in caught.value.message


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
