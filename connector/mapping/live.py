"""Mappings against a live CRM: the stage check and the record explanation, printed.

The I/O half of ``connector mappings check --against-crm`` and ``connector mappings
explain``: it picks the connection, builds its CRM adapter, reads stages or a record,
and renders :mod:`connector.mapping.stage_check` / :mod:`connector.mapping.explain`
results as Rich tables. Nothing is written anywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from connector.crm.base import CrmAdapter, StageInfo
from connector.crm.factory import build_crm
from connector.errors import ConfigError, CrmError
from connector.mapping.check import FileCheck, check_file
from connector.mapping.explain import Explanation, explain_record
from connector.mapping.schema import MappingFile
from connector.mapping.stage_check import StageCheck
from connector.model import TEAM_MEMBERS, DealDraft
from connector.settings import ConfigFile, ConnectionSettings, SalesforceSettings, Settings

if TYPE_CHECKING:
    from connector.state.records import Link


def connection_for(
    config: ConfigFile, mapping_path: Path | None, name: str | None
) -> ConnectionSettings:
    """``name``'s connection, else the one whose ``mapping`` is ``mapping_path``."""
    if name is not None:
        return config.connection(name)[0]
    if mapping_path is None:
        enabled = config.connection(None)
        if len(enabled) == 1:
            return enabled[0]
        raise ConfigError(
            "the config has several connections; choose one with --connection NAME "
            f"({', '.join(c.name for c in config.connections)})"
        )
    wanted = mapping_path.resolve()
    for conn in config.connections:
        if conn.mapping.resolve() == wanted:
            return conn
    raise ConfigError(
        f"no connection of the config uses {mapping_path} as its mapping; name the "
        "connection whose CRM to read with --connection NAME"
    )


def _crm_kind(conn: ConnectionSettings) -> str:
    return "salesforce" if isinstance(conn.crm, SalesforceSettings) else "dynamics"


def _check_kind(conn: ConnectionSettings, mapping: MappingFile, path: Path) -> None:
    if mapping.crm != _crm_kind(conn):
        raise ConfigError(
            f"{path} is written for {mapping.crm} but connection {conn.name!r} reads "
            f"{_crm_kind(conn)}; check it against a {mapping.crm} connection"
        )


@contextmanager
def live_crm(conn: ConnectionSettings, settings: Settings) -> Iterator[CrmAdapter]:
    """The connection's own CRM adapter (read-only use), closed afterwards."""
    crm = build_crm(conn.crm, f"connections[{conn.name}]", settings.secrets_dir)
    try:
        yield crm
    finally:
        crm.close()


def check_against_crm(
    conn: ConnectionSettings, settings: Settings, path: Path, *, max_bytes: int
) -> FileCheck:
    """The file's problems and the CRM's (fields, stages), in one pass."""
    with live_crm(conn, settings) as crm:
        return check_file(path, max_bytes=max_bytes, crm=crm, crm_kind=_crm_kind(conn))


def print_file_check(console: Console, check: FileCheck, conn: str | None) -> None:
    """The stage table (against a CRM), then each problem on a line of its own."""
    if check.stages is not None and conn is not None:
        print_stage_check(console, check.path, conn, check.stages)
    if not check.problems:
        console.print(f"{escape(str(check.path))}: ok", highlight=False)
    for problem in check.problems:
        console.print(escape(problem), highlight=False)


def print_stage_check(console: Console, path: Path, conn: str, check: StageCheck) -> None:
    table = Table(title=f"{escape(str(path))}: stages of {escape(conn)}")
    for col in ("CRM stage", "in the CRM", "becomes"):
        table.add_column(col, overflow="fold")
    for line in check.lines:
        style = "red" if line.problem else None
        table.add_row(escape(line.label), line.crm_kind, escape(line.maps_to), style=style)
    console.print(table)
    for warning in check.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)


def explain_live(
    conn: ConnectionSettings,
    settings: Settings,
    mapping: MappingFile,
    record_id: str,
    state_url: str | None = None,
) -> Explanation:
    """Fetch one record with the connection's adapter and explain it."""
    _check_kind(conn, mapping, conn.mapping)
    crm = build_crm(conn.crm, f"connections[{conn.name}]", settings.secrets_dir)
    try:
        record = crm.fetch(record_id, fields=mapping.crm_fields())
        if record is None:
            raise CrmError(
                f"{conn.name}: no opportunity with id {record_id}; check the id (or the "
                "connection: --connection NAME)",
                code="not_found",
            )
        if mapping.fields.team.source == "opportunity_team":
            # the team the next sync would send: the owner and the opportunity team
            teams = crm.related.opportunity_teams([record.id])
            members = tuple(teams.get(record.id) or teams.get(record.id.lower()) or ())
            record = replace(record, fields={**record.fields, TEAM_MEMBERS: members})
        stages: dict[str, StageInfo] = {}
        for info in crm.stage_metadata():
            stages[info.label] = info
            stages.setdefault(info.api_name, info)
    finally:
        crm.close()
    link = None
    if state_url is not None:
        link = _link(state_url, conn.name, record.id)
    return explain_record(record, mapping, stages, link)


def _link(state_url: str, conn: str, crm_id: str) -> Link | None:
    from connector.state.store import Store

    if (
        state_url.startswith("sqlite:///")
        and not Path(state_url.removeprefix("sqlite:///")).exists()
    ):
        return None  # never synced here: no store to read (and do not create one)
    store = Store.open(state_url)
    try:
        return store.connection(conn).links.get(crm_id)
    finally:
        store.close()


def print_explanation(console: Console, conn: str, explanation: Explanation) -> None:
    table = Table(title=f"{conn}: record {explanation.record_id}")
    for col in ("deal field", "CRM source", "raw value", "mapped value"):
        table.add_column(col, overflow="fold")
    for line in explanation.lines:
        table.add_row(line.deal_field, line.source, line.raw, line.mapped)
    console.print(table)
    result = explanation.result
    if isinstance(result, DealDraft):
        console.print(
            f"[green]becomes a {result.deal_type.value} deal[/] at stage {result.stage.value}",
            highlight=False,
        )
    else:
        console.print(f"[bold red]rejected[/] for {len(result.reasons)} reason(s):")
        for reason in result.reasons:
            console.print(f"  - {reason}", highlight=False)
    console.print(f"the next sync would: {explanation.action}", highlight=False)
