"""The state store's contract on PostgreSQL (127.0.0.1:5432, database ``test``).

The test functions are the ``@contract`` ones of ``tests/unit/state/test_store.py`` and
of its ``test_state_*.py`` neighbours (one per table), collected here a second time; only the ``make_store`` fixture differs: each test
gets its own schema (``search_path`` set through the URL), dropped afterwards.
Skipped, with the reason, when no server answers.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest

from connector.errors import StateError
from connector.state import Store

pytestmark = pytest.mark.postgres

SERVER = "postgresql://postgres@127.0.0.1:5432/test"
STORE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"


_STATE_TESTS = Path(__file__).parents[1] / "unit" / "state"
if str(_STATE_TESTS) not in sys.path:  # where the contract's modules import their helpers
    sys.path.insert(0, str(_STATE_TESTS))

import state_contract  # noqa: E402  (needs the path above)


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"state_contract_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the shared fixtures and every backend-independent test of the store and of each table
for _name in ("clock", "store", "sf"):
    globals()[_name] = getattr(state_contract, _name)
for _path in [_STATE_TESTS / "test_store.py", *sorted(_STATE_TESTS.glob("test_state_*.py"))]:
    for _test_name, _test in vars(_load(_path)).items():
        if _test_name.startswith("test_") and state_contract.is_contract(_test):
            globals()[_test_name] = _test


@cache
def _server_problem() -> str | None:
    try:
        with psycopg.connect(SERVER, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL does not answer at 127.0.0.1:5432 ({exc.__class__.__name__})"


def _admin(sql: str) -> None:
    with psycopg.connect(SERVER, autocommit=True) as connection:
        connection.execute(sql)


def _skip_or_fail(problem: str) -> None:
    """Skip where no server runs; in CI (CONNECTOR_REQUIRE_POSTGRES=1) these tests must run."""
    if os.environ.get("CONNECTOR_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here: {problem}")
    pytest.skip(f"{problem}; start it or deselect with -m 'not postgres'")


@pytest.fixture(params=["postgresql"])
def make_store(request: pytest.FixtureRequest) -> Iterator[Callable[..., Store]]:
    """Open (again) this test's PostgreSQL schema; closed and dropped afterwards."""
    problem = _server_problem()
    if problem:
        _skip_or_fail(problem)
    schema = f"state_test_{uuid.uuid4().hex[:12]}"
    _admin(f"CREATE SCHEMA {schema}")
    opened: list[Store] = []

    def factory(
        clock: Callable[[], datetime] | None = None, migrate: bool = True, **options: Any
    ) -> Store:
        url = STORE_URL.format(schema=schema)
        store = (
            Store.open(url, clock=clock, migrate=migrate, **options)
            if clock
            else Store.open(url, migrate=migrate, **options)
        )
        opened.append(store)
        return store

    try:
        yield factory
    finally:
        for store in opened:
            store.close()
        _admin(f"DROP SCHEMA {schema} CASCADE")


def test_wrong_password_is_masked_in_the_error() -> None:
    problem = _server_problem()
    if problem:
        _skip_or_fail(problem)
    # trust auth accepts any password, so use a database that does not exist instead
    url = "postgresql://postgres:s3cr3t-pw@127.0.0.1:5432/no_such_database_here"
    with pytest.raises(StateError) as caught:
        Store.open(url)
    assert "s3cr3t-pw" not in str(caught.value)
    assert "postgres:***@127.0.0.1:5432/no_such_database_here" in str(caught.value)
    assert "no_such_database_here" in str(caught.value)
