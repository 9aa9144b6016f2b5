"""Problems that span blocks of a mapping file, found on its raw data (pure).

pydantic checks a block only when the blocks it holds are valid, and the whole file
only when every block is: a problem between blocks would wait for every other one to
be fixed first. These checks read the raw file instead, so :func:`parse_mapping
<connector.mapping.load.parse_mapping>` reports them in the same pass as the rest;
the model runs the same checks on a valid file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector.mapping.field_check import FilePath, field_uses


def cross_block_problems(data: Any) -> list[tuple[FilePath, str]]:
    """Status fields the mapping also reads; Dataverse's Won / Lost sent elsewhere; an
    incoming deal's customer tied to records the mapping does not read it through."""
    if not isinstance(data, Mapping):
        return []
    problems = _status_fields_read(data) + _customer_paths(data)
    if data.get("crm") == "dynamics":
        problems += _dataverse_closed_stages(data)
    return problems


def _status_fields_read(data: Mapping[str, Any]) -> list[tuple[FilePath, str]]:
    uses = field_uses(data)
    read: dict[str, str] = {}
    for use in uses:
        if not use.writes and use.path[0] != "select":
            where = (
                use.path[:-1] if use.path[-1] == "field" and use.path[0] == "fields" else use.path
            )
            read.setdefault(use.name, ".".join(str(p) for p in where))
    return [
        (
            use.path,
            f"{use.name} is also read as {read[use.name]}; the connector writes status "
            "fields, so it would overwrite what it reads: use a field of its own for the status",
        )
        for use in uses
        if use.writes and use.name in read
    ]


def _dataverse_closed_stages(data: Mapping[str, Any]) -> list[tuple[FilePath, str]]:
    """Dataverse closes a deal with its state, which the adapter reports as Won / Lost."""
    stages = data.get("stages")
    mapped = stages.get("map") if isinstance(stages, Mapping) else None
    if not isinstance(mapped, Mapping):
        return []
    problems: list[tuple[FilePath, str]] = []
    for label in ("Won", "Lost"):
        target = mapped.get(label)
        if isinstance(target, str) and target not in (label, "ignore"):
            problems.append(
                (
                    ("stages", "map", label),
                    f"a closed {label.lower()} deal may only map to {label}, not {target}",
                )
            )
    return problems


def _customer_paths(data: Mapping[str, Any]) -> list[tuple[FilePath, str]]:
    """``inbound.customer`` ties an incoming deal to the account and contact the mapping
    reads the customer through: it needs relationship paths to find them."""
    inbound = data.get("inbound")
    customer = inbound.get("customer") if isinstance(inbound, Mapping) else None
    if not isinstance(customer, Mapping):
        return []
    fields = data.get("fields")
    fields = fields if isinstance(fields, Mapping) else {}
    problems: list[tuple[FilePath, str]] = []
    name = _source_field(fields.get("customer_name"))
    if customer.get("account", "none") != "none" and name.count(".") != 1:
        problems.append(
            (
                ("inbound", "customer", "account"),
                "tying incoming deals to an account needs the customer's name read through "
                "the account: map fields.customer_name to a relationship path such as "
                "Account.Name (Salesforce) or parentaccountid.name (Dataverse), or set "
                "account: none",
            )
        )
    contact = fields.get("customer_contact")
    email = _source_field(contact.get("email")) if isinstance(contact, Mapping) else ""
    if customer.get("contact", "none") != "none" and email.count(".") != 1:
        problems.append(
            (
                ("inbound", "customer", "contact"),
                "tying incoming deals to a contact needs fields.customer_contact read "
                "through the contact, such as Primary_Contact__r.Email or "
                "parentcontactid.emailaddress1, or set contact: none",
            )
        )
    return problems


def _source_field(source: Any) -> str:
    field = source.get("field") if isinstance(source, Mapping) else None
    return field if isinstance(field, str) else ""
