"""Every example in config/ validates, names a mapping that exists and a buildable schedule."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.daemon import schedule_trigger
from connector.mapping.load import load_mapping
from connector.settings import load_config

ROOT = Path(__file__).parents[3]
EXAMPLES = sorted((ROOT / "config").glob("*.yaml"))


def test_there_are_examples_for_each_way_of_running() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"sandbox.yaml", "compose-sandbox.yaml", "salesforce.example.yaml"} <= names
    assert {"dynamics.example.yaml", "postgres-multi.example.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_the_config_example_validates(path: Path) -> None:
    config = load_config(path)
    assert config.connections
    for conn in config.connections:
        mapping = conn.mapping
        if mapping.is_absolute():  # the image's layout: /app/mappings/... is mappings/...
            assert mapping.parts[:3] == ("/", "app", "mappings"), mapping
            mapping = ROOT.joinpath(*mapping.parts[2:])
        else:
            mapping = ROOT / mapping
        assert load_mapping(mapping).crm == conn.crm.kind, conn.name
        schedule_trigger(conn)  # the daemon can schedule it
