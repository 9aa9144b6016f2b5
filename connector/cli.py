"""The ``connector`` command line: sync, status, sandbox, auth, mappings.

Only the assembly of the Typer app: each command lives in :mod:`connector.commands`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from connector import __version__
from connector.commands import auth, common, console, local_server, run, status, sync
from connector.commands.dead_letters import errors_app
from connector.commands.help import HelpGroup
from connector.commands.mappings import mappings_app
from connector.commands.webhooks import webhooks_app
from connector.memory import quicken_thread_switches, tune_malloc

app = typer.Typer(
    help="Co-sell connector: keeps CRM opportunities and Partner Center referrals in step.",
    no_args_is_help=True,
    cls=HelpGroup,
)
app.add_typer(mappings_app, name="mappings")
app.add_typer(auth.auth_app, name="auth")
app.add_typer(errors_app, name="errors")
app.add_typer(webhooks_app, name="webhooks")


def _print_version(value: bool) -> None:
    if value:
        common.console.print(f"connector {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the connector's version and exit.",
        ),
    ] = False,
) -> None:
    """Co-sell connector: keeps CRM opportunities and Partner Center referrals in step."""


app.command()(sync.sync)
app.command()(run.run)
app.command("console")(console.console_command)
app.command()(status.status)
app.command()(local_server.sandbox)


def main() -> None:
    common.own_process = True
    tune_malloc()  # before any thread starts (see connector.memory)
    quicken_thread_switches()  # the push pool's responses wait less for the GIL
    app()
