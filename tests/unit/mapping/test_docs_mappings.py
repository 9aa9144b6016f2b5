"""Every YAML example of docs/mappings.md is valid.

Blocks with a ``crm:`` line are whole mapping files and must validate as they are;
the other blocks are fragments (``select:``, ``inbound:`` ...) and must validate once
put in place of the same keys of the default Salesforce mapping.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from connector.mapping.load import parse_mapping
from connector.mapping.schema import MappingFile

ROOT = Path(__file__).parents[3]
DOC = ROOT / "docs" / "mappings.md"
BLOCKS = re.findall(r"^```yaml\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.M | re.S)
FULL = [b for b in BLOCKS if re.search(r"^crm:", b, re.M)]
FRAGMENTS = [b for b in BLOCKS if b not in FULL]


def test_the_guide_has_whole_examples_for_both_kinds_of_block() -> None:
    assert len(FULL) >= 2
    assert len(FRAGMENTS) >= 2


@pytest.mark.parametrize("text", FULL, ids=[f"full-{i}" for i in range(len(FULL))])
def test_whole_examples_are_valid_mapping_files(text: str) -> None:
    mapping = parse_mapping(text, "docs/mappings.md example")
    assert mapping.crm in ("salesforce", "dynamics")


@pytest.mark.parametrize("text", FRAGMENTS, ids=[f"fragment-{i}" for i in range(len(FRAGMENTS))])
def test_fragments_are_valid_in_place(text: str) -> None:
    yaml = YAML(typ="safe")
    fragment = yaml.load(text)
    base = yaml.load((ROOT / "mappings" / "salesforce.yaml").read_text(encoding="utf-8"))
    assert set(fragment) <= set(MappingFile.model_fields)
    MappingFile.model_validate({**base, **fragment})


def test_the_customised_example_maps_the_custom_stages() -> None:
    acme = next(b for b in FULL if "Technical win" in b)
    mapping = parse_mapping(acme, "acme.yaml")
    assert mapping.stages.map["Verbal commit"].value == "Negotiated"
    assert mapping.stages.unmapped == "reject"
    assert mapping.fields.currency.const == "USD"
    assert mapping.fields.customer_country.table == {
        "United States": "US",
        "Germany": "DE",
        "France": "FR",
        "United Kingdom": "GB",
        "Netherlands": "NL",
    }
