"""The end-to-end world: the sandbox, a config for it, and views of all three systems."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from connector.sandbox.server import SandboxServer
from connector.settings import ConfigFile, Settings, load_config
from connector.sync.oneshot import run_once
from connector.sync.report import RunReport

ROOT = Path(__file__).parents[3]


@dataclass
class World:
    """The sandbox, a config for it, and helpers to look at all three systems."""

    sb: SandboxServer
    config_path: Path
    state_url: str
    admin: httpx.Client

    @property
    def config(self) -> ConfigFile:
        return load_config(self.config_path)

    def sync(self, *, dry_run: bool = False, full: bool = False) -> RunReport:
        cfg = self.config
        settings = Settings(state_url=self.state_url, config=self.config_path)
        out = Console(file=io.StringIO(), width=200)
        (report,) = run_once(
            settings, cfg, cfg.connections, dry_run=dry_run, full=full, console=out
        )
        return report

    def all_referrals(self) -> list[dict[str, Any]]:
        data = self.admin.get("/_sandbox/core/referrals").raise_for_status().json()
        return list(data["value"] if isinstance(data, dict) else data)

    def referrals(self) -> list[dict[str, Any]]:
        """The partner's own outbound referrals (not incoming ones, not Microsoft's)."""
        return [
            r
            for r in self.all_referrals()
            if (r.get("owner") or {}).get("type") == "Partner" and r.get("direction") == "Outgoing"
        ]

    def opportunities(self) -> list[dict[str, Any]]:
        return (
            self.admin.get("/_sandbox/salesforce/opportunities")
            .raise_for_status()
            .json()["records"]
        )

    def opportunity(self, record_id: str) -> dict[str, Any]:
        return (
            self.admin.get(f"/_sandbox/salesforce/opportunities/{record_id}")
            .raise_for_status()
            .json()
        )

    def edit(self, record_id: str, **values: Any) -> None:
        self.admin.post(
            f"/_sandbox/salesforce/opportunities/{record_id}", json=values
        ).raise_for_status()

    def defects(self) -> dict[str, str]:
        return self.admin.get("/_sandbox/salesforce/defects").raise_for_status().json()["defects"]

    def calls(self) -> dict[str, dict[str, int]]:
        return self.admin.get("/_sandbox/stats").raise_for_status().json()["calls"]

    def reset_stats(self) -> None:
        self.admin.post("/_sandbox/stats/reset").raise_for_status()


def write_config(path: Path, url: str, ca_file: Path, mapping: Path | None = None) -> Path:
    text = (ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8")
    text = text.replace("https://127.0.0.1:8700", url)
    text = text.replace(".connector/sandbox-ca.pem", str(ca_file))
    text = text.replace(
        "mappings/salesforce.yaml", str(mapping or ROOT / "mappings" / "salesforce.yaml")
    )
    path.write_text(text, encoding="utf-8")
    return path
