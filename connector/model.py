"""The canonical model: what a deal is, independent of any CRM or of the core's JSON.

Pure data, no I/O, and the ground floor: it imports nothing of the connector, and every
layer above shares its types. Adapters normalise CRM rows into :class:`CrmOpportunity`
(and describe a CRM's stages and fields as :class:`StageInfo` and :class:`CrmField`);
the mapping turns those into :class:`DealDraft` or :class:`Rejection`, selecting
records with a :data:`Filter` that each adapter compiles to its own query language;
the planner compares drafts with what the store knows of the linked referral.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag


class StandardStage(StrEnum):
    """Partner Center's standard sales stages."""

    CREATED = "Created"
    ACCEPTED = "Accepted"
    QUALIFIED = "Qualified"
    DEVELOPED = "Developed"
    PROPOSED = "Proposed"
    NEGOTIATED = "Negotiated"
    WON = "Won"
    LOST = "Lost"

    @property
    def percent(self) -> int:
        return STAGE_PERCENT[self]

    @property
    def is_closed(self) -> bool:
        return self in (StandardStage.WON, StandardStage.LOST)


STAGE_PERCENT: dict[StandardStage, int] = {
    StandardStage.CREATED: 10,
    StandardStage.ACCEPTED: 10,
    StandardStage.QUALIFIED: 20,
    StandardStage.DEVELOPED: 40,
    StandardStage.PROPOSED: 60,
    StandardStage.NEGOTIATED: 80,
    StandardStage.WON: 100,
    StandardStage.LOST: 0,
}


class DealType(StrEnum):
    PRIVATE = "Private"
    CO_SELL = "Co-sell"
    PARTNER_TO_PARTNER = "Partner-to-partner"


class Status(StrEnum):
    #: an enum value of the reference (a referral whose status is not set)
    NONE = "None"
    NEW = "New"
    ACTIVE = "Active"
    CLOSED = "Closed"


class Substatus(StrEnum):
    PENDING = "Pending"
    RECEIVED = "Received"
    ACCEPTED = "Accepted"
    WON = "Won"
    LOST = "Lost"
    DECLINED = "Declined"
    EXPIRED = "Expired"


TERMINAL_SUBSTATUSES = frozenset(
    {Substatus.WON, Substatus.LOST, Substatus.DECLINED, Substatus.EXPIRED}
)

#: the help that can be asked of Microsoft (``inviteContext.assistanceRequestCode``)
ASSISTANCE_CODES = (
    "GeneralOrOther",
    "CustomerTechnicalArchitecture",
    "ProofOfConceptOrDemo",
    "QuotesOrLicensing",
    "PostSalesCustomerSuccess",
    "WorkloadSpecificValueProposition",
)


@dataclass(frozen=True, slots=True)
class CrmOpportunity:
    """One CRM row, normalised: plain values keyed by the CRM's field names.

    Relationship fields are flattened with dots (``Account.BillingCountry``).
    Datetimes are timezone-aware, money is :class:`~decimal.Decimal`.
    ``problems`` names each value the adapter could not read as its field's type
    (the field is kept as the CRM's text); the mapping rejects such a record with them.
    """

    id: str
    modstamp: datetime
    fields: Mapping[str, Any]
    deleted: bool = False
    etag: str | None = None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Contact:
    first_name: str
    last_name: str
    phone: str
    email: str


@dataclass(frozen=True, slots=True)
class Customer:
    name: str
    country: str
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    address_line1: str | None = None
    contacts: tuple[Contact, ...] = ()


#: solution kinds of the seed: the partner's own, Microsoft's, other partners'
SOLUTION_KINDS = ("own", "microsoft", "third_party")
#: ``details.requirements.solutions[].type`` (RR's SolutionType)
SOLUTION_TYPES = ("None", "Category", "Name")
#: the key under which an adapter hands a record's opportunity team to the mapping: a
#: tuple of :class:`Contact` (Salesforce OpportunityTeamMember, Dataverse connections)
TEAM_MEMBERS = "@opportunity_team"


@dataclass(frozen=True, slots=True)
class SolutionRef:
    """A solution that is not the partner's own (Microsoft's, another partner's)."""

    id: str
    kind: str
    type: str


