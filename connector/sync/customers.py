"""The account and contact of an incoming deal's opportunity: matched, or created.

An incoming referral carries its customer (``customerProfile``: name, address, the
customer's people). With ``inbound.customer`` set, the opportunity created for it points
at the customer's account and contact in the CRM, so the seller sees and reaches the
customer from the CRM:

- the account and contact are the records behind the relationship the mapping reads the
  customer through (``Account.Name`` → the Account behind ``AccountId``;
  ``parentcontactid.emailaddress1`` → the contact behind ``parentcontactid``), and the
  columns written or compared are the mapping's (value tables read backwards);
- an account matches when its name is the customer's (the CRM's comparison, then
  spaces and case folded) and, for each of country, city and postal code that both
  have, the same; a contact matches on its email. The first match by id is used;
- ``match_or_create`` creates what matches nothing, once per customer of a batch, a
  contact under its account. Creating is never retried blindly: a record created before
  a crash is found by the next match, so none is created twice.

:func:`customer_shape`, :func:`account_values`, :func:`contact_values` and
:func:`matching_account` are pure; :class:`CustomerLinks` is the step with I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connector.crm.base import NewRelated, RelatedRow
from connector.errors import ConnectorError
from connector.mapping.apply import clean_text
from connector.mapping.schema import FieldSource, MappingFile
from connector.model import ReferralState

if TYPE_CHECKING:
    from connector.sync.context import SyncContext

log = logging.getLogger(__name__)

#: account parts compared when both the customer and the account have them
_COMPARED = ("country", "city", "postal_code")
_ADDRESS_KEYS = {
    "country": "country",
    "city": "city",
    "state": "state",
    "postal_code": "postalCode",
    "address_line1": "addressLine1",
}
_CONTACT_KEYS = {
    "first_name": "firstName",
    "last_name": "lastName",
    "email": "email",
    "phone": "phoneNumber",
}


@dataclass(frozen=True)
class RelatedShape:
    """One related record of the mapping: its relation and the column of each part."""

    relation: str
    columns: Mapping[str, str] = field(default_factory=dict)
    sources: Mapping[str, FieldSource] = field(default_factory=dict)


def _split(source: FieldSource | None) -> tuple[str, str] | None:
    """``Account.Name`` → (``Account``, ``Name``); None for a field of the opportunity."""
    if source is None or source.field is None or "@" in source.field:
        return None
    relation, _, column = source.field.partition(".")
    if not column or "." in column:
        return None
    return relation, column


def customer_shape(mapping: MappingFile) -> tuple[RelatedShape | None, RelatedShape | None]:
    """Where the mapping reads the customer's account and contact from (None: not from a
    related record, so there is nothing to tie)."""
    f = mapping.fields
    account: RelatedShape | None = None
    named = _split(f.customer_name)
    if named is not None:
        relation = named[0]
        parts = {
            "name": f.customer_name,
            "country": f.customer_country,
            "city": f.customer_city,
            "state": f.customer_state,
            "postal_code": f.customer_postal_code,
            "address_line1": f.customer_address_line1,
        }
        columns: dict[str, str] = {}
        sources: dict[str, FieldSource] = {}
        for role, source in parts.items():
            split = _split(source)
            if split is not None and split[0] == relation and source is not None:
                columns[role], sources[role] = split[1], source
        account = RelatedShape(relation, columns, sources)
    contact: RelatedShape | None = None
    if f.customer_contact is not None:
        people = f.customer_contact.__dict__
        email = _split(people["email"])
        if email is not None:
            relation = email[0]
            columns = {}
            sources = {}
            for role, source in people.items():
                split = _split(source)
                if split is not None and split[0] == relation:
                    columns[role], sources[role] = split[1], source
            contact = RelatedShape(relation, columns, sources)
    return account, contact


def _crm_value(source: FieldSource, value: Any) -> Any:
    """The CRM value a mapped value came from, through the source's value table."""
    if source.table is None:
        return value
    return next((crm for crm, mapped in source.table.items() if mapped == value), None)


def _values(shape: RelatedShape, given: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for role, column in shape.columns.items():
        value = given.get(role)
        if isinstance(value, str):
            value = clean_text(value) or None
        if value is not None:
            value = _crm_value(shape.sources[role], value)
        if value is not None:
            out[column] = value
    return out


def account_values(shape: RelatedShape, profile: Mapping[str, Any]) -> dict[str, Any]:
    """The account columns of a referral's customer profile (empty parts left out)."""
    address = profile.get("address") if isinstance(profile.get("address"), Mapping) else {}
    assert isinstance(address, Mapping)
    given = {"name": profile.get("name")}
    given.update({role: address.get(key) for role, key in _ADDRESS_KEYS.items()})
    return _values(shape, given)


def contact_values(shape: RelatedShape, person: Mapping[str, Any]) -> dict[str, Any]:
    """The contact columns of one of the customer's people."""
    return _values(shape, {role: person.get(key) for role, key in _CONTACT_KEYS.items()})


def _folded(value: Any) -> str:
    return " ".join(str(value).split()).casefold() if value not in (None, "") else ""


def matching_account(
    shape: RelatedShape, wanted: Mapping[str, Any], candidates: Sequence[RelatedRow]
) -> RelatedRow | None:
    """The first candidate (by id) that is the customer: same name, and the same country,
    city and postal code wherever both have one."""
    name = shape.columns["name"]
    for row in sorted(candidates, key=lambda r: r.id):
        if _folded(row.values.get(name)) != _folded(wanted.get(name)):
            continue
        if all(
            not _folded(row.values.get(column))
            or not _folded(wanted.get(column))
            or _folded(row.values.get(column)) == _folded(wanted.get(column))
            for role in _COMPARED
            if (column := shape.columns.get(role)) is not None
        ):
            return row
    return None


def _key(values: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, _folded(v)) for k, v in values.items()))


