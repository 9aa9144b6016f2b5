"""Fixtures shared by the deal-core client tests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from dealcore_fakes import FakeTokens


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


@pytest.fixture
def tokens() -> FakeTokens:
    return FakeTokens()
