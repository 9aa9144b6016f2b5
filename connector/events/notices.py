"""What an event names, read from each source's body (pure: no I/O, no clock).

An event is only ever a *notice*: the ids of records that changed. Nothing else in
it is trusted or used; the targeted cycle reads each record from its system, as a
scheduled cycle does. A body that cannot be read raises :class:`Unreadable` with a
reason from a closed set (it becomes a metric label).

- Partner Center (learn.microsoft.com, "Partner Center webhook events"):
  ``{EventName, ResourceUri, ResourceName, AuditUri, ResourceChangeUtcDate}``; the
  referral events' ``ResourceUri`` is ``{baseURL}/engagements/v1/referrals/{id}``.
  The URI is never followed: only its last segment, the referral id, is taken.
- Dataverse (powerapps-docs ``use-webhooks.md``): the JSON of a
  ``RemoteExecutionContext``: ``PrimaryEntityName``, ``PrimaryEntityId``,
  ``MessageName``, ``InputParameters`` (the ``Target`` entity's changed attributes).
- Salesforce Change Data Capture (``cdc_message_structure``): ``data.payload
  .ChangeEventHeader`` with ``entityName``, ``recordIds``, ``changeType``,
  ``changedFields``, ``commitTimestamp``; ``data.event.replayId``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from connector.events.config import REFERRAL_EVENTS

PARTNER_CENTER = "partner_center"
DATAVERSE = "dataverse"
SALESFORCE = "salesforce"
SOURCES = (PARTNER_CENTER, DATAVERSE, SALESFORCE)

#: a referral id as the API prints them (GUIDs), with room for other opaque ids
_REFERRAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SALESFORCE_ID = re.compile(r"^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$")
#: ``/Date(1506409448000-0700)/``: milliseconds since the epoch (the offset is display only)
_WCF_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")
#: fields every CRM write changes, whoever makes it
_SYSTEM_FIELDS = frozenset(
    {
        "lastmodifieddate",
        "systemmodstamp",
        "lastmodifiedbyid",
        "modifiedon",
        "modifiedby",
        "modifiedonbehalfby",
        "versionnumber",
    }
)


class Unreadable(ValueError):
    """A body this source would never send; ``reason`` is a metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Notice:
    """The records one event names.

    ``full`` means the event says something changed that it cannot name (a Salesforce
    gap overflow, a wildcard): a full cycle runs soon. ``replay_id`` is the Salesforce
    event's position in the stream, stored once the records are synced.
    """

    source: str
    crm_ids: tuple[str, ...] = ()
    referral_ids: tuple[str, ...] = ()
    full: bool = False
    replay_id: int | None = None
    changed_at: datetime | None = None
    #: the change only touched fields the connector itself writes (its own echo)
    own_write: bool = False

    @property
    def empty(self) -> bool:
        return not (self.crm_ids or self.referral_ids or self.full)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Unreadable("malformed", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise Unreadable("malformed", "the body is not a JSON object")
    return data


def _get(data: Mapping[str, Any], name: str) -> Any:
    """A property by its documented name, or the same name in another case."""
    if name in data:
        return data[name]
    lowered = name.lower()
    for key, value in data.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None


# --------------------------------------------------------------------- Partner Center


def partner_center_notice(body: bytes) -> Notice | None:
    """The referral a Partner Center event names; None for events the connector ignores."""
    data = _json_object(body)
    name = _get(data, "EventName")
    if not isinstance(name, str):
        raise Unreadable("malformed", "the event has no EventName")
    if name.lower() not in REFERRAL_EVENTS:
        return None  # test-created, subscription events ...: nothing to sync
    uri = _get(data, "ResourceUri")
    referral_id = _last_segment(uri)
    if referral_id is None or not _REFERRAL_ID.fullmatch(referral_id):
        raise Unreadable("malformed", "the event's ResourceUri names no referral")
    return Notice(
        PARTNER_CENTER,
        referral_ids=(referral_id,),
        changed_at=_iso(_get(data, "ResourceChangeUtcDate")),
    )


def _last_segment(uri: object) -> str | None:
    if not isinstance(uri, str) or len(uri) > 2048:
        return None
    try:
        path = urlsplit(uri.strip()).path
    except ValueError:
        return None
    segments = [unquote(s) for s in path.split("/") if s]
    if len(segments) < 2 or segments[-2].lower() != "referrals":
        return None
    return segments[-1]


def _iso(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    text = value.strip().replace("Z", "+00:00")
    # .NET prints seven fractional digits; Python reads six
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- Dataverse


def dataverse_notice(
    body: bytes, *, entity: str = "opportunity", connector_fields: Collection[str] = ()
) -> Notice | None:
    """The row a Dataverse webhook post names; None for another table.

    ``connector_fields`` are the columns only the connector writes (the status fields):
    a post whose changed attributes are all among them is the connector's own write.
    """
    data = _json_object(body)
    table = _get(data, "PrimaryEntityName")
    if not isinstance(table, str):
        raise Unreadable("malformed", "the context has no PrimaryEntityName")
    if table.lower() != entity:
        return None
    row_id = _get(data, "PrimaryEntityId")
    if not isinstance(row_id, str) or not _GUID.fullmatch(row_id):
        raise Unreadable("malformed", "the context's PrimaryEntityId is not a GUID")
    changed = _target_attributes(_get(data, "InputParameters"))
    return Notice(
        DATAVERSE,
        crm_ids=(row_id.lower(),),
        changed_at=_wcf_date(_get(data, "OperationCreatedOn")),
        own_write=changed is not None and only_connector_fields(changed, connector_fields),
    )


def _target_attributes(parameters: object) -> list[str] | None:
    """The attribute names of the ``Target`` input parameter, when the post carries it."""
    if not isinstance(parameters, list):
        return None
    for item in parameters:
        if isinstance(item, dict) and item.get("key") == "Target":
            target = item.get("value")
            if not isinstance(target, dict):
                return None
            attributes = target.get("Attributes")
            if not isinstance(attributes, list):
                return None
            return [str(a["key"]) for a in attributes if isinstance(a, dict) and "key" in a]
    return None


def _wcf_date(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    found = _WCF_DATE.match(value.strip())
    if found is None:
        return _iso(value)
    return datetime.fromtimestamp(int(found.group(1)) / 1000, tz=UTC)


# -------------------------------------------------------------------------- Salesforce


def salesforce_notice(
    message: Mapping[str, Any],
    *,
    entity: str = "Opportunity",
    connector_fields: Collection[str] = (),
) -> Notice | None:
    """The records one Change Data Capture message names; None for another object."""
    data = message.get("data")
    if not isinstance(data, dict):
        raise Unreadable("malformed", "the change event has no data")
    payload = data.get("payload")
    event = data.get("event")
    header = payload.get("ChangeEventHeader") if isinstance(payload, dict) else None
    if not isinstance(header, dict):
        raise Unreadable("malformed", "the change event has no ChangeEventHeader")
    replay = event.get("replayId") if isinstance(event, dict) else None
    replay_id = replay if isinstance(replay, int) and not isinstance(replay, bool) else None
    name = header.get("entityName")
    if isinstance(name, str) and name.lower() != entity.lower():
        return Notice(SALESFORCE, replay_id=replay_id)  # another object: only the position
    change = str(header.get("changeType") or "")
    raw_ids = header.get("recordIds")
    ids = [i for i in raw_ids if isinstance(i, str)] if isinstance(raw_ids, list) else []
    stamp = header.get("commitTimestamp")
    changed_at = (
        datetime.fromtimestamp(stamp / 1000, tz=UTC)
        if isinstance(stamp, int | float) and not isinstance(stamp, bool)
        else None
    )
    if change == "GAP_OVERFLOW" or any("*" in i for i in ids) or not ids:
        # too many changes to name, or a change of every record: a full cycle
        return Notice(SALESFORCE, full=True, replay_id=replay_id, changed_at=changed_at)
    valid = tuple(i for i in ids if _SALESFORCE_ID.fullmatch(i))
    if not valid:
        raise Unreadable("malformed", "the change event names no Salesforce record id")
    fields = header.get("changedFields")
    own = (
        change == "UPDATE"
        and isinstance(fields, list)
        and bool(fields)
        and only_connector_fields([str(f) for f in fields], connector_fields)
    )
    return Notice(
        SALESFORCE, crm_ids=valid, replay_id=replay_id, changed_at=changed_at, own_write=own
    )


def only_connector_fields(changed: Sequence[str], connector_fields: Collection[str]) -> bool:
    """Whether every changed field is one only the connector writes (or a system stamp)."""
    mine = {f.lower() for f in connector_fields}
    if not mine:
        return False
    names = {c.lower() for c in changed}
    return bool(names - _SYSTEM_FIELDS) and names <= mine | _SYSTEM_FIELDS
