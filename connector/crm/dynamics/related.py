"""Dataverse rows around opportunities: accounts, contacts, the sales team.

:class:`DataverseRelated` is the adapter's :class:`~connector.crm.base.RelatedRecords`.
Every call goes through the adapter's transport (token, budget, retries). What it relies
on (docs/dynamics.md):

- a relation is a lookup column of ``opportunity`` the adapter knows (``parentaccountid``
  → ``accounts``, ``parentcontactid`` → ``contacts``); a new contact is put under its
  account with ``parentcustomerid_account@odata.bind``;
- Dynamics 365 Sales keeps an opportunity's sales team as connections from the
  opportunity (``record1id``) to users (``record2id``, object type 8), each with a
  connection role (``record2roleid``, its name read as the lookup's formatted value);
  team changes are found by the connections' ``modifiedon`` (a deleted connection is
  seen when the opportunity itself changes next);
- values in a ``$filter`` are quoted by :func:`~connector.crm.dynamics.odata.literal`,
  names checked by :func:`~connector.crm.dynamics.odata.column_of`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from connector.crm.base import NewRelated, RelatedRow, WriteResult
from connector.crm.dynamics.odata import column_of, is_guid, literal
from connector.crm.dynamics.rows import FORMATTED, LookupTarget, plan_columns
from connector.crm.dynamics.transport import body_of, error_of
from connector.crm.dynamics.writes import _json_value
from connector.errors import CrmError, QuotaExhausted
from connector.model import CrmOpportunity, TeamMember

if TYPE_CHECKING:
    from connector.crm.dynamics.adapter import DataverseOpportunities

#: values per ``$filter`` of "or"ed equalities (well within URL limits)
CHUNK = 50
#: Dataverse's object type codes of the connection ends used here
OPPORTUNITY_TYPE, USER_TYPE = 3, 8
_ROLE = f"_record2roleid_value@{FORMATTED}"
_USER_COLUMNS = ("firstname", "lastname", "internalemailaddress", "address1_telephone1")


class DataverseRelated:
    """Accounts, contacts and sales teams of one environment (see the module docstring)."""

    def __init__(self, adapter: DataverseOpportunities) -> None:
        self.adapter = adapter

    def _target(self, relation: str) -> LookupTarget:
        target = self.adapter.lookups.get(relation)
        if target is None:
            raise CrmError(
                f"{relation!r} is not a lookup of opportunity the Dataverse adapter knows "
                f"({', '.join(sorted(self.adapter.lookups))}); fix the mapping's field path",
                code="unknown_relationship",
                transient=False,
            )
        return target

    def link_values(self, relation: str, row_id: str) -> dict[str, Any]:
        self._target(relation)
        return {relation: row_id}  # bound as <relation>@odata.bind by the writer

    def _rows(
        self, entity_set: str, select: Sequence[str], conditions: Sequence[str], what: str
    ) -> list[dict[str, Any]]:
        """Every row matching any of ``conditions`` (``or``ed, in chunks), pages followed."""
        rows: list[dict[str, Any]] = []
        prefer = {"Prefer": f'odata.include-annotations="{FORMATTED}"'}
        for start in range(0, len(conditions), CHUNK):
            params = {
                "$select": ",".join(dict.fromkeys(select)),
                "$filter": " or ".join(conditions[start : start + CHUNK]),
            }
            body = self.adapter.reader.get(
                entity_set, kind="related", what=what, params=params, headers=prefer
            )
            seen: set[str] = set()
            while True:
                rows.extend(r for r in body.get("value") or [] if isinstance(r, dict))
                next_link = body.get("@odata.nextLink")
                if not next_link:
                    break
                body = self.adapter.reader.follow(str(next_link), seen, prefer, kind="related")
        return rows

    # -- accounts and contacts -----------------------------------------------------------

    def find(
        self, relation: str, column: str, values: Sequence[str], *, columns: Sequence[str]
    ) -> list[RelatedRow]:
        target = self._target(relation)
        name = column_of(column)
        wanted = [column_of(c) for c in columns]
        unique = list(dict.fromkeys(v for v in values if v))
        rows = self._rows(
            target.entity_set,
            (target.key, name, *wanted),
            [f"{name} eq {literal(v)}" for v in unique],
            f"GET {target.entity_set} by {name}",
        )
        found = [
            RelatedRow(str(r[target.key]).lower(), {c: r.get(c) for c in (name, *wanted)})
            for r in rows
            if is_guid(r.get(target.key))
        ]
        return sorted(found, key=lambda r: r.id)

    def create(self, relation: str, rows: Sequence[NewRelated]) -> list[WriteResult]:
        target = self._target(relation)
        return [self._create(target, row) for row in rows]

    def _create(self, target: LookupTarget, row: NewRelated) -> WriteResult:
        body: dict[str, Any] = {column_of(k): _json_value(v) for k, v in row.values.items()}
        if row.account_id is not None and target.entity_set == "contacts":
            body["parentcustomerid_account@odata.bind"] = f"/accounts({row.account_id.lower()})"
        what = f"POST {target.entity_set}"
        try:
            # not retried by the engine: a create that timed out may have happened (the next
            # match finds the row)
            response = self.adapter.transport.send(
                "POST",
                target.entity_set,
                kind="create",
                what=what,
                params={"$select": target.key},
                headers={"Content-Type": "application/json", "Prefer": "return=representation"},
                content=json.dumps(body, ensure_ascii=False).encode("utf-8"),
            )
        except (QuotaExhausted, CrmError) as exc:
            return WriteResult(None, False, exc.code, exc.message)
        if response.status_code not in (200, 201, 204):
            error = error_of(response, what)
            return WriteResult(None, False, error.code, error.message)
        new_id = body_of(response, what).get(target.key) if response.content else None
        if not is_guid(new_id):
            entity = response.headers.get("OData-EntityId", "")
            new_id = entity.rsplit("(", 1)[-1].rstrip(")") if "(" in entity else None
        if not is_guid(new_id):
            return WriteResult(None, False, "malformed_create", f"{what}: no id came back")
        return WriteResult(str(new_id).lower(), True)

    # -- the sales team ------------------------------------------------------------------

    def opportunity_teams(self, record_ids: Sequence[str]) -> dict[str, list[TeamMember]]:
        ids = [i.lower() for i in dict.fromkeys(record_ids) if is_guid(i)]
        if not ids:
            return {}
        connections = [
            c
            for c in self._rows(
                "connections",
                (
                    "connectionid",
                    "_record1id_value",
                    "_record2id_value",
                    "_record2roleid_value",
                    "record2objecttypecode",
                ),
                [f"_record1id_value eq {i}" for i in ids],
                "GET connections of opportunities",
            )
            if c.get("record2objecttypecode") == USER_TYPE and is_guid(c.get("_record2id_value"))
        ]
        users = {
            str(u["systemuserid"]).lower(): u
            for u in self._rows(
                "systemusers",
                ("systemuserid", *_USER_COLUMNS),
                [
                    f"systemuserid eq {u}"
                    for u in {str(c["_record2id_value"]).lower() for c in connections}
                ],
                "GET systemusers of opportunity teams",
            )
        }
        teams: dict[str, list[TeamMember]] = {}
        for connection in connections:
            user = users.get(str(connection["_record2id_value"]).lower())
            if user is None:
                continue
            teams.setdefault(str(connection["_record1id_value"]).lower(), []).append(
                TeamMember(
                    first_name=_text(user.get("firstname")),
                    last_name=_text(user.get("lastname")),
                    email=_text(user.get("internalemailaddress")),
                    phone=_text(user.get("address1_telephone1")),
                    role=_text(connection.get(_ROLE)),
                )
            )
        return {k: sorted(v, key=lambda m: m.email.casefold()) for k, v in teams.items()}

    def team_changes(self, cursor: str | None) -> tuple[list[str], str | None]:
        adapter = self.adapter
        prefer = {"Prefer": "odata.maxpagesize=5000"}
        if not cursor:
            # nothing to catch up: every opportunity's team is read when it is pulled
            response = adapter.reader.get_response(
                "connections",
                kind="related",
                what="GET connections (the server's time)",
                headers=prefer,
                params={"$select": "connectionid", "$top": "1"},
            )
            return [], _iso(_date_of(response.headers) - adapter.cursor_margin)
        since = datetime.fromisoformat(cursor) - adapter.overlap
        response = adapter.reader.get_response(
            "connections",
            kind="related",
            what="GET connections changed",
            headers=prefer,
            params={
                "$select": "_record1id_value,modifiedon",
                "$filter": (
                    f"modifiedon ge {since.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')} "
                    f"and record1objecttypecode eq {OPPORTUNITY_TYPE}"
                ),
            },
        )
        body = body_of(response, "GET related rows")
        server_now = _date_of(response.headers)
        changed: list[str] = []
        seen: set[str] = set()
        while True:
            for row in body.get("value") or []:
                if isinstance(row, dict) and is_guid(row.get("_record1id_value")):
                    changed.append(str(row["_record1id_value"]).lower())
            next_link = body.get("@odata.nextLink")
            if not next_link:
                break
            body = adapter.reader.follow(str(next_link), seen, prefer, kind="related")
        newest = max(datetime.fromisoformat(cursor), server_now - adapter.cursor_margin)
        return list(dict.fromkeys(changed)), _iso(newest)

    def fetch_many(
        self, record_ids: Sequence[str], *, fields: Sequence[str]
    ) -> list[CrmOpportunity]:
        adapter = self.adapter
        plan = plan_columns(fields, lookups=adapter.lookups, stage_column=adapter.stage_column)
        ids = [i.lower() for i in dict.fromkeys(record_ids) if is_guid(i)]
        rows: list[dict[str, Any]] = []
        for start in range(0, len(ids), CHUNK):
            body = adapter.reader.get(
                "opportunities",
                kind="read",
                what=f"GET {len(ids)} opportunities",
                params={
                    "$select": ",".join(plan.select),
                    "$filter": " or ".join(
                        f"opportunityid eq {i}" for i in ids[start : start + CHUNK]
                    ),
                },
                headers={"Prefer": adapter.reader.prefer(track=False)},
            )
            rows.extend(r for r in body.get("value") or [] if isinstance(r, dict))
        return adapter.reader.normalise(rows, plan, adapter.reader.related_cache(plan))


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _date_of(headers: Mapping[str, str]) -> datetime:
    raw = headers.get("Date")
    if raw:
        try:
            return parsedate_to_datetime(raw).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    return datetime.now(UTC)


def _iso(stamp: datetime) -> str:
    return stamp.astimezone(UTC).isoformat()
