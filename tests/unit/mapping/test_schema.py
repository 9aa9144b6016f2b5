"""The JSON Schema editors use is the one the code validates with."""

from __future__ import annotations

import json
from pathlib import Path

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
