"""A console serving HTTPS itself: reachable only with the certificate, Secure cookies."""

from __future__ import annotations

import secrets
import ssl
from pathlib import Path

import httpx
import pytest
from console_browser import form_token

from connector.console import open_console
from connector.settings import ConfigFile, Settings
from connector.state.store import Store
from sandbox.harness import make_tls

ROOT = Path(__file__).parents[3]


def test_an_https_console_sets_secure_cookies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = make_tls(tmp_path / "ca.pem", tmp_path)
    admin = secrets.token_urlsafe(24)
    monkeypatch.setenv("TLS_CONSOLE_ADMIN", admin)
    config = ConfigFile.model_validate(
        {
            "connections": [
                {
                    "name": "sf",
                    "mapping": str(ROOT / "mappings" / "salesforce.yaml"),
                    "crm": {"kind": "salesforce", "client_id": "c", "client_secret": {"env": "X"}},
                    "core": {"client_id": "c"},
                }
            ],
            "console": {
                "enabled": True,
                "port": 0,
                "admin": {"env": "TLS_CONSOLE_ADMIN"},
                "tls_cert_file": str(tls.cert_file),
                "tls_key_file": str(tls.key_file),
            },
        }
    )
    settings = Settings(state_url=f"sqlite:///{tmp_path / 'state.db'}")
    with Store.open(settings.state_url) as store:
        server = open_console(config, settings, store)
        server.start()
        try:
            assert server.url.startswith("https://127.0.0.1:")
            with pytest.raises(httpx.ConnectError):  # not trusted without the CA
                httpx.get(server.url + "/sign-in", timeout=10)
            verify = ssl.create_default_context(cafile=str(tls.ca_file))
            with httpx.Client(base_url=server.url, verify=verify, timeout=10) as client:
                token = form_token(client.get("/sign-in").text)
                answer = client.post("/sign-in", data={"csrf": token, "secret": admin})
                cookies = [v for k, v in answer.headers.multi_items() if k == "set-cookie"]
                assert answer.status_code == 303
                assert cookies and all("Secure" in c for c in cookies)
                assert client.get("/").status_code == 200
        finally:
            server.stop()
