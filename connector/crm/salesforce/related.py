"""Salesforce records around opportunities: accounts, contacts, opportunity teams.

:class:`SalesforceRelated` is the adapter's :class:`~connector.crm.base.RelatedRecords`.
Every call goes through the adapter's own ``_call`` / ``_pages`` (quota guard, retries,
sign-in, error classification). What it relies on:

- a relationship name (``Account``, ``Primary_Contact__r``) is resolved with one
  ``describe`` of the opportunity object per adapter: its lookup field (``AccountId``)
  and the object it points to (``Account``, ``Contact``);
- ``OpportunityTeamMember`` holds the opportunity team (``OpportunityId``, ``UserId``,
  ``TeamMemberRole``); a team change does not touch the opportunity's
  ``SystemModstamp``, so changes are found by the team rows' own stamps, read with
  ``queryAll`` (a deleted row is a change too, while Salesforce keeps it);
- every name in a query is checked (:func:`~connector.crm.salesforce.soql.soql_field`) and
  every value quoted (:func:`~connector.crm.salesforce.soql.soql_literal`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from simple_salesforce.format import format_soql

from connector.crm.base import NewRelated, RelatedRow, WriteResult
from connector.crm.salesforce.records import RECORD_ID_RE, record_body, refused_write
from connector.crm.salesforce.soql import soql_field, soql_literal
from connector.errors import CrmError
from connector.model import CrmOpportunity, TeamMember

if TYPE_CHECKING:
    from connector.crm.salesforce.adapter import SalesforceOpportunities

#: ids or values per ``IN (...)`` (far below SOQL's length limit)
CHUNK = 200
_OBJECT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TEAM_FIELDS = (
    "OpportunityId, TeamMemberRole, User.FirstName, User.LastName, User.Email, User.Phone"
)


class SalesforceRelated:
    """Accounts, contacts and opportunity teams of one org (see the module docstring)."""

    def __init__(self, adapter: SalesforceOpportunities) -> None:
        self.adapter = adapter
        #: relationship name (lower case) → (lookup field, object it points to)
        self._relations: dict[str, tuple[str, str]] | None = None

    # -- relationships -------------------------------------------------------------------

    def _target(self, relation: str) -> tuple[str, str]:
        if self._relations is None:
            name = self.adapter.object_name
            answer = self.adapter._call(
                "describe",
                lambda sf: sf.restful(f"sobjects/{name}/describe", timeout=self.adapter.timeout),
                what=f"describing {name}",
            )
            found: dict[str, tuple[str, str]] = {}
            for field in answer.get("fields", []) if isinstance(answer, dict) else []:
                related, targets = field.get("relationshipName"), field.get("referenceTo")
                if isinstance(related, str) and isinstance(targets, list) and targets:
                    points_to = str(targets[0])
                    if _OBJECT_RE.fullmatch(points_to):
                        found[related.lower()] = (str(field.get("name")), points_to)
            self._relations = found
        target = self._relations.get(relation.lower())
        if target is None:
            raise CrmError(
                f"{relation!r} is not a relationship of {self.adapter.object_name} in this "
                "org; the mapping reads the customer through it: fix the field path",
                code="unknown_relationship",
                transient=False,
            )
        return target

    def link_values(self, relation: str, row_id: str) -> dict[str, Any]:
        field, _ = self._target(relation)
        return {field: row_id}

    # -- accounts and contacts -----------------------------------------------------------

    def find(
        self, relation: str, column: str, values: Sequence[str], *, columns: Sequence[str]
    ) -> list[RelatedRow]:
        _, obj = self._target(relation)
        names = list(dict.fromkeys(soql_field(c) for c in (column, *columns)))
        rows: list[RelatedRow] = []
        unique = list(dict.fromkeys(v for v in values if v))
        for start in range(0, len(unique), CHUNK):
            chunk = unique[start : start + CHUNK]
            soql = format_soql(
                "SELECT Id, {:literal} FROM {:literal} WHERE {:literal} IN ({:literal}) "
                "ORDER BY Id",
                ", ".join(names),
                obj,
                soql_field(column),
                ", ".join(soql_literal(v) for v in chunk),
            )
            for page in self.adapter._pages(soql, what=f"looking up {obj} records", deleted=False):
                for row in page:
                    if isinstance(row.get("Id"), str):
                        values_read = {n: row.get(n) for n in names}
                        rows.append(RelatedRow(str(row["Id"]), values_read))
        return rows

    def create(self, relation: str, rows: Sequence[NewRelated]) -> list[WriteResult]:
        _, obj = self._target(relation)
        items: list[tuple[str | None, dict[str, Any] | WriteResult]] = []
        for row in rows:
            values = dict(row.values)
            if row.account_id is not None and obj == "Contact":
                values["AccountId"] = row.account_id
            try:
                items.append((None, {"attributes": {"type": obj}, **record_body(values)}))
            except ValueError as exc:
                items.append((None, refused_write(None, f"new {obj}: {exc}")))
        # not retried: a create that timed out may have happened (the next match finds it)
        return self.adapter.writer.write_collections("POST", items, idempotent=False)

    # -- opportunity teams ---------------------------------------------------------------

    def opportunity_teams(self, record_ids: Sequence[str]) -> dict[str, list[TeamMember]]:
        teams: dict[str, list[TeamMember]] = {}
        ids = [i for i in dict.fromkeys(record_ids) if RECORD_ID_RE.fullmatch(i)]
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            soql = format_soql(
                "SELECT {:literal} FROM OpportunityTeamMember WHERE OpportunityId IN ({:literal})",
                _TEAM_FIELDS,
                ", ".join(soql_literal(i) for i in chunk),
            )
            for page in self.adapter._pages(soql, what="reading opportunity teams", deleted=False):
                for row in page:
                    user = row.get("User") if isinstance(row.get("User"), Mapping) else {}
                    assert isinstance(user, Mapping)
                    member = TeamMember(
                        first_name=_text(user.get("FirstName")),
                        last_name=_text(user.get("LastName")),
                        email=_text(user.get("Email")),
                        phone=_text(user.get("Phone")),
                        role=_text(row.get("TeamMemberRole")),
                    )
                    teams.setdefault(str(row.get("OpportunityId")), []).append(member)
        return {k: sorted(v, key=lambda m: m.email.casefold()) for k, v in teams.items()}

    def team_changes(self, cursor: str | None) -> tuple[list[str], str | None]:
        adapter = self.adapter
        now = adapter._server_time or adapter._clock()
        if not cursor:
            # nothing to catch up: every opportunity's team is read when it is pulled
            return [], _iso(now - adapter.server_margin)
        since = datetime.fromisoformat(cursor) - adapter.overlap
        soql = format_soql(
            "SELECT OpportunityId, SystemModstamp FROM OpportunityTeamMember "
            "WHERE SystemModstamp >= {:literal} ORDER BY SystemModstamp",
            soql_literal(since),
        )
        changed: list[str] = []
        newest = datetime.fromisoformat(cursor)
        for page in adapter._pages(soql, what="reading opportunity team changes", deleted=True):
            for row in page:
                changed.append(str(row.get("OpportunityId")))
                stamp = _stamp(row.get("SystemModstamp"))
                if stamp is not None and stamp > newest:
                    newest = stamp
        server_now = adapter._server_time or now
        newest = min(newest, server_now - adapter.server_margin) if changed else newest
        return list(dict.fromkeys(changed)), _iso(max(newest, datetime.fromisoformat(cursor)))

    def fetch_many(
        self, record_ids: Sequence[str], *, fields: Sequence[str]
    ) -> list[CrmOpportunity]:
        adapter = self.adapter
        columns = adapter._columns(fields)
        found: list[CrmOpportunity] = []
        ids = [i for i in dict.fromkeys(record_ids) if RECORD_ID_RE.fullmatch(i)]
        for start in range(0, len(ids), CHUNK):
            soql = format_soql(
                "SELECT {:literal} FROM {:literal} WHERE Id IN ({:literal})",
                ", ".join(columns),
                adapter.object_name,
                ", ".join(soql_literal(i) for i in ids[start : start + CHUNK]),
            )
            for page in adapter._pages(soql, what=f"reading {len(ids)} opportunities"):
                found.extend(adapter._records(page, columns))
        return found


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _stamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("+0000", "+00:00").replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(stamp: datetime) -> str:
    return stamp.astimezone(UTC).isoformat()
