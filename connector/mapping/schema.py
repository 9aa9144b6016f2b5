"""The mapping file's model: what admins write in ``mappings/*.yaml``."""

from __future__ import annotations

import difflib
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from connector.mapping.lifecycle_schema import (
    READ_FIELD_PATTERN,
    CloseSettings,
    CustomerSettings,
    PartnerInvitationFields,
    SolutionTypes,
    TeamSource,
)
from connector.mapping.schema_docs import document
from connector.model import ASSISTANCE_CODES, FIELD_PATTERN, Filter, StandardStage
from connector.yaml_source import ModelProblems

CrmKind = Literal["salesforce", "dynamics"]

__all__ = ["READ_FIELD_PATTERN", "MappingFile"]


def _reused(named: dict[str, str | None], block: str) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems for settings of one block that name a CRM field an earlier setting already uses."""
    first: dict[str, str] = {}
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for name, crm_field in named.items():
        if crm_field is None:
            continue
        if crm_field in first:
            problems.append(
                (
                    (name,),
                    f"{crm_field} is already used for {block}.{first[crm_field]}; "
                    "each setting here needs a CRM field of its own",
                )
            )
        else:
            first[crm_field] = name
    return problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=document)


class StageTarget(StrEnum):
    """What a CRM stage becomes: a standard stage a CRM may set, or ``ignore``.

    Accepted is not one of them: only Partner Center sets it, when an incoming deal
    is accepted. ``ignore`` leaves the records in that stage out of the sync (each is
    skipped as ``stage_ignored``).
    """

    CREATED = "Created"
    QUALIFIED = "Qualified"
    DEVELOPED = "Developed"
    PROPOSED = "Proposed"
    NEGOTIATED = "Negotiated"
    WON = "Won"
    LOST = "Lost"
    IGNORE = "ignore"


_TARGETS = ", ".join(t.value for t in StageTarget if t is not StageTarget.IGNORE)


def _stage_target(value: Any) -> Any:
    """Explain the two targets people write that are not allowed, before the enum does."""
    if value is None:
        raise ValueError(
            f"this stage is mapped to nothing; write one of {_TARGETS}, or ignore to leave "
            "records in this stage out of the sync"
        )
    if value == StandardStage.ACCEPTED.value:
        raise ValueError(
            "Accepted is set only by Partner Center, when an incoming deal is accepted; "
            "map this stage to Created, Qualified or later (or ignore it)"
        )
    return value


#: the value of one ``stages.map`` entry
MappedStage = Annotated[StageTarget, BeforeValidator(_stage_target)]


class FieldSource(_Strict):
    """Where one deal value comes from: a CRM field, a constant, or a value table on a field.

    ``{field: Account.Name}``, ``{const: USD}``,
    ``{field: Region__c, table: {EMEA: DE}, default: US}``, ``{field: X, split: ";"}``.
    """

    field: str | None = Field(None, pattern=READ_FIELD_PATTERN)
    const: Any = None
    table: dict[str, Any] | None = None
    default: Any = None
    split: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> FieldSource:
        if self.field is not None and self.const is not None:
            raise ModelProblems(
                [(("const",), "give 'field' or 'const', not both: delete one of them")]
            )
        if self.field is None and self.const is None:
            raise ValueError(
                "say where the value comes from: add 'field: <CRM field>' or 'const: <value>'"
            )
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.field is None:
            for key in ("table", "default", "split"):
                if getattr(self, key) is not None:
                    problems.append(
                        (
                            (key,),
                            f"'{key}' works on a CRM field's value, not on a constant; "
                            "delete it or use 'field: <CRM field>' instead of 'const'",
                        )
                    )
        if self.split == "":
            problems.append((("split",), '\'split\' needs a separator such as ";" or ","'))
        if problems:
            raise ModelProblems(problems)
        return self


class ContactFields(_Strict):
    first_name: FieldSource
    last_name: FieldSource
    email: FieldSource
    phone: FieldSource


class DealFields(_Strict):
    """How each deal field is filled."""

    name: FieldSource
    value: FieldSource
    currency: FieldSource
    close_date: FieldSource
    customer_name: FieldSource
    customer_country: FieldSource
    customer_city: FieldSource | None = None
    customer_state: FieldSource | None = None
    customer_postal_code: FieldSource | None = None
    customer_address_line1: FieldSource | None = None
    customer_contact: ContactFields | None = None
    team_member: ContactFields
    #: where the rest of the team comes from (the owner alone by default)
    team: TeamSource = TeamSource()
    #: the partner's own solutions (the co-sell target)
    solutions: FieldSource
    #: Microsoft's solutions and other partners' (the seed's three kinds of solution)
    microsoft_solutions: FieldSource | None = None
    third_party_solutions: FieldSource | None = None
    notes: FieldSource | None = None
    campaign_id: FieldSource | None = None


class StageMap(_Strict):
    """CRM stage label → standard stage, and what to do with a stage the file does not name."""

    field: str = Field(pattern=READ_FIELD_PATTERN)
    map: dict[str, MappedStage] = Field(default_factory=dict)
    unmapped: Literal["reject", "by_probability"] = "reject"
    #: the CRM field that says a record is won / closed (derived booleans such as IsWon)
    won_field: str | None = Field(None, pattern=FIELD_PATTERN)
    closed_field: str | None = Field(None, pattern=FIELD_PATTERN)

    @property
    def mapped(self) -> dict[str, StandardStage]:
        """CRM stage label → standard stage (the stages not ignored)."""
        return {
            label: StandardStage(target.value)
            for label, target in self.map.items()
            if target is not StageTarget.IGNORE
        }

    @property
    def ignored(self) -> frozenset[str]:
        """The CRM stage labels whose records are left out of the sync."""
        return frozenset(label for label, t in self.map.items() if t is StageTarget.IGNORE)

    @model_validator(mode="after")
    def _consistent(self) -> StageMap:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if not self.map and self.unmapped == "reject":
            problems.append(
                (
                    ("map",),
                    "no stage is mapped and unmapped stages are rejected, so every open deal "
                    "would be rejected; list your stages under map, or set "
                    "unmapped: by_probability",
                )
            )
        if self.won_field is not None and self.won_field == self.closed_field:
            problems.append(
                (
                    ("closed_field",),
                    f"won_field and closed_field are both {self.won_field}; closed_field says "
                    "whether a deal is closed at all (won or lost): use a different field",
                )
            )
        if problems:
            raise ModelProblems(problems)
        return self


class DealTypeRule(_Strict):
    """Which deal type a record asks for, from CRM fields."""

    #: the field naming the help asked of Microsoft; a value here makes the deal co-sell
    help_field: str | None = Field(None, pattern=READ_FIELD_PATTERN)
    #: CRM value → assistance code; values mapped to null (or absent) mean "no help"
    help_values: dict[str, str | None] = Field(
        default_factory=dict,
        # the schema says what the check below says: an assistance code, or null
        json_schema_extra={
            "additionalProperties": {"anyOf": [{"enum": list(ASSISTANCE_CODES)}, {"type": "null"}]}
        },
    )
    #: a checkbox that shares the deal with Microsoft sellers without asking for help
    share_field: str | None = Field(None, pattern=FIELD_PATTERN)
    #: a field naming partner organizations the seller wants invited; never sent (no
    #: documented target type names a partner), the record is told to invite them by hand
    invite_partner_field: str | None = Field(None, pattern=FIELD_PATTERN)
    #: separates several partner organization ids in ``invite_partner_field``
    partner_split: str = Field(";", min_length=1)
    #: what each invited partner is told (close date, value, notes, solutions, help)
    partner_details: PartnerInvitationFields | None = None
    #: a checkbox asking to register a won, eligible deal with Microsoft
    register_field: str | None = Field(None, pattern=FIELD_PATTERN)

    @model_validator(mode="after")
    def _codes(self) -> DealTypeRule:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for crm_value, code in self.help_values.items():
            if code is not None and code not in ASSISTANCE_CODES:
                hint = difflib.get_close_matches(code, ASSISTANCE_CODES, n=1, cutoff=0.5)
                problems.append(
                    (
                        ("help_values", crm_value),
                        f"{code!r} is not an assistance code"
                        + (f" (did you mean {hint[0]!r}?)" if hint else "")
                        + f"; use one of {', '.join(ASSISTANCE_CODES)}, or null for no help",
                    )
                )
        if self.help_values and self.help_field is None:
            problems.append(
                (
                    ("help_values",),
                    "help_values translates the values of help_field, which is missing; "
                    "add help_field: <the CRM field asking for Microsoft's help>",
                )
            )
        named = {
            "help_field": self.help_field,
            "share_field": self.share_field,
            "invite_partner_field": self.invite_partner_field,
            "register_field": self.register_field,
        }
        problems.extend(_reused(named, "deal_type"))
        if problems:
            raise ModelProblems(problems)
        return self


class StatusFields(_Strict):
    """The CRM fields that receive the core's view of the deal."""

    referral_id: str = Field(pattern=FIELD_PATTERN)
    referral_link: str | None = Field(None, pattern=FIELD_PATTERN)
    status: str | None = Field(None, pattern=FIELD_PATTERN)
    sync_error: str | None = Field(None, pattern=FIELD_PATTERN)
    microsoft_status: str | None = Field(None, pattern=FIELD_PATTERN)
    expiration: str | None = Field(None, pattern=FIELD_PATTERN)
    days_to_expiry: str | None = Field(None, pattern=FIELD_PATTERN)
    registration_eligible: str | None = Field(None, pattern=FIELD_PATTERN)
    registration_status: str | None = Field(None, pattern=FIELD_PATTERN)
    direction: str | None = Field(None, pattern=FIELD_PATTERN)
    last_sync: str | None = Field(None, pattern=FIELD_PATTERN)
    #: notes Microsoft and other partners wrote on the deal (never the CRM's own)
    received_notes: str | None = Field(None, pattern=FIELD_PATTERN)

    @model_validator(mode="after")
    def _distinct(self) -> StatusFields:
        problems = _reused(self.named(), "status_fields")
        if problems:
            raise ModelProblems(problems)
        return self

    def named(self) -> dict[str, str | None]:
        """Status name → CRM field, in file order."""
        return {name: getattr(self, name) for name in type(self).model_fields}


