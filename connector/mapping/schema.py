"""The mapping file's model: what admins write in ``mappings/*.yaml``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connector.mapping.filters import FIELD_PATTERN, Filter
from connector.model import ASSISTANCE_CODES, StandardStage

CrmKind = Literal["salesforce", "dynamics"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSource(_Strict):
    """Where one deal value comes from: a CRM field, a constant, or a value table on a field.

    ``{field: Account.Name}``, ``{const: USD}``,
    ``{field: Region__c, table: {EMEA: DE}, default: US}``, ``{field: X, split: ";"}``.
    """

    field: str | None = Field(None, pattern=FIELD_PATTERN)
    const: Any = None
    table: dict[str, Any] | None = None
    default: Any = None
    split: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> FieldSource:
        if (self.field is None) == (self.const is None):
            raise ValueError("give either 'field: <CRM field>' or 'const: <value>', not both")
        if self.table is not None and self.field is None:
            raise ValueError("'table' translates a CRM field's values; add 'field: <CRM field>'")
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
    solutions: FieldSource
    notes: FieldSource | None = None
    campaign_id: FieldSource | None = None


class StageMap(_Strict):
    """CRM stage label → standard stage, and what to do with a stage the file does not name."""

    field: str = Field(pattern=FIELD_PATTERN)
    map: dict[str, StandardStage] = Field(default_factory=dict)
    unmapped: Literal["reject", "by_probability"] = "reject"
    #: the CRM field that says a record is won / closed (derived booleans such as IsWon)
    won_field: str | None = Field(None, pattern=FIELD_PATTERN)
    closed_field: str | None = Field(None, pattern=FIELD_PATTERN)

    @model_validator(mode="after")
    def _no_core_only_stages(self) -> StageMap:
        for label, stage in self.map.items():
            if stage in (StandardStage.ACCEPTED,):
                raise ValueError(
                    f"stage {label!r} maps to Accepted, which only the core sets when an "
                    "incoming deal is accepted; map it to Created, Qualified or later"
                )
        return self


class DealTypeRule(_Strict):
    """Which deal type a record asks for, from CRM fields."""

    #: the field naming the help asked of Microsoft; a value here makes the deal co-sell
    help_field: str | None = Field(None, pattern=FIELD_PATTERN)
    #: CRM value → assistance code; values mapped to null (or absent) mean "no help"
    help_values: dict[str, str | None] = Field(default_factory=dict)
    #: a checkbox that shares the deal with Microsoft sellers without asking for help
    share_field: str | None = Field(None, pattern=FIELD_PATTERN)
    #: a field naming a partner organization to invite (partner-to-partner)
    invite_partner_field: str | None = Field(None, pattern=FIELD_PATTERN)

    @model_validator(mode="after")
    def _codes(self) -> DealTypeRule:
        for crm_value, code in self.help_values.items():
            if code is not None and code not in ASSISTANCE_CODES:
                raise ValueError(
                    f"help value {crm_value!r} maps to {code!r}, which is not an assistance code; "
                    f"use one of {', '.join(ASSISTANCE_CODES)} (or null for no help)"
                )
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


class InboundSettings(_Strict):
    """Whether incoming referrals become CRM opportunities, and how."""

    create_opportunities: bool = False
    stage: str | None = None
    owner_id: str | None = None
    record_type_id: str | None = None
    action_field: str | None = Field(None, pattern=FIELD_PATTERN)
    decline_reason_field: str | None = Field(None, pattern=FIELD_PATTERN)

    @model_validator(mode="after")
    def _stage_needed(self) -> InboundSettings:
        if self.create_opportunities and not self.stage:
            raise ValueError(
                "inbound.create_opportunities is on but inbound.stage is missing; name the "
                "'on hold' stage that new incoming deals get"
            )
        return self


class MappingFile(_Strict):
    """One connection's mapping: selection, stages, fields, deal type, status, inbound."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    version: Literal[1] = 1
    crm: CrmKind
    select: Filter | None = None
    stages: StageMap
    fields: DealFields
    deal_type: DealTypeRule = DealTypeRule()
    status_fields: StatusFields
    inbound: InboundSettings = InboundSettings()

    def crm_fields(self) -> list[str]:
        """Every CRM field the mapping reads, for the adapter's select list."""
        names: list[str] = [self.stages.field]
        for extra in (self.stages.won_field, self.stages.closed_field):
            if extra:
                names.append(extra)
        for value in self.fields.__dict__.values():
            names.extend(_fields_of(value))
        dt = self.deal_type
        names.extend(f for f in (dt.help_field, dt.share_field, dt.invite_partner_field) if f)
        inbound = self.inbound
        names.extend(f for f in (inbound.action_field, inbound.decline_reason_field) if f)
        seen: dict[str, None] = {}
        for n in names:
            seen.setdefault(n, None)
        return list(seen)


def _fields_of(value: Any) -> list[str]:
    if isinstance(value, FieldSource):
        return [value.field] if value.field else []
    if isinstance(value, ContactFields):
        out: list[str] = []
        for part in (value.first_name, value.last_name, value.email, value.phone):
            out.extend(_fields_of(part))
        return out
    return []
