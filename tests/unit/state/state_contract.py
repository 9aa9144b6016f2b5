"""What the state store's tests share: the ``@contract`` mark, a clock to move, links.

A test marked ``@contract`` only talks to the ``make_store`` / ``store`` / ``sf``
fixtures, so ``tests/integration/test_state_postgres.py`` runs it again on
PostgreSQL with its own ``make_store``; the SQLite ``make_store`` is in this
folder's ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connector.state import ConnectionState, Link, LinkState, Store

HEAD = "0004_dead_letter_fingerprint"

#: the lease holder of the run writing create intents in these tests
RUN = "host-a:100"

_CONTRACT = "_state_contract"


def contract(test: Callable[..., None]) -> Callable[..., None]:
    """Mark a backend-independent test (run on SQLite here, on PostgreSQL elsewhere)."""
    setattr(test, _CONTRACT, True)
    return test


def is_contract(value: object) -> bool:
    return callable(value) and getattr(value, _CONTRACT, False) is True


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


#: ``make_store(clock=None, migrate=True, **Store.open options)``: open (again) the test's store
MakeStore = Callable[..., Store]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(make_store: MakeStore, clock: FakeClock) -> Store:
    return make_store(clock)


@pytest.fixture
def sf(store: Store) -> ConnectionState:
    """The handle on connection ``sf`` of ``store``."""
    return store.connection("sf")


def linked(crm_id: str, referral_id: str | None, **changes: Any) -> Link:
    values: dict[str, Any] = {
        "connection": "sf",
        "crm_id": crm_id,
        "state": LinkState.LINKED,
        "referral_id": referral_id,
        "engagement_id": f"eng-{referral_id}",
        "etag": '"1"',
        "fingerprint": f"fp-{crm_id}",
        "sent_body": {"name": f"Deal {crm_id}", "value": 1000},
        "status": "Active",
        "substatus": "Accepted",
        "crm_modstamp": datetime(2025, 2, 1, 8, 30, 15, 123000, tzinfo=UTC),
    }
    values.update(changes)
    return Link(**values)


def link_fields(link: Link) -> dict[str, Any]:
    return {name: getattr(link, name) for name in Link.__slots__}