class InboundSettings(_Strict):
    """Whether incoming referrals become CRM opportunities, and how."""

    create_opportunities: bool = False
    stage: str | None = None
    owner_id: str | None = None
    record_type_id: str | None = None
    action_field: str | None = Field(None, pattern=READ_FIELD_PATTERN)
    decline_reason_field: str | None = Field(None, pattern=READ_FIELD_PATTERN)
    #: the reasons a seller may pick (the CRM's value → the ``statusReason`` sent); empty:
    #: the field's text is sent as it is
    decline_reasons: dict[str, str] = Field(default_factory=dict)
    #: tie an incoming deal's opportunity to the customer's account and contact
    customer: CustomerSettings = CustomerSettings()
    #: close declined and expired incoming deals in the CRM
    close: CloseSettings = CloseSettings()

    @model_validator(mode="after")
    def _stage_needed(self) -> InboundSettings:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for crm_value, reason in self.decline_reasons.items():
            if not str(reason).strip():
                problems.append(
                    (
                        ("decline_reasons", crm_value),
                        "the reason sent to Partner Center is empty; write the text to send",
                    )
                )
        if self.decline_reasons and self.decline_reason_field is None:
            problems.append(
                (
                    ("decline_reasons",),
                    "decline_reasons translates the values of decline_reason_field, which is "
                    "missing; add decline_reason_field: <the CRM picklist of reasons>",
                )
            )
        if self.create_opportunities and not self.stage:
            problems.append(
                (
                    ("create_opportunities",),
                    "create_opportunities is on but inbound.stage is missing; add stage: "
                    "<the CRM stage new incoming deals start in>",
                )
            )
        named = {
            "action_field": self.action_field,
            "decline_reason_field": self.decline_reason_field,
        }
        problems.extend(_reused(named, "inbound"))
        if problems:
            raise ModelProblems(problems)
        return self


