"""The sandbox Salesforce org's schema: objects, fields, types and relationships.

Written from the org described in docs/sandbox-salesforce.md and Salesforce's describe
conventions, independently of the connector's mapping. Values are stored the way
the REST API prints them: datetimes as ``2026-05-01T12:34:56.000+0000`` (always
UTC, so they sort as strings), dates as ``2026-05-01``, numbers as floats.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

#: Types whose values are strings compared case-insensitively in SOQL.
TEXT_TYPES = frozenset(
    {"id", "reference", "string", "textarea", "picklist", "url", "email", "phone"}
)
NUMBER_TYPES = frozenset({"double", "currency", "percent", "int"})
#: Fields the platform maintains; never writable through the API.
SYSTEM_FIELDS = ("IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp")


@dataclass(frozen=True)
class FieldSpec:
    """One field as ``describe`` would show it."""

    name: str
    type: str
    updateable: bool = True
    length: int = 255
    reference_to: str | None = None
    relationship_name: str | None = None
    #: the allowed values of a restricted picklist (None: any value)
    picklist: tuple[str, ...] | None = None

    @property
    def filterable(self) -> bool:
        """Long text areas cannot be filtered or sorted in SOQL."""
        return not (self.type == "textarea" and self.length > 255)


@dataclass
class ObjectSpec:
    """One sObject type: its key prefix, fields and the fields required on create."""

    name: str
    key_prefix: str
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    required: tuple[str, ...] = ()

    def field(self, name: str) -> FieldSpec | None:
        return self.fields.get(name.lower())

    def relationship(self, name: str) -> FieldSpec | None:
        """The reference field behind a relationship name (``Account``, ``Primary_Contact__r``)."""
        lowered = name.lower()
        for spec in self.fields.values():
            if spec.relationship_name and spec.relationship_name.lower() == lowered:
                return spec
        return None


def _object(
    name: str, prefix: str, specs: list[FieldSpec], required: tuple[str, ...] = ()
) -> ObjectSpec:
    obj = ObjectSpec(name, prefix, required=required)
    for spec in [FieldSpec("Id", "id", updateable=False, length=18), *specs]:
        obj.fields[spec.name.lower()] = spec
    return obj


def _system() -> list[FieldSpec]:
    return [
        FieldSpec("IsDeleted", "boolean", updateable=False),
        FieldSpec("CreatedDate", "datetime", updateable=False),
        FieldSpec("LastModifiedDate", "datetime", updateable=False),
        FieldSpec("SystemModstamp", "datetime", updateable=False),
    ]


def _ref(name: str, target: str, relationship: str) -> FieldSpec:
    return FieldSpec(
        name, "reference", length=18, reference_to=target, relationship_name=relationship
    )


HELP_VALUES = (
    "None",
    "General or Other",
    "Customer Technical Architecture",
    "Proof of Concept or Demo",
    "Quotes or Licensing",
    "Post Sales Customer Success",
    "Workload Specific Value Proposition",
)

#: the reasons a seller picks from when declining an incoming deal (the org's picklist)
DECLINE_REASONS = (
    "Not a fit",
    "No capacity this quarter",
    "Outside our region",
    "Customer not reachable",
    "Duplicate deal",
    "Other",
)

OPPORTUNITY = _object(
    "Opportunity",
    "006",
    [
        FieldSpec("Name", "string", length=120),
        FieldSpec("Amount", "currency"),
        FieldSpec("CurrencyIsoCode", "picklist", length=3),
        FieldSpec("CloseDate", "date"),
        # StageName's values are the org's OpportunityStage rows, checked by the store.
        FieldSpec("StageName", "picklist"),
        FieldSpec("Probability", "percent"),
        FieldSpec("Description", "textarea", length=32000),
        FieldSpec("Type", "picklist"),
        FieldSpec("LeadSource", "picklist"),
        FieldSpec("IsClosed", "boolean", updateable=False),
        FieldSpec("IsWon", "boolean", updateable=False),
        *_system(),
        _ref("AccountId", "Account", "Account"),
        _ref("OwnerId", "User", "Owner"),
        _ref("Primary_Contact__c", "Contact", "Primary_Contact__r"),
        FieldSpec("Sync_with_Partner_Center__c", "boolean"),
        FieldSpec("Referral_Identifier__c", "string"),
        FieldSpec("Referral_Link__c", "url"),
        FieldSpec("How_can_Microsoft_help__c", "picklist", picklist=HELP_VALUES),
        FieldSpec("Share_with_Microsoft__c", "boolean"),
        FieldSpec("CoSell_Solutions__c", "string", length=1000),
        FieldSpec("CoSell_Microsoft_Solutions__c", "string", length=1000),
        FieldSpec("CoSell_Third_Party_Solutions__c", "string", length=1000),
        FieldSpec("CoSell_Campaign_Id__c", "string"),
        FieldSpec("CoSell_Invite_Partner__c", "string"),
        # what an invited partner is told (the seed's partner-to-partner invitation)
        FieldSpec("CoSell_Partner_Close_Date__c", "date"),
        FieldSpec("CoSell_Partner_Value__c", "currency"),
        FieldSpec("CoSell_Partner_Currency__c", "picklist", length=3),
        FieldSpec("CoSell_Partner_Notes__c", "textarea", length=32000),
        FieldSpec("CoSell_Partner_Solutions__c", "string", length=1000),
        FieldSpec("CoSell_Partner_Help__c", "picklist", picklist=HELP_VALUES),
        FieldSpec("CoSell_Status__c", "string"),
        FieldSpec("CoSell_Sync_Error__c", "textarea", length=32000),
        FieldSpec("CoSell_Microsoft_Status__c", "string"),
        FieldSpec("CoSell_Expiration__c", "datetime"),
        FieldSpec("CoSell_Days_To_Expiry__c", "double"),
        FieldSpec("CoSell_Registration_Eligible__c", "boolean"),
        FieldSpec("CoSell_Registration_Status__c", "string"),
        FieldSpec("CoSell_Register_Deal__c", "boolean"),
        FieldSpec("CoSell_Action__c", "picklist", picklist=("Accept", "Decline")),
        FieldSpec("CoSell_Decline_Reason__c", "picklist", picklist=DECLINE_REASONS),
        FieldSpec("CoSell_Close_Reason__c", "string"),
        FieldSpec("CoSell_Received_Notes__c", "textarea", length=32000),
        FieldSpec("CoSell_Last_Sync__c", "datetime"),
        FieldSpec("CoSell_Direction__c", "string"),
    ],
    required=("Name", "StageName", "CloseDate"),
)

ACCOUNT = _object(
    "Account",
    "001",
    [
        FieldSpec("Name", "string"),
        FieldSpec("BillingStreet", "textarea"),
        FieldSpec("BillingCity", "string", length=40),
        FieldSpec("BillingState", "string", length=80),
        FieldSpec("BillingPostalCode", "string", length=20),
        FieldSpec("BillingCountry", "string", length=80),
        FieldSpec("BillingCountryCode", "picklist", length=2),
        FieldSpec("Industry", "picklist"),
        FieldSpec("NumberOfEmployees", "int"),
        *_system(),
    ],
    required=("Name",),
)

CONTACT = _object(
    "Contact",
    "003",
    [
        FieldSpec("FirstName", "string", length=40),
        FieldSpec("LastName", "string", length=80),
        FieldSpec("Name", "string", updateable=False, length=121),
        FieldSpec("Email", "email", length=80),
        FieldSpec("Phone", "phone", length=40),
        _ref("AccountId", "Account", "Account"),
        *_system(),
    ],
    required=("LastName",),
)

USER = _object(
    "User",
    "005",
    [
        FieldSpec("FirstName", "string", length=40),
        FieldSpec("LastName", "string", length=80),
        FieldSpec("Name", "string", updateable=False, length=121),
        FieldSpec("Username", "string", length=80),
        FieldSpec("Email", "email", length=128),
        FieldSpec("Phone", "phone", length=40),
        FieldSpec("IsActive", "boolean"),
        *_system(),
    ],
    required=("LastName",),
)

OPPORTUNITY_STAGE = _object(
    "OpportunityStage",
    "01J",
    [
        FieldSpec("MasterLabel", "string"),
        FieldSpec("ApiName", "string"),
        FieldSpec("IsActive", "boolean"),
        FieldSpec("SortOrder", "int"),
        FieldSpec("IsClosed", "boolean"),
        FieldSpec("IsWon", "boolean"),
        FieldSpec("DefaultProbability", "percent"),
        FieldSpec("ForecastCategoryName", "picklist"),
        *_system(),
    ],
)

#: the users working an opportunity with its owner (Salesforce's opportunity team)
OPPORTUNITY_TEAM_MEMBER = _object(
    "OpportunityTeamMember",
    "00q",
    [
        _ref("OpportunityId", "Opportunity", "Opportunity"),
        _ref("UserId", "User", "User"),
        FieldSpec("TeamMemberRole", "picklist"),
        FieldSpec("OpportunityAccessLevel", "picklist"),
        *_system(),
    ],
    required=("OpportunityId", "UserId"),
)

#: every object of the org, by lower-cased name
SCHEMA: dict[str, ObjectSpec] = {
    o.name.lower(): o
    for o in (OPPORTUNITY, ACCOUNT, CONTACT, USER, OPPORTUNITY_STAGE, OPPORTUNITY_TEAM_MEMBER)
}
PREFIXES: dict[str, ObjectSpec] = {o.key_prefix: o for o in SCHEMA.values()}


# --- ids -------------------------------------------------------------------

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID15 = re.compile(r"^[0-9A-Za-z]{15}$")
_ID18 = re.compile(r"^[0-9A-Za-z]{18}$")


def id18(id15: str) -> str:
    """Salesforce's case-safe 18-character form: a checksum of the upper-case letters."""
    return id15 + _chunk_code(id15[0:5]) + _chunk_code(id15[5:10]) + _chunk_code(id15[10:15])


