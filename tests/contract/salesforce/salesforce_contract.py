"""Published Salesforce REST API bodies (``fixtures/``), as the client and the sandbox meet them.

Salesforce's developer guide is a documentation site, not a repository: each fixture
names the page (title and address) and the section its body comes from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"


def published(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    assert {"page", "url", "section"} <= set(data["source"]), f"{name}: the source is not named"
    return data


def shape(value: Any) -> Any:
    """The JSON shape of a value: keys and value kinds, lists by their first item."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if value is None:
        return None
    return type(value).__name__
