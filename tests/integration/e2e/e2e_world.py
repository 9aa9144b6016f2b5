"""The end-to-end world: the sandbox, a config for one CRM, and views of all three systems.

The scenarios in test_sync_end_to_end.py run against either CRM through a
:class:`CrmView`: opportunities as the sandbox's admin API returns them (the
mapping's field names), edits as a CRM user makes them, the seeded defects, and
the status fields read back under the names the CRM's default mapping gives them.
"""

from __future__ import annotations

import io
import ssl
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Protocol

import httpx
import yaml
from rich.console import Console

from connector.mapping.load import load_mapping
from connector.mapping.schema import StatusFields
from connector.settings import ConfigFile, Settings, load_config
from connector.sync.oneshot import run_once
from connector.sync.report import RunReport
from connector.sync.tuning import DEFAULT_TUNING, Tuning
from sandbox.harness import SandboxServer
from sandbox.partner_center.fields import is_partners

ROOT = Path(__file__).parents[3]
CRMS = ("salesforce", "dynamics")
#: the config file and connection each CRM's world syncs with
CONNECTIONS = {
    "salesforce": ("sandbox.yaml", "sandbox-salesforce"),
    "dynamics": ("sandbox-dynamics.yaml", "sandbox-dynamics"),
}


@dataclass(frozen=True)
class Deal:
    """What a referral should say for one opportunity (CRM-agnostic)."""

    name: str
    value: Decimal
    currency: str
    close_date: str
    customer_name: str
    customer_country: str
    stage_percent: str


class CrmView(Protocol):
    """One CRM as the tests see it; implemented for the sandbox's Salesforce and Dataverse."""

    name: str
    id_field: str
    status: StatusFields
    #: whether the CRM lets the connector write to a won/lost record (Dataverse does not)
    closed_rows_writable: bool

    def opportunities(self) -> list[dict[str, Any]]: ...
    def opportunity(self, record_id: str) -> dict[str, Any]: ...
    def edit(self, record_id: str, **values: Any) -> None: ...
    def defects(self) -> dict[str, str]: ...
    def selected(self, opp: dict[str, Any]) -> bool: ...
    def is_won(self, opp: dict[str, Any]) -> bool: ...
    def is_lost(self, opp: dict[str, Any]) -> bool: ...
    def asks_help_without_contact(self, opp: dict[str, Any]) -> bool: ...
    def is_in_late_open_stage(self, opp: dict[str, Any]) -> bool: ...
    def edit_deal(self, record_id: str, value: int, notes: str) -> None: ...
    def win(self, record_id: str) -> None: ...
    def expected_deals(self, ids: set[str]) -> dict[str, Deal]: ...


class SalesforceView:
    name = "salesforce"
    id_field = "Id"
    closed_rows_writable = True
    PERCENT: ClassVar[dict[str, str]] = {
        "Prospecting": "10",
        "Qualification": "20",
        "Needs Analysis": "20",
        "Value Proposition": "40",
        "Id. Decision Makers": "40",
        "Perception Analysis": "60",
        "Proposal/Price Quote": "60",
        "Negotiation/Review": "80",
        "Technical Win": "60",  # custom stage, probability 65: by probability
        "Verbal Commit": "80",  # custom stage, probability 85
        "Closed Won": "100",
    }

    def __init__(self, admin: httpx.Client) -> None:
        self.admin = admin
        self.status = load_mapping(ROOT / "mappings" / "salesforce.yaml").status_fields

    def opportunities(self) -> list[dict[str, Any]]:
        data = self.admin.get("/_sandbox/salesforce/opportunities").raise_for_status().json()
        return list(data["records"])

    def opportunity(self, record_id: str) -> dict[str, Any]:
        url = f"/_sandbox/salesforce/opportunities/{record_id}"
        return dict(self.admin.get(url).raise_for_status().json())

    def edit(self, record_id: str, **values: Any) -> None:
        url = f"/_sandbox/salesforce/opportunities/{record_id}"
        self.admin.post(url, json=values).raise_for_status()

    def defects(self) -> dict[str, str]:
        return dict(
            self.admin.get("/_sandbox/salesforce/defects").raise_for_status().json()["defects"]
        )

    def selected(self, opp: dict[str, Any]) -> bool:
        return bool(opp["Sync_with_Partner_Center__c"])

    def is_won(self, opp: dict[str, Any]) -> bool:
        return bool(opp["StageName"] == "Closed Won")

    def is_lost(self, opp: dict[str, Any]) -> bool:
        return bool(opp["StageName"] == "Closed Lost")

    def asks_help_without_contact(self, opp: dict[str, Any]) -> bool:
        """The seed's rule: a customer contact is required when Microsoft is invited."""
        asks_help = opp["How_can_Microsoft_help__c"] not in (None, "", "None")
        return asks_help and not opp["Primary_Contact__c"]

    def is_in_late_open_stage(self, opp: dict[str, Any]) -> bool:
        return bool(opp["StageName"] == "Negotiation/Review")

    def edit_deal(self, record_id: str, value: int, notes: str) -> None:
        self.edit(record_id, Amount=value, Description=notes)

    def win(self, record_id: str) -> None:
        self.edit(record_id, StageName="Closed Won")

    def expected_deals(self, ids: set[str]) -> dict[str, Deal]:
        accounts = {
            a["Id"]: a for a in self.admin.get("/_sandbox/salesforce/accounts").json()["records"]
        }
        out = {}
        for opp in self.opportunities():
            if opp["Id"] not in ids:
                continue
            account = accounts[opp["AccountId"]]
            out[opp["Id"]] = Deal(
                name=opp["Name"],
                value=Decimal(str(opp["Amount"])),
                currency=opp["CurrencyIsoCode"],
                close_date=opp["CloseDate"],
                customer_name=account["Name"],
                customer_country=account["BillingCountryCode"],
                stage_percent=self.PERCENT[opp["StageName"]],
            )
        return out


