"""``connector errors``: list, show, retry and discard dead letters.

A dead letter is a record that could not be synced (rejected by the mapping, refused
by the core, or a transient failure that outlived its retries), one open letter per
record. ``retry`` marks letters so that the next cycle re-fetches and re-processes
their records; ``discard`` resolves a letter without retrying it. A letter is also
retried by itself when its record changes in the CRM.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from connector import logs
from connector.commands import common
from connector.commands.common import ConfigOpt, ExitCode, fail, settings_for, store_exit_code
from connector.errors import ConfigError, ConnectorError
from connector.settings import load_config, state_url
from connector.state.store import DeadLetter, Store

errors_app = typer.Typer(
    help="Records that could not be synced (dead letters): list, show, retry, discard.",
    no_args_is_help=True,
)

#: the exit code of a dead letter that is not there (documented for these commands)
_NOT_FOUND = 1


@contextmanager
def _store(config: Path | None) -> Iterator[Store]:
    settings = settings_for(config)
    try:
        cfg = load_config(settings.config, max_bytes=settings.max_yaml_bytes)
    except ConfigError as exc:
        raise fail(exc.message, ExitCode.BAD_CONFIG) from None
    try:
        # only what a sync wrote is read or marked: a mistyped URL must not make a store
        store = Store.open(state_url(settings, cfg), existing=True)
    except ConnectorError as exc:
        raise fail(exc.message, store_exit_code(exc)) from None
    try:
        yield store
    finally:
        store.close()


def _short(text: str, width: int = 60) -> str:
    """One line of ``text``; cut at ``width`` on a terminal, whole when piped."""
    line = " ".join(logs.scrub(text).split())
    if common.console.is_terminal and len(line) > width:
        line = line[: width - 1] + "…"
    return escape(line)  # text, not markup


def _when(letter: DeadLetter, which: str) -> str:
    return str(getattr(letter, which))[:19]


@errors_app.command("list")
def errors_list(
    connection: Annotated[
        str | None, typer.Option("--connection", help="Only this connection.")
    ] = None,
    reason: Annotated[
        str | None,
        typer.Option(
            "--reason",
            help="Only letters whose reason code contains this (invalid_record, transient:, "
            "retry:, a core error code).",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=0, help="Show at most this many (0: all).")
    ] = 50,
    include_resolved: Annotated[
        bool, typer.Option("--resolved", help="Also show resolved letters (history).")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the letters as JSON (whole messages).")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Open dead letters, most recently failed first."""
    with _store(config) as store:
        total = store.count_dead_letters(
            connection, include_resolved=include_resolved, reason=reason
        )
        letters = store.list_dead_letters(
            connection, include_resolved=include_resolved, reason=reason, limit=limit or None
        )
    if as_json:
        data = {"total": total, "letters": [_letter_json(d) for d in letters]}
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        return
    title = f"Dead letters ({total})"
    if len(letters) < total:
        title = f"Dead letters: the latest {len(letters)} of {total} (--limit 0 for all)"
    table = Table(title=title)
    for col in ("id", "connection", "CRM id", "reason", "attempts", "first seen", "last seen"):
        table.add_column(col, no_wrap=col in ("id", "CRM id"))
    table.add_column("message")
    for d in letters:
        reason_text = d.reason_code + (" (resolved)" if d.resolved else "")
        table.add_row(
            str(d.id),
            escape(d.connection),
            escape(d.crm_id),
            escape(reason_text),
            str(d.attempts),
            _when(d, "first_seen"),
            _when(d, "last_seen"),
            _short(d.message),
        )
    common.console.print(table)


def _letter_json(letter: DeadLetter) -> dict[str, object]:
    return {
        "id": letter.id,
        "connection": letter.connection,
        "crm_id": letter.crm_id,
        "reason": letter.reason_code,
        "message": logs.scrub(letter.message),
        "attempts": letter.attempts,
        "first_seen": letter.first_seen.isoformat(),
        "last_seen": letter.last_seen.isoformat(),
        "resolved": letter.resolved,
    }


@errors_app.command("show")
def errors_show(
    dead_letter_id: Annotated[int, typer.Argument(help="The letter's id (see `errors list`).")],
    config: ConfigOpt = None,
) -> None:
    """Everything about one dead letter."""
    with _store(config) as store:
        letter = store.get_dead_letter(dead_letter_id)
    if letter is None:
        raise fail(f"no dead letter {dead_letter_id}; see `connector errors list`", _NOT_FOUND)
    for name in (
        "id",
        "connection",
        "crm_id",
        "reason_code",
        "attempts",
        "first_seen",
        "last_seen",
        "crm_modstamp",
        "resolved",
    ):
        common.console.print(f"[bold]{name}:[/] {getattr(letter, name)}", highlight=False)
    common.console.print(f"[bold]message:[/] {escape(logs.scrub(letter.message))}", highlight=False)


@errors_app.command("retry")
def errors_retry(
    dead_letter_ids: Annotated[
        list[int] | None, typer.Argument(help="Letter ids (see `errors list`).")
    ] = None,
    retry_all: Annotated[bool, typer.Option("--all", help="Every open dead letter.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Mark letters for retry: the next cycle re-fetches and re-processes their records."""
    if not dead_letter_ids and not retry_all:
        raise fail("name the letters to retry, or pass --all", ExitCode.BAD_CONFIG)
    with _store(config) as store:
        marked = store.request_retry(None if retry_all else dead_letter_ids)
    found = {d.id for d in marked}
    missing = [i for i in dead_letter_ids or [] if i not in found]
    common.console.print(f"{len(marked)} dead letter(s) marked for retry at the next cycle")
    if missing:
        raise fail(
            f"no open dead letter with id {', '.join(map(str, missing))}; "
            "see `connector errors list`",
            _NOT_FOUND,
        )


@errors_app.command("discard")
def errors_discard(
    dead_letter_id: Annotated[int, typer.Argument(help="The letter's id (see `errors list`).")],
    config: ConfigOpt = None,
) -> None:
    """Resolve one dead letter without retrying it (it stays in the history)."""
    with _store(config) as store:
        done = store.discard_dead_letter(dead_letter_id)
    if not done:
        raise fail(f"no open dead letter {dead_letter_id}; see `connector errors list`", _NOT_FOUND)
    common.console.print(f"dead letter {dead_letter_id} discarded")
