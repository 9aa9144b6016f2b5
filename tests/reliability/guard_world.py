"""A sandbox over HTTPS and one-connection configs for it (Salesforce or Dataverse).

Used by the hostile-input, quota-guard, TLS and secret-scan tests. The config is the
repository's own ``config/sandbox.yaml`` connection with the sandbox's URL and CA
put in, plus whatever crm/core settings a test overrides.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console

from connector.settings import Settings, load_config
from connector.sync.oneshot import run_once
from connector.sync.report import RunReport
from sandbox.harness import SandboxServer
from sandbox.partner_center.fields import is_partners

ROOT = Path(__file__).parents[2]
CONNECTION = {"salesforce": "sandbox-salesforce", "dynamics": "sandbox-dynamics"}


@dataclass
class GuardWorld:
    """The sandbox, an admin client for it, and a folder for configs and state."""

    sb: SandboxServer
    admin: httpx.Client
    folder: Path

    @property
    def state_url(self) -> str:
        return f"sqlite:///{self.folder / 'state.db'}"

    @property
    def state_file(self) -> Path:
        return self.folder / "state.db"

    def config(
        self,
        kind: str = "salesforce",
        *,
        crm: dict[str, Any] | None = None,
        core: dict[str, Any] | None = None,
        mapping: Path | None = None,
        name: str = "config.yaml",
    ) -> Path:
        """A config file with the one ``kind`` connection, pointed at this sandbox."""
        conn, data = {}, {}
        for source in ("sandbox.yaml", "sandbox-dynamics.yaml"):
            text = (ROOT / "config" / source).read_text(encoding="utf-8")
            text = self.sb.localize(text)
            data = yaml.safe_load(text)
            found = [c for c in data["connections"] if c["name"] == CONNECTION[kind]]
            if found:
                conn = found[0]
                break
        conn["mapping"] = str(mapping or ROOT / conn["mapping"])
        conn["crm"].update(crm or {})
        conn["core"].update(core or {})
        for section in (conn["crm"], conn["core"]):
            for key in [k for k, v in section.items() if v is None]:
                del section[key]  # an override of None removes the setting
        data["connections"] = [conn]
        data["state_url"] = self.state_url
        path = self.folder / name
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    def sync(self, config: Path, *, full: bool = False) -> RunReport:
        cfg = load_config(config)
        settings = Settings(state_url=self.state_url, config=config)
        out = Console(file=io.StringIO(), width=200)
        (report,) = run_once(settings, cfg, cfg.connections, dry_run=False, full=full, console=out)
        return report

    def get(self, path: str) -> Any:
        return self.admin.get(path).raise_for_status().json()

    def put(self, path: str, body: Any) -> Any:
        return self.admin.put(path, json=body).raise_for_status().json()

    def post(self, path: str, body: Any) -> Any:
        return self.admin.post(path, json=body).raise_for_status().json()

    def referrals(self) -> list[dict[str, Any]]:
        """The partner's own outgoing referrals in the core."""
        data = self.get("/_sandbox/core/referrals")
        rows = data["value"] if isinstance(data, dict) else data
        return [r for r in rows if is_partners(r) and r.get("direction") == "Outgoing"]

    def sf_opportunities(self) -> list[dict[str, Any]]:
        return list(self.get("/_sandbox/salesforce/opportunities")["records"])

    def dv_opportunities(self) -> list[dict[str, Any]]:
        return list(self.get("/_sandbox/dataverse/opportunities")["value"])


@contextmanager
def guard_world(folder: Path, opportunities: int = 60, seed: int = 11) -> Iterator[GuardWorld]:
    with SandboxServer(opportunities=opportunities, seed=seed) as sb, sb.client() as admin:
        yield GuardWorld(sb, admin, folder)
