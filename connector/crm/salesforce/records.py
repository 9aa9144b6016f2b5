"""Pure conversions between Salesforce REST JSON and the connector's plain values.

Reading: :func:`normalise_record` turns one query row into a
:class:`~connector.model.CrmOpportunity` (relationships flattened into dotted keys,
``attributes`` dropped, numbers as :class:`~decimal.Decimal`). Salesforce's JSON
carries no types, so text is read by its field's type from ``describe`` (see
:mod:`connector.crm.salesforce.describe`), never by what it looks like: a ``date`` field
gives a :class:`~datetime.date`, a ``datetime`` field an aware datetime, and a text
field holding ``2026-05-01T12:34:56Z`` stays that text. A value that does not read
as its type is kept as the text it was and named in ``CrmOpportunity.problems``.

Writing: :func:`json_value` turns a Python value into what the REST API accepts
(datetimes ISO 8601 in UTC with ``Z``, decimals as JSON numbers, None as null);
:func:`write_result` reads one per-record result of a collection call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from connector.crm.base import RECORD_GONE, WriteResult
from connector.errors import CrmError
from connector.model import FIELD_PATTERN, CrmOpportunity

#: text that could be a date or datetime field's value: only such text needs a type
_TEMPORAL_SHAPE = re.compile(r"^\d{4}-\d{2}-\d{2}")
#: the stamp given to a row whose SystemModstamp cannot be read (the row is rejected)
UNREADABLE_STAMP = datetime(1970, 1, 1, tzinfo=UTC)
_FIELD_RE = re.compile(FIELD_PATTERN)
#: a writable field: a plain API name, no relationship path
WRITABLE_FIELD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
#: a Salesforce record id: 15 (case-sensitive) or 18 (case-safe) alphanumerics
RECORD_ID_RE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
#: fields every change query selects, ahead of the mapping's own
BASE_FIELDS = ("Id", "SystemModstamp", "IsDeleted")
_MAX_RESULT_TEXT = 600
#: per-record codes of a write to a record that is deleted (recycle bin) or purged
GONE_CODES = frozenset({"ENTITY_IS_DELETED", "NOT_FOUND"})


def select_fields(fields: Sequence[str]) -> list[str]:
    """The base fields then ``fields``, each once (case-insensitively), names checked.

    Raises ValueError naming the first name that is not a field or relationship path.
    """
    chosen: list[str] = []
    seen: set[str] = set()
    for name in (*BASE_FIELDS, *fields):
        if not isinstance(name, str) or not _FIELD_RE.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid Salesforce field name or relationship path")
        if name.lower() not in seen:
            seen.add(name.lower())
            chosen.append(name)
    return chosen


def needs_type(value: Any) -> bool:
    """Whether reading ``value`` depends on its field's type (text shaped like a date).

    Any other text is text whatever its field's type says, and numbers and booleans
    come typed in the JSON, so only such text is worth a ``describe``.
    """
    return isinstance(value, str) and _TEMPORAL_SHAPE.match(value) is not None


def normalise_record(
    row: Mapping[str, Any], fields: Sequence[str], types: Mapping[str, str | None] | None = None
) -> CrmOpportunity:
    """One query row as a :class:`CrmOpportunity` holding exactly ``fields``.

    ``types`` maps field paths to their Salesforce type (``date``, ``datetime``,
    ``string`` ...); a path it lacks is read as the JSON gives it. A null relationship
    gives None for each subfield asked through it. Raises ValueError when the row has
    no Id (nothing could name it); an unreadable SystemModstamp is a problem of the row.
    """
    record_id = lookup(row, "Id")
    if not isinstance(record_id, str):
        raise ValueError(f"a Salesforce row (Id {record_id!r}) has no Id")
    types = {**(types or {}), "SystemModstamp": "datetime"}  # a datetime by definition
    problems: list[str] = []
    values: dict[str, Any] = {}
    for name in dict.fromkeys(("SystemModstamp", *fields)):
        kind = types["SystemModstamp"] if name.lower() == "systemmodstamp" else types.get(name)
        values[name], problem = read_value(name, lookup(row, name), kind)
        problems += [problem] if problem else []
    modstamp = values.pop("SystemModstamp")
    if "SystemModstamp" in fields:
        values["SystemModstamp"] = modstamp
    if not isinstance(modstamp, datetime):
        if modstamp is None:
            problems.append("SystemModstamp is empty")
        modstamp = UNREADABLE_STAMP
    return CrmOpportunity(
        id=record_id,
        modstamp=modstamp,
        fields=values,
        deleted=lookup(row, "IsDeleted") is True,
        problems=tuple(problems),
    )


def read_value(name: str, value: Any, kind: str | None) -> tuple[Any, str | None]:
    """A JSON value read as its field's type ``kind``: (value, problem or None)."""
    if kind in ("date", "datetime") and isinstance(value, str):
        try:
            if kind == "date":
                return date.fromisoformat(value), None
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            return value, f"{name} holds {value[:40]!r}, which is not a valid {kind} ({exc})"
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)), None
    return plain_value(value), None


