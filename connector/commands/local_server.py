"""``connector sandbox``: start the local HTTPS server imitating the three remote APIs
(the sandbox, a package of its own installed with the `sandbox` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from connector import logs
from connector.commands.common import (
    ExitCode,
    fail,
)

#: what only the sandbox needs (the `sandbox` extra)
SANDBOX_DEPENDENCIES = frozenset({"starlette", "uvicorn", "trustme"})


def sandbox_missing(module: str) -> str:
    """What to do when the sandbox, or one of its dependencies, is not installed."""
    return (
        f"the sandbox is not installed (no module {module!r}): it is not part of the "
        "connector's package. From a clone of the repository, install it with "
        "`pip install -e '.[sandbox]'` (scripts/demo does)"
    )


def sandbox(
    host: Annotated[
        str, typer.Option(help="Address to bind (loopback only unless --allow-remote).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8700,
    opportunities: Annotated[int, typer.Option(help="Opportunities to seed in each CRM.")] = 500,
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 1,
    latency_ms: Annotated[
        float,
        typer.Option(
            "--latency-ms",
            help="Latency of every API call: each answer waits this long after its request arrived.",
        ),
    ] = 0.0,
    state: Annotated[
        Path | None,
        typer.Option("--state", help="Keep the sandbox's data in this file across restarts."),
    ] = None,
    ca_file: Annotated[
        Path, typer.Option("--ca-file", help="Where to write the CA certificate clients trust.")
    ] = Path(".connector/sandbox-ca.pem"),
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="Allow a non-loopback --host.")
    ] = False,
) -> None:
    """Start the local HTTPS sandbox imitating the referrals API, Salesforce and Dataverse."""
    try:
        from sandbox.server import serve
    except ImportError as exc:
        # the package itself missing, or one of the extra's dependencies (a module of
        # the sandbox missing is a fault of the clone, not of the install)
        if exc.name != "sandbox" and (exc.name or "").partition(".")[0] not in SANDBOX_DEPENDENCIES:
            raise
        missing = (exc.name or "sandbox").partition(".")[0]
        raise fail(sandbox_missing(missing), ExitCode.BAD_CONFIG) from None

    logs.setup("INFO", "auto")
    try:
        serve(
            host=host,
            port=port,
            opportunities=opportunities,
            seed=seed,
            latency_ms=latency_ms,
            state_file=state,
            ca_file=ca_file,
            allow_remote=allow_remote,
        )
    except ValueError as exc:
        raise fail(str(exc), ExitCode.BAD_CONFIG) from None
