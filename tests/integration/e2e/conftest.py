"""End-to-end fixtures: a real sandbox over HTTPS, a config pointing at it, a state file."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_world import World, write_config

from connector.sandbox.server import SandboxServer


@pytest.fixture
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    marker = request.node.get_closest_marker("opportunities")
    n = marker.args[0] if marker else 500
    with SandboxServer(opportunities=n, seed=7) as sb:
        config = write_config(tmp_path / "config.yaml", sb.url, sb.ca_file)
        with httpx.Client(
            base_url=sb.url, verify=ssl.create_default_context(cafile=str(sb.ca_file)), timeout=30
        ) as admin:
            yield World(sb, config, f"sqlite:///{tmp_path / 'state.db'}", admin)
