"""Applying a mapping to one CRM record: a :class:`DealDraft` or a :class:`Rejection`.

Pure: no I/O, no clock. Every problem of a record is reported at once, each
saying which CRM field is wrong and how to fix it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import pycountry

from connector.mapping.apply_parts import (
    other_solutions,
    partner_details,
    shared_with_microsoft,
    team_of,
)
from connector.mapping.schema import ContactFields, FieldSource, MappingFile
from connector.model import (
    STAGE_IGNORED,
    Contact,
    CrmOpportunity,
    Customer,
    DealDraft,
    DealType,
    Rejection,
    StageInfo,
    StandardStage,
)

MAX_NAME = 255
MAX_NOTES = 4000
MAX_SOLUTIONS = 50
MAX_VALUE = Decimal("1e12")
_SOLUTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_PARTNER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
#: ISO 4217 codes that are not currencies a deal can be valued in (testing, metals, units)
_NOT_DEAL_CURRENCIES = frozenset(
    {"XXX", "XTS", "XAU", "XAG", "XPD", "XPT", "XDR", "XBA", "XBB", "XBC", "XBD", "XSU", "XUA"}
)
#: C0 (but newline and tab), DEL and C1 (U+0080-U+009F: e.g. U+009B is a terminal's
#: CSI, the one-character ESC [): control characters, never text a deal carries
_CONTROL = (
    {c for c in map(chr, range(32)) if c not in "\n\t"}
    | {chr(127)}
    | set(map(chr, range(0x80, 0xA0)))
)

#: standard stage by CRM probability (the lower bound of each band)
_PROBABILITY_BANDS = (
    (80, StandardStage.NEGOTIATED),
    (60, StandardStage.PROPOSED),
    (40, StandardStage.DEVELOPED),
    (20, StandardStage.QUALIFIED),
    (0, StandardStage.CREATED),
)


def stage_by_probability(probability: Decimal) -> StandardStage:
    for floor, stage in _PROBABILITY_BANDS:
        if probability >= floor:
            return stage
    return StandardStage.CREATED


def clean_text(value: str, *, multiline: bool = False) -> str:
    """Drop control characters (keeping newlines and tabs in multi-line text), normalise."""
    text = unicodedata.normalize("NFC", value)
    if text.isprintable():  # the common case: nothing to drop, only spaces to fold
        return text.strip() if multiline else " ".join(text.split())
    if multiline:
        return "".join(c for c in text if c not in _CONTROL).strip()
    return " ".join("".join(c if c not in _CONTROL else " " for c in text).split())


class RecordReader:
    """Reads mapped values of one record and collects every problem."""

    def __init__(self, record: CrmOpportunity) -> None:
        self.record = record
        self.problems: list[str] = []

    def raw(self, source: FieldSource) -> Any:
        if source.field is None:
            return source.const
        value = self.record.fields.get(source.field)
        if isinstance(value, str) and not value.strip():
            value = None
        if source.table is not None and value is not None:
            key = str(value)
            if key in source.table:
                value = source.table[key]
            elif source.default is not None:
                value = source.default
            else:
                self.problems.append(
                    f"{source.field} is {key!r}, which the mapping's value table does not list; "
                    "add it to the table or give the table a default"
                )
                return None
        if value is None:
            value = source.default
        return value

    def text(
        self,
        source: FieldSource | None,
        label: str,
        *,
        required: bool,
        limit: int = MAX_NAME,
        multiline: bool = False,
    ) -> str | None:
        if source is None:
            return None
        value = self.raw(source)
        if value is None:
            if required:
                self.problems.append(f"{label} is empty ({_where(source)}); fill it in")
            return None
        text = clean_text(str(value), multiline=multiline)
        if not text and required:
            self.problems.append(f"{label} is empty ({_where(source)}); fill it in")
            return None
        if len(text) > limit:
            self.problems.append(
                f"{label} is {len(text):,} characters long ({_where(source)}); "
                f"the core accepts at most {limit:,}: shorten it"
            )
            return None
        return text

    def amount(self, source: FieldSource) -> Decimal | None:
        value = self.raw(source)
        if value is None:
            self.problems.append(f"the deal value is empty ({_where(source)}); enter an amount")
            return None
        try:
            amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
        except InvalidOperation:
            self.problems.append(
                f"the deal value {str(value)[:40]!r} ({_where(source)}) is not a number"
            )
            return None
        if not amount.is_finite():
            self.problems.append(f"the deal value ({_where(source)}) is not a finite number")
            return None
        if amount < 0:
            self.problems.append(
                f"the deal value {amount} ({_where(source)}) is negative; enter 0 or more"
            )
            return None
        if amount > MAX_VALUE:
            self.problems.append(f"the deal value {amount} ({_where(source)}) is implausibly large")
            return None
        return amount

    def currency(self, source: FieldSource) -> str | None:
        value = self.text(source, "the currency", required=True)
        if value is None:
            return None
        code = value.upper()
        if (
            len(code) != 3
            or code in _NOT_DEAL_CURRENCIES
            or pycountry.currencies.get(alpha_3=code) is None
        ):
            self.problems.append(
                f"the currency {value[:20]!r} ({_where(source)}) is not an ISO 4217 code such as USD or EUR"
            )
            return None
        return code

    def day(self, source: FieldSource) -> date | None:
        value = self.raw(source)
        if value is None:
            self.problems.append(
                f"the close date is empty ({_where(source)}); set an estimated close date"
            )
            return None
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value)[:10])
        except ValueError:
            self.problems.append(
                f"the close date {str(value)[:30]!r} ({_where(source)}) is not a date"
            )
            return None

    def country(self, source: FieldSource) -> str | None:
        value = self.text(source, "the customer's country", required=True)
        if value is None:
            return None
        code = value.upper()
        if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
            self.problems.append(
                f"the customer's country {value[:40]!r} ({_where(source)}) is not an ISO 3166 "
                "two-letter code such as US or DE; map the country code field or add a value table"
            )
            return None
        return code

    def contact(self, fields: ContactFields, label: str, *, required: bool) -> Contact | None:
        parts = (fields.first_name, fields.last_name, fields.email, fields.phone)
        if all(self.raw(p) is None for p in parts):
            if required:
                named = ", ".join(p.field for p in parts if p.field)
                self.problems.append(f"the {label} is missing ({named} are empty); add one")
            return None
        before = len(self.problems)
        first = self.text(fields.first_name, f"the {label}'s first name", required=required)
        last = self.text(fields.last_name, f"the {label}'s last name", required=required)
        email = self.text(fields.email, f"the {label}'s email", required=required)
        phone = self.text(fields.phone, f"the {label}'s phone", required=required)
        if email and not _EMAIL.match(email):
            self.problems.append(f"the {label}'s email {email[:60]!r} is not an email address")
            return None
        if len(self.problems) > before or not (first and last and email and phone):
            return None
        return Contact(first, last, phone, email)

    def solutions(self, source: FieldSource, *, required: bool = True) -> tuple[str, ...]:
        value = self.raw(source)
        items: list[str]
        if value is None:
            items = []
        elif isinstance(value, (list, tuple)):
            items = [str(v) for v in value]
        else:
            items = str(value).split(source.split) if source.split else [str(value)]
        ids = [clean_text(i) for i in items if clean_text(i)]
        if not ids and not required:
            return ()
        if not ids:
            self.problems.append(
                f"no solution is named ({_where(source)}); add at least one solution id"
            )
        elif len(ids) > MAX_SOLUTIONS:
            self.problems.append(
                f"{len(ids)} solutions are named; the core accepts at most {MAX_SOLUTIONS}"
            )
        elif bad := [i for i in ids if not _SOLUTION_ID.match(i)]:
            self.problems.append(
                f"solution id {bad[0][:40]!r} ({_where(source)}) is not a solution id"
            )
        else:
            return tuple(dict.fromkeys(ids))
        return ()


def _where(source: FieldSource) -> str:
    return f"CRM field {source.field}" if source.field else "constant in the mapping"


def resolve_stage(
    record: CrmOpportunity, mapping: MappingFile, stages: Mapping[str, StageInfo]
) -> tuple[StandardStage | None, str | None]:
    """The standard stage of a record, or the reason it has none."""
    rule = mapping.stages
    label = record.fields.get(rule.field)
    if label is None or str(label).strip() == "":
        return None, f"the stage ({rule.field}) is empty"
    label = str(label)
    info = stages.get(label)
    if label in rule.ignored:
        return None, f"stage {label[:80]!r} is ignored by the mapping (stages.map: ignore)"
    is_won = _flag(record, rule.won_field, info.is_won if info else None)
    is_closed = _flag(record, rule.closed_field, info.is_closed if info else None)
    mapped = rule.mapped.get(label)
    if mapped is not None:
        if is_won and mapped is not StandardStage.WON:
            return None, (
                f"stage {label!r} is a won stage in the CRM but the mapping sends it to "
                f"{mapped.value}; a won stage may only map to Won"
            )
        if is_closed and not is_won and mapped is not StandardStage.LOST:
            return None, (
                f"stage {label!r} is a lost stage in the CRM but the mapping sends it to "
                f"{mapped.value}; a lost stage may only map to Lost"
            )
        return mapped, None
    if is_closed:
        return (StandardStage.WON if is_won else StandardStage.LOST), None
    if rule.unmapped == "by_probability":
        if info is not None and info.probability is not None:
            return stage_by_probability(info.probability), None
        # the policy is set already: what is missing is the CRM's probability
        return None, (
            f"stage {label[:80]!r} is not in the mapping, and the CRM gives it no "
            "probability for stages.unmapped: by_probability to place it by; add it "
            "under stages.map"
        )
    return None, (
        f"stage {label[:80]!r} is not in the mapping; add it under stages.map "
        "(or set stages.unmapped: by_probability)"
    )


def _flag(record: CrmOpportunity, field: str | None, fallback: bool | None) -> bool:
    if field is not None and record.fields.get(field) is not None:
        return bool(record.fields.get(field))
    return bool(fallback)


def apply_mapping(
    record: CrmOpportunity, mapping: MappingFile, stages: Mapping[str, StageInfo]
) -> DealDraft | Rejection:
    """Map one normalised CRM record to a deal draft, or reject it with every reason."""
    if record.problems:  # values the adapter could not read: nothing else is trustworthy
        return Rejection(record.id, record.problems)
    label = record.fields.get(mapping.stages.field)
    if label is not None and str(label) in mapping.stages.ignored:
        # left out of the sync whatever else the record holds: skipped, not rejected
        reason = f"stage {str(label)[:80]!r} is ignored by the mapping (stages.map: ignore)"
        return Rejection(record.id, (reason,), code=STAGE_IGNORED)
    r = RecordReader(record)
    f = mapping.fields
    name = r.text(f.name, "the deal name", required=True)
    value = r.amount(f.value)
    currency = r.currency(f.currency)
    close_date = r.day(f.close_date)
    customer_name = r.text(f.customer_name, "the customer's name", required=True)
    country = r.country(f.customer_country)
    stage, stage_problem = resolve_stage(record, mapping, stages)
    if stage_problem:
        r.problems.append(stage_problem)
    team_member = r.contact(f.team_member, "seller (team member)", required=True)
    kinds = f.microsoft_solutions is not None or f.third_party_solutions is not None
    solutions = r.solutions(f.solutions, required=not kinds)
    others = other_solutions(r, mapping, solutions)
    if kinds and not solutions and not others:
        where = ", ".join(
            s.field or "a constant"
            for s in (f.solutions, f.microsoft_solutions, f.third_party_solutions)
            if s is not None
        )
        r.problems.append(
            f"no solution is named (CRM fields {where}); add at least one solution id"
        )
    notes = r.text(f.notes, "the notes", required=False, limit=MAX_NOTES, multiline=True)
    campaign = r.text(f.campaign_id, "the campaign id", required=False, limit=100)
    deal_type, code = _deal_type(r, mapping)
    shared = deal_type is DealType.PRIVATE and shared_with_microsoft(r, mapping)
    partners = partners_of(r, mapping)
    if partners and deal_type is DealType.PRIVATE:
        deal_type = DealType.PARTNER_TO_PARTNER
    details = partner_details(r, mapping) if partners else None
    if deal_type is DealType.CO_SELL and others and not solutions:
        r.problems.append(
            f"a co-sell deal needs one of your own solutions ({_where(f.solutions)}): it is "
            "the deal's target in Partner Center; add your solution id"
        )
    contacts: tuple[Contact, ...] = ()
    if f.customer_contact is not None:
        contact = r.contact(
            f.customer_contact,
            "customer contact (needed when Microsoft is invited)",
            required=deal_type is DealType.CO_SELL,
        )
        contacts = (contact,) if contact else ()
    elif deal_type is DealType.CO_SELL:
        r.problems.append("a co-sell deal needs a customer contact; map fields.customer_contact")
    if r.problems:
        return Rejection(record.id, tuple(r.problems))
    assert name and value is not None and currency and close_date and customer_name and country
    assert stage is not None and team_member is not None
    team = team_of(r, mapping, team_member)
    customer = Customer(
        name=customer_name,
        country=country,
        city=r.text(f.customer_city, "the customer's city", required=False),
        state=r.text(f.customer_state, "the customer's state", required=False),
        postal_code=r.text(f.customer_postal_code, "the customer's postal code", required=False),
        address_line1=r.text(f.customer_address_line1, "the customer's address", required=False),
        contacts=contacts,
    )
    if r.problems:
        return Rejection(record.id, tuple(r.problems))
    return DealDraft(
        crm_id=record.id,
        name=name,
        value=value,
        currency=currency,
        close_date=close_date,
        customer=customer,
        team=team,
        solutions=solutions,
        stage=stage,
        deal_type=deal_type,
        assistance_code=code,
        notes=notes,
        campaign_id=campaign,
        partners=partners,
        shared_with_microsoft=shared,
        other_solutions=others,
        own_solution_type=mapping.solution_types.own,
        partner_details=details,
    )


def partners_of(r: RecordReader, mapping: MappingFile) -> tuple[str, ...]:
    """Partner organization ids the record invites (``deal_type.invite_partner_field``)."""
    rule = mapping.deal_type
    if rule.invite_partner_field is None:
        return ()
    raw = r.record.fields.get(rule.invite_partner_field)
    if raw is None:
        return ()
    ids = [clean_text(part) for part in str(raw).split(rule.partner_split)]
    ids = [i for i in ids if i]
    bad = [i for i in ids if not _PARTNER_ID.match(i)]
    if bad:
        r.problems.append(
            f"{rule.invite_partner_field} names {bad[0][:60]!r}, which is not a partner "
            f"organization id; list ids separated by {rule.partner_split!r}"
        )
        return ()
    return tuple(dict.fromkeys(ids))


def _deal_type(r: RecordReader, mapping: MappingFile) -> tuple[DealType, str | None]:
    rule = mapping.deal_type
    if rule.help_field is None:
        return DealType.PRIVATE, None
    raw = r.record.fields.get(rule.help_field)
    if raw is None or str(raw).strip() == "":
        return DealType.PRIVATE, None
    key = str(raw)
    if key not in rule.help_values:
        r.problems.append(
            f"{rule.help_field} is {key[:60]!r}, which deal_type.help_values does not list; "
            "add it there (with an assistance code, or null for no help)"
        )
        return DealType.PRIVATE, None
    code = rule.help_values[key]
    if code is None:
        return DealType.PRIVATE, None
    return DealType.CO_SELL, code