class DataverseView:
    name = "dynamics"
    id_field = "opportunityid"
    closed_rows_writable = False
    #: salesstage option value -> the standard stage's percent (mappings/dynamics.yaml)
    PERCENT: ClassVar[dict[int, str]] = {0: "20", 1: "40", 2: "60", 3: "80"}
    ADMIN = "/_sandbox/dataverse/opportunities"

    def __init__(self, admin: httpx.Client, ca_file: Path) -> None:
        self.admin = admin
        self.ca_file = ca_file
        self.status = load_mapping(ROOT / "mappings" / "dynamics.yaml").status_fields

    def opportunities(self) -> list[dict[str, Any]]:
        return list(self.admin.get(self.ADMIN).raise_for_status().json()["value"])

    def opportunity(self, record_id: str) -> dict[str, Any]:
        return dict(self.admin.get(f"{self.ADMIN}/{record_id}").raise_for_status().json())

    def edit(self, record_id: str, **values: Any) -> None:
        self.admin.post(f"{self.ADMIN}/{record_id}", json=values).raise_for_status()

    def delete(self, record_id: str) -> None:
        self.admin.delete(f"{self.ADMIN}/{record_id}").raise_for_status()

    def defects(self) -> dict[str, str]:
        return dict(self.admin.get("/_sandbox/dataverse/defects").raise_for_status().json())

    def selected(self, opp: dict[str, Any]) -> bool:
        return bool(opp["cosell_syncwithpartnercenter"])

    def is_won(self, opp: dict[str, Any]) -> bool:
        return bool(opp["statecode"] == 1)

    def is_lost(self, opp: dict[str, Any]) -> bool:
        return bool(opp["statecode"] == 2)

    def asks_help_without_contact(self, opp: dict[str, Any]) -> bool:
        asks_help = opp["cosell_helpneeded"] not in (None, 0)
        return asks_help and not opp["_parentcontactid_value"]

    def is_in_late_open_stage(self, opp: dict[str, Any]) -> bool:
        return bool(opp["statecode"] == 0 and opp["salesstage"] == 3)

    def edit_deal(self, record_id: str, value: int, notes: str) -> None:
        self.edit(record_id, estimatedvalue=value, description=notes)

    def web_api(self) -> httpx.Client:
        """A Web API client with a token, as an interactive CRM user would have one."""
        token = (
            self.admin.post(
                "/sandbox-tenant/oauth2/v2.0/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": "sandbox",
                    "client_secret": "sandbox",
                    "scope": "https://org.crm.dynamics.com/.default",
                },
            )
            .raise_for_status()
            .json()["access_token"]
        )
        return httpx.Client(
            base_url=str(self.admin.base_url.join("/api/data/v9.2/")),
            verify=ssl.create_default_context(cafile=str(self.ca_file)),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    def win(self, record_id: str) -> None:
        """Close the row as won the only way Dataverse allows: the WinOpportunity action."""
        with self.web_api() as api:
            api.post(
                "WinOpportunity",
                json={
                    "OpportunityClose": {
                        "opportunityid@odata.bind": f"/opportunities({record_id})",
                        "subject": "Won",
                    },
                    "Status": 3,
                },
            ).raise_for_status()

    def reopen(self, record_id: str) -> None:
        with self.web_api() as api:
            api.patch(
                f"opportunities({record_id})",
                json={"statecode": 0, "statuscode": 1},
                headers={"If-Match": "*"},
            ).raise_for_status()

    def expected_deals(self, ids: set[str]) -> dict[str, Deal]:
        with self.web_api() as api:
            accounts = {
                a["accountid"]: a
                for a in api.get(
                    "accounts", params={"$select": "accountid,name,cosell_countrycode"}
                )
                .raise_for_status()
                .json()["value"]
            }
            currencies = {
                c["transactioncurrencyid"]: c["isocurrencycode"]
                for c in api.get("transactioncurrencies").raise_for_status().json()["value"]
            }
        out = {}
        for opp in self.opportunities():
            if opp["opportunityid"] not in ids:
                continue
            account = accounts[opp["_parentaccountid_value"]]
            out[opp["opportunityid"]] = Deal(
                name=opp["name"],
                value=Decimal(str(opp["estimatedvalue"])),
                currency=currencies[opp["_transactioncurrencyid_value"]],
                close_date=opp["estimatedclosedate"],
                customer_name=account["name"],
                customer_country=account["cosell_countrycode"],
                stage_percent="100" if opp["statecode"] == 1 else self.PERCENT[opp["salesstage"]],
            )
        return out


@dataclass
class World:
    """The sandbox, a config for one CRM, and helpers to look at all three systems."""

    sb: SandboxServer
    config_path: Path
    state_url: str
    admin: httpx.Client
    crm: CrmView
    #: the sync's tuning knobs (a test sets small ones to reach the paths of large runs)
    tuning: Tuning = DEFAULT_TUNING

    @property
    def config(self) -> ConfigFile:
        return load_config(self.config_path)

    def sync(
        self, *, dry_run: bool = False, full: bool = False, tuning: Tuning | None = None
    ) -> RunReport:
        cfg = self.config
        settings = Settings(state_url=self.state_url, config=self.config_path)
        out = Console(file=io.StringIO(), width=200)
        (report,) = run_once(
            settings,
            cfg,
            cfg.connections,
            dry_run=dry_run,
            full=full,
            console=out,
            tuning=tuning or self.tuning,
        )
        return report

    def all_referrals(self) -> list[dict[str, Any]]:
        data = self.admin.get("/_sandbox/core/referrals").raise_for_status().json()
        return list(data["value"] if isinstance(data, dict) else data)

    def referrals(self) -> list[dict[str, Any]]:
        """The partner's own outbound referrals (not incoming ones, not Microsoft's)."""
        return [
            r for r in self.all_referrals() if is_partners(r) and r.get("direction") == "Outgoing"
        ]

    def calls(self) -> dict[str, dict[str, int]]:
        return dict(self.admin.get("/_sandbox/stats").raise_for_status().json()["calls"])

    def reset_stats(self) -> None:
        self.admin.post("/_sandbox/stats/reset").raise_for_status()

    # -- CRM-agnostic expectations, from the sandbox's own data ----------------------

    def selected(self) -> list[dict[str, Any]]:
        return [o for o in self.crm.opportunities() if self.crm.selected(o)]

    def expected_invalid(self) -> set[str]:
        defects = self.crm.defects()
        key = self.crm.id_field
        return {
            o[key]
            for o in self.selected()
            if o[key] in defects or self.crm.asks_help_without_contact(o)
        }

    def expected_eligible(self) -> dict[str, dict[str, Any]]:
        invalid = self.expected_invalid()
        key = self.crm.id_field
        return {
            o[key]: o for o in self.selected() if o[key] not in invalid and not self.crm.is_lost(o)
        }

    def by_external_id(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for referral in self.referrals():
            out.setdefault(referral["externalReferenceId"], []).append(referral)
        return out


def view_for(crm: str, admin: httpx.Client, ca_file: Path) -> CrmView:
    return SalesforceView(admin) if crm == "salesforce" else DataverseView(admin, ca_file)


def write_config(path: Path, url: str, ca_file: Path, crm: str = "salesforce") -> Path:
    """The CRM's sandbox connection (from config/), pointed at this sandbox, alone."""
    file_name, connection = CONNECTIONS[crm]
    text = (ROOT / "config" / file_name).read_text(encoding="utf-8")
    text = text.replace("https://127.0.0.1:8700", url)
    text = text.replace(".connector/sandbox-ca.pem", str(ca_file))
    data = yaml.safe_load(text)
    data["connections"] = [c for c in data["connections"] if c["name"] == connection]
    for conn in data["connections"]:
        conn["mapping"] = str(ROOT / conn["mapping"])
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
