"""The deal's team: the record's owner and its opportunity team, on both companies' sides.

With ``fields.team.source: opportunity_team`` a deal's team is its owner and the users
of its opportunity team in the CRM (Salesforce ``OpportunityTeamMember``, Dataverse
connections to users): several members, edited in the CRM like any deal field.

- :meth:`TeamStep.attach` gives each record of a page its team members (one CRM query
  per 200 records, Dataverse one per 50 plus their users), which the mapping turns into
  the draft's team (:func:`connector.mapping.apply_parts.team_of`);
- a team edit does not change the opportunity's own modification stamp, so
  :meth:`TeamStep.process_changes` asks the CRM which opportunities' teams changed since
  the last cycle (one query a cycle) and processes them like any changed record; the
  fingerprint sends only what really changed;
- :func:`with_partner_team`: on a partner-to-partner deal received from a partner, the
  team holds both companies (the seed): the sending partner's members, as the referral
  first came, stay in every team the connector sends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from connector.crm.base import StageInfo
from connector.crm.odata_filter import filter_fields, matches
from connector.model import TEAM_MEMBERS, CrmOpportunity
from connector.sync.report import RunReport

if TYPE_CHECKING:
    from connector.sync.context import SyncContext

log = logging.getLogger(__name__)

#: the store cursor of the last team change read
TEAM_CURSOR = "crm_team"


def partner_members(raw: Mapping[str, Any]) -> list[str] | None:
    """The emails of an incoming referral's team as it came (the sender's people)."""
    team = raw.get("team")
    if not isinstance(team, list):
        return None
    return [
        str(m["email"]).casefold()
        for m in team
        if isinstance(m, Mapping) and isinstance(m.get("email"), str) and m["email"].strip()
    ]


def with_partner_team(
    wanted: dict[str, Any], previous: Mapping[str, Any], partner_team: Sequence[str]
) -> dict[str, Any]:
    """``wanted`` with the other company's members (``partner_team``) that ``previous``
    holds put back after the partner's own."""
    if not partner_team or not isinstance(previous.get("team"), list):
        return wanted
    ours = {str(m.get("email", "")).casefold() for m in wanted.get("team") or []}
    theirs = [
        m
        for m in previous["team"]
        if isinstance(m, Mapping)
        and str(m.get("email", "")).casefold() in partner_team
        and str(m.get("email", "")).casefold() not in ours
    ]
    return {**wanted, "team": [*(wanted.get("team") or []), *theirs]} if theirs else wanted


class TeamStep:
    """Reads opportunity teams for the engine (see the module docstring)."""

    def __init__(self, engine: SyncContext) -> None:
        self.engine = engine

    @property
    def enabled(self) -> bool:
        return self.engine.mapping.fields.team.source == "opportunity_team"

    def attach(self, records: Sequence[CrmOpportunity]) -> list[CrmOpportunity]:
        """``records`` with their team members (``TEAM_MEMBERS``) when the mapping reads them."""
        live = [r for r in records if not r.deleted]
        if not self.enabled or not live:
            return list(records)
        teams = self.engine.crm.related.opportunity_teams([r.id for r in live])
        out = []
        for record in records:
            members = teams.get(record.id) or teams.get(record.id.lower()) or []
            out.append(replace(record, fields={**record.fields, TEAM_MEMBERS: tuple(members)}))
        return out

    def process_changes(
        self,
        stages: Mapping[str, StageInfo],
        report: RunReport,
        process: Callable[[Sequence[CrmOpportunity], Mapping[str, StageInfo], RunReport], None],
    ) -> int:
        """Process (with ``process``, the outbound stage's) the opportunities whose team
        changed since the last cycle; the team cursor moves after them."""
        if not self.enabled:
            return 0
        engine = self.engine
        cursor = engine.store.get_cursor(engine.connection, TEAM_CURSOR)
        changed, new_cursor = engine.crm.related.team_changes(cursor)
        records: list[CrmOpportunity] = []
        if changed:
            select = engine.mapping.select
            fields = list(engine.mapping.crm_fields())
            if select is not None:
                fields += sorted(filter_fields(select) - set(fields))
            fetched = engine.crm.related.fetch_many(changed, fields=fields)
            records = [r for r in fetched if select is None or matches(select, r.fields)]
            log.info(
                "%s: %d opportunity team(s) changed, %d of them selected",
                engine.connection,
                len(changed),
                len(records),
            )
            if records:
                process(records, stages, report)
        if new_cursor is not None and new_cursor != cursor:
            engine.store.set_cursor(engine.connection, TEAM_CURSOR, new_cursor)
        return len(records)
