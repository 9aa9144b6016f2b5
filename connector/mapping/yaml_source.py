"""YAML with positions: every problem is reported as ``file:line:column: message``."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from connector.errors import ConnectorError, MappingError

Path_ = tuple[str | int, ...]
Positions = dict[Path_, tuple[int, int]]


def load_yaml(
    text: str, filename: str, *, error_type: type[ConnectorError] = MappingError
) -> tuple[Any, Positions]:
    """Parse YAML into plain Python data and the 1-based (line, column) of every node."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else filename
        problem = exc.problem or exc.context or "invalid YAML"
        raise error_type(
            f"{where}: {problem} (this is not valid YAML; check indentation and quotes)"
        ) from None
    except Exception as exc:  # ruamel raises a few non-marked errors (e.g. duplicate keys)
        raise error_type(f"{filename}: invalid YAML: {exc}") from None
    positions: Positions = {}
    return _plain(doc, (), positions), positions


def _plain(node: Any, path: Path_, positions: Positions) -> Any:
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            line_col = node.lc.key(key) if key in node else None
            if line_col is not None:
                positions[(*path, str(key))] = (line_col[0] + 1, line_col[1] + 1)
            out[str(key) if not isinstance(key, (int, float, bool)) else key] = _plain(
                value, (*path, str(key)), positions
            )
        if not path:
            positions[()] = (1, 1)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, value in enumerate(node):
            try:
                line, col = node.lc.item(i)
                positions[(*path, i)] = (line + 1, col + 1)
            except (KeyError, IndexError, TypeError):
                pass
            items.append(_plain(value, (*path, i), positions))
        return items
    if node is None or isinstance(node, (bool, int, float, str)):
        return node if not isinstance(node, str) else str(node)
    # dates, timestamps and ruamel scalar types become their plain equivalents
    if hasattr(node, "isoformat"):
        return node
    return str(node) if not isinstance(node, (int, float)) else node


def locate(path: Sequence[str | int], positions: Positions) -> tuple[int, int]:
    """The position of the deepest node of ``path`` that the file has."""
    p = tuple(path)
    while p:
        if p in positions:
            return positions[p]
        p = p[:-1]
    return positions.get((), (1, 1))


def format_validation_error(
    exc: ValidationError,
    filename: str,
    positions: Positions,
    model: type[BaseModel] | None = None,
) -> list[str]:
    """Every pydantic error as ``file:line:col: where: message``, with "did you mean"."""
    problems: list[str] = []
    seen: set[str] = set()
    for err in exc.errors(include_url=False):
        loc = _file_path(err["loc"], positions)
        line, col = locate(loc, positions)
        where = ".".join(str(p) for p in loc) or "(top level)"
        message = _friendly(err, loc, model)
        text = f"{filename}:{line}:{col}: {where}: {message}"
        if text not in seen:
            seen.add(text)
            problems.append(text)
    return problems


def _file_path(loc: Sequence[str | int], positions: Positions) -> list[str | int]:
    """The error location without the union-member tags pydantic inserts (``Condition``, ``str``).

    A part is kept when the file has a node there; the last part is kept too when it
    is the unknown or missing key itself.
    """
    kept: list[str | int] = []
    for i, part in enumerate(loc):
        candidate = (*kept, part)
        if candidate in positions or (i == len(loc) - 1 and not _looks_like_tag(part)):
            kept.append(part)
    return kept


def _looks_like_tag(part: str | int) -> bool:
    return isinstance(part, str) and (
        part in {"str", "int", "float", "bool", "date", "datetime", "none"}
        or "[" in part
        or part.startswith("function")
        or part in {"condition", "all", "any", "not"}
    )


def _friendly(err: Any, loc: list[str | int], model: type[BaseModel] | None) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        allowed = _allowed_keys(err, model, loc)
        hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        msg = f"unknown key {key!r}"
        if hint:
            msg += f"; did you mean {hint[0]!r}?"
        elif allowed:
            msg += f"; allowed keys here: {', '.join(sorted(allowed))}"
        return msg
    if kind == "missing":
        return "this key is required but missing; add it"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{err['input']!r} is not allowed here; use one of {expected}"
    if kind == "enum":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{err['input']!r} is not allowed here; use one of {expected}"
    return str(err["msg"]).removeprefix("Value error, ")


def _allowed_keys(err: Any, model: type[BaseModel] | None, loc: list[str | int]) -> list[str]:
    if model is None:
        return []
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields:
            return []
        field = next((f for n, f in fields.items() if (f.alias or n) == part), None)
        if field is None:
            return []
        current = _model_of(field.annotation)
        if current is None:
            return []
    fields = getattr(current, "model_fields", {})
    return [f.alias or n for n, f in fields.items()]


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None
