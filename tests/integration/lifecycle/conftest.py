"""Lifecycle fixtures: a fresh sandbox per test and a connection to it (Salesforce,
Dynamics, or each in turn through the seller's view)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lifecycle_world import DynamicsWorld, LifecycleWorld, dynamics_world, salesforce_world
from seller import Seller, seller_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[LifecycleWorld]:
    with salesforce_world(tmp_path) as w:
        yield w


@pytest.fixture
def dynamics(tmp_path: Path) -> Iterator[DynamicsWorld]:
    with dynamics_world(tmp_path) as w:
        yield w


@pytest.fixture(params=["salesforce", "dynamics"])
def seller(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Seller]:
    with seller_world(request.param, tmp_path) as s:
        yield s
