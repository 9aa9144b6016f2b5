"""The record history and console reads on PostgreSQL: the tests of
``tests/unit/state/test_history.py`` collected again over a PostgreSQL store (each test in
its own schema, dropped afterwards), so their SQL (trimming per record, dropping old runs,
upserting run details) is proven on both backends."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from test_state_postgres import STORE_URL, _admin, _server_problem, _skip_or_fail

from connector.state import Store

pytestmark = pytest.mark.postgres


def _load(name: str) -> ModuleType:
    path = Path(__file__).parents[1] / "unit" / "state" / name
    spec = importlib.util.spec_from_file_location(f"pg_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_history = _load("test_history.py")
clock = _history.clock
for _name in dir(_history):
    if _name.startswith("test_"):
        globals()[_name] = getattr(_history, _name)


@pytest.fixture
def store(clock: object) -> Iterator[Store]:
    problem = _server_problem()
    if problem:
        _skip_or_fail(problem)
    schema = f"history_test_{uuid.uuid4().hex[:12]}"
    _admin(f"CREATE SCHEMA {schema}")
    try:
        with Store.open(STORE_URL.format(schema=schema), clock=clock) as opened:  # type: ignore[arg-type]
            yield opened
    finally:
        _admin(f"DROP SCHEMA {schema} CASCADE")
