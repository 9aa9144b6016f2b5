"""Fixtures of the console's unit tests (shared code in console_world.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from console_world import NOW, ConsoleWorld, Secrets, config_data, seed

from connector.console.app import Console
from connector.console.auth import Credentials
from connector.settings import ConfigFile, Settings
from connector.state.store import Store


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ConsoleWorld]:
    keys = Secrets(
        admin="adm-" + secrets.token_urlsafe(24),
        viewer="ro-" + secrets.token_urlsafe(24),
        crm="crm-" + secrets.token_urlsafe(24),
        core="core-" + secrets.token_urlsafe(24),
    )
    monkeypatch.setenv("TEST_CONSOLE_ADMIN", keys.admin)
    monkeypatch.setenv("TEST_CONSOLE_VIEWER", keys.viewer)
    monkeypatch.setenv("TEST_CRM_SECRET", keys.crm)
    monkeypatch.setenv("TEST_CORE_SECRET", keys.core)
    config = ConfigFile.model_validate(config_data())
    settings = Settings(state_url=f"sqlite:///{tmp_path / 'state.db'}")
    with Store.open(settings.state_url) as store:
        run_id, letters = seed(store)
        app = Console(
            config=config,
            settings=settings,
            store=store,
            credentials=Credentials.from_settings(config.console, None),
            clock=lambda: NOW + timedelta(minutes=5),
        )
        yield ConsoleWorld(app, store, keys, letters, run_id)
