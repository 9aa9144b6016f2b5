"""The bodies Microsoft publishes (``fixtures/``) and the sandbox to replay them on.

Each file under ``fixtures/`` was written from one public source and names it in its
``_source`` key (repo, path, commit; the live Learn page and the observed responses
have no commit to name, and say so).
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import httpx

from connector.dealcore.client import ReferralsClient
from sandbox.harness import SandboxServer

FIXTURES = Path(__file__).parent / "fixtures"


def published(name: str) -> dict[str, Any]:
    """One fixture file; every one names its source."""
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    source = data["_source"]
    assert source["key"] and source["path"] and source["what"]
    assert (source["repo"] is None) == (source["commit"] is None)
    if source["commit"] is not None:
        assert len(source["commit"]) == 40
    return data


class FixedToken:
    """A TokenProvider with one token (the sandbox's tokens live an hour)."""

    def __init__(self, value: str) -> None:
        self.value = value

    def token(self) -> str:
        return self.value

    def invalidate(self) -> None:
        return None


class SandboxCore:
    """The sandbox's referrals API with a core token, its admin API, and its settings."""

    def __init__(self, sb: SandboxServer) -> None:
        self.sb = sb
        self.url = sb.url
        self.http = sb.client()
        token = self.http.post(
            "/sandbox-tenant/oauth2/v2.0/token",
            data={
                "client_id": "sandbox",
                "client_secret": "sandbox",
                "grant_type": "client_credentials",
                "scope": "https://api.partner.microsoft.com/.default",
            },
        )
        token.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    @property
    def token(self) -> str:
        return str(self.http.headers["Authorization"]).removeprefix("Bearer ")

    def client(self, http: httpx.Client) -> ReferralsClient:
        """The connector's client on the sandbox (``http`` trusts the sandbox's CA)."""
        return ReferralsClient(
            f"{self.url}/v1.0/engagements",
            FixedToken(self.token),
            http=http,
            correlation_id="contract",
        )

    def trusting(self) -> httpx.Client:
        return httpx.Client(verify=ssl.create_default_context(cafile=str(self.sb.ca_file)))

    def settings(self, **changes: Any) -> None:
        self.http.put("/_sandbox/core/settings", json=changes).raise_for_status()

    def everything(self) -> list[dict[str, Any]]:
        return list(self.http.get("/_sandbox/core/referrals").raise_for_status().json()["value"])
