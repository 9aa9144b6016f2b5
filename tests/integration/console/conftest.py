"""Fixtures of the console's integration tests (shared code in console_browser.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_browser import SyncedWorld, console_section, sandbox_config

from connector.settings import Settings
from sandbox.harness import SandboxServer


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncedWorld]:
    """A sandbox, its Salesforce connection synced once (with a few dead letters)."""
    admin = "admin-" + secrets.token_urlsafe(24)
    viewer = "viewer-" + secrets.token_urlsafe(24)
    monkeypatch.setenv("CONSOLE_TEST_ADMIN", admin)
    monkeypatch.setenv("CONSOLE_TEST_VIEWER", viewer)
    with SandboxServer(opportunities=60, seed=7) as sb:
        config = sandbox_config(sb, console_section())
        settings = Settings(state_url=f"sqlite:///{tmp_path / 'state.db'}")
        synced = SyncedWorld(sb, config, settings, admin, viewer)
        report = synced.sync()
        assert report.created > 0 and report.rejected, report.as_json()
        yield synced