class CustomerLinks:
    """Ties the opportunities of new incoming deals to their account and contact."""

    def __init__(self, engine: SyncContext) -> None:
        self.engine = engine

    def for_referrals(
        self, referrals: Sequence[ReferralState]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """Opportunity values per referral id (the lookups to set), and the referrals whose
        customer could not be tied, with why (their opportunity waits for the next cycle)."""
        settings = self.engine.mapping.inbound.customer
        if (settings.account == "none" and settings.contact == "none") or not referrals:
            return {}, {}
        account_shape, contact_shape = customer_shape(self.engine.mapping)
        values: dict[str, dict[str, Any]] = {r.id: {} for r in referrals}
        failed: dict[str, str] = {}
        accounts: dict[str, str] = {}
        try:
            if settings.account != "none" and account_shape and "name" in account_shape.columns:
                accounts = self._accounts(account_shape, referrals, settings.account, failed)
                for referral_id, account_id in accounts.items():
                    values[referral_id].update(
                        self.engine.crm.related.link_values(account_shape.relation, account_id)
                    )
            if settings.contact != "none" and contact_shape and "email" in contact_shape.columns:
                contacts = self._contacts(
                    contact_shape, referrals, settings.contact, accounts, failed
                )
                for referral_id, contact_id in contacts.items():
                    values[referral_id].update(
                        self.engine.crm.related.link_values(contact_shape.relation, contact_id)
                    )
        except ConnectorError as exc:
            # the CRM could not be searched: no create is safe, the whole batch waits
            log.warning("%s: looking up customers failed: %s", self.engine.connection, exc.message)
            return {}, {r.id: f"looking up the customer failed: {exc.message}" for r in referrals}
        return values, failed

    def _accounts(
        self,
        shape: RelatedShape,
        referrals: Sequence[ReferralState],
        policy: str,
        failed: dict[str, str],
    ) -> dict[str, str]:
        wanted: dict[str, dict[str, Any]] = {}
        for referral in referrals:
            profile = referral.raw.get("customerProfile")
            if isinstance(profile, Mapping):
                found = account_values(shape, profile)
                if shape.columns["name"] in found:
                    wanted[referral.id] = found
        if not wanted:
            return {}
        name = shape.columns["name"]
        others = [c for role, c in shape.columns.items() if role != "name"]
        candidates = self.engine.crm.related.find(
            shape.relation, name, [str(w[name]) for w in wanted.values()], columns=others
        )
        chosen: dict[str, str] = {}
        to_create: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
        for referral_id, found in wanted.items():
            match = matching_account(shape, found, candidates)
            if match is not None:
                chosen[referral_id] = match.id
            elif policy == "match_or_create":
                to_create.setdefault(_key(found), found)
        created = self._create(shape.relation, [NewRelated(v) for v in to_create.values()])
        made = dict(zip(to_create, created, strict=True))
        for referral_id, found in wanted.items():
            if referral_id in chosen or policy != "match_or_create":
                continue
            new_id, why = made[_key(found)]
            if new_id is not None:
                chosen[referral_id] = new_id
            else:
                failed[referral_id] = f"creating the customer's account failed: {why}"
        return chosen

    def _contacts(
        self,
        shape: RelatedShape,
        referrals: Sequence[ReferralState],
        policy: str,
        accounts: Mapping[str, str],
        failed: dict[str, str],
    ) -> dict[str, str]:
        email = shape.columns["email"]
        wanted: dict[str, dict[str, Any]] = {}
        for referral in referrals:
            profile = referral.raw.get("customerProfile")
            people = profile.get("team") if isinstance(profile, Mapping) else None
            person = people[0] if isinstance(people, list) and people else None
            if isinstance(person, Mapping):
                found = contact_values(shape, person)
                if found.get(email):
                    wanted[referral.id] = found
        if not wanted:
            return {}
        candidates = self.engine.crm.related.find(
            shape.relation, email, [str(w[email]) for w in wanted.values()], columns=[]
        )
        by_email: dict[str, str] = {}
        for row in sorted(candidates, key=lambda r: r.id):
            by_email.setdefault(_folded(row.values.get(email)), row.id)
        chosen: dict[str, str] = {}
        to_create: dict[str, NewRelated] = {}
        for referral_id, found in wanted.items():
            address = _folded(found[email])
            if address in by_email:
                chosen[referral_id] = by_email[address]
            elif policy == "match_or_create":
                to_create.setdefault(address, NewRelated(found, accounts.get(referral_id)))
        made = dict(
            zip(to_create, self._create(shape.relation, list(to_create.values())), strict=True)
        )
        for referral_id, found in wanted.items():
            if referral_id in chosen or policy != "match_or_create":
                continue
            new_id, why = made[_folded(found[email])]
            if new_id is not None:
                chosen[referral_id] = new_id
            else:
                failed[referral_id] = f"creating the customer's contact failed: {why}"
        return chosen

    def _create(self, relation: str, rows: Sequence[NewRelated]) -> list[tuple[str | None, str]]:
        """Each new record's id, or None and why it could not be created."""
        if not rows:
            return []
        out: list[tuple[str | None, str]] = [
            (r.crm_id, "") if r.ok and r.crm_id else (None, f"{r.error_code}: {r.message}")
            for r in self.engine.crm.related.create(relation, rows)
        ]
        log.info(
            "%s: %d new record(s) through %s for incoming deals' customers",
            self.engine.connection,
            sum(new_id is not None for new_id, _ in out),
            relation,
        )
        return out
