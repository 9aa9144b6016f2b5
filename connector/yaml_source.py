"""YAML with positions: every problem is reported as ``file:line:column: message``.

Used for mapping files and the config file. Positions are 1-based. Key positions
point at a key (unknown keys, missing keys below it); value positions point at the
value (wrong types, bad choices), so an editor jumps to the exact spot.

Hostile files are refused quickly and without being shown (the guards live in
:mod:`connector.yaml_guards`); an unknown key that does not look like a key
someone typed (a line of some other file) is not repeated in a message.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from connector.errors import ConnectorError, MappingError
from connector.yaml_guards import MAX_ALIAS_NODES, YamlKind, alias_nodes

Path_ = tuple[str | int, ...]


class Positions(dict[Path_, tuple[int, int]]):
    """Key positions by path; ``value_at`` holds the positions of the values."""

    def __init__(self) -> None:
        super().__init__()
        self.value_at: dict[Path_, tuple[int, int]] = {}


class ModelProblems(ValueError):
    """Raised by model validators: problems at paths below the validated model.

    The formatter places each problem at its own key, instead of at the model's.
    """

    def __init__(self, items: Sequence[tuple[Path_, str]]) -> None:
        super().__init__("; ".join(message for _, message in items))
        self.items = list(items)


_DUPLICATE = re.compile(r'found duplicate key "(.*?)"')

#: an unknown key shown in a message: something a person would type as a key
_KEY_LIKE = re.compile(r"^[A-Za-z_][A-Za-z0-9_ .-]{0,59}$")


def load_yaml(
    text: str,
    filename: str,
    *,
    error_type: type[ConnectorError] = MappingError,
    kind: YamlKind | None = None,
) -> tuple[Any, Positions]:
    """Parse YAML into plain Python data and the 1-based (line, column) of every node.

    With ``kind``, a file that is not recognisably of that kind is refused with a
    message that shows nothing of it.
    """
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as exc:
        if kind is not None and not kind.written_in(text):
            raise error_type(kind.refusal(filename)) from None
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark is not None and "flow" in str(exc.context or ""):
            mark = exc.context_mark  # an unclosed bracket: point where it opens
        where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else f"{filename}:1:1"
        raise error_type(f"{where}: {_yaml_problem(exc)}") from None
    except Exception as exc:  # ruamel raises a few non-marked errors (and RecursionError)
        raise error_type(f"{filename}:1:1: this is not valid YAML ({type(exc).__name__})") from None
    added = alias_nodes(doc)
    if added > MAX_ALIAS_NODES:
        raise error_type(
            f"{filename}:1:1: its aliases (*name) expand to more than {MAX_ALIAS_NODES:,} "
            "nodes beyond those written in the file; write the repeated blocks out, or "
            "use fewer levels of aliases"
        )
    if kind is not None and isinstance(doc, dict) and not kind.keys & {str(k) for k in doc}:
        raise error_type(kind.refusal(filename))
    positions = Positions()
    return _plain(doc, (), positions), positions


def _yaml_problem(exc: MarkedYAMLError) -> str:
    problem = str(exc.problem or exc.context or "invalid YAML")
    duplicate = _DUPLICATE.search(problem)
    if duplicate:
        line = exc.context_mark.line + 1 if exc.context_mark else None
        within = f" (in the block starting on line {line})" if line else ""
        return (
            f"the key {duplicate.group(1)!r} appears twice{within}; "
            "keys must be unique: keep one and delete the other"
        )
    if "'\\t'" in problem:
        return "a tab character; YAML indents with spaces only: replace the tab with spaces"
    context = str(exc.context or "")
    opened = exc.context_mark.line + 1 if exc.context_mark else None
    if "flow mapping" in context or "flow sequence" in context:
        bracket = "{" if "mapping" in context else "["
        return (
            f"the '{bracket}' opened on line {opened} is not closed properly; check its quotes, "
            "commas and closing bracket (this is not valid YAML)"
        )
    if "expected <block end>" in problem:
        return (
            "this line is indented differently from the lines above it; align it with the "
            "other keys of its block (this is not valid YAML)"
        )
    if "mapping values are not allowed" in problem:
        return (
            "a second ': ' on one line; put a value that contains ': ' in quotes "
            "(this is not valid YAML)"
        )
    if "found unexpected end of stream" in problem or "found unexpected end" in problem:
        return "the file ends inside a quoted value; close the quote (this is not valid YAML)"
    return f"{problem} (this is not valid YAML; check indentation, colons and quotes)"


def _plain(node: Any, path: Path_, positions: Positions) -> Any:
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            name = str(key) if not isinstance(key, (int, float, bool)) else key
            child = (*path, str(key))
            try:
                k_line, k_col, v_line, v_col = node.lc.data[key]
                positions[child] = (k_line + 1, k_col + 1)
                positions.value_at[child] = (v_line + 1, v_col + 1)
            except (KeyError, TypeError, ValueError):
                pass
            out[name] = _plain(value, child, positions)
        if not path:
            positions[()] = (1, 1)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, value in enumerate(node):
            try:
                line, col = node.lc.item(i)
                positions[(*path, i)] = (line + 1, col + 1)
                positions.value_at[(*path, i)] = (line + 1, col + 1)
            except (KeyError, IndexError, TypeError):
                pass
            items.append(_plain(value, (*path, i), positions))
        return items
    if node is None or isinstance(node, (bool, int, float)):
        return node
    if isinstance(node, str):
        return str(node)
    # dates and timestamps stay as they are
    if hasattr(node, "isoformat"):
        return node
    return str(node)


def locate(
    path: Sequence[str | int], positions: Positions | dict[Path_, tuple[int, int]]
) -> tuple[int, int]:
    """The position of the deepest node of ``path`` that the file has."""
    p = tuple(path)
    while p:
        if p in positions:
            return positions[p]
        p = p[:-1]
    return positions.get((), (1, 1))


def _locate_value(path: Sequence[str | int], positions: Positions) -> tuple[int, int]:
    if tuple(path) in positions.value_at:
        return positions.value_at[tuple(path)]
    return locate(path, positions)


#: error kinds about a value (point at the value), not about a key
_VALUE_ERRORS = frozenset(
    {
        "literal_error",
        "enum",
        "string_type",
        "string_pattern_mismatch",
        "bool_type",
        "bool_parsing",
        "int_type",
        "int_parsing",
        "float_type",
        "float_parsing",
        "greater_than_equal",
        "less_than_equal",
        "dict_type",
        "model_type",
        "model_attributes_type",
        "list_type",
        "too_short",
        "union_tag_invalid",
    }
)


def format_validation_error(
    exc: ValidationError,
    filename: str,
    positions: Positions | dict[Path_, tuple[int, int]],
    model: type[BaseModel] | None = None,
) -> list[str]:
    """Every pydantic error as ``file:line:col: where: message``, with "did you mean".

    A "missing key" is left out when the same block has an unknown key that is a
    close spelling of it: the typo is the one problem to report.
    """
    if not isinstance(positions, Positions):
        plain = Positions()
        plain.update(positions)
        positions = plain
    errors = list(exc.errors(include_url=False))
    located = [(err, _file_path(err["loc"], positions)) for err in errors]
    typos = _typo_targets(located, model)
    problems: list[tuple[tuple[int, int], str]] = []
    seen: set[str] = set()
    for err, loc in located:
        if err["type"] == "missing" and tuple(loc) in typos:
            continue
        for path, message in _messages(err, loc, model):
            if err.get("input") is None and tuple(path) in positions:
                line, col = positions[tuple(path)]  # an empty value: its key, not the next line
            elif err["type"] in _VALUE_ERRORS or err["type"] == "value_error":
                line, col = _locate_value(path, positions)
            else:
                line, col = locate(path, positions)
            shown = [str(p) for p in path]
            if err["type"] == "extra_forbidden" and shown and not _KEY_LIKE.match(shown[-1]):
                shown[-1] = "(unknown key)"  # a line of some other file: not repeated
            where = ".".join(shown) or "(top level)"
            text = f"{filename}:{line}:{col}: {where}: {message}"
            if text not in seen:
                seen.add(text)
                problems.append(((line, col), text))
    return [text for _, text in sorted(problems, key=lambda item: item[0])]


def format_problems(
    items: Sequence[tuple[Path_, str]],
    filename: str,
    positions: Positions,
) -> list[str]:
    """Problems found outside pydantic, as ``file:line:col: where: message`` (at the value)."""
    out = []
    for path, message in items:
        key, value = positions.get(tuple(path)), positions.value_at.get(tuple(path))
        # a value on the key's line (a field name): the value; a block below its key: the key
        if key and (value is None or value[0] > key[0]):
            line, col = key
        else:
            line, col = _locate_value(path, positions)
        where = ".".join(str(p) for p in path) or "(top level)"
        out.append(f"{filename}:{line}:{col}: {where}: {message}")
    return out


def _typo_targets(
    located: list[tuple[Any, list[str | int]]], model: type[BaseModel] | None
) -> set[Path_]:
    """Paths of missing keys explained by a misspelt sibling key."""
    out: set[Path_] = set()
    missing = {tuple(loc) for err, loc in located if err["type"] == "missing" and loc}
    for err, loc in located:
        if err["type"] != "extra_forbidden" or not loc:
            continue
        hint = _did_you_mean(str(loc[-1]), _allowed_keys(err["loc"], model))
        if hint and (*loc[:-1], hint) in missing:
            out.add((*loc[:-1], hint))
    return out


def _messages(
    err: Any, loc: list[str | int], model: type[BaseModel] | None
) -> list[tuple[list[str | int], str]]:
    error = (err.get("ctx") or {}).get("error")
    if isinstance(error, ModelProblems):
        return [([*loc, *path], message) for path, message in error.items]
    return [(loc, _friendly(err, loc, model))]


def _file_path(loc: Sequence[str | int], positions: Positions) -> list[str | int]:
    """The error location without the union-member tags pydantic inserts (``condition``, ``str``).

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


