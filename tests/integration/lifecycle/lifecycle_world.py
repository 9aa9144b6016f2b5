"""The lifecycle world: the sandbox over HTTPS, one connection to it, views of all systems.

The expectations of the lifecycle tests come from the seed's rules and the sandbox's
own records (read through its admin API), never from the connector's code.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from connector.settings import Settings, load_config
from connector.sync.oneshot import run_once
from connector.sync.report import RunReport
from connector.sync.tuning import DEFAULT_TUNING, Tuning
from sandbox.harness import SandboxServer
from sandbox.partner_center.fields import is_microsofts, is_partners

ROOT = Path(__file__).parents[3]

_CORE = """\
    core:
      base_url: {url}/v1.0/engagements
      auth: client_credentials
      token_url: {url}/sandbox-tenant/oauth2/v2.0/token
      client_id: sandbox
      client_secret: {{value: sandbox}}
      scope: https://api.partner.microsoft.com/.default
      ca_file: {ca}
      referral_link_base: {url}/dashboard/referrals/v2
      concurrency: 4
"""
_CRM = {
    "salesforce": """\
    crm:
      kind: salesforce
      login_url: {url}
      auth: client_credentials
      client_id: sandbox
      client_secret: {{value: sandbox}}
      allowed_instance_origin: {url}
      ca_file: {ca}
""",
    "dynamics": """\
    crm:
      kind: dynamics
      environment_url: {url}
      authority: {url}
      tenant: sandbox-tenant
      client_id: sandbox
      client_secret: {{value: sandbox}}
      ca_file: {ca}
      change_tracking: true
""",
}


def mapping_copy(
    source: Path, target: Path, *, inbound: bool = True, owner_id: str | None = None
) -> Path:
    """A copy of a mapping file with ``inbound.create_opportunities`` switched on or off
    (and new incoming deals owned by ``owner_id``)."""
    text = source.read_text(encoding="utf-8")
    setting = f"create_opportunities: {'true' if inbound else 'false'}"
    if owner_id:
        setting += f"\n  owner_id: {owner_id}"
    text, n = re.subn(r"create_opportunities:\s*(true|false)", setting, text)
    assert n == 1, f"{source} has no inbound.create_opportunities setting"
    target.write_text(text, encoding="utf-8")
    return target


def write_config(path: Path, url: str, ca_file: Path, kind: str, mapping: Path) -> Path:
    text = (
        "state_url: sqlite:///unused.db\nconnections:\n"
        f"  - name: lifecycle-{kind}\n"
        f"    mapping: {mapping}\n"
        "    schedule: {interval_s: 60, jitter_s: 5}\n"
        + _CRM[kind].format(url=url, ca=ca_file)
        + _CORE.format(url=url, ca=ca_file)
    )
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class LifecycleWorld:
    """The sandbox, a one-connection config for it, and helpers to look at every system."""

    sb: SandboxServer
    config_path: Path
    state_url: str
    admin: httpx.Client
    #: the sync's tuning knobs (a test sets small ones to reach the paths of large runs)
    tuning: Tuning = DEFAULT_TUNING

    # -- running -----------------------------------------------------------------------

    def sync(self) -> RunReport:
        cfg = load_config(self.config_path)
        settings = Settings(state_url=self.state_url, config=self.config_path)
        out = Console(file=io.StringIO(), width=200)
        (report,) = run_once(
            settings,
            cfg,
            cfg.connections,
            dry_run=False,
            full=False,
            console=out,
            tuning=self.tuning,
        )
        assert report.outcome in ("ok", "partial"), report.error
        return report

    def advance(self, days: float) -> None:
        self.admin.post("/_sandbox/clock", json={"days": days}).raise_for_status()

    def calls(self) -> dict[str, dict[str, int]]:
        return self.admin.get("/_sandbox/stats").raise_for_status().json()["calls"]

    def reset_stats(self) -> None:
        self.admin.post("/_sandbox/stats/reset").raise_for_status()

    def core_settings(self, **changes: Any) -> dict[str, Any]:
        """Set what Microsoft leaves open in the sandbox core (strict mode, create status…)."""
        answer = self.admin.put("/_sandbox/core/settings", json=changes)
        return dict(answer.raise_for_status().json())

    # -- the core ----------------------------------------------------------------------

    def all_referrals(self) -> list[dict[str, Any]]:
        data = self.admin.get("/_sandbox/core/referrals").raise_for_status().json()
        return list(data["value"])

    def referral(self, referral_id: str) -> dict[str, Any]:
        (found,) = [r for r in self.all_referrals() if r["id"] == referral_id]
        return found

    def referral_of(self, crm_id: str) -> dict[str, Any]:
        """The partner's own referral created for a CRM record (exactly one)."""
        found = [
            r
            for r in self.all_referrals()
            if is_partners(r) and r.get("externalReferenceId") == crm_id
        ]
        assert len(found) == 1, f"{crm_id}: {len(found)} referrals"
        return found[0]

    def microsoft_side(self, referral: dict[str, Any]) -> dict[str, Any] | None:
        sides = [
            r
            for r in self.all_referrals()
            if is_microsofts(r) and r["engagementId"] == referral["engagementId"]
        ]
        return sides[0] if sides else None

    def send_incoming(self, sender: str = "Microsoft", **fields: Any) -> dict[str, Any]:
        answer = self.admin.post("/_sandbox/core/incoming", json={"from": sender, **fields})
        return dict(answer.raise_for_status().json())

    def microsoft(self, referral_id: str, action: str) -> dict[str, Any]:
        answer = self.admin.post(f"/_sandbox/core/microsoft/{referral_id}/{action}", json={})
        return dict(answer.raise_for_status().json())

    def review_registration(self, referral_id: str, action: str) -> None:
        self.admin.post(f"/_sandbox/core/registrations/{referral_id}/{action}").raise_for_status()

    # -- Salesforce --------------------------------------------------------------------

    def opportunities(self, **where: str) -> list[dict[str, Any]]:
        answer = self.admin.get("/_sandbox/salesforce/opportunities", params=where)
        return list(answer.raise_for_status().json()["records"])

    def opportunity(self, record_id: str) -> dict[str, Any]:
        answer = self.admin.get(f"/_sandbox/salesforce/opportunities/{record_id}")
        return dict(answer.raise_for_status().json())

    def edit(self, record_id: str, **values: Any) -> None:
        self.admin.post(
            f"/_sandbox/salesforce/opportunities/{record_id}", json=values
        ).raise_for_status()

    def template(self) -> dict[str, Any]:
        """Account, owner and customer contact of a seeded deal that syncs cleanly."""
        defects = self.admin.get("/_sandbox/salesforce/defects").raise_for_status().json()
        for opp in self.opportunities():
            if opp["Id"] in defects["defects"] or not opp["Primary_Contact__c"]:
                continue
            return {
                "AccountId": opp["AccountId"],
                "OwnerId": opp["OwnerId"],
                "Primary_Contact__c": opp["Primary_Contact__c"],
            }
        raise AssertionError("the sandbox seeded no clean opportunity")

    def new_deal(self, **values: Any) -> str:
        """A new selected opportunity (Private unless the values ask for more)."""
        body = {
            **self.template(),
            "Name": "Lifecycle deal",
            "Amount": 50000,
            "CurrencyIsoCode": "USD",
            "CloseDate": "2026-12-15",
            "StageName": "Prospecting",
            "Sync_with_Partner_Center__c": True,
            "How_can_Microsoft_help__c": "None",
            "CoSell_Solutions__c": "SOL-34104-EBB",
            **values,
        }
        answer = self.admin.post("/_sandbox/salesforce/opportunities", json=body)
        return str(answer.raise_for_status().json()["Id"])

    def opportunity_for(self, referral_id: str) -> dict[str, Any]:
        """The one CRM opportunity that holds a referral (by Referral_Identifier__c)."""
        found = self.opportunities(Referral_Identifier__c=referral_id)
        assert len(found) == 1, f"referral {referral_id}: {len(found)} opportunities"
        return found[0]


