"""Closing Dataverse opportunities as lost: ``LoseOpportunity``, never a ``statecode`` PATCH.

Dataverse closes an opportunity with its actions only (crm-apis.md); a closed row is
read-only. So the values that go with the closing (the reason field) are PATCHed first,
then ``LoseOpportunity`` is called with the status reason the mapping names, found by
its label in the ``statuscode`` metadata (read once per adapter). A row closed already
answers ``read_only_closed``: it needs nothing more.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from connector.crm.base import LostClosing, WriteResult
from connector.crm.dynamics.odata import is_guid
from connector.crm.dynamics.rows import STATE_LOST
from connector.crm.dynamics.transport import error_of
from connector.crm.dynamics.writes import CLOSED_ROW_CODE
from connector.errors import CrmError, QuotaExhausted

if TYPE_CHECKING:
    from connector.crm.dynamics.adapter import DataverseOpportunities

_STATUS_METADATA = (
    "EntityDefinitions(LogicalName='opportunity')/Attributes(LogicalName='statuscode')"
    "/Microsoft.Dynamics.CRM.StatusAttributeMetadata"
)


class DataverseClosing:
    """``close_lost`` for :class:`~connector.crm.dynamics.adapter.DataverseOpportunities`."""

    def __init__(self, adapter: DataverseOpportunities) -> None:
        self.adapter = adapter
        self._lost: dict[str, int] | None = None

    def lost_status_codes(self) -> dict[str, int]:
        """Lost status reasons: label (case-folded) → ``statuscode`` value."""
        if self._lost is None:
            body = self.adapter.reader.get(
                _STATUS_METADATA,
                kind="metadata",
                what="GET the status reasons of opportunity",
                params={"$select": "LogicalName", "$expand": "OptionSet($select=Options)"},
            )
            options = (body.get("OptionSet") or {}).get("Options") or []
            self._lost = {
                _label(o).casefold(): int(o["Value"])
                for o in options
                if o.get("State") == STATE_LOST and isinstance(o.get("Value"), int)
            }
        return self._lost

    def close_lost(self, items: Sequence[LostClosing]) -> list[WriteResult]:
        if not items:
            return []
        try:
            codes = self.lost_status_codes()
        except CrmError as exc:
            return [WriteResult(i.crm_id, False, exc.code, exc.message) for i in items]
        return [self._close(item, codes) for item in items]

    def _close(self, item: LostClosing, codes: dict[str, int]) -> WriteResult:
        record = item.crm_id.lower()
        if not is_guid(record):
            return WriteResult(item.crm_id, False, "invalid_id", "not a Dataverse GUID")
        status = codes.get(item.lost_as.casefold())
        if status is None:
            return WriteResult(
                record,
                False,
                "not_a_lost_status",
                f"{item.lost_as!r} is not a lost status reason of opportunity (the "
                f"statuscode labels of the Lost state are {', '.join(sorted(codes))}); fix "
                "inbound.close in the mapping",
            )
        writer = self.adapter.writer
        if item.values:
            try:
                written = writer._patch(record, writer.payload(item.values))
            except CrmError as exc:
                return WriteResult(record, False, exc.code, exc.message)
            if not written.ok:
                return written
        close: dict[str, Any] = {
            "subject": "Closed by the co-sell connector",
            "opportunityid@odata.bind": f"/opportunities({record})",
        }
        if item.reason:
            close["description"] = item.reason[:2000]
        what = f"POST LoseOpportunity for opportunity {record}"
        try:
            response = self.adapter.transport.send(
                "POST",
                "LoseOpportunity",
                kind="write",
                what=what,
                headers={"Content-Type": "application/json"},
                content=json.dumps({"OpportunityClose": close, "Status": status}).encode("utf-8"),
            )
        except QuotaExhausted as exc:
            return WriteResult(record, False, "quota_exhausted", exc.message)
        except CrmError as exc:
            return WriteResult(record, False, exc.code, exc.message)
        if response.status_code < 300:
            return WriteResult(record, True)
        error = error_of(response, what)
        if error.code == CLOSED_ROW_CODE:
            return WriteResult(record, False, "read_only_closed", error.message)
        return WriteResult(record, False, error.code, error.message)


def _label(option: Any) -> str:
    label = (option.get("Label") or {}).get("UserLocalizedLabel") or {}
    return str(label.get("Label") or option.get("Value"))
