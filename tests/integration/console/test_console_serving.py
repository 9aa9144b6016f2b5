"""Who serves the console: ``connector run`` when the config enables it (with the daemon's
schedule on its pages), ``connector console`` over the store alone; neither without the
config's ``console.enabled``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from console_browser import SF, SyncedWorld, console_section, form_token
from ruamel.yaml import YAML

from connector.daemon import Daemon
from connector.errors import ConfigError

WAIT_S = 60.0


@contextmanager
def signed_in(base_url: str, secret: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        token = form_token(client.get("/sign-in").text)
        answer = client.post("/sign-in", data={"csrf": token, "secret": secret})
        assert answer.status_code == 303, answer.text
        yield client


def test_the_daemon_serves_the_console_with_its_schedule(world: SyncedWorld) -> None:
    daemon = Daemon(world.settings, world.config, health_port=0)
    assert daemon.console is not None
    daemon.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while daemon.health[SF].cycles < 1:
            assert time.monotonic() < deadline, "no cycle finished"
            time.sleep(0.05)
        with signed_in(daemon.console.url, world.admin_secret) as client:
            page = client.get("/").text
        assert "no daemon attached" not in page
        assert re.search(r"<td>in \d+(\.\d)? (s|min)</td>", page), "the next run is shown"
        assert 'href="/runs/2"' in page  # the daemon's own cycle
    finally:
        daemon.request_stop()
        assert daemon.wait() == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(daemon.console.url + "/sign-in", timeout=5)


def test_the_daemon_refuses_to_start_without_the_consoles_secret(
    world: SyncedWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSOLE_TEST_ADMIN")
    with pytest.raises(ConfigError, match=r"console\.admin: the environment variable"):
        Daemon(world.settings, world.config, health_port=0)


def write_config(world: SyncedWorld, path: Path, console: dict[str, object]) -> Path:
    data = world.config.model_dump(mode="json", exclude_none=True)
    data["state_url"] = world.settings.state_url
    data["console"] = console
    yaml = YAML(typ="safe")
    with path.open("w", encoding="utf-8") as out:
        yaml.dump(data, out)
    return path


def connector(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "connector", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CONNECTOR_LOG_FORMAT": "text"},
        **kwargs,  # type: ignore[call-overload]
    )


def test_connector_console_serves_the_store_until_stopped(
    world: SyncedWorld, tmp_path: Path
) -> None:
    config = write_config(world, tmp_path / "console.yaml", console_section())
    with connector("console", "--config", str(config)) as process:
        try:
            assert process.stdout is not None and process.stderr is not None
            line = process.stdout.readline()
            found = re.search(r"console on (http://127\.0\.0\.1:\d+)", line)
            assert found, line + (process.stderr.read() if process.poll() is not None else "")
            with signed_in(found.group(1), world.viewer_secret) as client:
                page = client.get("/runs").text
            assert 'href="/runs/1"' in page
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
    assert code == 0


def test_connector_console_is_off_unless_enabled(world: SyncedWorld, tmp_path: Path) -> None:
    config = write_config(world, tmp_path / "off.yaml", {"enabled": False})
    with connector("console", "--config", str(config)) as process:
        _, err = process.communicate(timeout=60)
    assert process.returncode == 4
    assert "the console is off" in err