@contextmanager
def salesforce_world(tmp_path: Path, *, opportunities: int = 40) -> Iterator[LifecycleWorld]:
    """The sandbox with a Salesforce connection whose mapping creates incoming deals."""
    with SandboxServer(opportunities=opportunities, seed=11) as sb, sb.client() as admin:
        world = LifecycleWorld(
            sb, tmp_path / "config.yaml", f"sqlite:///{tmp_path / 'state.db'}", admin
        )
        mapping = mapping_copy(
            ROOT / "mappings" / "salesforce.yaml",
            tmp_path / "salesforce.yaml",
            owner_id=world.template()["OwnerId"],
        )
        write_config(world.config_path, sb.url, sb.ca_file, "salesforce", mapping)
        world.core_settings(strict=True)  # only the documented PATCH paths and targets
        yield world


DATAVERSE_ADMIN = "/_sandbox/dataverse/opportunities"


class DynamicsWorld(LifecycleWorld):
    """The same world with a Dynamics 365 connection: Dataverse rows instead of records."""

    def rows(self) -> list[dict[str, Any]]:
        return list(self.admin.get(DATAVERSE_ADMIN).raise_for_status().json()["value"])

    def row_for(self, referral_id: str) -> dict[str, Any]:
        found = [r for r in self.rows() if r.get("cosell_referralid") == referral_id]
        assert len(found) == 1, f"referral {referral_id}: {len(found)} rows"
        return found[0]

    def edit_row(self, row_id: str, **values: Any) -> None:
        self.admin.post(f"{DATAVERSE_ADMIN}/{row_id}", json=values).raise_for_status()


@contextmanager
def dynamics_world(tmp_path: Path, *, opportunities: int = 40) -> Iterator[DynamicsWorld]:
    """The sandbox with a Dynamics connection: the default mapping, incoming deals on."""
    with SandboxServer(opportunities=opportunities, seed=11) as sb, sb.client() as admin:
        world = DynamicsWorld(
            sb, tmp_path / "config.yaml", f"sqlite:///{tmp_path / 'state.db'}", admin
        )
        defects = admin.get("/_sandbox/dataverse/defects").raise_for_status().json()
        owner = next(
            r["_ownerid_value"]
            for r in world.rows()
            if r["opportunityid"] not in defects and r.get("_ownerid_value")
        )
        mapping = mapping_copy(
            ROOT / "mappings" / "dynamics.yaml", tmp_path / "dynamics.yaml", owner_id=owner
        )
        write_config(world.config_path, sb.url, sb.ca_file, "dynamics", mapping)
        world.core_settings(strict=True)  # only the documented PATCH paths and targets
        yield world
