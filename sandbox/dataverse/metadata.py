"""Table definitions as ``EntityDefinitions`` returns them.

- ``EntityDefinitions`` (``$select``; ``$filter`` of ``Property eq value`` joined by
  ``and``, enough for Microsoft's change-tracking query
  ``ChangeTrackingEnabled eq true``) and ``EntityDefinitions(LogicalName='x')``:
  ``LogicalName``, ``SchemaName``, ``EntitySetName``, ``ChangeTrackingEnabled``
  (opportunity only, unless the admin API turns it off), ``IsCustomEntity``,
  ``CanChangeTrackingBeEnabled``;
- ``.../Attributes`` and ``.../Attributes(LogicalName='x')``: each column with its
  ``AttributeType`` (``DateTime`` columns with their ``Format``, ``DateOnly`` or
  ``DateAndTime``), option sets with ``$expand=OptionSet``.

Supported casts: ``Microsoft.Dynamics.CRM.PicklistAttributeMetadata``,
``StatusAttributeMetadata`` (options carry their ``State``),
``StateAttributeMetadata`` (options carry their ``DefaultStatus``) and
``BooleanAttributeMetadata`` (``TrueOption`` / ``FalseOption``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection
from typing import Any

from sandbox.dataverse import schema as s
from sandbox.dataverse.errors import BAD_QUERY, NOT_FOUND, DataverseError

_PATH = re.compile(
    r"^EntityDefinitions\(LogicalName='(?P<entity>\w+)'\)/Attributes"
    r"(?:\(LogicalName='(?P<attribute>\w+)'\))?"
    r"(?:/Microsoft\.Dynamics\.CRM\.(?P<cast>\w+))?$"
)
_TABLE_PATH = re.compile(r"^EntityDefinitions(?:\(LogicalName='(?P<entity>\w+)'\))?$")
_CONDITION = re.compile(r"^\s*(\w+)\s+eq\s+('(?:[^']|'')*'|true|false|null)\s*$")
#: SchemaName of each sandbox table (Dataverse's Pascal-case spelling)
_SCHEMA_NAMES = {
    "opportunity": "Opportunity",
    "account": "Account",
    "contact": "Contact",
    "systemuser": "SystemUser",
    "transactioncurrency": "TransactionCurrency",
}
_CASTS = {
    s.PICKLIST: "PicklistAttributeMetadata",
    s.STATUS: "StatusAttributeMetadata",
    s.STATE: "StateAttributeMetadata",
    s.BOOL: "BooleanAttributeMetadata",
}
_TYPE_NAMES = {
    s.PICKLIST: "Picklist",
    s.STATUS: "Status",
    s.STATE: "State",
    s.BOOL: "Boolean",
    s.STRING: "String",
    s.MONEY: "Money",
    s.INT: "Integer",
    s.BIGINT: "BigInt",
    s.DATE: "DateTime",
    s.DATETIME: "DateTime",
    s.LOOKUP: "Lookup",
    s.GUID: "Uniqueidentifier",
}
_NAMESPACE = uuid.UUID("5b1c3f4e-8a3d-4c7b-9a51-2f3c8d1e0a77")


def is_metadata_path(path: str) -> bool:
    return path == "EntityDefinitions" or path.startswith("EntityDefinitions(")


def _metadata_id(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


def _label(text: str) -> dict[str, Any]:
    localized = {"Label": text, "LanguageCode": 1033, "IsManaged": True}
    return {"LocalizedLabels": [localized], "UserLocalizedLabel": localized}


def _options(table: s.Table, column: s.Column) -> list[dict[str, Any]]:
    options = []
    for value, label in column.options:
        option: dict[str, Any] = {"Value": value, "Label": _label(label), "Color": None}
        if column.kind == s.STATUS:
            option["State"] = s.OPPORTUNITY_STATUS[value][1]
        if column.kind == s.STATE:
            option["DefaultStatus"] = min(
                v for v, (_, state) in s.OPPORTUNITY_STATUS.items() if state == value
            )
        options.append(option)
    return options


def _option_set(table: s.Table, column: s.Column) -> dict[str, Any]:
    name = f"{table.logical_name}_{column.name}"
    body: dict[str, Any] = {
        "MetadataId": _metadata_id(name),
        "Name": name,
        "IsGlobal": False,
        "OptionSetType": _TYPE_NAMES[column.kind],
    }
    if column.kind == s.BOOL:
        body["TrueOption"] = {"Value": 1, "Label": _label("Yes")}
        body["FalseOption"] = {"Value": 0, "Label": _label("No")}
    else:
        body["Options"] = _options(table, column)
    return body


def _attribute(table: s.Table, column: s.Column, with_options: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "MetadataId": _metadata_id(table.logical_name, column.name),
        "LogicalName": column.name.removeprefix("_").removesuffix("_value")
        if column.kind == s.LOOKUP
        else column.name,
        "EntityLogicalName": table.logical_name,
        "AttributeType": _TYPE_NAMES[column.kind],
        "IsCustomAttribute": column.name.startswith("cosell_"),
    }
    if column.kind in _CASTS:
        body["@odata.type"] = f"#Microsoft.Dynamics.CRM.{_CASTS[column.kind]}"
        if with_options:
            body["OptionSet"] = _option_set(table, column)
    elif column.kind in (s.DATE, s.DATETIME):
        body["@odata.type"] = "#Microsoft.Dynamics.CRM.DateTimeAttributeMetadata"
        body["Format"] = "DateOnly" if column.kind == s.DATE else "DateAndTime"
    return body


def _table(table: s.Table, tracked: Collection[str]) -> dict[str, Any]:
    return {
        "MetadataId": _metadata_id(table.logical_name),
        "LogicalName": table.logical_name,
        "SchemaName": _SCHEMA_NAMES.get(table.logical_name, table.logical_name.title()),
        "EntitySetName": table.entity_set,
        "PrimaryIdAttribute": table.primary_id,
        "IsCustomEntity": False,
        "ChangeTrackingEnabled": table.logical_name in tracked,
        "CanChangeTrackingBeEnabled": {
            "Value": True,
            "CanBeChanged": False,
            "ManagedPropertyLogicalName": "canchangetrackingbeenabled",
        },
    }


def _select(body: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
    wanted = {n.strip() for n in params.get("$select", "").split(",") if n.strip()}
    if not wanted:
        return body
    return {k: v for k, v in body.items() if k in wanted or k in ("MetadataId", "@odata.context")}


def _matches(body: dict[str, Any], condition: str) -> bool:
    match = _CONDITION.match(condition)
    if match is None:
        raise DataverseError(
            400,
            BAD_QUERY,
            f"The sandbox filters table definitions with 'Property eq value' only: {condition}",
        )
    name, raw = match.groups()
    if name not in body:
        raise DataverseError(400, BAD_QUERY, f"Could not find a property named '{name}'.")
    value: Any = {"true": True, "false": False, "null": None}.get(raw)
    if raw.startswith("'"):
        value = raw[1:-1].replace("''", "'")
    return bool(body[name] == value)


def tables(path: str, params: dict[str, str], base: str, tracked: Collection[str]) -> Any:
    """``EntityDefinitions`` or ``EntityDefinitions(LogicalName='x')``, or None for other paths."""
    match = _TABLE_PATH.match(path)
    if match is None:
        return None
    context = f"{base}$metadata#EntityDefinitions"
    name = match.group("entity")
    if name is not None:
        table = s.BY_LOGICAL_NAME.get(name)
        if table is None:
            raise DataverseError(404, NOT_FOUND, f"Could not find an entity with name {name}.")
        return {"@odata.context": f"{context}/$entity", **_select(_table(table, tracked), params)}
    rows = [_table(t, tracked) for t in s.TABLES.values()]
    condition = params.get("$filter", "")
    if condition.strip():
        parts = re.split(r"\s+and\s+", condition)
        rows = [r for r in rows if all(_matches(r, part) for part in parts)]
    return {"@odata.context": context, "value": [_select(r, params) for r in rows]}


def answer(
    path: str, params: dict[str, str], base: str, tracked: Collection[str] = ("opportunity",)
) -> dict[str, Any]:
    """The JSON body for a metadata GET; 404 for unknown tables or attributes, 400 for bad casts.

    ``tracked`` holds the logical names of the tables with change tracking on.
    """
    found = tables(path, params, base, tracked)
    if found is not None:
        return dict(found)
    match = _PATH.match(path)
    if match is None:
        raise DataverseError(400, BAD_QUERY, f"The sandbox does not serve the metadata path {path}")
    table = s.BY_LOGICAL_NAME.get(match.group("entity"))
    if table is None:
        raise DataverseError(
            404, NOT_FOUND, f"Could not find an entity with name {match.group('entity')}."
        )
    cast = match.group("cast")
    with_options = "OptionSet" in params.get("$expand", "")
    context = f"{base}$metadata#EntityDefinitions('{table.logical_name}')/Attributes"
    attribute = match.group("attribute")
    if attribute is None:
        columns = [c for c in table.columns.values() if cast is None or _CASTS.get(c.kind) == cast]
        return {
            "@odata.context": context + (f"/Microsoft.Dynamics.CRM.{cast}" if cast else ""),
            "value": [_attribute(table, c, with_options) for c in columns],
        }
    column = table.columns.get(attribute) or table.columns.get(f"_{attribute}_value")
    if column is None:
        raise DataverseError(
            404,
            NOT_FOUND,
            f"Could not find an attribute with name {attribute} on entity {table.logical_name}.",
        )
    if cast is not None and _CASTS.get(column.kind) != cast:
        raise DataverseError(
            400,
            BAD_QUERY,
            f"The attribute {attribute} of {table.logical_name} is a "
            f"{_TYPE_NAMES[column.kind]} attribute, not a {cast}.",
        )
    body = _attribute(table, column, with_options and cast is not None)
    body["@odata.context"] = (
        context + (f"/Microsoft.Dynamics.CRM.{cast}" if cast else "") + "/$entity"
    )
    return body
