"""A seller at work in either CRM: the same steps, Salesforce fields or Dataverse columns.

The lifecycle tests of both CRMs are written once against :class:`Seller`; each step
(a new deal, an edit, a team member added, an answer) is made through the sandbox's
admin API as a CRM user would make it, and each value is read back raw from the CRM.
Concept names are the seed's; :data:`SALESFORCE` and :data:`DATAVERSE` name the CRM
field behind each (the default mappings' fields).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lifecycle_world import DynamicsWorld, LifecycleWorld, dynamics_world, salesforce_world

from sandbox.dataverse import schema as dataverse_schema

SALESFORCE = {
    "name": "Name",
    "amount": "Amount",
    "stage": "StageName",
    "description": "Description",
    "help": "How_can_Microsoft_help__c",
    "share": "Share_with_Microsoft__c",
    "solutions": "CoSell_Solutions__c",
    "microsoft_solutions": "CoSell_Microsoft_Solutions__c",
    "third_party_solutions": "CoSell_Third_Party_Solutions__c",
    "partners": "CoSell_Invite_Partner__c",
    "partner_close_date": "CoSell_Partner_Close_Date__c",
    "partner_value": "CoSell_Partner_Value__c",
    "partner_currency": "CoSell_Partner_Currency__c",
    "partner_notes": "CoSell_Partner_Notes__c",
    "partner_solutions": "CoSell_Partner_Solutions__c",
    "partner_help": "CoSell_Partner_Help__c",
    "status": "CoSell_Status__c",
    "error": "CoSell_Sync_Error__c",
    "days": "CoSell_Days_To_Expiry__c",
    "microsoft_status": "CoSell_Microsoft_Status__c",
    "action": "CoSell_Action__c",
    "decline_reason": "CoSell_Decline_Reason__c",
    "close_reason": "CoSell_Close_Reason__c",
    "received_notes": "CoSell_Received_Notes__c",
    "referral_id": "Referral_Identifier__c",
    "account": "AccountId",
    "contact": "Primary_Contact__c",
    "owner": "OwnerId",
}
DATAVERSE = {
    "name": "name",
    "amount": "estimatedvalue",
    "stage": "salesstage",
    "description": "description",
    "help": "cosell_helpneeded",
    "share": "cosell_sharewithmicrosoft",
    "solutions": "cosell_solutions",
    "microsoft_solutions": "cosell_microsoftsolutions",
    "third_party_solutions": "cosell_thirdpartysolutions",
    "partners": "cosell_invitepartner",
    "partner_close_date": "cosell_partnerclosedate",
    "partner_value": "cosell_partnervalue",
    "partner_currency": "cosell_partnercurrency",
    "partner_notes": "cosell_partnernotes",
    "partner_solutions": "cosell_partnersolutions",
    "partner_help": "cosell_partnerhelp",
    "status": "cosell_status",
    "error": "cosell_syncerror",
    "days": "cosell_daystoexpiry",
    "microsoft_status": "cosell_microsoftstatus",
    "action": "cosell_action",
    "decline_reason": "cosell_declinereason",
    "close_reason": "cosell_closereason",
    "received_notes": "cosell_receivednotes",
    "referral_id": "cosell_referralid",
    "account": "_parentaccountid_value",
    "contact": "_parentcontactid_value",
    "owner": "_ownerid_value",
}
#: the parts of accounts and contacts, by CRM
RELATED = {
    "salesforce": {
        "id": "Id",
        "name": "Name",
        "country": "BillingCountryCode",
        "city": "BillingCity",
        "postal_code": "BillingPostalCode",
        "street": "BillingStreet",
        "email": "Email",
        "first_name": "FirstName",
        "last_name": "LastName",
        "account": "AccountId",
    },
    "dynamics": {
        "name": "name",
        "country": "cosell_countrycode",
        "city": "address1_city",
        "postal_code": "address1_postalcode",
        "street": "address1_line1",
        "email": "emailaddress1",
        "first_name": "firstname",
        "last_name": "lastname",
        "account": "_parentcustomerid_value",
    },
}
#: the parts of users (team members), by CRM
USERS = {
    "salesforce": {
        "first_name": "FirstName",
        "last_name": "LastName",
        "email": "Email",
        "phone": "Phone",
    },
    "dynamics": {
        "first_name": "firstname",
        "last_name": "lastname",
        "email": "internalemailaddress",
        "phone": "address1_telephone1",
    },
}
#: choice columns of Dataverse: the label a seller picks → the option value stored
_CHOICES = {
    "cosell_helpneeded": dataverse_schema.HELP_NEEDED,
    "cosell_partnerhelp": dataverse_schema.HELP_NEEDED,
    "cosell_action": dataverse_schema.COSELL_ACTION,
    "cosell_declinereason": dataverse_schema.DECLINE_REASON,
    "salesstage": dataverse_schema.SALES_STAGE,
}
#: the on-hold stage of each default mapping, and an open stage past it
ON_HOLD = {"salesforce": "Prospecting", "dynamics": "Qualify"}
LATER_STAGE = {"salesforce": "Value Proposition", "dynamics": "Develop"}


class Seller:
    """One CRM, seen through the seed's concepts (see the module docstring)."""

    def __init__(self, world: LifecycleWorld, crm: str) -> None:
        self.world = world
        self.crm = crm
        self.names = SALESFORCE if crm == "salesforce" else DATAVERSE

    def mapping_path(self) -> Path:
        """The connection's mapping file (a copy of the default one, free to edit)."""
        text = self.world.config_path.read_text(encoding="utf-8")
        line = next(x for x in text.splitlines() if "mapping:" in x)
        return Path(line.split("mapping:", 1)[1].strip())

    def edit_mapping(self, old: str, new: str) -> None:
        path = self.mapping_path()
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} is not in {path}"
        path.write_text(text.replace(old, new), encoding="utf-8")

    # -- values ------------------------------------------------------------------------

    def _crm_values(self, concepts: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for concept, value in concepts.items():
            name = self.names.get(concept, concept)
            if self.crm == "dynamics" and name in _CHOICES and isinstance(value, str):
                value = {label: code for code, label in _CHOICES[name]}[value]
            values[name] = value
        return values

    def record(self, crm_id: str) -> dict[str, Any]:
        if self.crm == "salesforce":
            return self.world.opportunity(crm_id)
        assert isinstance(self.world, DynamicsWorld)
        found = [r for r in self.world.rows() if r["opportunityid"] == crm_id]
        assert len(found) == 1, crm_id
        return found[0]

    def get(self, crm_id: str, concept: str) -> Any:
        value = self.record(crm_id).get(self.names[concept])
        name = self.names[concept]
        if self.crm == "dynamics" and name in _CHOICES and isinstance(value, int):
            return dict(_CHOICES[name])[value]
        return value

    def edit(self, crm_id: str, **concepts: Any) -> None:
        values = self._crm_values(concepts)
        if self.crm == "salesforce":
            self.world.edit(crm_id, **values)
        else:
            assert isinstance(self.world, DynamicsWorld)
            self.world.edit_row(crm_id, **values)

    def closed_lost_as(self, crm_id: str) -> str | None:
        """The lost stage (Salesforce) or lost status reason (Dataverse) of a record closed
        lost; None while it is open."""
        record = self.record(crm_id)
        if self.crm == "salesforce":
            lost = record["IsClosed"] and not record["IsWon"]
            return str(record["StageName"]) if lost else None
        if record["statecode"] != dataverse_schema.LOST:
            return None
        return dataverse_schema.OPPORTUNITY_STATUS[record["statuscode"]][0]

    def version(self, crm_id: str) -> str:
        """What changes on every write to the record (SystemModstamp, versionnumber)."""
        record = self.record(crm_id)
        return str(record["SystemModstamp" if self.crm == "salesforce" else "versionnumber"])

    def write_calls(self) -> int:
        """CRM write requests since the stats were reset: Salesforce collection PATCHes
        (its POSTs are sign-ins), Dataverse PATCHes and POSTs (``$batch``)."""
        calls = self.world.calls().get(self.api, {})
        posts = 0 if self.crm == "salesforce" else calls.get("POST", 0)
        return int(calls.get("PATCH", 0) + posts)

    @property
    def api(self) -> str:
        return "salesforce" if self.crm == "salesforce" else "dataverse"

    def record_for(self, referral_id: str) -> str:
        """The one CRM record that holds a referral."""
        if self.crm == "salesforce":
            return str(self.world.opportunity_for(referral_id)["Id"])
        assert isinstance(self.world, DynamicsWorld)
        return str(self.world.row_for(referral_id)["opportunityid"])

    # -- deals -------------------------------------------------------------------------

    def new_deal(self, **concepts: Any) -> str:
        """A new selected deal at an early stage (Private unless the concepts ask more)."""
        base: dict[str, Any] = {
            "name": "Lifecycle deal",
            "amount": 50000,
            "help": "None",
            "solutions": "SOL-34104-EBB",
            **concepts,
        }
        if self.crm == "salesforce":
            return self.world.new_deal(**self._crm_values(base))
        template = self._clean_row()
        values = {
            "_parentaccountid_value": template["_parentaccountid_value"],
            "_customerid_value": template["_parentaccountid_value"],
            "_parentcontactid_value": template["_parentcontactid_value"],
            "_ownerid_value": template["_ownerid_value"],
            "_transactioncurrencyid_value": template["_transactioncurrencyid_value"],
            "estimatedclosedate": "2026-12-15",
            "salesstage": 0,
            "cosell_syncwithpartnercenter": True,
            **self._crm_values(base),
        }
        answer = self.world.admin.post("/_sandbox/dataverse/opportunities", json=values)
        return str(answer.raise_for_status().json()["opportunityid"])

    def _clean_row(self) -> dict[str, Any]:
        assert isinstance(self.world, DynamicsWorld)
        defects = self.world.admin.get("/_sandbox/dataverse/defects").raise_for_status().json()
        for row in self.world.rows():
            if (
                row["opportunityid"] not in defects
                and row.get("_parentcontactid_value")
                and row.get("_ownerid_value")
                and row["statecode"] == 0
            ):
                return row
        raise AssertionError("the sandbox seeded no clean Dataverse row")

    def synced(self, **concepts: Any) -> tuple[str, dict[str, Any]]:
        """A new deal, synced: its id and its referral."""
        crm_id = self.new_deal(**concepts)
        self.world.sync()
        return crm_id, self.world.referral_of(crm_id)

    # -- answers -----------------------------------------------------------------------

    def accept(self, crm_id: str) -> None:
        self.edit(crm_id, action="Accept")

    def decline(self, crm_id: str, reason: str | None) -> None:
        if reason is None:
            self.edit(crm_id, action="Decline")
        else:
            self.edit(crm_id, action="Decline", decline_reason=reason)

    # -- related rows ------------------------------------------------------------------

    def rows(self, kind: str, **where: str) -> list[dict[str, Any]]:
        """Accounts, contacts or users (Salesforce objects / Dataverse tables), each with
        ``id`` and the concept names of :data:`RELATED` besides its own fields."""
        names = RELATED[self.crm]
        params = {names.get(k, k): v for k, v in where.items()}
        if self.crm == "salesforce":
            answer = self.world.admin.get(f"/_sandbox/salesforce/{kind}", params=params)
            found = list(answer.raise_for_status().json()["records"])
        else:
            table = {"accounts": "accounts", "contacts": "contacts", "users": "systemusers"}[kind]
            answer = self.world.admin.get(f"/_sandbox/dataverse/rows/{table}", params=params)
            found = list(answer.raise_for_status().json()["value"])
        key = {"accounts": "accountid", "contacts": "contactid", "users": "systemuserid"}[kind]
        if kind == "users":
            names = USERS[self.crm]
        out = []
        for row in found:
            concepts = {c: row.get(n) for c, n in names.items() if n in row}
            concepts["id"] = row["Id"] if self.crm == "salesforce" else row[key]
            out.append({**row, **concepts})
        return out


@contextmanager
def seller_world(crm: str, tmp_path: Path) -> Iterator[Seller]:
    make = salesforce_world if crm == "salesforce" else dynamics_world
    with make(tmp_path) as world:
        yield Seller(world, crm)


def team_users(seller: Seller, n: int, *, besides: str) -> list[dict[str, Any]]:
    """``n`` users with a full name, email and phone, none of them ``besides`` (the owner)."""
    users = [
        u
        for u in seller.rows("users")
        if all(u.get(k) for k in ("first_name", "last_name", "email", "phone"))
        and str(u["id"]).lower() != besides.lower()
    ]
    assert len(users) >= n, "the sandbox seeded too few users"
    return users[:n]


def add_team_member(seller: Seller, crm_id: str, user_id: str, role: str) -> str:
    """A user joins the opportunity's team, as a seller adds one in the CRM; its row id."""
    if seller.crm == "salesforce":
        answer = seller.world.admin.post(
            "/_sandbox/salesforce/opportunity-team-members",
            json={"OpportunityId": crm_id, "UserId": user_id, "TeamMemberRole": role},
        )
        return str(answer.raise_for_status().json()["Id"])
    roles = (
        seller.world.admin.get("/_sandbox/dataverse/rows/connectionroles", params={"name": role})
        .raise_for_status()
        .json()["value"]
    )
    answer = seller.world.admin.post(
        "/_sandbox/dataverse/rows/connections",
        json={
            "_record1id_value": crm_id,
            "_record2id_value": user_id,
            "_record2roleid_value": roles[0]["connectionroleid"],
        },
    )
    return str(answer.raise_for_status().json()["connectionid"])


def remove_team_member(seller: Seller, member_id: str) -> None:
    if seller.crm == "salesforce":
        path = f"/_sandbox/salesforce/opportunity-team-members/{member_id}"
    else:
        path = f"/_sandbox/dataverse/rows/connections/{member_id}"
    seller.world.admin.delete(path).raise_for_status()
