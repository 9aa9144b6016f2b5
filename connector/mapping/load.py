"""Reading a mapping file into a validated :class:`MappingFile`, every problem at once."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from connector.errors import MappingError
from connector.mapping.cross_checks import cross_block_problems
from connector.mapping.schema import MappingFile
from connector.settings import DEFAULT_MAX_YAML_BYTES
from connector.yaml_guards import YamlKind, read_yaml_text
from connector.yaml_source import format_problems, format_validation_error, load_yaml

#: what a mapping file is: its top-level keys tell it apart from any other file
MAPPING_KIND = YamlKind(
    "mapping file",
    frozenset(f.alias or name for name, f in MappingFile.model_fields.items()),
    "start from mappings/salesforce.yaml or mappings/dynamics.yaml",
)


def parse_mapping(text: str, filename: str) -> MappingFile:
    """Validate mapping text; raises :class:`MappingError` listing ``file:line:col`` problems."""
    data, positions = load_yaml(text, filename, kind=MAPPING_KIND)
    if not isinstance(data, dict):
        raise MappingError(f"{filename}:1:1: {_not_a_mapping(data)}")
    try:
        return MappingFile.model_validate(data)
    except ValidationError as exc:
        problems = format_validation_error(exc, filename, positions, MappingFile)
        # what spans blocks is checked only once every block is valid: check it now
        problems = merged(
            problems, format_problems(cross_block_problems(data), filename, positions)
        )
        raise MappingError(
            f"{filename} has {len(problems)} problem(s):\n  " + "\n  ".join(problems), problems
        ) from None


def merged(*lists: list[str]) -> list[str]:
    """Problem lines of several checks, each once, in file order (line, then column)."""
    unique = list(dict.fromkeys(line for problems in lists for line in problems))
    return sorted(unique, key=_position)


def _position(problem: str) -> tuple[int, int]:
    parts = problem.split(":", 3)
    try:
        return int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        return 0, 0


def _not_a_mapping(data: object) -> str:
    keys = "keys such as crm:, stages:, fields: and status_fields:"
    if data is None:
        return (
            f"the file is empty; a mapping file needs {keys} (start from mappings/salesforce.yaml)"
        )
    if isinstance(data, list):
        return f"the file is a list (lines starting with '- '); a mapping file is a set of {keys}"
    return f"the file holds a single value; a mapping file is a set of {keys}"


def load_mapping(path: Path, *, max_bytes: int = DEFAULT_MAX_YAML_BYTES) -> MappingFile:
    """Read and validate one mapping file (see :func:`parse_mapping`).

    A file larger than ``max_bytes`` (the ``CONNECTOR_MAX_YAML_BYTES`` setting) is
    refused without being read past the limit.
    """
    text = read_yaml_text(path, MAPPING_KIND, max_bytes)
    return parse_mapping(text, str(path))
