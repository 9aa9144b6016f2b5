"""Shared by the reliability tests: configs and the checks (the sandbox in its own
process is sandbox.harness.SandboxProcess).

The checks read all three systems through the sandbox's admin API and compare them
with the co-sell rules (not with the connector's code): every eligible opportunity
has exactly one referral, nothing else has one, and Salesforce mirrors the core.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sandbox.partner_center.fields import is_partners

ROOT = Path(__file__).parents[2]
PYTHON = sys.executable
#: the PostgreSQL server of the multi-replica tests, and a store URL in one of its schemas
PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
PG_STORE = "postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"

#: Salesforce stage → the referral's salesStage (the seed's stages, custom ones by probability)
STAGE_PERCENT = {
    "Prospecting": "10",
    "Qualification": "20",
    "Needs Analysis": "20",
    "Value Proposition": "40",
    "Id. Decision Makers": "40",
    "Perception Analysis": "60",
    "Proposal/Price Quote": "60",
    "Negotiation/Review": "80",
    "Technical Win": "60",
    "Verbal Commit": "80",
    "Closed Won": "100",
}


_CONNECTION = """\
  - name: {name}
    mapping: {mapping}
    schedule: {{interval_s: {interval_s}, jitter_s: 0}}
    crm:
      kind: salesforce
      login_url: {url}
      auth: client_credentials
      client_id: sandbox
      client_secret: {{value: sandbox}}
      allowed_instance_origin: {url}
      ca_file: {ca_file}
    core:
      base_url: {url}/v1.0/engagements
      auth: client_credentials
      token_url: {url}/sandbox-tenant/oauth2/v2.0/token
      client_id: sandbox
      client_secret: {{value: sandbox}}
      scope: https://api.partner.microsoft.com/.default
      ca_file: {ca_file}
      referral_link_base: {url}/dashboard/referrals/v2
      concurrency: 8
"""


def write_config(
    path: Path,
    url: str,
    ca_file: Path,
    state_url: str,
    *,
    names: tuple[str, ...] = ("sandbox-salesforce",),
    interval_s: int = 60,
) -> Path:
    """A config for the sandbox at ``url``: one Salesforce connection per name."""
    mapping = ROOT / "mappings" / "salesforce.yaml"
    blocks = [
        _CONNECTION.format(
            name=name, mapping=mapping, interval_s=interval_s, url=url, ca_file=ca_file
        )
        for name in names
    ]
    path.write_text(f"state_url: {state_url}\nconnections:\n" + "".join(blocks), "utf-8")
    return path


def connector_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CONNECTOR_CONFIG", None)
    env.pop("CONNECTOR_STATE_URL", None)
    env["CONNECTOR_LOG_FORMAT"] = "json"
    return env


# --------------------------------------------------------------------- the checks


@dataclass
class Verdict:
    """What the three systems say after a sync, against the co-sell rules."""

    eligible: set[str]
    duplicates: dict[str, int]
    missing: set[str]
    unexpected: set[str]
    wrong_mirror: dict[str, tuple[Any, Any]]
    wrong_content: dict[str, tuple[Any, Any]]

    @property
    def problems(self) -> dict[str, Any]:
        """Empty when all is well; otherwise a short sample of each kind of problem."""
        out: dict[str, Any] = {}
        for name in ("duplicates", "missing", "unexpected", "wrong_mirror", "wrong_content"):
            value = getattr(self, name)
            if value:
                items = sorted(value.items() if isinstance(value, dict) else value)[:5]
                out[name] = {"count": len(value), "sample": items}
        return out


def _json(admin: httpx.Client, path: str) -> Any:
    return admin.get(path).raise_for_status().json()


def check_world(admin: httpx.Client) -> Verdict:
    """Compare the CRM, the core and the mirror; see :class:`Verdict`."""
    opportunities = _json(admin, "/_sandbox/salesforce/opportunities")["records"]
    defects = set(_json(admin, "/_sandbox/salesforce/defects")["defects"])
    data = _json(admin, "/_sandbox/core/referrals")
    referrals = [
        r
        for r in (data["value"] if isinstance(data, dict) else data)
        if is_partners(r) and r.get("direction") == "Outgoing"
    ]
    eligible = {
        o["Id"]: o
        for o in opportunities
        if o["Sync_with_Partner_Center__c"]
        and o["Id"] not in defects
        and o["StageName"] != "Closed Lost"
        and not _co_sell_without_contact(o)
    }
    counts = Counter(r["externalReferenceId"] for r in referrals)
    by_crm = {r["externalReferenceId"]: r for r in referrals}
    wrong_mirror: dict[str, tuple[Any, Any]] = {}
    wrong_content: dict[str, tuple[Any, Any]] = {}
    for crm_id, opp in eligible.items():
        referral = by_crm.get(crm_id)
        if referral is None:
            continue
        core_side = (referral["id"], f"{referral['status']}/{referral['substatus']}")
        crm_side = (opp["Referral_Identifier__c"], opp["CoSell_Status__c"])
        if core_side != crm_side:
            wrong_mirror[crm_id] = (crm_side, core_side)
        if opp["StageName"] == "Closed Won":
            expected = ("Closed", "Won", "100")
        else:
            expected = ("Active", "Accepted", STAGE_PERCENT[opp["StageName"]])
        got = (referral["status"], referral["substatus"], referral["salesStage"])
        if got != expected:
            wrong_content[crm_id] = (expected, got)
    return Verdict(
        eligible=set(eligible),
        duplicates={k: n for k, n in counts.items() if n > 1},
        missing=set(eligible) - set(counts),
        unexpected=set(counts) - set(eligible),
        wrong_mirror=wrong_mirror,
        wrong_content=wrong_content,
    )


def _co_sell_without_contact(opp: dict[str, Any]) -> bool:
    """The seed's rule: a customer contact is required when Microsoft is asked to help."""
    asks_help = opp["How_can_Microsoft_help__c"] not in (None, "", "None")
    return asks_help and not opp["Primary_Contact__c"]
