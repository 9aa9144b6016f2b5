"""Every CRM field a mapping file names, checked against the CRM's own description (pure).

``connector mappings check --against-crm`` finds each field the file names (the
select filter, the stage fields, each deal field, the deal-type and inbound fields,
the status fields) in the raw file, so it works on a file that has other problems too,
and looks each one up in what the CRM describes (:class:`~connector.crm.base.CrmField`
lists, one per object): ``Account.Name`` follows the ``Account`` relationship of the
opportunity to the Account object's ``Name``; Dataverse's ``x@label`` is the display
label of the column ``x``. A status field must also be writable when the CRM says.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from connector.model import CrmField

FilePath = tuple[str | int, ...]

#: keys holding one CRM field the mapping reads, in the order the model reads them
READ_KEYS: tuple[tuple[str, str], ...] = (
    ("stages", "field"),
    ("stages", "won_field"),
    ("stages", "closed_field"),
    ("deal_type", "help_field"),
    ("deal_type", "share_field"),
    ("deal_type", "invite_partner_field"),
    ("deal_type", "register_field"),
    ("inbound", "action_field"),
    ("inbound", "decline_reason_field"),
)
#: what a partner invited to a partner-to-partner deal is told, each from a CRM field
PARTNER_DETAIL_KEYS = ("close_date", "value", "currency", "notes", "solutions", "help_field")


@dataclass(frozen=True)
class FieldUse:
    """One CRM field named in the file: where, which, and whether the connector writes it."""

    path: FilePath
    name: str
    writes: bool = False


def field_uses(data: Any) -> list[FieldUse]:
    """Every CRM field named in a (raw, maybe invalid) mapping file, in file order."""
    if not isinstance(data, Mapping):
        return []
    uses = list(_filter_fields(data.get("select"), ("select",)))
    blocks = {key: data.get(key) for key in ("stages", "deal_type", "inbound")}
    fields = data.get("fields")
    for block, key in READ_KEYS[:3]:
        uses += _named(blocks[block], (block, key))
    if isinstance(fields, Mapping):
        for name, source in fields.items():
            uses += _named(source, ("fields", str(name), "field"))
            if isinstance(source, Mapping) and "field" not in source and "const" not in source:
                for part, inner in source.items():  # a contact: first_name, last_name, ...
                    uses += _named(inner, ("fields", str(name), str(part), "field"))
    for block, key in READ_KEYS[3:]:
        uses += _named(blocks[block], (block, key))
    deal_type = blocks["deal_type"]
    details = deal_type.get("partner_details") if isinstance(deal_type, Mapping) else None
    for key in PARTNER_DETAIL_KEYS:
        uses += _named(details, ("deal_type", "partner_details", key))
    inbound = blocks["inbound"]
    close = inbound.get("close") if isinstance(inbound, Mapping) else None
    reason = close.get("reason_field") if isinstance(close, Mapping) else None
    if isinstance(reason, str) and reason:
        uses.append(FieldUse(("inbound", "close", "reason_field"), reason, writes=True))
    status = data.get("status_fields")
    if isinstance(status, Mapping):
        for name, value in status.items():
            if isinstance(value, str) and value:
                uses.append(FieldUse(("status_fields", str(name)), value, writes=True))
    return uses


def _named(block: Any, path: FilePath) -> list[FieldUse]:
    """The field at ``path`` (its last key inside ``block``), when it is a name."""
    value = block.get(path[-1]) if isinstance(block, Mapping) else None
    return [FieldUse(path, value)] if isinstance(value, str) and value else []


def _filter_fields(node: Any, path: FilePath) -> Iterator[FieldUse]:
    if isinstance(node, Mapping):
        if isinstance(node.get("field"), str):
            yield FieldUse((*path, "field"), node["field"])
        for key in ("all", "any"):
            items = node.get(key)
            if isinstance(items, list):
                for i, item in enumerate(items):
                    yield from _filter_fields(item, (*path, key, i))
        if "not" in node:
            yield from _filter_fields(node["not"], (*path, "not"))


Describe = Callable[[str | None], Sequence[CrmField]]


class FieldChecker:
    """Looks names up in the CRM's descriptions, one description per object, cached."""

    def __init__(self, describe: Describe, *, root: str, case_sensitive: bool) -> None:
        self._describe = describe
        self.root = root
        self.case_sensitive = case_sensitive
        self._known: dict[str | None, dict[str, CrmField]] = {}

    def fields_of(self, entity: str | None) -> dict[str, CrmField]:
        if entity not in self._known:
            fields = self._describe(entity)
            self._known[entity] = {self._key(f.name): f for f in fields}
        return self._known[entity]

    def check(self, uses: Sequence[FieldUse]) -> list[tuple[FilePath, str]]:
        """A problem (where, what) for each name the CRM does not know or lets not be written."""
        problems: list[tuple[FilePath, str]] = []
        for use in uses:
            problem = self._problem(use)
            if problem is not None:
                problems.append((use.path, problem))
        return problems

    def _problem(self, use: FieldUse) -> str | None:
        name = use.name.removesuffix("@label")
        parts = name.split(".")
        entity: str | None = None
        shown = self.root
        found: CrmField | None = None
        for i, part in enumerate(parts):
            known = self.fields_of(entity)
            found = known.get(self._key(part))
            last = i == len(parts) - 1
            if found is None or (not last and found.target is None):
                return self._unknown(use, part, shown, known, relationship=not last)
            if not last:
                entity, shown = found.target, found.target or shown
        if use.writes and found is not None and found.writable is False:
            return (
                f"{use.name} is read-only in the CRM, but the connector writes Partner "
                "Center's view into the status fields; choose a field the integration user "
                "can edit"
            )
        return None

    def _unknown(
        self,
        use: FieldUse,
        part: str,
        entity: str,
        known: Mapping[str, CrmField],
        *,
        relationship: bool,
    ) -> str:
        if relationship:
            choices = [f.name for f in known.values() if f.target is not None]
            what = f"{part!r} in {use.name!r} is not a relationship of {entity} in the CRM"
        else:
            choices = [f.name for f in known.values() if f.target is None]
            what = f"{part!r} is not a field of {entity} in the CRM"
            if part != use.name.removesuffix("@label"):
                what = f"{part!r} (in {use.name!r}) is not a field of {entity} in the CRM"
        hint = difflib.get_close_matches(part, choices, n=1, cutoff=0.75)
        if not hint:
            lowered = {c.lower(): c for c in choices}
            hint = [lowered[part.lower()]] if part.lower() in lowered else []
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        return (
            f"{what}{suggestion}; fix the name (API names, not labels), or create the field "
            "in the CRM"
        )

    def _key(self, name: str) -> str:
        return name if self.case_sensitive else name.lower()