@dataclass(frozen=True, slots=True)
class PartnerDetails:
    """What a partner-to-partner invitation tells each invited partner (the seed's
    "Invite partner" step): their close date, value and currency, notes, the solutions
    they should bring and the help asked of them. Empty parts take the deal's own."""

    close_date: date | None = None
    value: Decimal | None = None
    currency: str | None = None
    notes: str | None = None
    solutions: tuple[str, ...] = ()
    help_code: str | None = None


@dataclass(frozen=True, slots=True)
class DealDraft:
    """The deal a CRM record should be in the core: only fields the CRM owns."""

    crm_id: str
    name: str
    value: Decimal
    currency: str
    close_date: date
    customer: Customer
    team: tuple[Contact, ...]
    solutions: tuple[str, ...]
    stage: StandardStage
    deal_type: DealType = DealType.PRIVATE
    assistance_code: str | None = None
    notes: str | None = None
    campaign_id: str | None = None
    #: partner organizations invited to the deal (partner-to-partner)
    partners: tuple[str, ...] = ()
    #: shared with Microsoft's sellers without asking for help (the "partner-led" deal)
    shared_with_microsoft: bool = False
    #: Microsoft's and other partners' solutions (``solutions`` are the partner's own)
    other_solutions: tuple[SolutionRef, ...] = ()
    #: the ``type`` the partner's own solutions are sent with
    own_solution_type: str = "Name"
    #: what each invited partner is told (partner-to-partner)
    partner_details: PartnerDetails | None = None

    def fingerprint(self) -> str:
        """A stable hash of the mapped outbound fields (the no-echo check).

        The JSON hashed is that of ``dataclasses.asdict(self)`` (stored fingerprints
        depend on it), built field by field: ``asdict`` deep-copies every value and
        cost a fifth of the main thread's time in a first sync.
        """
        fields: dict[str, Any] = {name: getattr(self, name) for name in _DRAFT_FIELDS}
        customer = self.customer
        fields["customer"] = {name: getattr(customer, name) for name in _CUSTOMER_FIELDS}
        fields["customer"]["contacts"] = [_contact_fields(c) for c in customer.contacts]
        fields["team"] = [_contact_fields(c) for c in self.team]
        for name, default in _ADDED_LATER.items():
            if fields[name] == default:
                del fields[name]  # drafts without them hash as before these fields existed
        if "other_solutions" in fields:
            fields["other_solutions"] = [_plain(s) for s in self.other_solutions]
        if self.partner_details is not None:
            fields["partner_details"] = _plain(self.partner_details)
        payload = json.dumps(fields, sort_keys=True, default=str, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _contact_fields(contact: Contact) -> dict[str, Any]:
    return {name: getattr(contact, name) for name in _CONTACT_FIELDS}


def _plain(value: Any) -> dict[str, Any]:
    return {f.name: getattr(value, f.name) for f in dataclass_fields(value)}


_DRAFT_FIELDS = tuple(f.name for f in dataclass_fields(DealDraft))
#: fields left out of the fingerprint at their default (stored fingerprints predate them)
_ADDED_LATER: dict[str, Any] = {
    "partners": (),
    "shared_with_microsoft": False,
    "other_solutions": (),
    "own_solution_type": "Name",
    "partner_details": None,
}
_CUSTOMER_FIELDS = tuple(f.name for f in dataclass_fields(Customer))
_CONTACT_FIELDS = tuple(f.name for f in dataclass_fields(Contact))


#: the code of a "rejection" that only says the mapping leaves the record out (its stage
#: is mapped to ``ignore``): planned as a skip, never a dead letter
STAGE_IGNORED = "stage_ignored"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that cannot become a deal, with every reason at once."""

    crm_id: str
    reasons: tuple[str, ...]
    code: str = "invalid_record"

    @property
    def message(self) -> str:
        return "; ".join(self.reasons)


@dataclass(frozen=True, slots=True)
class ReferralState:
    """What the connector needs to know of one referral in the core."""

    id: str
    engagement_id: str | None
    etag: str | None
    status: Status
    substatus: Substatus | None
    direction: str
    updated: datetime | None
    external_reference_id: str | None = None
    name: str | None = None
    sales_stage: int | None = None
    deal_type: DealType | None = None
    expiration: datetime | None = None
    registration_status: str | None = None
    status_reason: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: listed with ``$select``: ``raw`` holds only the selected fields (read it whole
    #: before using more than the fields above)
    partial: bool = field(default=False, compare=False, repr=False)

    @property
    def is_terminal(self) -> bool:
        return self.status == Status.CLOSED or self.substatus in TERMINAL_SUBSTATUSES


@dataclass(frozen=True, slots=True)
class CrmStatusUpdate:
    """Values to write into one CRM record's status fields (CRM field name → value)."""

    crm_id: str
    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class CrmField:
    """One field of a CRM object as the CRM describes it (``mappings check --against-crm``).

    ``target`` is set for a relationship (Salesforce ``Account`` of ``AccountId``) or a
    lookup (Dataverse ``parentaccountid``): the object it leads to, whose fields a
    mapping reaches as ``Account.Name`` / ``parentaccountid.name``. ``writable`` is
    None when the CRM does not say.
    """

    name: str
    target: str | None = None
    writable: bool | None = None


@dataclass(frozen=True, slots=True)
class StageInfo:
    """One sales stage as the CRM defines it."""

    label: str
    api_name: str
    probability: Decimal | None
    is_closed: bool
    is_won: bool
    active: bool = True
    sort_order: int = 0


@dataclass(frozen=True, slots=True)
class TeamMember:
    """A person on an opportunity's team in the CRM (a user), with the role given there."""

    first_name: str
    last_name: str
    email: str
    phone: str = ""
    role: str = ""


# --- record filters: a mapping's ``select``, compiled by each adapter to SOQL or OData ---
#
# In YAML::
#
#     select:
#       all:
#         - {field: Sync_with_Partner_Center__c, op: eq, value: true}
#         - any:
#             - {field: Amount, op: ge, value: 1000}
#             - not: {field: StageName, op: in, value: [Closed Lost]}

#: model name → key → (description, example): the filters' hover texts in the mapping
#: schema (joined into ``connector.mapping.schema_docs.DOCS``)
FILTER_DOCS: dict[str, dict[str, tuple[str, Any]]] = {
    "Condition": {
        "field": ("The CRM field the condition tests.", "Sync_with_Partner_Center__c"),
        "op": (
            "How: eq, ne, gt, ge, lt, le, in, not_in, or like (% and _ as wildcards).",
            "eq",
        ),
        "value": ("The value (a list for in / not_in).", True),
    },
    "AllOf": {"all": ("Every condition holds.", [{"field": "Amount", "op": "ge", "value": 1000}])},
    "AnyOf": {"any": ("At least one condition holds.", [{"field": "IsWon", "value": True}])},
    "Not": {
        "not": ("The condition does not hold.", {"field": "StageName", "value": "Closed Lost"})
    },
}


def _document(schema: dict[str, Any], model: type) -> None:
    """pydantic's ``json_schema_extra`` hook: a description and an example for each key."""
    docs = FILTER_DOCS.get(model.__name__, {})
    for name, prop in schema.get("properties", {}).items():
        if name in docs:
            description, example = docs[name]
            prop["description"] = description
            prop["examples"] = [example]


Scalar = Union[bool, int, float, str, date, datetime, None]  # noqa: UP007 - pydantic union order
Op = Literal["eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "like"]

#: a field name or relationship path: ``Amount``, ``Account.BillingCountry``
FIELD_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*){0,4}$"


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_document)

    field: str = Field(pattern=FIELD_PATTERN)
    op: Op = "eq"
    value: Scalar | list[Scalar]


class AllOf(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_document)

    all: list[Filter] = Field(min_length=1)


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_document)

    any: list[Filter] = Field(min_length=1)


class Not(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_document)

    not_: Filter = Field(alias="not")


def _filter_kind(value: Any) -> str:
    """Pick the filter form from its keys, so errors speak of one form only."""
    if isinstance(value, dict):
        for key in ("all", "any", "not"):
            if key in value:
                return key
        return "condition"
    if isinstance(value, AllOf):
        return "all"
    if isinstance(value, AnyOf):
        return "any"
    if isinstance(value, Not):
        return "not"
    return "condition"


Filter = Annotated[
    Union[  # noqa: UP007
        Annotated[Condition, Tag("condition")],
        Annotated[AllOf, Tag("all")],
        Annotated[AnyOf, Tag("any")],
        Annotated[Not, Tag("not")],
    ],
    Discriminator(_filter_kind),
]

AllOf.model_rebuild()
AnyOf.model_rebuild()
Not.model_rebuild()
