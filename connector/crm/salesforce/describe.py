"""Salesforce field types, from the objects' ``describe``, for reading query rows by type.

Salesforce's JSON carries no types: a date field and a text field holding
``2026-05-01`` look the same. :class:`FieldTypes` answers the type of a field or
relationship path (``CloseDate``, ``Account.CreatedDate``, ``Primary_Contact__r.Email``)
by describing the object that holds it, following each relationship through the
``relationshipName`` and ``referenceTo`` of the describe before it. Each object is
described once, when a value of it first needs its type (see
:func:`~connector.crm.salesforce.records.needs_type`); a path through a polymorphic
or unknown relationship has no type, and its values stay as the JSON gives them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connector.errors import CrmError
from connector.model import CrmField

log = logging.getLogger(__name__)

#: fields whose type every object has, by definition; never worth a describe
SYSTEM_TYPES = {"id": "id", "systemmodstamp": "datetime", "isdeleted": "boolean"}


@dataclass(frozen=True, slots=True)
class FieldInfo:
    type: str
    #: the object a lookup points to, when it points to exactly one
    reference_to: str | None = None


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    fields: Mapping[str, FieldInfo]  # by lower-case field name
    relationships: Mapping[str, FieldInfo]  # by lower-case relationship name


def object_info(describe: Mapping[str, Any]) -> ObjectInfo:
    """The fields and relationships of one ``sobjects/<Object>/describe`` answer."""
    fields: dict[str, FieldInfo] = {}
    relationships: dict[str, FieldInfo] = {}
    for entry in describe.get("fields") or []:
        if not isinstance(entry, Mapping):
            continue
        name, kind = entry.get("name"), entry.get("type")
        if not isinstance(name, str) or not isinstance(kind, str):
            continue
        targets = entry.get("referenceTo") or []
        target = targets[0] if isinstance(targets, list) and len(targets) == 1 else None
        info = FieldInfo(kind, target if isinstance(target, str) else None)
        fields[name.lower()] = info
        relationship = entry.get("relationshipName")
        if isinstance(relationship, str) and relationship:
            relationships[relationship.lower()] = info
    return ObjectInfo(fields, relationships)


class FieldTypes:
    """Field types of ``root`` and the objects its relationship paths reach."""

    def __init__(self, root: str, describe: Callable[[str], Mapping[str, Any]]) -> None:
        self.root = root
        self._describe = describe
        self._objects: dict[str, ObjectInfo | None] = {}
        self._paths: dict[str, str | None] = {}

    def known(self) -> Mapping[str, str | None]:
        """Every path resolved so far → its type (None: no type could be found)."""
        return self._paths

    def resolve(self, paths: Iterable[str], *, described_only: bool = False) -> None:
        """Find the type of each path, describing the objects on the way when needed.

        With ``described_only``, a path is resolved only when every object on its way
        was already described (no call): what one describe answers is not asked again.
        """
        for path in paths:
            if path not in self._paths:
                try:
                    self._paths[path] = self._type_of(path, described_only)
                except LookupError:
                    continue  # an object on the way is not described yet

    def _type_of(self, path: str, described_only: bool) -> str | None:
        *hops, name = path.split(".")
        if not hops and name.lower() in SYSTEM_TYPES:
            return SYSTEM_TYPES[name.lower()]
        obj: str | None = self.root
        for hop in hops:
            info = self._object(obj, described_only) if obj is not None else None
            relationship = info.relationships.get(hop.lower()) if info else None
            obj = relationship.reference_to if relationship else None
        info = self._object(obj, described_only) if obj is not None else None
        field = info.fields.get(name.lower()) if info else None
        return field.type if field else None

    def _object(self, name: str, described_only: bool = False) -> ObjectInfo | None:
        if name not in self._objects and described_only:
            raise LookupError(name)
        if name not in self._objects:
            try:
                self._objects[name] = object_info(self._describe(name))
            except CrmError as exc:
                if exc.transient or exc.status not in (403, 404):
                    raise
                # not visible to the integration user: its values keep their JSON form
                log.warning("salesforce: cannot describe %s (%s); its values stay text", name, exc)
                self._objects[name] = None
        return self._objects[name]


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