class MappingFile(_Strict):
    """One connection's mapping: selection, stages, fields, deal type, status, inbound."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, json_schema_extra=document
    )

    version: Literal[1] = 1
    crm: CrmKind
    select: Filter | None = None
    stages: StageMap
    fields: DealFields
    deal_type: DealTypeRule = DealTypeRule()
    #: the ``type`` each kind of solution is sent with
    solution_types: SolutionTypes = SolutionTypes()
    status_fields: StatusFields
    inbound: InboundSettings = InboundSettings()
    #: what becomes of the referral of a CRM record that was deleted or purged, once the
    #: periodic reconciliation finds it gone: ``flag`` keeps it as it is and opens a dead
    #: letter for an operator; ``close_lost`` closes it as Lost in Partner Center
    on_record_deleted: Literal["flag", "close_lost"] = Field(
        "flag",
        description=(
            "What becomes of the referral of a CRM record that was deleted or purged: "
            "flag (a dead letter for an operator, the referral left as it is) or "
            "close_lost (the referral is closed as Lost)"
        ),
    )

    @model_validator(mode="after")
    def _fields_do_not_collide(self) -> MappingFile:
        from connector.mapping.cross_checks import cross_block_problems

        problems = cross_block_problems(self.model_dump(mode="json", by_alias=True))
        if problems:
            raise ModelProblems(problems)
        return self

    def read_fields(self) -> dict[str, str]:
        """Every CRM field the mapping reads → the first setting that reads it."""
        named: list[tuple[str, str | None]] = [
            ("stages.field", self.stages.field),
            ("stages.won_field", self.stages.won_field),
            ("stages.closed_field", self.stages.closed_field),
        ]
        for key, value in self.fields.__dict__.items():
            if isinstance(value, FieldSource):
                named.append((f"fields.{key}", value.field))
            elif isinstance(value, ContactFields):
                for part, source in value.__dict__.items():
                    named.append((f"fields.{key}.{part}", source.field))
        dt, inbound = self.deal_type, self.inbound
        if dt.partner_details is not None:
            for part, crm_field in dt.partner_details.named().items():
                named.append((f"deal_type.partner_details.{part}", crm_field))
        named += [
            ("deal_type.help_field", dt.help_field),
            ("deal_type.share_field", dt.share_field),
            ("deal_type.invite_partner_field", dt.invite_partner_field),
            ("deal_type.register_field", dt.register_field),
            ("inbound.action_field", inbound.action_field),
            ("inbound.decline_reason_field", inbound.decline_reason_field),
        ]
        out: dict[str, str] = {}
        for where, crm_field in named:
            if crm_field:
                out.setdefault(crm_field, where)
        return out

    def crm_fields(self) -> list[str]:
        """Every CRM field the mapping reads, for the adapter's select list."""
        return list(self.read_fields())
