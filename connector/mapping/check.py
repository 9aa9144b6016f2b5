"""``connector mappings check``: every problem of a mapping file in one pass, file:line:col.

The file's own problems (YAML, keys, values, what spans blocks) come first; with a
live CRM (``--against-crm``), every CRM field the file names is looked up in the CRM's
description and every stage of the CRM is checked against the stage map, even when
the file has other problems (what can be read of it is checked). Nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from connector.errors import MappingError
from connector.mapping.field_check import FieldChecker, field_uses
from connector.mapping.load import MAPPING_KIND, merged, parse_mapping
from connector.mapping.schema import InboundSettings, MappingFile, StageMap, StageTarget
from connector.mapping.stage_check import StageCheck, check_stages
from connector.model import CrmField, StageInfo
from connector.yaml_guards import read_yaml_text
from connector.yaml_source import Positions, format_problems, load_yaml


class LiveCrm(Protocol):
    """What the check asks of a CRM (a connection's adapter)."""

    def describe_fields(self, entity: str | None = None) -> list[CrmField]: ...

    def stage_metadata(self) -> list[StageInfo]: ...


@dataclass
class FileCheck:
    path: Path
    #: ``file:line:col: where: message``, in file order
    problems: list[str] = field(default_factory=list)
    mapping: MappingFile | None = None
    #: the CRM's stages against the stage map (``--against-crm``, when the map is readable)
    stages: StageCheck | None = None


@dataclass
class _StageRules:
    stages: StageMap
    inbound: InboundSettings


def check_file(
    path: Path, *, max_bytes: int, crm: LiveCrm | None = None, crm_kind: str = ""
) -> FileCheck:
    """Every problem of the mapping at ``path``; with ``crm`` (a ``crm_kind`` one:
    salesforce or dynamics), against that CRM too."""
    out = FileCheck(path)
    name = str(path)
    try:
        text = read_yaml_text(path, MAPPING_KIND, max_bytes)
        data, positions = load_yaml(text, name, kind=MAPPING_KIND)
    except MappingError as exc:  # not YAML, or not a mapping file: nothing more to read
        out.problems = list(exc.problems or [exc.message])
        return out
    try:
        out.mapping = parse_mapping(text, name)
    except MappingError as exc:
        out.problems = list(exc.problems or [exc.message])
        if not isinstance(data, dict):
            return out
    if crm is not None:
        found = _against_crm(out, data, positions, name, crm, crm_kind)
        out.problems = merged(out.problems, found)
    return out


def _against_crm(
    out: FileCheck,
    data: dict[str, Any],
    positions: Positions,
    name: str,
    crm: LiveCrm,
    kind: str,
) -> list[str]:
    if data.get("crm") != kind:
        written = data.get("crm")
        return format_problems(
            [
                (
                    ("crm",),
                    f"this file is written for {written} but the connection's CRM is "
                    f"{kind}; check it against a {written} connection (--connection)",
                )
            ],
            name,
            positions,
        )
    dataverse = kind == "dynamics"
    checker = FieldChecker(
        crm.describe_fields,
        root="opportunity" if dataverse else "Opportunity",
        case_sensitive=dataverse,
    )
    problems = format_problems(checker.check(field_uses(data)), name, positions)
    rules = out.mapping or _stage_rules(data)
    if rules is not None:
        out.stages = check_stages(rules, crm.stage_metadata())
        located = list(zip(out.stages.problem_paths, out.stages.problems, strict=True))
        problems += format_problems(located, name, positions)
    return problems


def _stage_rules(data: dict[str, Any]) -> _StageRules | None:
    """The stage map and inbound settings of a file with problems, as far as they are valid.

    A stage mapped to something not allowed is left out (its problem is among the
    file's), so the CRM's other stages are still checked.
    """
    stages = data.get("stages")
    if not isinstance(stages, dict):
        return None
    mapped = stages.get("map")
    if isinstance(mapped, dict):
        allowed = {t.value for t in StageTarget}
        stages = {**stages, "map": {k: v for k, v in mapped.items() if v in allowed}}
    try:
        return _StageRules(
            StageMap.model_validate(stages),
            InboundSettings.model_validate(data.get("inbound") or {}),
        )
    except ValidationError:
        return None  # their own problems are among the file's
