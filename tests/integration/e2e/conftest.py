"""End-to-end fixtures: a real sandbox over HTTPS, a config for one CRM, a state file.

``world`` is parametrised over both CRMs: every scenario that takes it runs once
against the sandbox's Salesforce and once against its Dataverse. A test for one
CRM only says so with ``@pytest.mark.parametrize("world", ["dynamics"], indirect=True)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_world import CRMS, World, view_for, write_config

from sandbox.harness import SandboxServer


@pytest.fixture(params=CRMS)
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    crm = str(request.param)
    marker = request.node.get_closest_marker("opportunities")
    n = marker.args[0] if marker else 500
    with SandboxServer(opportunities=n, seed=7) as sb:
        config = write_config(tmp_path / "config.yaml", sb.url, sb.ca_file, crm)
        with sb.client() as admin:
            # strict: the core refuses any PATCH path or target type Microsoft does not document
            admin.put("/_sandbox/core/settings", json={"strict": True}).raise_for_status()
            yield World(
                sb,
                config,
                f"sqlite:///{tmp_path / 'state.db'}",
                admin,
                view_for(crm, admin, sb.ca_file),
            )