def lookup(row: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path; None when any relationship on the way is null/absent.

    Salesforce answers with the field's canonical spelling, which may differ in case
    from the name asked for, hence the case-insensitive fallback.
    """
    if path in row and "." not in path:  # a field of the row itself, as spelt
        return row[path]
    current: Any = row
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return None
        if part in current:
            current = current[part]
            continue
        lowered = part.lower()
        current = next((v for k, v in current.items() if k.lower() == lowered), None)
    return current


def plain_value(value: Any) -> Any:
    """A JSON value from Salesforce as a plain Python value: numbers as Decimal, text as is."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float | Decimal):
        return Decimal(str(value))
    if isinstance(value, Mapping):
        # a compound field (e.g. BillingAddress) or an unexpected nested object
        return {k: plain_value(v) for k, v in value.items() if k != "attributes"}
    if isinstance(value, list):
        return [plain_value(v) for v in value]
    return value


def json_value(value: Any) -> Any:
    """A value as the REST API takes it in a JSON body; ValueError for unsupported types.

    Naive datetimes are taken as UTC (the connector's own datetimes are aware; the core
    speaks UTC). Decimals become JSON numbers; one that a float cannot carry exactly is
    sent as its text, which Salesforce reads as a number too.
    """
    if value is None or isinstance(value, bool | str):
        return value.value if isinstance(value, Enum) else value
    if isinstance(value, int):
        return value
    if isinstance(value, float | Decimal):
        number = Decimal(str(value)) if isinstance(value, float) else value
        if not number.is_finite():
            raise ValueError(f"{value} is not a finite number")
        if number == number.to_integral_value():
            return int(number)
        as_float = float(number)
        return as_float if Decimal(repr(as_float)) == number else format(number, "f")
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return json_value(value.value)
    raise ValueError(f"a value of type {type(value).__name__} cannot be written to Salesforce")


def record_body(values: Mapping[str, Any]) -> dict[str, Any]:
    """Field values as a JSON record body; ValueError naming the first bad field or value."""
    body: dict[str, Any] = {}
    for name, value in values.items():
        if not isinstance(name, str) or not WRITABLE_FIELD_RE.fullmatch(name):
            raise ValueError(f"{name!r} is not a writable Salesforce field name")
        if name.lower() in ("id", "attributes"):
            raise ValueError(f"field {name!r} is set by the connector, not by a mapping")
        try:
            body[name] = json_value(value)
        except ValueError as exc:
            raise ValueError(f"field {name}: {exc}") from None
    return body


def refused_write(crm_id: str | None, reason: str) -> WriteResult:
    """The result of a record the adapter refused to send (bad id, field name or value)."""
    return WriteResult(crm_id, False, "invalid_request", f"not sent to Salesforce: {reason}")


def write_result(crm_id: str | None, row: Any) -> WriteResult:
    """One ``composite/sobjects`` result (``{id, success, errors: [{statusCode, …}]}``)."""
    if not isinstance(row, Mapping):
        return WriteResult(crm_id, False, "bad_response", "Salesforce sent no result for it")
    new_id = row.get("id") if isinstance(row.get("id"), str) else None
    if row.get("success") is True:
        return WriteResult(crm_id or new_id, True)
    errors = row.get("errors") or []
    first = errors[0] if errors and isinstance(errors[0], Mapping) else {}
    code = str(first.get("statusCode") or first.get("errorCode") or "UNKNOWN")
    if code in GONE_CODES:
        code = RECORD_GONE  # Salesforce's own code stays in the message
    texts = []
    for error in errors:
        if isinstance(error, Mapping):
            fields = error.get("fields") or []
            suffix = f" (fields: {', '.join(map(str, fields))})" if fields else ""
            texts.append(f"{error.get('statusCode', code)}: {error.get('message', '')}{suffix}")
    return WriteResult(crm_id or new_id, False, code, "; ".join(texts)[:_MAX_RESULT_TEXT])


def parse_cursor(cursor: str | None) -> datetime | None:
    """A stored change cursor (ISO 8601, UTC when it names no zone); CrmError when unreadable."""
    if cursor is None or cursor == "":
        return None
    try:
        parsed = datetime.fromisoformat(cursor)
    except ValueError:
        raise CrmError(
            f"the stored Salesforce cursor {cursor[:40]!r} is not an ISO 8601 timestamp; "
            "run a full sync to reset it",
            code="bad_cursor",
            transient=False,
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_cursor(stamp: datetime | None) -> str | None:
    """A change cursor as stored: UTC, milliseconds, ``Z``."""
    if stamp is None:
        return None
    return stamp.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def query_records(answer: Any, what: str) -> list[Mapping[str, Any]]:
    """The records of a query answer, or a clear error when the answer is not one.

    A server (or a proxy in front of it) that answers 200 with something else, such as
    an error array, a page without ``records`` or ``done``, or records that are not
    objects, must fail the run: read as "no records", it would silently skip changes.
    """
    records = answer.get("records") if isinstance(answer, dict) else None
    done = answer.get("done") if isinstance(answer, dict) else None
    if (
        not isinstance(records, list)
        or not isinstance(done, bool)
        or not all(isinstance(r, dict) for r in records)
    ):
        raise CrmError(
            f"Salesforce answered {what} with something that is not a query result "
            f"(a {type(answer).__name__} without a records list and a done flag); nothing "
            "of it was used, the run stops and the next cycle reads the same changes again",
            code="bad_response",
            transient=False,
        )
    return records
