"""Contract fixtures: a sandbox per module, reset before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from contract_world import SandboxCore

from sandbox.harness import SandboxServer


@pytest.fixture(scope="module")
def sandbox_server() -> Iterator[SandboxServer]:
    with SandboxServer() as sb:
        yield sb


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> Iterator[SandboxCore]:
    core = SandboxCore(sandbox_server)
    core.http.post("/_sandbox/core/reset").raise_for_status()
    yield core
    core.http.close()
