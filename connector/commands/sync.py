"""``connector sync --once``: one cycle for each connection, a summary, an exit code."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from connector.commands import common
from connector.commands.common import (
    ConfigOpt,
    ExitCode,
    fail,
    settings_for,
    settle_heap_once,
)
from connector.errors import ConfigError, ConnectorError, MappingError
from connector.settings import load_config
from connector.signals import stop_on_signals


def sync(
    once: Annotated[
        bool,
        typer.Option(
            "--once", help="Run one cycle and exit (the default; `connector run` is the daemon)."
        ),
    ] = True,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; write nothing anywhere.")
    ] = False,
    full: Annotated[
        bool, typer.Option("--full", help="Ignore the CRM cursor: re-read every selected record.")
    ] = False,
    connection: Annotated[
        str | None, typer.Option("--connection", help="Only this connection.")
    ] = None,
    config: ConfigOpt = None,
    report_json: Annotated[
        Path | None, typer.Option("--report-json", help="Write the run report as JSON here.")
    ] = None,
    lease_wait_s: Annotated[
        float,
        typer.Option(
            "--lease-wait-s",
            help="Seconds to wait for a connection's lease while another run (a daemon, "
            "another sync --once) holds it; then exit 5 without syncing it.",
        ),
    ] = 60.0,
    lease_ttl_s: Annotated[
        float,
        typer.Option(
            "--lease-ttl-s",
            envvar="CONNECTOR_LEASE_TTL_S",
            help="Seconds the lease lasts unless renewed (renewed every third of it).",
        ),
    ] = 120.0,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the run report as JSON instead of tables (with --dry-run: the whole "
            "plan, every record with its changes).",
        ),
    ] = False,
) -> None:
    """Run one sync cycle for each connection (or one) and print a summary.

    Exit codes: 0 synced or skipped, 1 some records rejected or failed, 2 the run
    failed, 3 stopped at the API quota guard or throttled too long, 4 invalid
    configuration, 5 another run held a connection's lease, 130 stopped by SIGTERM or
    Ctrl-C (the requests in flight finish first; a second one stops at once).
    """
    from connector.sync.oneshot import one_shot_wording, run_once

    settings = settings_for(config)
    try:
        cfg = load_config(settings.config, max_bytes=settings.max_yaml_bytes)
        connections = cfg.connection(connection)
    except (ConfigError, MappingError) as exc:
        raise fail(exc.message, ExitCode.BAD_CONFIG) from None
    settle_heap_once()
    try:
        with stop_on_signals(threading.Event()) as stop:
            reports = run_once(
                settings,
                cfg,
                connections,
                dry_run=dry_run,
                full=full,
                console=common.console,
                stop=stop,
                quiet=as_json,
                lease_wait_s=lease_wait_s,
                lease_ttl_s=lease_ttl_s,
            )
    except KeyboardInterrupt:
        raise fail(
            "interrupted again: stopped at once; the committed cursor is safe (at most one "
            "page is read again next time)",
            ExitCode.INTERRUPTED,
        ) from None
    except (ConfigError, MappingError) as exc:
        raise fail(exc.message, ExitCode.BAD_CONFIG) from None
    except ConnectorError as exc:
        raise fail(one_shot_wording(exc.message), ExitCode.FAILED) from None
    data: dict[str, Any] = _combined_report(reports)
    if report_json is not None:
        report_json.parent.mkdir(parents=True, exist_ok=True)
        report_json.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    if any(r.mapping_problems for r in reports):
        raise typer.Exit(ExitCode.BAD_CONFIG)  # the cause is in the mapping file
    raise typer.Exit(_exit_code([r.outcome for r in reports]))


def _combined_report(reports: list[Any]) -> dict[str, Any]:
    if len(reports) == 1:
        return dict(reports[0].as_json())
    total: dict[str, Any] = {"connections": [r.as_json() for r in reports]}
    for key in ("created", "updated", "closed", "mirrored"):
        total[key] = sum(getattr(r, key) for r in reports)
    for key in ("skipped", "rejected", "failed"):
        merged: dict[str, int] = {}
        for r in reports:
            for reason, n in getattr(r, key).items():
                merged[reason] = merged.get(reason, 0) + n
        total[key] = merged
    calls: dict[str, int] = {}
    for r in reports:
        for system, n in r.api_calls.items():
            calls[system] = calls.get(system, 0) + n
    total["api_calls"] = calls
    total["duration_s"] = round(sum(r.duration_s for r in reports), 3)
    return total


def _exit_code(outcomes: list[str]) -> int:
    from connector.sync.report import Outcome

    if Outcome.FAILED in outcomes:
        return ExitCode.FAILED
    if Outcome.LEASE_HELD in outcomes:
        return ExitCode.LEASE_HELD
    if Outcome.QUOTA in outcomes or Outcome.THROTTLED in outcomes:
        return ExitCode.QUOTA
    if Outcome.INTERRUPTED in outcomes:
        return ExitCode.INTERRUPTED
    if Outcome.PARTIAL in outcomes:
        return ExitCode.PARTIAL
    return ExitCode.OK
