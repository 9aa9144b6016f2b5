"""What every command shares: exit codes, the --config option, settings, failing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from connector import logs, terminal
from connector.errors import ConnectorError
from connector.memory import settle_heap
from connector.settings import Settings

#: where results go, and errors: read through this module (``common.console``), so a
#: test or an embedding program that replaces them here replaces them for every command
console = terminal.stdout
err_console = terminal.stderr
log = logging.getLogger("connector")


class ExitCode:
    """Documented exit codes (README, "Exit codes")."""

    OK = 0  # every record synced or skipped
    PARTIAL = 1  # some records were rejected or failed: see `connector errors list`
    FAILED = 2  # the run failed: a remote system unreachable, a state error
    QUOTA = 3  # stopped at a CRM's API allowance share, or throttled longer than allowed
    BAD_CONFIG = 4  # the config or a mapping file is invalid
    LEASE_HELD = 5  # another run (a daemon, another sync --once) holds a connection's lease
    INTERRUPTED = 130


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Config file (default: $CONNECTOR_CONFIG or config/sandbox.yaml)."
    ),
]


def settings_for(config: Path | None) -> Settings:
    settings = Settings()
    if config is not None:
        settings = settings.model_copy(update={"config": config})
    logs.setup(settings.log_level, settings.log_format)
    return settings


def fail(message: str, code: int) -> typer.Exit:
    # escaped: messages name settings such as connections[name].mapping, not markup
    err_console.print(f"[bold red]error:[/] {escape(logs.scrub(message))}", highlight=False)
    return typer.Exit(code)


def store_exit_code(exc: ConnectorError) -> int:
    """A store that cannot be opened because of its URL is a configuration error."""
    return ExitCode.BAD_CONFIG if exc.code in ("config", "state_missing") else ExitCode.FAILED


#: set by :func:`connector.cli.main`: the process is the connector's own, so process-wide settings
#: apply (not when a test runner or another program calls the commands)
own_process = False


def settle_heap_once() -> None:
    """Start-up is over: shorter full collections from here on (see connector.memory)."""
    if own_process:
        settle_heap()
