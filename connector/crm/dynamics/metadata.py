"""What Dataverse says about its tables: change tracking, column types, stage options.

Every call goes through the :class:`~connector.crm.dynamics.transport.DataverseTransport`
(counted as ``metadata``). Queries follow Microsoft's "Query table definitions using
the Web API": a table by its ``LogicalName`` key, its ``Attributes``, and an attribute
cast to its metadata type for option sets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from connector.crm.dynamics.odata import literal
from connector.crm.dynamics.rows import DERIVED, LookupTarget
from connector.crm.dynamics.transport import DataverseTransport, error_of, page_of
from connector.model import CrmField, StageInfo

log = logging.getLogger(__name__)

#: ``AttributeType`` values whose JSON text is a date or a date and time
TEMPORAL_TYPES = frozenset({"DateTime"})
#: ``AttributeType`` values whose JSON value is a number (money stays exact as Decimal)
NUMBER_TYPES = frozenset({"Money", "Decimal", "Double"})


class DataverseMetadata:
    """Table definitions of one environment, read through its transport."""

    def __init__(self, transport: DataverseTransport) -> None:
        self.transport = transport

    def change_tracking_enabled(self, table: str) -> bool:
        """Whether ``table`` has ``ChangeTrackingEnabled`` ("Track changes" in Power Apps).

        Microsoft's own query: the tables whose ``ChangeTrackingEnabled`` is true.
        """
        what = "GET the tables with change tracking (EntityDefinitions)"
        body = self.read(
            "EntityDefinitions",
            what,
            {"$select": "LogicalName,SchemaName", "$filter": "ChangeTrackingEnabled eq true"},
        )
        names = {
            str(entry.get(key)).lower()
            for entry in body.get("value", [])
            for key in ("LogicalName", "SchemaName")
            if isinstance(entry.get(key), str)
        }
        return table.lower() in names

    def attribute_types(self, table: str) -> dict[str, str]:
        """Column logical name → ``AttributeType`` (``String``, ``DateTime``, ``Money`` ...)."""
        what = f"GET the columns of table {table} (AttributeType)"
        body = self.read(
            f"EntityDefinitions(LogicalName={literal(table)})/Attributes",
            what,
            {"$select": "LogicalName,AttributeType"},
        )
        types: dict[str, str] = {}
        for attribute in body.get("value", []):
            name, kind = attribute.get("LogicalName"), attribute.get("AttributeType")
            if isinstance(name, str) and isinstance(kind, str):
                types[name] = kind
        return types

    def option_set_stages(self, column: str) -> list[StageInfo]:
        """The options of the opportunity's choice column ``column``, as open stages."""
        path = (
            "EntityDefinitions(LogicalName='opportunity')/Attributes(LogicalName="
            f"{literal(column)})/Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
        )
        body = self.read(
            path,
            f"GET option set of {column}",
            {"$select": "LogicalName", "$expand": "OptionSet($select=Options)"},
        )
        options = (body.get("OptionSet") or {}).get("Options") or []
        return [
            StageInfo(
                _option_label(o),
                str(o.get("Value")),
                None,
                is_closed=False,
                is_won=False,
                sort_order=n,
            )
            for n, o in enumerate(options)
        ]

    def process_stages(self) -> list[StageInfo]:
        """The business-process phases of opportunity (``stepname``), as open stages."""
        what = "GET processstages of opportunity"
        response = self.transport.send(
            "GET",
            "processstages",
            kind="metadata",
            what=what,
            params={
                "$select": "stagename,processstageid",
                "$filter": "primaryentitytypecode eq 'opportunity'",
            },
        )
        if response.status_code in (400, 404):
            # Not every environment (nor the sandbox) exposes process stages to the app user.
            log.warning("dataverse process stages unavailable (%d)", response.status_code)
            return []
        if response.status_code != 200:
            raise error_of(response, what)
        rows = page_of(response, what).get("value", [])
        names = dict.fromkeys(str(r["stagename"]) for r in rows)
        return [
            StageInfo(n, n, None, is_closed=False, is_won=False, sort_order=i)
            for i, n in enumerate(names)
        ]

    def read(self, path: str, what: str, params: Mapping[str, str]) -> dict[str, Any]:
        """One metadata answer (``EntityDefinitions…``) as JSON, or the classified error."""
        response = self.transport.send("GET", path, kind="metadata", what=what, params=params)
        if response.status_code != 200:
            raise error_of(response, what)
        return page_of(response, what)


def _option_label(option: Mapping[str, Any]) -> str:
    label = option.get("Label") or {}
    user = label.get("UserLocalizedLabel") or {}
    if user.get("Label"):
        return str(user["Label"])
    for localized in label.get("LocalizedLabels") or []:
        if localized.get("Label"):
            return str(localized["Label"])
    return str(option.get("Value"))


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
