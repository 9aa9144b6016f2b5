"""The state store's tests on SQLite: ``make_store`` opens this test's database file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from state_contract import FakeClock, MakeStore, clock, sf, store

from connector.state import Store

__all__ = ["clock", "make_store", "sf", "store"]


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[MakeStore]:
    """Open (again) this test's SQLite database; every store is closed afterwards."""
    opened: list[Store] = []

    def factory(
        clock: Callable[[], datetime] | None = None, migrate: bool = True, **options: Any
    ) -> Store:
        url = f"sqlite:///{tmp_path}/deep/state.db"
        store = Store.open(url, clock=clock or FakeClock(), migrate=migrate, **options)
        opened.append(store)
        return store

    yield factory
    for each in opened:
        each.close()
