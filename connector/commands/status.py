"""``connector status``: each connection's last success, next run, links, dead letters."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from connector.commands import common
from connector.commands.common import (
    ConfigOpt,
    ExitCode,
    fail,
    settings_for,
    store_exit_code,
)
from connector.errors import ConfigError, ConnectorError
from connector.settings import load_config, state_url


def status(
    config: ConfigOpt = None,
    connection: Annotated[
        str | None, typer.Option("--connection", help="Only this connection.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=0, help="How many recent cycles to show (0: none).")
    ] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show each connection's last success, next run, links, dead letters and recent cycles."""
    from datetime import UTC, datetime

    from connector.commands.status_view import as_json as status_json
    from connector.commands.status_view import gather, render
    from connector.state.store import Store

    settings = settings_for(config)
    try:
        cfg = load_config(settings.config, max_bytes=settings.max_yaml_bytes)
        connections = cfg.connections if connection is None else cfg.connection(connection)
    except ConfigError as exc:
        raise fail(exc.message, ExitCode.BAD_CONFIG) from None
    try:
        store = Store.open(state_url(settings, cfg), existing=True)
    except ConnectorError as exc:
        raise fail(exc.message, store_exit_code(exc)) from None
    try:
        report = gather(store, connections, limit=limit, now=datetime.now(UTC))
    except ConnectorError as exc:
        raise fail(exc.message, ExitCode.FAILED) from None
    finally:
        store.close()
    if as_json:
        sys.stdout.write(json.dumps(status_json(report), indent=2, default=str) + "\n")
    else:
        render(report, common.console)