def _did_you_mean(word: str, choices: Sequence[str]) -> str | None:
    hint = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not hint:
        lowered = {c.lower(): c for c in choices}
        return lowered.get(word.lower())
    return hint[0]


def _friendly(err: Any, loc: list[str | int], model: type[BaseModel] | None) -> str:
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        allowed = _allowed_keys(err["loc"], model)
        if not _KEY_LIKE.match(key):
            return (
                f"a line that is not a key of this file ({len(key)} characters, not shown); "
                "delete it"
                + (f" (allowed keys here: {', '.join(sorted(allowed))})" if allowed else "")
            )
        msg = f"unknown key {key!r}"
        hint = _did_you_mean(key, allowed)
        if hint:
            return msg + f"; did you mean {hint!r}?"
        if allowed:
            return msg + f"; allowed keys here: {', '.join(sorted(allowed))}"
        return msg + "; delete it"
    if kind == "missing":
        return "this key is required but missing; add it"
    if kind in ("literal_error", "enum"):
        expected = str(ctx.get("expected", ""))
        choices = re.findall(r"'([^']*)'", expected)
        hint = _did_you_mean(str(value), choices) if isinstance(value, str) else None
        msg = f"{_show(value)} is not allowed here; use one of {expected}"
        return msg + (f" (did you mean {hint!r}?)" if hint else "")
    if kind == "string_pattern_mismatch":
        return (
            f"{_show(value)} is not a CRM field name; write the field's API name "
            "(letters, digits, underscores), or Relationship.Field for a related record"
        )
    if kind == "string_type":
        return f"{_show(value)} should be text; put it in quotes or write a field name"
    if kind in ("bool_type", "bool_parsing"):
        return f"{_show(value)} should be true or false"
    if kind in ("int_type", "int_parsing", "float_type", "float_parsing"):
        return f"{_show(value)} should be a number"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        if loc and loc[0] == "select":
            return (
                f"{_show(value)} is not a filter; write {{field: X, op: eq, value: Y}}, "
                "or all:, any: or not: with such conditions"
            )
        keys = _allowed_keys([*err["loc"], "?"], model)
        if set(keys) >= {"field", "const"}:
            return f"{_show(value)} should say where the value comes from: {{field: Name}} or {{const: USD}}"
        listed = f" ({', '.join(keys)})" if keys else ""
        return f"{_show(value)} should be a block of keys here{listed}"
    if kind == "list_type":
        return f"{_show(value)} should be a list (lines starting with '- ', or [a, b])"
    if kind == "too_short":
        return "this list is empty; give at least one item"
    if kind == "union_tag_invalid":
        return f"{_show(value)} is not a filter; write {{field: X, op: eq, value: Y}}, all:, any: or not:"
    return str(err["msg"]).removeprefix("Value error, ")


