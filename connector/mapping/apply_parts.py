"""Parts of a deal the mapping's lifecycle blocks add (pure, no I/O).

- :func:`shared_with_microsoft`: ``deal_type.share_field`` (the "partner-led" deal:
  shared with Microsoft's sellers, no help asked);
- :func:`other_solutions`: Microsoft's and other partners' solutions, with the ``type``
  the mapping gives each kind;
- :func:`team_of`: the owner and the record's opportunity team (several members);
- :func:`partner_details`: what each invited partner is told.

Each function reads through the record's reader
(:class:`connector.mapping.apply.RecordReader`) and adds a problem to it for every bad
value, naming the field and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from connector.mapping.schema import FieldSource, MappingFile
from connector.model import TEAM_MEMBERS, Contact, PartnerDetails, SolutionRef, TeamMember

if TYPE_CHECKING:
    from connector.mapping.apply import RecordReader

_TRUE = frozenset({"true", "yes", "1"})


def flag(value: Any) -> bool:
    """A CRM checkbox: booleans, and the texts ``true``/``yes``/``1``."""
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return value is True or (isinstance(value, int) and value == 1)


def shared_with_microsoft(r: RecordReader, mapping: MappingFile) -> bool:
    """Whether the record ticks ``deal_type.share_field``."""
    field = mapping.deal_type.share_field
    return field is not None and flag(r.record.fields.get(field))


def other_solutions(
    r: RecordReader, mapping: MappingFile, own: Iterable[str]
) -> tuple[SolutionRef, ...]:
    """Microsoft's and other partners' solutions of the record (each id once, own first)."""
    f, types = mapping.fields, mapping.solution_types
    seen = set(own)
    refs: list[SolutionRef] = []
    for kind, source, kind_type in (
        ("microsoft", f.microsoft_solutions, types.microsoft),
        ("third_party", f.third_party_solutions, types.third_party),
    ):
        if source is None:
            continue
        for ident in r.solutions(source, required=False):
            if ident not in seen:
                seen.add(ident)
                refs.append(SolutionRef(ident, kind, kind_type))
    return tuple(refs)


def team_of(r: RecordReader, mapping: MappingFile, owner: Contact) -> tuple[Contact, ...]:
    """The owner, then the opportunity team's members (by email, each once).

    A member the CRM gives no first name, last name or email is left out (Partner
    Center needs them to name a team member); a missing phone is sent empty.
    """
    rule = mapping.fields.team
    if rule.source == "owner":
        return (owner,)
    members = r.record.fields.get(TEAM_MEMBERS) or ()
    roles = {role.casefold() for role in rule.roles}
    team = [owner]
    seen = {owner.email.casefold()}
    for member in members:
        if not isinstance(member, TeamMember):
            continue
        if roles and member.role.casefold() not in roles:
            continue
        email = member.email.strip()
        if not (member.first_name.strip() and member.last_name.strip() and email):
            continue
        if email.casefold() in seen:
            continue
        seen.add(email.casefold())
        team.append(
            Contact(
                member.first_name.strip(), member.last_name.strip(), member.phone.strip(), email
            )
        )
    return tuple(team)


def partner_details(r: RecordReader, mapping: MappingFile) -> PartnerDetails | None:
    """What each invited partner is told, from ``deal_type.partner_details``."""
    rule = mapping.deal_type.partner_details
    if rule is None:
        return None

    def given(field: str | None, split: str | None = None) -> FieldSource | None:
        """The field as a source when the record has a value in it (else the deal's own)."""
        value = r.record.fields.get(field) if field else None
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return FieldSource(field=field, split=split)

    close = given(rule.close_date)
    amount = given(rule.value)
    money = given(rule.currency)
    listed = given(rule.solutions, rule.split)
    notes = r.text(
        given(rule.notes), "the notes for the invited partner", required=False, multiline=True
    )
    close_date = r.day(close) if close is not None else None
    value = r.amount(amount) if amount is not None else None
    currency = r.currency(money) if money is not None else None
    solutions = r.solutions(listed, required=False) if listed is not None else ()
    code: str | None = None
    if rule.help_field is not None and given(rule.help_field) is not None:
        raw = str(r.record.fields.get(rule.help_field))
        if raw not in rule.help_values:
            r.problems.append(
                f"{rule.help_field} is {raw[:60]!r}, which deal_type.partner_details.help_values "
                "does not list; add it there (with an assistance code, or null for no help)"
            )
        else:
            code = rule.help_values[raw]
    details = PartnerDetails(close_date, value, currency, notes, tuple(solutions), code)
    return None if details == PartnerDetails() else details
