"""Writes of the Dataverse sandbox: create, PATCH (update or upsert), delete, Win/Lose actions.

Rules imitated from Dataverse: a PATCH on a key URL creates the row unless
``If-Match`` says it must exist; ``If-Match: W/"n"`` fails with 412 when the
row moved on; lookups are set with ``<nav>@odata.bind``, never through
``_<nav>_value``; a closed (won or lost) opportunity is read-only, and closing
one goes through ``WinOpportunity`` / ``LoseOpportunity``, never a statecode PATCH.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import date
from typing import Any

from sandbox.dataverse import schema as s
from sandbox.dataverse.errors import (
    BAD_QUERY,
    DUPLICATE_KEY,
    INVALID_STATE,
    INVALID_VALUE,
    NOT_FOUND,
    VERSION_MISMATCH,
    DataverseError,
)
from sandbox.dataverse.filter import parse_datetime
from sandbox.dataverse.store import DataverseStore, stamp

Row = dict[str, Any]

#: the application user the connector authenticates as: owner of rows it creates
APPLICATION_USER_ID = "00000000-0000-4000-8000-00000000a991"
_REFERENCE = re.compile(r"(?:^|/)([a-z_]+)\(([0-9a-fA-F-]{36})\)$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MONEY_LIMIT = 922_337_203_685_477


def not_found(table: s.Table, row_id: str) -> DataverseError:
    return DataverseError(404, NOT_FOUND, f"{table.logical_name} With Id = {row_id} Does Not Exist")


def is_guid(text: str) -> bool:
    return bool(_GUID.match(text))


def parse_etag(header: str) -> int | None:
    """``W/"123"`` → 123; None when it is no row version."""
    match = re.fullmatch(r'\s*(?:W/)?"?(\d+)"?\s*', header)
    return int(match.group(1)) if match else None


def _invalid(table: s.Table, name: str, value: Any, why: str) -> DataverseError:
    return DataverseError(
        400,
        INVALID_VALUE,
        f"A validation error occurred. The value {value!r} of '{name}' on record of type "
        f"'{table.logical_name}' is not valid: {why}.",
    )


def check_value(table: s.Table, column: s.Column, value: Any) -> Any:
    """The value to store for ``column``, or a 400 naming the column and the problem."""
    name, kind = column.name, column.kind
    if value is None:
        if kind in (s.STATE, s.STATUS):
            raise _invalid(table, name, value, "it cannot be empty")
        return None
    if kind == s.STRING:
        if not isinstance(value, str):
            raise _invalid(table, name, value, "a text value is expected")
        if column.max_length is not None and len(value) > column.max_length:
            raise _invalid(table, name, value[:40], f"longer than {column.max_length} characters")
        return value
    if kind in (s.INT, s.PICKLIST, s.STATE, s.STATUS):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(table, name, value, "a whole number is expected")
        if column.options and value not in column.labels:
            raise _invalid(table, name, value, f"allowed values are {sorted(column.labels)}")
        if name == "closeprobability" and not 0 <= value <= 100:
            raise _invalid(table, name, value, "it must be between 0 and 100")
        return value
    if kind == s.MONEY:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid(table, name, value, "a number is expected")
        if not math.isfinite(value) or abs(value) > _MONEY_LIMIT:
            raise _invalid(table, name, value, "outside the range of money values")
        return float(value)
    if kind == s.BOOL:
        if not isinstance(value, bool):
            raise _invalid(table, name, value, "true or false is expected")
        return value
    if kind == s.DATE:
        if not isinstance(value, str) or not _DATE.match(value) or not _is_calendar_date(value):
            raise _invalid(table, name, value, "a date like 2026-05-01 is expected")
        return value
    if kind == s.DATETIME:
        try:
            return stamp(parse_datetime(str(value)))
        except (ValueError, OverflowError):  # 9999-12-31T23:00:00-05:00 is past year 9999 in UTC
            raise _invalid(table, name, value, "an ISO 8601 date and time is expected") from None
    if kind == s.GUID:
        if not isinstance(value, str) or not is_guid(value):
            raise _invalid(table, name, value, "a GUID is expected")
        return value.lower()
    if isinstance(value, float) and not math.isfinite(value):
        raise _invalid(table, name, value, "a number is expected")
    return value


def _is_calendar_date(text: str) -> bool:
    """2026-02-30 has the shape of a date but names no day."""
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


class Writer:
    """Applies Web API writes to the store, with Dataverse's checks."""

    def __init__(self, store: DataverseStore) -> None:
        self.store = store

    def changes(self, table: s.Table, body: Any) -> Row:
        """A request body → column values to store (lookups resolved from ``@odata.bind``)."""
        if not isinstance(body, dict):
            raise DataverseError(400, BAD_QUERY, "The request body must be a JSON object.")
        out: Row = {}
        for key, value in body.items():
            if key.startswith("@odata."):
                continue
            if key.endswith("@odata.bind"):
                bound, target_id = self._bind(table, key[: -len("@odata.bind")], value)
                out[bound.name] = target_id
                continue
            column = table.columns.get(key)
            if column is None:
                raise DataverseError(
                    400,
                    BAD_QUERY,
                    f"Invalid property '{key}' was found in entity "
                    f"'Microsoft.Dynamics.CRM.{table.logical_name}'.",
                )
            if column.kind == s.LOOKUP:
                nav = key[1:-6]
                raise DataverseError(
                    400,
                    BAD_QUERY,
                    f"'{key}' is read-only: set the lookup with "
                    f'"{nav}@odata.bind": "/{column.targets[0]}(<id>)".',
                )
            if not column.writable:
                continue  # Dataverse ignores system columns in a body
            out[key] = check_value(table, column, value)
        return out

    def _bind(self, table: s.Table, prop: str, ref: Any) -> tuple[s.Column, str]:
        bound = table.bind_target(prop)
        if bound is None:
            raise DataverseError(
                400,
                BAD_QUERY,
                f"An undeclared property '{prop}' which only has property annotations in the "
                f"payload was found on type 'Microsoft.Dynamics.CRM.{table.logical_name}'.",
            )
        column, entity_set = bound
        match = _REFERENCE.search(str(ref)) if isinstance(ref, str) else None
        if match is None or match.group(1) != entity_set:
            raise DataverseError(
                400,
                BAD_QUERY,
                f"'{prop}@odata.bind' must reference /{entity_set}(<guid>), not {ref!r}.",
            )
        target_id = match.group(2).lower()
        if self.store.get(entity_set, target_id) is None:
            target = s.TABLES[entity_set]
            raise DataverseError(
                400,
                NOT_FOUND,
                f"{target.logical_name} With Id = {target_id} Does Not Exist "
                f"(bound by {prop}@odata.bind on {table.logical_name}).",
            )
        return column, target_id

    # --- opportunities' state rules ----------------------------------------------------------

    @staticmethod
    def _state_rules(row: Row | None, changes: Row) -> None:
        """Refuse state changes outside the actions, and any write to a closed opportunity."""
        state: int = changes.get("statecode", row["statecode"] if row else s.OPEN) or s.OPEN
        if row is not None and row["statecode"] != s.OPEN:
            reopening = state == s.OPEN and set(changes) <= {"statecode", "statuscode"}
            if not reopening:
                label = dict(s.OPPORTUNITY_STATE)[row["statecode"]]
                raise DataverseError(
                    400,
                    INVALID_STATE,
                    f"The opportunity {row['opportunityid']} is closed ({label}) and read-only. "
                    "Reopen it (statecode 0) before changing it.",
                )
        elif state != s.OPEN:
            action = "WinOpportunity" if state == s.WON else "LoseOpportunity"
            wanted = dict(s.OPPORTUNITY_STATE).get(state, str(state))
            raise DataverseError(
                400,
                INVALID_STATE,
                f"This message can not be used to set the state of opportunity to {wanted}. "
                f"In order to set the state of opportunity to {wanted}, use the {action} "
                "action instead.",
            )
        status = changes.get("statuscode")
        if status is not None and s.OPPORTUNITY_STATUS[status][1] != state:
            raise DataverseError(
                400,
                INVALID_STATE,
                f"{status} is not a valid status code for state code {state} of opportunity.",
            )
        if "statecode" in changes and "statuscode" not in changes:
            changes["statuscode"] = 1

    # --- requests ----------------------------------------------------------------------------

    def create(self, table: s.Table, body: Any) -> Row:
        """``POST <entity set>``: a new row (412 when the body names an existing key)."""
        changes = self.changes(table, body)
        row_id = changes.pop(table.primary_id, None) or str(uuid.uuid4())
        if self.store.get(table.entity_set, row_id) is not None:
            raise DataverseError(
                412, DUPLICATE_KEY, f"A record with the key {row_id} already exists."
            )
        return self._insert(table, row_id, changes)

    def _insert(self, table: s.Table, row_id: str, changes: Row) -> Row:
        if table is s.OPPORTUNITY:
            self._state_rules(None, changes)
            changes.setdefault("statecode", s.OPEN)
            changes.setdefault("statuscode", 1)
            if changes.get("_ownerid_value") is None and self.store.get(
                "systemusers", APPLICATION_USER_ID
            ):
                changes["_ownerid_value"] = APPLICATION_USER_ID
        return self.store.insert(table.entity_set, {table.primary_id: row_id, **changes})

    def patch(
        self,
        table: s.Table,
        row_id: str,
        body: Any,
        if_match: str | None,
        if_none_match: str | None,
    ) -> tuple[Row, bool]:
        """``PATCH <entity set>(<id>)``: update, or create when allowed; → (row, created)."""
        changes = self.changes(table, body)
        key = changes.pop(table.primary_id, row_id)
        if key != row_id.lower():
            raise DataverseError(400, BAD_QUERY, f"The body's key {key} differs from the URL's.")
        row = self.store.get(table.entity_set, row_id)
        if if_none_match is not None and if_none_match.strip() == "*" and row is not None:
            raise DataverseError(
                412, DUPLICATE_KEY, f"A record with the key {row_id} already exists."
            )
        if if_match is not None:
            if row is None:
                raise not_found(table, row_id)
            wanted = None if if_match.strip() == "*" else parse_etag(if_match)
            if if_match.strip() != "*" and wanted != row["versionnumber"]:
                raise DataverseError(
                    412,
                    VERSION_MISMATCH,
                    f"The version of the existing record {row_id} doesn't match the RowVersion "
                    f"property provided ({if_match.strip()} vs {row['versionnumber']}): "
                    "read the row again and retry.",
                )
        if row is None:
            return self._insert(table, row_id.lower(), changes), True
        if table is s.OPPORTUNITY:
            self._state_rules(row, changes)
        return self.store.update(table.entity_set, row_id, changes), False

    def delete(self, table: s.Table, row_id: str) -> None:
        if not self.store.delete(table.entity_set, row_id):
            raise not_found(table, row_id)

    def close(self, body: Any, won: bool) -> Row:
        """``WinOpportunity`` / ``LoseOpportunity``: close an open opportunity."""
        action = "WinOpportunity" if won else "LoseOpportunity"
        close = body.get("OpportunityClose") if isinstance(body, dict) else None
        ref = close.get("opportunityid@odata.bind") if isinstance(close, dict) else None
        match = _REFERENCE.search(ref) if isinstance(ref, str) else None
        if close is None or match is None or match.group(1) != "opportunities":
            raise DataverseError(
                400,
                BAD_QUERY,
                f"{action} needs OpportunityClose with "
                '"opportunityid@odata.bind": "/opportunities(<id>)".',
            )
        row = self.store.get("opportunities", match.group(2))
        if row is None:
            raise not_found(s.OPPORTUNITY, match.group(2))
        if row["statecode"] != s.OPEN:
            raise DataverseError(
                400,
                INVALID_STATE,
                f"The opportunity {row['opportunityid']} is already closed; it cannot be closed "
                "again until it is reopened.",
            )
        allowed = (3,) if won else (4, 5)
        status = body.get("Status", -1)
        status = allowed[0] if status == -1 else status
        if status not in allowed:
            raise _invalid(s.OPPORTUNITY, "Status", status, f"{action} accepts {list(allowed)}")
        actual_end = close.get("actualend") or self.store.now()
        revenue = close.get("actualrevenue", row["estimatedvalue"] if won else None)
        return self.store.update(
            "opportunities",
            row["opportunityid"],
            {
                "statecode": s.WON if won else s.LOST,
                "statuscode": status,
                "closeprobability": 100 if won else 0,
                "actualclosedate": str(actual_end)[:10],
                "actualvalue": revenue,
            },
        )
