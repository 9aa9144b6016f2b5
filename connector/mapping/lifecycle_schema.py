"""The mapping's lifecycle blocks: who is on the team, what an invited partner is told,
which solutions are whose, how incoming deals find their customer, are declined and
are closed in the CRM.

Each block defaults to the connector's behaviour before it existed, so a mapping file
that does not name it syncs as it did.
"""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connector.mapping.schema_docs import document
from connector.model import ASSISTANCE_CODES, FIELD_PATTERN
from connector.yaml_source import ModelProblems

#: a field the mapping reads: a name or path, or a Dataverse choice's label (``x@label``)
READ_FIELD_PATTERN = FIELD_PATTERN.removesuffix("$") + "(@label)?$"

SolutionType = Literal["None", "Category", "Name"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=document)


class SolutionTypes(_Strict):
    """The ``type`` each kind of solution is sent with (RR's SolutionType).

    ``Name`` references a solution of the Microsoft catalog (a partner's published
    solution: the partner's own, or another partner's); ``Category`` one of the
    pre-defined solution names (Microsoft's solution areas such as ``CloudMigration``).
    """

    own: SolutionType = "Name"
    microsoft: SolutionType = "Category"
    third_party: SolutionType = "Name"


class TeamSource(_Strict):
    """Where the deal's team comes from, besides ``fields.team_member`` (the owner).

    ``owner``: the owner alone (one member). ``opportunity_team``: the owner and the
    record's opportunity team (Salesforce ``OpportunityTeamMember``, Dataverse
    connections of the opportunity to users), optionally only some roles.
    """

    source: Literal["owner", "opportunity_team"] = "owner"
    #: team roles that count (Salesforce ``TeamMemberRole``, the Dataverse connection
    #: role's name); empty: every member
    roles: tuple[str, ...] = ()


def _code_problems(
    values: dict[str, str | None], where: str
) -> list[tuple[tuple[str | int, ...], str]]:
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for crm_value, code in values.items():
        if code is not None and code not in ASSISTANCE_CODES:
            hint = difflib.get_close_matches(code, ASSISTANCE_CODES, n=1, cutoff=0.5)
            problems.append(
                (
                    (where, crm_value),
                    f"{code!r} is not an assistance code"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + f"; use one of {', '.join(ASSISTANCE_CODES)}, or null for no help",
                )
            )
    return problems


class PartnerInvitationFields(_Strict):
    """What each partner named in ``deal_type.invite_partner_field`` is told (the seed's
    partner-to-partner invitation). A part left out, or empty on a record, is the deal's
    own (its close date, value, currency, notes, solutions)."""

    close_date: str | None = Field(None, pattern=FIELD_PATTERN)
    value: str | None = Field(None, pattern=FIELD_PATTERN)
    currency: str | None = Field(None, pattern=READ_FIELD_PATTERN)
    notes: str | None = Field(None, pattern=FIELD_PATTERN)
    solutions: str | None = Field(None, pattern=FIELD_PATTERN)
    #: separates several solution ids in ``solutions``
    split: str = Field(";", min_length=1)
    #: the help asked of the invited partner, from a field through ``help_values``
    help_field: str | None = Field(None, pattern=READ_FIELD_PATTERN)
    help_values: dict[str, str | None] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _codes(self) -> PartnerInvitationFields:
        problems = _code_problems(self.help_values, "help_values")
        if self.help_values and self.help_field is None:
            problems.append(
                (
                    ("help_values",),
                    "help_values translates the values of help_field, which is missing; "
                    "add help_field: <the CRM field naming the help asked of the partner>",
                )
            )
        if problems:
            raise ModelProblems(problems)
        return self

    def named(self) -> dict[str, str | None]:
        """Setting → CRM field it reads."""
        return {
            "close_date": self.close_date,
            "value": self.value,
            "currency": self.currency,
            "notes": self.notes,
            "solutions": self.solutions,
            "help_field": self.help_field,
        }


CustomerPolicy = Literal["none", "match", "match_or_create"]


class CustomerSettings(_Strict):
    """Whether an incoming deal's opportunity is tied to the customer's account and contact.

    ``none``: not tied (the customer stays in the core). ``match``: tied to an existing
    account (same name and, where both have them, the same country, city and postal
    code) and contact (same email); nothing is created. ``match_or_create``: created
    when no existing one matches. The account and contact are the records behind the
    relationship fields the mapping reads the customer from (``Account.Name``,
    ``Primary_Contact__r.Email``, ``parentaccountid.name``, ``parentcontactid.emailaddress1``).
    """

    account: CustomerPolicy = "none"
    contact: CustomerPolicy = "none"


class CloseSettings(_Strict):
    """How declined and expired incoming deals are closed in the CRM (closed lost).

    ``declined`` / ``expired``: the CRM's lost stage (Salesforce) or lost status reason
    (Dataverse ``statuscode`` label such as ``Canceled`` or ``Out-Sold``); left out, the
    record stays as it is. ``reason_field`` receives the reason (the decline reason sent,
    or why the deal expired).
    """

    declined: str | None = None
    expired: str | None = None
    reason_field: str | None = Field(None, pattern=FIELD_PATTERN)
