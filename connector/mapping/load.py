"""Reading a mapping file into a validated :class:`MappingFile`, every problem at once."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from connector.errors import MappingError
from connector.mapping.schema import MappingFile
from connector.mapping.yaml_source import format_validation_error, load_yaml


def parse_mapping(text: str, filename: str) -> MappingFile:
    """Validate mapping text; raises :class:`MappingError` listing ``file:line:col`` problems."""
    data, positions = load_yaml(text, filename)
    if not isinstance(data, dict):
        raise MappingError(f"{filename}:1:1: {_not_a_mapping(data)}")
    try:
        return MappingFile.model_validate(data)
    except ValidationError as exc:
        problems = format_validation_error(exc, filename, positions, MappingFile)
        raise MappingError(
            f"{filename} has {len(problems)} problem(s):\n  " + "\n  ".join(problems), problems
        ) from None


def _not_a_mapping(data: object) -> str:
    keys = "keys such as crm:, stages:, fields: and status_fields:"
    if data is None:
        return (
            f"the file is empty; a mapping file needs {keys} (start from mappings/salesforce.yaml)"
        )
    if isinstance(data, list):
        return f"the file is a list (lines starting with '- '); a mapping file is a set of {keys}"
    return f"the file holds a single value; a mapping file is a set of {keys}"


def load_mapping(path: Path) -> MappingFile:
    """Read and validate one mapping file (see :func:`parse_mapping`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(f"cannot read the mapping file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise MappingError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    return parse_mapping(text, str(path))