@functools.lru_cache(maxsize=65536)
def _chunk_code(chunk: str) -> str:
    bits = 0
    for i, ch in enumerate(chunk):
        if "A" <= ch <= "Z":
            bits |= 1 << i
    return _SUFFIX[bits]


def make_id(prefix: str, number: int) -> str:
    """The ``number``-th id of an object; ids sort (as strings) in creation order."""
    digits = ""
    while number:
        number, rem = divmod(number, 62)
        digits = _BASE62[rem] + digits
    return id18(prefix + "Sb" + digits.rjust(10, "0"))


def normalize_id(value: str) -> str | None:
    """An 18-character id from a 15- or 18-character one (None when it is not an id)."""
    if _ID18.match(value):
        return value if id18(value[:15]) == value else None
    if _ID15.match(value):
        return id18(value)
    return None


# --- values ----------------------------------------------------------------

_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(Z|[+-]\d{2}:?\d{2})?$"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def format_datetime(value: datetime) -> str:
    """``2026-05-01T12:34:56.000+0000``: Salesforce's datetime format, in UTC."""
    if value.utcoffset():
        value = value.astimezone(UTC)
    plain = value.replace(tzinfo=None, microsecond=0).isoformat()
    return f"{plain}.{value.microsecond // 1000:03d}+0000"


def parse_datetime(text: str) -> datetime | None:
    """A datetime from the ISO forms Salesforce accepts (no zone means UTC); None if invalid."""
    m = _DATETIME.match(text)
    if not m:
        return None
    zone = m.group(8) or "Z"
    iso = text[: m.start(7) - 1 if m.group(7) else m.end(6)]
    fraction = (m.group(7) or "0").ljust(6, "0")
    offset = "+00:00" if zone == "Z" else zone[:3] + ":" + zone[-2:]
    try:
        return datetime.fromisoformat(f"{iso}.{fraction}{offset}")
    except ValueError:
        return None


def is_date(text: str) -> bool:
    if not _DATE.match(text):
        return False
    try:
        datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        return False
    return True
