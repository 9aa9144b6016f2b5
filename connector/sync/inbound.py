"""Incoming deals as CRM values (pure); the steps with I/O are in connector.sync.steps.

- :func:`opportunity_values` (pure): an incoming referral as the values of a new CRM
  opportunity (the mapping's plain fields, the "on hold" stage, the status fields).
- :func:`with_referral_customer` (pure): a record of an incoming deal with the
  customer the core holds filled in where the CRM cannot hold it (relationship
  fields such as ``Account.Name``): the sender owns the customer profile.

:class:`connector.sync.steps.LifecycleSteps` creates the opportunities, answers the
deals and submits registrations.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from connector.dealcore.options import DEFAULT_OPTIONS, MicrosoftReferralRule
from connector.mapping.schema import ContactFields, FieldSource, MappingFile
from connector.model import (
    AllOf,
    Condition,
    CrmOpportunity,
    Filter,
    ReferralState,
    Status,
)
from connector.state.store import Link

log = logging.getLogger(__name__)

#: Salesforce's Opportunity.Name holds 120 characters; a referral name may be longer
_SALESFORCE_NAME = 120


def is_new_incoming(
    referral: ReferralState, rule: MicrosoftReferralRule = DEFAULT_OPTIONS.microsoft
) -> bool:
    """A deal sent to the partner that waits for an answer (not Microsoft's own referral)."""
    return (
        not rule.matches(referral.raw)
        and referral.direction == "Incoming"
        and referral.status == Status.NEW
    )


#: names the Dataverse adapter derives from other columns (connector/crm/dynamics/rows.py)
_DERIVED = frozenset({"stage", "is_won", "is_closed"})


def writable(field: str | None) -> bool:
    """A plain column of the opportunity itself (not a relationship path, a label view or
    a value the adapter derives)."""
    return bool(field) and "." not in str(field) and "@" not in str(field) and field not in _DERIVED


def _reverse(source: FieldSource, value: Any) -> Any:
    """The CRM value a mapped value came from, through the source's value table."""
    if source.table is None:
        return value
    for crm_value, mapped in source.table.items():
        if mapped == value:
            return crm_value
    return None


def _put(values: dict[str, Any], source: FieldSource | None, value: Any) -> None:
    if source is None or value is None or value == "" or not writable(source.field):
        return
    assert source.field is not None
    crm_value = _reverse(source, value)
    if crm_value is not None:
        values.setdefault(source.field, crm_value)


def _select_values(select: Filter | None) -> dict[str, Any]:
    """Field values that make a new record part of the mapping's selection (``eq`` terms)."""
    if isinstance(select, Condition):
        if select.op == "eq" and writable(select.field):
            return {select.field: select.value}
        return {}
    if isinstance(select, AllOf):
        out: dict[str, Any] = {}
        for part in select.all:
            out.update(_select_values(part))
        return out
    return {}


def _day(value: Any) -> date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _amount(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def solutions_by_field(
    mapping: MappingFile, solutions: Sequence[Any]
) -> list[tuple[FieldSource, list[str]]]:
    """A referral's solutions by the mapped field of their kind: those sent with the type
    the mapping gives Microsoft's solutions go to ``microsoft_solutions`` (when mapped),
    the others to ``solutions`` (own and third-party look alike in a referral)."""
    f = mapping.fields
    own: list[str] = []
    microsoft: list[str] = []
    for item in solutions:
        if not isinstance(item, Mapping) or not item.get("id"):
            continue
        is_microsofts = (
            f.microsoft_solutions is not None
            and mapping.solution_types.microsoft != mapping.solution_types.own
            and item.get("type") == mapping.solution_types.microsoft
        )
        (microsoft if is_microsofts else own).append(str(item["id"]))
    found = [(f.solutions, own)]
    if f.microsoft_solutions is not None:
        found.append((f.microsoft_solutions, microsoft))
    return found


def _contact_values(values: dict[str, Any], fields: ContactFields | None, person: Any) -> None:
    if fields is None or not isinstance(person, Mapping):
        return
    _put(values, fields.first_name, person.get("firstName"))
    _put(values, fields.last_name, person.get("lastName"))
    _put(values, fields.email, person.get("email"))
    _put(values, fields.phone, person.get("phoneNumber"))


def opportunity_values(
    referral: ReferralState, mapping: MappingFile, status: Mapping[str, Any]
) -> dict[str, Any]:
    """The values of the CRM opportunity that holds ``referral`` (an incoming deal).

    Only plain fields of the opportunity are written: customer values mapped to
    relationship fields (``Account.Name``) stay in the core and are read from there
    (:func:`with_referral_customer`). ``status`` are the status fields' values.
    """
    raw = referral.raw
    f = mapping.fields
    values: dict[str, Any] = dict(status)
    name = referral.name or "Incoming referral"
    if mapping.crm == "salesforce":
        name = name[:_SALESFORCE_NAME]
    _put(values, f.name, name)
    details = raw.get("details") if isinstance(raw.get("details"), Mapping) else {}
    assert isinstance(details, Mapping)
    _put(values, f.value, _amount(details.get("dealValue")))
    _put(values, f.currency, details.get("currency"))
    _put(values, f.close_date, _day(details.get("closingDateTime")))
    _put(values, f.notes, details.get("notes"))
    _put(values, f.campaign_id, raw.get("campaignId"))
    requirements = details.get("requirements")
    solutions = requirements.get("solutions") if isinstance(requirements, Mapping) else None
    if isinstance(solutions, list):
        for source, ids in solutions_by_field(mapping, solutions):
            _put(values, source, (source.split or ";").join(ids) or None)
    profile = raw.get("customerProfile")
    if isinstance(profile, Mapping):
        address = profile.get("address") if isinstance(profile.get("address"), Mapping) else {}
        assert isinstance(address, Mapping)
        _put(values, f.customer_name, profile.get("name"))
        _put(values, f.customer_country, address.get("country"))
        _put(values, f.customer_city, address.get("city"))
        _put(values, f.customer_state, address.get("state"))
        _put(values, f.customer_postal_code, address.get("postalCode"))
        _put(values, f.customer_address_line1, address.get("addressLine1"))
        team = profile.get("team")
        if isinstance(team, list) and team:
            _contact_values(values, f.customer_contact, team[0])
    invite = raw.get("inviteContext")
    code = invite.get("assistanceRequestCode") if isinstance(invite, Mapping) else None
    help_field = mapping.deal_type.help_field
    if code and writable(help_field):
        assert help_field is not None
        labels = [k for k, v in mapping.deal_type.help_values.items() if v == code]
        if labels:
            values.setdefault(help_field, labels[0])
    inbound = mapping.inbound
    if inbound.stage and writable(mapping.stages.field):
        values.setdefault(mapping.stages.field, inbound.stage)
    if inbound.owner_id:
        values.setdefault("OwnerId" if mapping.crm == "salesforce" else "ownerid", inbound.owner_id)
    if inbound.record_type_id and mapping.crm == "salesforce":
        values.setdefault("RecordTypeId", inbound.record_type_id)
    for field, value in _select_values(mapping.select).items():
        values.setdefault(field, value)
    return values


def _fill(fields: dict[str, Any], source: FieldSource | None, value: Any) -> None:
    if source is None or source.field is None or value in (None, ""):
        return
    current = fields.get(source.field)
    if current is None or (isinstance(current, str) and not current.strip()):
        fields[source.field] = _reverse(source, value)


def with_referral_customer(
    record: CrmOpportunity, mapping: MappingFile, link: Link | None
) -> CrmOpportunity:
    """``record`` with the customer of its incoming deal filled in where the CRM left it empty.

    The customer of a deal sent to the partner comes from the sender; the CRM may not
    be able to hold it (an opportunity created by the connector has no account). Only
    empty mapped customer fields are filled, from the referral as last sent or read.
    """
    if link is None or link.direction != "Incoming" or not link.sent_body:
        return record
    profile = link.sent_body.get("customerProfile")
    if not isinstance(profile, Mapping):
        return record
    f = mapping.fields
    fields = dict(record.fields)
    address = profile.get("address") if isinstance(profile.get("address"), Mapping) else {}
    assert isinstance(address, Mapping)
    _fill(fields, f.customer_name, profile.get("name"))
    _fill(fields, f.customer_country, address.get("country"))
    _fill(fields, f.customer_city, address.get("city"))
    _fill(fields, f.customer_state, address.get("state"))
    _fill(fields, f.customer_postal_code, address.get("postalCode"))
    _fill(fields, f.customer_address_line1, address.get("addressLine1"))
    team = profile.get("team")
    contact = f.customer_contact
    if contact is not None and isinstance(team, list) and team and isinstance(team[0], Mapping):
        person = team[0]
        parts = (contact.first_name, contact.last_name, contact.email, contact.phone)
        if all(p.field is None or fields.get(p.field) in (None, "") for p in parts):
            _fill(fields, contact.first_name, person.get("firstName"))
            _fill(fields, contact.last_name, person.get("lastName"))
            _fill(fields, contact.email, person.get("email"))
            _fill(fields, contact.phone, person.get("phoneNumber"))
    # values the CRM cannot hold on the opportunity itself (a related row, a label view)
    details = link.sent_body.get("details")
    if isinstance(details, Mapping) and not writable(f.currency.field):
        _fill(fields, f.currency, details.get("currency"))
    invite = link.sent_body.get("inviteContext")
    code = invite.get("assistanceRequestCode") if isinstance(invite, Mapping) else None
    help_field = mapping.deal_type.help_field
    if code and help_field and not writable(help_field) and fields.get(help_field) in (None, ""):
        labels = [k for k, v in mapping.deal_type.help_values.items() if v == code]
        if labels:
            fields[help_field] = labels[0]
    if fields == dict(record.fields):
        return record
    return replace(record, fields=fields)
