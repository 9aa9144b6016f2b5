"""Option-set metadata as ``EntityDefinitions(...)/Attributes(...)/<cast>`` returns it.

Supported casts: ``Microsoft.Dynamics.CRM.PicklistAttributeMetadata``,
``StatusAttributeMetadata`` (options carry their ``State``),
``StateAttributeMetadata`` (options carry their ``DefaultStatus``) and
``BooleanAttributeMetadata`` (``TrueOption`` / ``FalseOption``).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from connector.sandbox import dataverse_schema as s
from connector.sandbox.dataverse_errors import BAD_QUERY, NOT_FOUND, DataverseError

_PATH = re.compile(
    r"^EntityDefinitions\(LogicalName='(?P<entity>\w+)'\)/Attributes"
    r"(?:\(LogicalName='(?P<attribute>\w+)'\))?"
    r"(?:/Microsoft\.Dynamics\.CRM\.(?P<cast>\w+))?$"
)
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
    return path.startswith("EntityDefinitions(")


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
    return body


def answer(path: str, params: dict[str, str], base: str) -> dict[str, Any]:
    """The JSON body for a metadata GET; 404 for unknown tables or attributes, 400 for bad casts."""
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
