"""The package's floors: no import cycle, no long module, and arrows that only point down.

Every module under ``connector/`` is read with :mod:`ast`; nothing is imported. An
import counts where it is written: at module level for the cycle check (imports inside
a function or under ``if TYPE_CHECKING:`` run later or never, so they close no cycle at
import time), anywhere but under ``TYPE_CHECKING`` for the arrow check (a function's
import is still a dependency of its module).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "connector"

#: the longest a module may be
MAX_LINES = 500

#: packages allowed longer modules for a while (a split under way elsewhere); empty since
#: the sandbox left, sync became stages and state was split by table
LONG_MODULES_ALLOWED_IN: tuple[str, ...] = ()

#: the connector packages every layer below the commands must keep out of
_UI = ("connector.cli", "connector.commands", "connector.console", "connector.daemon")

#: importer (a module or a package) → what it must never import. These are the arrows
#: that once ran back up, and the floors under them.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # the shared types: pure, the ground floor
    "connector.model": ("connector",),
    # JSON on the hot path: a leaf every floor may use
    "connector.fastjson": ("connector",),
    # the one retry module serves every adapter; it knows none of them
    "connector.retry": (
        "connector.crm",
        "connector.dealcore",
        "connector.mapping",
        "connector.sync",
        "connector.state",
        *_UI,
    ),
    # YAML with positions serves the mapping and the config file alike
    "connector.yaml_source": ("connector.mapping", "connector.settings", *_UI),
    "connector.yaml_guards": ("connector.mapping", "connector.settings", *_UI),
    "connector.settings": (
        "connector.mapping",
        "connector.crm",
        "connector.dealcore",
        "connector.sync",
        "connector.state",
        *_UI,
    ),
    # the mapping is pure: it knows no adapter, no core, no planner
    "connector.mapping": (
        "connector.crm",
        "connector.dealcore",
        "connector.sync",
        "connector.state",
        "connector.runtime",
        "connector.events",
        *_UI,
    ),
    # an adapter speaks CRM: it knows the shared model, not the mapping, core or sync
    "connector.crm": (
        "connector.mapping",
        "connector.dealcore",
        "connector.sync",
        "connector.state",
        "connector.runtime",
        "connector.events",
        *_UI,
    ),
    "connector.dealcore": (
        "connector.crm",
        "connector.mapping",
        "connector.sync",
        "connector.state",
        "connector.runtime",
        "connector.events",
        *_UI,
    ),
    "connector.sync": _UI,
    "connector.state": (
        "connector.crm",
        "connector.dealcore",
        "connector.mapping",
        "connector.sync",
        *_UI,
    ),
}

#: who may import the command modules: the app that assembles them (and ``python -m
#: connector``), and the console, which shows the same ``explain`` and live mapping
#: check as ``connector mappings``
COMMANDS_USERS = ("connector.__main__", "connector.cli", "connector.commands", "connector.console")


@dataclass
class Module:
    name: str
    path: Path
    lines: int
    #: imported connector modules, at module level (what runs at import time)
    top: set[str] = field(default_factory=set)
    #: imported connector modules anywhere except under TYPE_CHECKING
    anywhere: set[str] = field(default_factory=set)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, *, top: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Each import under ``node`` with whether it runs at import time (module level)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _imports(ast.Module(body=[other], type_ignores=[]), top=top)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, top
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _imports(child, top=False)
        else:
            yield from _imports(child, top=top)


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]
) -> set[str]:
    """The connector modules an import names: ``from a import b`` is module ``a.b`` when
    there is one, else ``a`` (a name defined in it)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            source = ".".join([*base, *([node.module] if node.module else [])])
        else:
            source = node.module or ""
        names = [
            f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
            for alias in node.names
        ]
    found = set()
    for name in names:
        parts = name.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        if parts and ".".join(parts) != module:
            found.add(".".join(parts))
    return found


def _read() -> dict[str, Module]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {
        _module_name(p): Module(_module_name(p), p, len(p.read_text("utf-8").splitlines()))
        for p in paths
    }
    known = set(modules)
    for module in modules.values():
        tree = ast.parse(module.path.read_text("utf-8"), str(module.path))
        for node, top in _imports(tree, top=True):
            targets = _targets(node, module.name, module.path.name == "__init__.py", known)
            module.anywhere |= targets
            if top:
                module.top |= targets
    return modules


MODULES = _read()


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _cycle_path(component: list[str], graph: dict[str, set[str]]) -> str:
    """One closed path through a cycle's modules, for the failure message."""
    members = set(component)
    path = [component[0]]
    while True:
        step = sorted(graph[path[-1]] & members)
        nxt = next((m for m in step if m == component[0] or m not in path), step[0])
        path.append(nxt)
        if nxt in path[:-1]:
            return " -> ".join(path[path.index(nxt) :])


def test_the_package_is_read() -> None:
    assert "connector.model" in MODULES and "connector.cli" in MODULES
    assert len(MODULES) > 100


def test_no_import_cycle_at_module_level() -> None:
    graph = {name: module.top for name, module in MODULES.items()}
    cycles = [_cycle_path(c, graph) for c in _cycles(graph)]
    assert not cycles, "import cycles between connector modules:\n  " + "\n  ".join(cycles)


def test_no_module_is_longer_than_the_limit() -> None:
    long = [
        f"{m.path.relative_to(ROOT)}: {m.lines} lines"
        for m in MODULES.values()
        if m.lines > MAX_LINES and not any(_within(m.name, p) for p in LONG_MODULES_ALLOWED_IN)
    ]
    assert not long, f"modules over {MAX_LINES} lines (split them):\n  " + "\n  ".join(long)


def test_the_exempt_packages_exist() -> None:
    """An exemption outliving its package is removed, not left to excuse a newcomer."""
    for prefix in LONG_MODULES_ALLOWED_IN:
        assert any(_within(name, prefix) for name in MODULES), f"{prefix} is gone: drop it"


@pytest.mark.parametrize("importer", sorted(FORBIDDEN))
def test_arrows_point_down(importer: str) -> None:
    banned = FORBIDDEN[importer]
    upward = sorted(
        f"{name} imports {target}"
        for name, module in MODULES.items()
        if _within(name, importer)
        for target in module.anywhere
        if any(_within(target, b) for b in banned) and not _within(target, importer)
    )
    assert not upward, f"{importer} must not import {', '.join(banned)}:\n  " + "\n  ".join(upward)


def test_only_the_command_line_and_the_console_use_the_commands() -> None:
    users = sorted(
        f"{name} imports {target}"
        for name, module in MODULES.items()
        if not any(_within(name, u) for u in COMMANDS_USERS)
        for target in module.anywhere
        if _within(target, "connector.commands") or target == "connector.cli"
    )
    assert not users, "the commands are the top floor; these reach up to them:\n  " + "\n  ".join(
        users
    )


def test_the_checks_see_a_cycle_and_an_upward_arrow() -> None:
    """The checks themselves: a made-up cycle is found and named."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    [component] = _cycles(graph)
    assert component == ["a", "b", "c"]
    assert _cycle_path(component, graph) == "a -> b -> c -> a"
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "import connector.crm.base\n"
        "if TYPE_CHECKING:\n    from connector.sync import plan\n"
        "def f():\n    from connector.mapping import schema\n"
    )
    known = {"connector.crm.base", "connector.sync.plan", "connector.mapping.schema"}
    seen = {
        (target, top)
        for node, top in _imports(tree, top=True)
        for target in _targets(node, "connector.x", False, known)
    }
    assert seen == {("connector.crm.base", True), ("connector.mapping.schema", False)}
