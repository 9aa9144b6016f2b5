"""Fixtures shared by the reliability tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from functools import cache

import psycopg
import pytest
from reliability_world import PG_SERVER, PG_STORE


@cache
def _pg_problem() -> str | None:
    try:
        with psycopg.connect(PG_SERVER, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL does not answer at 127.0.0.1:5432 ({exc.__class__.__name__})"


def _admin(sql: str) -> None:
    with psycopg.connect(PG_SERVER, autocommit=True) as connection:
        connection.execute(sql)


@pytest.fixture
def pg_state() -> Iterator[str]:
    """The state URL of a fresh PostgreSQL schema for this test; dropped afterwards."""
    problem = _pg_problem()
    if problem:
        if os.environ.get("CONNECTOR_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here: {problem}")
        pytest.skip(f"{problem}; start it or deselect with -m 'not postgres'")
    schema = f"reliability_{uuid.uuid4().hex[:12]}"
    _admin(f"CREATE SCHEMA {schema}")
    try:
        yield PG_STORE.format(schema=schema)
    finally:
        _admin(f"DROP SCHEMA {schema} CASCADE")
