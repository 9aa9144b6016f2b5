"""Problems that span blocks of a mapping file, found on its raw data (pure).

pydantic checks a block only when the blocks it holds are valid, and the whole file
only when every block is: a problem between blocks would wait for every other one to
be fixed first. These checks read the raw file instead, so :func:`parse_mapping
<connector.mapping.load.parse_mapping>` reports them in the same pass as the rest;
the model runs the same checks on a valid file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector.mapping.field_check import FilePath, field_uses


def cross_block_problems(data: Any) -> list[tuple[FilePath, str]]:
    """Status fields the mapping also reads; Dataverse's Won / Lost sent elsewhere."""
    if not isinstance(data, Mapping):
        return []
    problems = _status_fields_read(data)
    if data.get("crm") == "dynamics":
        problems += _dataverse_closed_stages(data)
    return problems


def _status_fields_read(data: Mapping[str, Any]) -> list[tuple[FilePath, str]]:
    uses = field_uses(data)
    read: dict[str, str] = {}
    for use in uses:
        if not use.writes and use.path[0] != "select":
            where = (
                use.path[:-1] if use.path[-1] == "field" and use.path[0] == "fields" else use.path
            )
            read.setdefault(use.name, ".".join(str(p) for p in where))
    return [
        (
            use.path,
            f"{use.name} is also read as {read[use.name]}; the connector writes status "
            "fields, so it would overwrite what it reads: use a field of its own for the status",
        )
        for use in uses
        if use.writes and use.name in read
    ]


def _dataverse_closed_stages(data: Mapping[str, Any]) -> list[tuple[FilePath, str]]:
    """Dataverse closes a deal with its state, which the adapter reports as Won / Lost."""
    stages = data.get("stages")
    mapped = stages.get("map") if isinstance(stages, Mapping) else None
    if not isinstance(mapped, Mapping):
        return []
    problems: list[tuple[FilePath, str]] = []
    for label in ("Won", "Lost"):
        target = mapped.get(label)
        if isinstance(target, str) and target not in (label, "ignore"):
            problems.append(
                (
                    ("stages", "map", label),
                    f"a closed {label.lower()} deal may only map to {label}, not {target}",
                )
            )
    return problems
