"""The tables, columns and option sets of the imitated Dataverse environment.

Written from Dataverse's documentation of the ``opportunity``, ``account``,
``contact``, ``systemuser`` and ``transactioncurrency`` tables, plus the
co-sell solution's custom columns (publisher prefix ``cosell_``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Column kinds. "lookup" columns are stored as ``_<nav>_value`` GUIDs.
GUID = "guid"
STRING = "string"
INT = "int"
BIGINT = "bigint"
MONEY = "money"
BOOL = "bool"
DATE = "date"  # DateOnly: "2026-05-01"
DATETIME = "datetime"  # UTC, one-second resolution: "2026-05-01T10:00:00Z"
PICKLIST = "picklist"
STATE = "state"
STATUS = "status"
LOOKUP = "lookup"

OPTION_KINDS = (PICKLIST, STATE, STATUS)

SALES_STAGE = ((0, "Qualify"), (1, "Develop"), (2, "Propose"), (3, "Close"))
OPPORTUNITY_STATE = ((0, "Open"), (1, "Won"), (2, "Lost"))
#: status reason → (label, the state it belongs to)
OPPORTUNITY_STATUS = {
    1: ("In Progress", 0),
    2: ("On Hold", 0),
    3: ("Won", 1),
    4: ("Canceled", 2),
    5: ("Out-Sold", 2),
}
HELP_NEEDED = (
    (0, "None"),
    (1, "General or Other"),
    (2, "Customer Technical Architecture"),
    (3, "Proof of Concept or Demo"),
    (4, "Quotes or Licensing"),
    (5, "Post Sales Customer Success"),
    (6, "Workload Specific Value Proposition"),
)
COSELL_ACTION = ((1, "Accept"), (2, "Decline"))
#: the reasons a seller picks from when declining an incoming deal
DECLINE_REASON = (
    (1, "Not a fit"),
    (2, "No capacity this quarter"),
    (3, "Outside our region"),
    (4, "Customer not reachable"),
    (5, "Duplicate deal"),
    (6, "Other"),
)
#: the record type codes a connection's ends carry (objecttypecode)
OBJECT_TYPE_CODES = {"accounts": 1, "contacts": 2, "opportunities": 3, "systemusers": 8}
OPEN, WON, LOST = 0, 1, 2


@dataclass(frozen=True)
class Column:
    """One column; ``targets`` are the entity sets a lookup may point to."""

    name: str
    kind: str
    writable: bool = True
    options: tuple[tuple[int, str], ...] = ()
    max_length: int | None = None
    targets: tuple[str, ...] = ()

    @property
    def labels(self) -> dict[int, str]:
        return dict(self.options)


@dataclass(frozen=True)
class Table:
    """A table: its entity set (URL) name, logical name, key and columns."""

    entity_set: str
    logical_name: str
    primary_id: str
    primary_name: str
    columns: dict[str, Column] = field(default_factory=dict)

    def lookup_by_nav(self, nav: str) -> Column | None:
        """The lookup column behind a single-valued navigation property (``parentaccountid``)."""
        column = self.columns.get(f"_{nav}_value")
        return column if column is not None and column.kind == LOOKUP else None

    def bind_target(self, name: str) -> tuple[Column, str] | None:
        """``parentaccountid`` or ``customerid_account`` → (lookup column, target entity set)."""
        column = self.lookup_by_nav(name)
        if column is not None and len(column.targets) == 1:
            return column, column.targets[0]
        nav, _, suffix = name.rpartition("_")
        column = self.lookup_by_nav(nav)
        if column is not None:
            for target in column.targets:
                if TABLES[target].logical_name == suffix:
                    return column, target
        return None


def _columns(*columns: Column) -> dict[str, Column]:
    return {c.name: c for c in columns}


def _system(table_id: str) -> tuple[Column, ...]:
    return (
        Column(table_id, GUID),
        Column("createdon", DATETIME, writable=False),
        Column("modifiedon", DATETIME, writable=False),
        Column("versionnumber", BIGINT, writable=False),
    )


_STATUS_OPTIONS = tuple((value, label) for value, (label, _) in OPPORTUNITY_STATUS.items())

OPPORTUNITY = Table(
    "opportunities",
    "opportunity",
    "opportunityid",
    "name",
    _columns(
        *_system("opportunityid"),
        Column("name", STRING, max_length=300),
        Column("description", STRING, max_length=2000),
        Column("estimatedvalue", MONEY),
        Column("estimatedclosedate", DATE),
        Column("actualvalue", MONEY),
        Column("actualclosedate", DATE),
        Column("closeprobability", INT),
        Column("salesstage", PICKLIST, options=SALES_STAGE),
        Column("stepname", STRING, max_length=200),
        Column("statecode", STATE, options=OPPORTUNITY_STATE),
        Column("statuscode", STATUS, options=_STATUS_OPTIONS),
        Column("_transactioncurrencyid_value", LOOKUP, targets=("transactioncurrencies",)),
        Column("_parentaccountid_value", LOOKUP, targets=("accounts",)),
        Column("_customerid_value", LOOKUP, targets=("accounts", "contacts")),
        Column("_ownerid_value", LOOKUP, targets=("systemusers",)),
        Column("_parentcontactid_value", LOOKUP, targets=("contacts",)),
        Column("cosell_syncwithpartnercenter", BOOL),
        Column("cosell_referralid", STRING, max_length=100),
        Column("cosell_referrallink", STRING, max_length=500),
        Column("cosell_helpneeded", PICKLIST, options=HELP_NEEDED),
        Column("cosell_sharewithmicrosoft", BOOL),
        Column("cosell_solutions", STRING, max_length=2000),
        Column("cosell_microsoftsolutions", STRING, max_length=2000),
        Column("cosell_thirdpartysolutions", STRING, max_length=2000),
        Column("cosell_campaignid", STRING, max_length=100),
        Column("cosell_invitepartner", STRING, max_length=200),
        # what an invited partner is told (the seed's partner-to-partner invitation)
        Column("cosell_partnerclosedate", DATE),
        Column("cosell_partnervalue", MONEY),
        Column("cosell_partnercurrency", STRING, max_length=3),
        Column("cosell_partnernotes", STRING, max_length=2000),
        Column("cosell_partnersolutions", STRING, max_length=2000),
        Column("cosell_partnerhelp", PICKLIST, options=HELP_NEEDED),
        Column("cosell_status", STRING, max_length=100),
        Column("cosell_syncerror", STRING, max_length=4000),
        Column("cosell_microsoftstatus", STRING, max_length=100),
        Column("cosell_expiration", DATETIME),
        Column("cosell_daystoexpiry", INT),
        Column("cosell_registrationeligible", BOOL),
        Column("cosell_registrationstatus", STRING, max_length=100),
        Column("cosell_registerdeal", BOOL),
        Column("cosell_action", PICKLIST, options=COSELL_ACTION),
        Column("cosell_declinereason", PICKLIST, options=DECLINE_REASON),
        Column("cosell_closereason", STRING, max_length=500),
        Column("cosell_receivednotes", STRING, max_length=4000),
        Column("cosell_lastsync", DATETIME),
        Column("cosell_direction", STRING, max_length=20),
    ),
)

ACCOUNT = Table(
    "accounts",
    "account",
    "accountid",
    "name",
    _columns(
        *_system("accountid"),
        Column("name", STRING, max_length=160),
        Column("address1_line1", STRING, max_length=250),
        Column("address1_city", STRING, max_length=80),
        Column("address1_stateorprovince", STRING, max_length=50),
        Column("address1_postalcode", STRING, max_length=20),
        Column("address1_country", STRING, max_length=80),
        Column("cosell_countrycode", STRING, max_length=2),
    ),
)

CONTACT = Table(
    "contacts",
    "contact",
    "contactid",
    "fullname",
    _columns(
        *_system("contactid"),
        Column("firstname", STRING, max_length=50),
        Column("lastname", STRING, max_length=50),
        Column("fullname", STRING, writable=False),
        Column("emailaddress1", STRING, max_length=100),
        Column("telephone1", STRING, max_length=50),
        Column("_parentcustomerid_value", LOOKUP, targets=("accounts",)),
    ),
)

SYSTEMUSER = Table(
    "systemusers",
    "systemuser",
    "systemuserid",
    "fullname",
    _columns(
        *_system("systemuserid"),
        Column("firstname", STRING, max_length=64),
        Column("lastname", STRING, max_length=64),
        Column("fullname", STRING, writable=False),
        Column("internalemailaddress", STRING, max_length=100),
        Column("address1_telephone1", STRING, max_length=50),
    ),
)

TRANSACTIONCURRENCY = Table(
    "transactioncurrencies",
    "transactioncurrency",
    "transactioncurrencyid",
    "currencyname",
    _columns(
        *_system("transactioncurrencyid"),
        Column("isocurrencycode", STRING, max_length=5),
        Column("currencyname", STRING, max_length=100),
        Column("currencysymbol", STRING, max_length=10),
        Column("currencyprecision", INT),
    ),
)

CONNECTIONROLE = Table(
    "connectionroles",
    "connectionrole",
    "connectionroleid",
    "name",
    _columns(*_system("connectionroleid"), Column("name", STRING, max_length=100)),
)

#: a relationship between two records (Dynamics 365 Sales keeps an opportunity's sales
#: team as connections from the opportunity to users, each with a role)
CONNECTION = Table(
    "connections",
    "connection",
    "connectionid",
    "name",
    _columns(
        *_system("connectionid"),
        Column("name", STRING, max_length=500),
        Column("_record1id_value", LOOKUP, targets=("opportunities", "accounts", "contacts")),
        Column("_record2id_value", LOOKUP, targets=("systemusers", "contacts", "accounts")),
        Column("record1objecttypecode", INT, writable=False),
        Column("record2objecttypecode", INT, writable=False),
        Column("_record1roleid_value", LOOKUP, targets=("connectionroles",)),
        Column("_record2roleid_value", LOOKUP, targets=("connectionroles",)),
        Column("statecode", INT),
    ),
)

#: every table by entity set name
TABLES: dict[str, Table] = {
    t.entity_set: t
    for t in (
        OPPORTUNITY,
        ACCOUNT,
        CONTACT,
        SYSTEMUSER,
        TRANSACTIONCURRENCY,
        CONNECTIONROLE,
        CONNECTION,
    )
}
#: every table by logical name
BY_LOGICAL_NAME: dict[str, Table] = {t.logical_name: t for t in TABLES.values()}
