"""Guards of the YAML reader against hostile files: size, alias expansion, foreign files.

- :func:`read_yaml_text` reads no further than the size limit
  (``CONNECTOR_MAX_YAML_BYTES``), so an endless or huge file costs nothing;
- :func:`alias_nodes` counts what aliases add once expanded, in time linear in the
  text, so a few hundred bytes of nested aliases (billions of nodes) are refused
  before anything expands them;
- :class:`YamlKind` tells a mapping or config file apart from any other file (a
  password file passed by mistake) by its top-level keys, so that such a file is
  refused with its name and nothing of its content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector.errors import ConnectorError, MappingError

#: nodes that aliases may add beyond those written in the text (a real mapping file
#: uses none, or a few dozen to share a block)
MAX_ALIAS_NODES = 10_000


@dataclass(frozen=True)
class YamlKind:
    """What a file is meant to be, to tell it apart from any other file without showing it."""

    name: str  # "mapping file"
    keys: frozenset[str]  # its top-level keys
    start_from: str  # where a valid example lives

    def written_in(self, text: str) -> bool:
        """True when a line of ``text`` starts with one of the keys (even if YAML is broken)."""
        names = "|".join(re.escape(k) for k in sorted(self.keys))
        return (
            re.search(rf"^(?:-[ \t]+)?[\"']?(?:{names})[\"']?[ \t]*:(?:[ \t]|$)", text, re.M)
            is not None
        )

    def refusal(self, filename: str) -> str:
        keys = ", ".join(f"{k}:" for k in sorted(self.keys))
        return (
            f"{filename}:1:1: this is not a {self.name}: none of its top-level keys is one a "
            f"{self.name} has ({keys}), so nothing of it is shown; check the path "
            f"({self.start_from})"
        )


def read_yaml_text(
    path: Path,
    kind: YamlKind,
    max_bytes: int,
    *,
    error_type: type[ConnectorError] = MappingError,
    advice: str = "",
) -> str:
    """The UTF-8 text of ``path``, read no further than ``max_bytes`` (a larger file is refused)."""
    tail = f"; {advice}" if advice else ""
    try:
        with path.open("rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise error_type(f"cannot read the {kind.name} {path}: {exc.strerror}{tail}") from None
    if len(raw) > max_bytes:
        raise error_type(
            f"{path}: the file is larger than {max_bytes:,} bytes (CONNECTOR_MAX_YAML_BYTES); "
            f"a {kind.name} is a few kilobytes: check the path, or raise the limit"
        )
    try:
        return raw.decode("utf-8-sig")  # a UTF-8 byte-order mark is dropped
    except UnicodeDecodeError:
        utf16 = raw.startswith((b"\xff\xfe", b"\xfe\xff"))
        found = "UTF-16 text" if utf16 else "not UTF-8 text"
        raise error_type(
            f"{path}: the file is {found}, so nothing of it is shown; save it as UTF-8"
        ) from None


def alias_nodes(doc: Any) -> int:
    """How many nodes aliases add to ``doc`` once expanded (linear in the text).

    ruamel builds an alias as a second reference to the anchored object; the
    expanded size of each object is computed once (memoised by identity), so a
    "billion laughs" costs no more than its own few lines. (A self-referencing alias
    is made None by ruamel; were it kept, it would count as unbounded.)
    """
    sizes: dict[int, int] = {}
    written = 0
    in_progress = -1
    stack: list[tuple[Any, bool]] = [(doc, False)]
    while stack:
        node, children_done = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        key = id(node)
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else list(node)
        if children_done:
            total = 1
            for child in children:
                size = sizes.get(id(child), 1) if isinstance(child, (dict, list)) else 1
                if size == in_progress:
                    return MAX_ALIAS_NODES + 1
                total += size
            sizes[key] = total
            continue
        if key in sizes:
            continue
        sizes[key] = in_progress
        # a map's own items only: ruamel lists the items a merge key (<<: *x) brings in
        # among them, and those are expanded, not written
        own = getattr(node, "_ok", None)
        written += 1 + (2 * len(own) if isinstance(own, set) else len(children))
        stack.append((node, True))
        stack.extend((child, False) for child in children if isinstance(child, (dict, list)))
    return max(0, sizes.get(id(doc), 1) - written)
