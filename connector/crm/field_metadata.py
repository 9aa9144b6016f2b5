"""What a CRM says about an object's fields, read into :class:`CrmField` (pure).

``connector mappings check --against-crm`` checks every field a mapping names against
these lists: Salesforce's ``describe`` of an sObject, Dataverse's
``EntityDefinitions(LogicalName='…')/Attributes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from connector.crm.dynamics_rows import DERIVED, LookupTarget
from connector.model import CrmField


def salesforce_fields(answer: Any) -> list[CrmField]:
    """The fields of a ``describe`` answer; a relationship name (``Account`` of
    ``AccountId``, ``Owner`` of ``OwnerId``) is listed too, leading to what it references."""
    fields: list[CrmField] = []
    items = answer.get("fields") if isinstance(answer, Mapping) else None
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            continue
        writable = item.get("updateable")
        fields.append(
            CrmField(item["name"], None, writable if isinstance(writable, bool) else None)
        )
        relationship, targets = item.get("relationshipName"), item.get("referenceTo") or []
        if isinstance(relationship, str) and targets and isinstance(targets[0], str):
            fields.append(CrmField(relationship, targets[0], False))
    return fields


def dataverse_fields(
    body: Mapping[str, Any], entity: str, lookups: Mapping[str, LookupTarget]
) -> list[CrmField]:
    """The attributes of an ``Attributes`` answer as the adapter names them: for
    ``opportunity`` also its derived ``stage``, ``is_won`` and ``is_closed``, and each
    lookup the adapter reads leading to its entity (``parentaccountid`` → ``account``)."""
    items: Iterable[Any] = body.get("value") or []
    fields: list[CrmField] = []
    for item in items:
        logical = item.get("LogicalName") if isinstance(item, Mapping) else None
        if not isinstance(logical, str):
            continue
        lookup = lookups.get(logical) if entity == "opportunity" else None
        fields.append(CrmField(logical, lookup.key.removesuffix("id") if lookup else None))
    if entity == "opportunity":
        fields += [CrmField(name, None, False) for name in sorted(DERIVED)]
    return fields