def _show(value: Any) -> str:
    if value is None:
        return "an empty value"  # what YAML reads from a key with nothing after it
    if isinstance(value, dict):
        return "a block of keys"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------- allowed keys


def _allowed_keys(raw_loc: Sequence[str | int], model: type[BaseModel] | None) -> list[str]:
    """The keys the block holding ``raw_loc[-1]`` accepts, following lists, dicts and unions.

    ``raw_loc`` is pydantic's own location, union tags included (``select.all.1.any``):
    a tag picks the union member; a plain key is looked up in every candidate model.
    """
    if model is None:
        return []
    candidates: list[Any] = [model]
    for part in list(raw_loc)[:-1]:
        members = [leaf for c in candidates for leaf in _leaves(c)]
        tagged = [leaf for tag, leaf in members if tag is not None and tag == part]
        if tagged:
            candidates = tagged
            continue
        stepped: list[Any] = []
        for _, leaf in members:
            stepped.extend(_step(leaf, part))
        if stepped:
            candidates = stepped
        elif not _looks_like_tag(part):
            return []
    keys: dict[str, None] = {}
    for c in candidates:
        for _, leaf in _leaves(c):
            if isinstance(leaf, type) and issubclass(leaf, BaseModel):
                for name, f in leaf.model_fields.items():
                    keys.setdefault(f.alias or name, None)
    return list(keys)


def _leaves(tp: Any, tag: str | None = None) -> list[tuple[str | None, Any]]:
    """The members of a (possibly annotated, optional) union, each with its Tag if any."""
    origin = get_origin(tp)
    if origin is Annotated:
        inner, *meta = get_args(tp)
        for m in meta:
            found = getattr(m, "tag", None)
            if isinstance(found, str):
                tag = found
        return _leaves(inner, tag)
    if origin is Union or origin is types.UnionType:
        return [leaf for arg in get_args(tp) for leaf in _leaves(arg)]
    if tp is type(None):
        return []
    return [(tag, tp)]


def _step(tp: Any, part: str | int) -> list[Any]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if not isinstance(part, str):
            return []
        for name, f in tp.model_fields.items():
            if part in (name, f.alias):
                annotation: Any = f.annotation
                if f.metadata:  # a discriminated union keeps its tags in the metadata
                    annotation = Annotated[(annotation, *f.metadata)]
                return [annotation]
        return []
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (list, tuple) and isinstance(part, int) and args:
        return [args[0]]
    if origin is dict and isinstance(part, str) and len(args) == 2:
        return [args[1]]
    return []
