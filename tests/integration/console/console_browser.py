"""Shared code of the console's integration tests: a synced sandbox world, the console served
over real HTTP, and a headless Chromium driven through chromedriver.

Chromium comes from the distribution's packages (``apt-get install chromium
chromium-driver``: ``scripts/test`` installs them when it can). Where they are missing the
browser tests skip with that message, except in CI (``CONNECTOR_REQUIRE_BROWSER=1``, set
by ``.ci/run``), where a missing browser fails them. Selenium is told the paths of both
programs, so it never looks for or downloads a browser of its own.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console as RichConsole
from ruamel.yaml import YAML

from connector.console import ConsoleServer, open_console
from connector.settings import ConfigFile, Settings
from connector.state.store import Store
from connector.sync.oneshot import run_once
from connector.sync.report import RunReport
from sandbox.harness import SandboxServer

ROOT = Path(__file__).parents[3]
SCREENSHOTS = ROOT / ".connector" / "screenshots"
CHROMIUM = Path(os.environ.get("CONNECTOR_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CONNECTOR_CHROMEDRIVER", "/usr/bin/chromedriver"))
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1440,1000",
)
SF = "sandbox-salesforce"


def sandbox_config(sb: SandboxServer, console: dict[str, Any]) -> ConfigFile:
    """config/sandbox.yaml's Salesforce connection pointed at ``sb``, with ``console``."""
    text = (ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8")
    text = sb.localize(text)
    data: dict[str, Any] = YAML(typ="safe").load(text)
    data["connections"] = [c for c in data["connections"] if c["name"] == SF]
    for conn in data["connections"]:
        conn["mapping"] = str(ROOT / conn["mapping"])
    data.pop("state_url", None)
    data["console"] = console
    return ConfigFile.model_validate(data)


def console_section(**more: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "port": 0,
        "admin": {"env": "CONSOLE_TEST_ADMIN"},
        "read_only": {"env": "CONSOLE_TEST_VIEWER"},
        **more,
    }


@dataclass
class SyncedWorld:
    sb: SandboxServer
    config: ConfigFile
    settings: Settings
    admin_secret: str
    viewer_secret: str

    def sync(self) -> RunReport:
        out = RichConsole(file=io.StringIO(), width=200)
        (report,) = run_once(
            self.settings,
            self.config,
            self.config.connections,
            dry_run=False,
            full=False,
            console=out,
        )
        return report

    @contextmanager
    def console(self) -> Iterator[tuple[ConsoleServer, Store]]:
        with Store.open(self.settings.state_url) as store:
            server = open_console(self.config, self.settings, store)
            server.start()
            try:
                yield server, store
            finally:
                server.stop()


def require_browser() -> None:
    """Skip (or, in CI, fail) when Chromium or chromedriver is not installed."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if not missing:
        return
    message = (
        f"no headless browser: {', '.join(missing)} missing; install Debian's "
        "`apt-get install chromium chromium-driver` (scripts/test does when it can)"
    )
    if os.environ.get("CONNECTOR_REQUIRE_BROWSER") == "1":
        pytest.fail(message + " - CONNECTOR_REQUIRE_BROWSER=1 makes this a failure")
    pytest.skip(message)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium with a fresh profile, quit and deleted afterwards."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    # the whole page, not only the window: tall tables are the point of most pages
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1440, max(1000, min(int(height) + 40, 4000)))
    driver.save_screenshot(str(path))
    driver.set_window_size(1440, 1000)
    return path


def form_token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def cookie_client(server: ConsoleServer, driver: Any) -> httpx.Client:
    """An HTTP client holding the browser's session cookie (to send what a form would)."""
    cookie = driver.get_cookie("console_session")
    assert cookie is not None, "the browser holds no session"
    return httpx.Client(
        base_url=server.url, cookies={"console_session": cookie["value"]}, timeout=30
    )
