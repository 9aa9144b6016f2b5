"""``connector run``: the daemon, every connection on its schedule."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer

from connector.commands.common import (
    ConfigOpt,
    ExitCode,
    fail,
    settings_for,
    settle_heap_once,
)
from connector.errors import ConfigError, ConnectorError, MappingError
from connector.settings import PARALLEL_CYCLES, load_config


def run(
    config: ConfigOpt = None,
    health_host: Annotated[
        str,
        typer.Option(envvar="CONNECTOR_HEALTH_HOST", help="Address of the health/metrics port."),
    ] = "127.0.0.1",
    health_port: Annotated[
        int,
        typer.Option(
            envvar="CONNECTOR_HEALTH_PORT", help="Port of /healthz, /readyz and /metrics."
        ),
    ] = 9464,
    grace_s: Annotated[
        float,
        typer.Option(
            "--grace-s",
            envvar="CONNECTOR_GRACE_S",
            help="Seconds a stop waits for the running cycle.",
        ),
    ] = 30.0,
    unready_after_s: Annotated[
        float,
        typer.Option(
            "--unready-after-s",
            envvar="CONNECTOR_UNREADY_AFTER_S",
            help="How long a connection may fail (or be throttled) before /readyz says unready.",
        ),
    ] = 0.0,
    stalled_after_s: Annotated[
        float,
        typer.Option(
            "--stalled-after-s",
            envvar="CONNECTOR_STALLED_AFTER_S",
            help="How long a running cycle may move no record before /readyz says unready "
            "(0: never).",
        ),
    ] = 1800.0,
    lease_ttl_s: Annotated[
        float,
        typer.Option(
            "--lease-ttl-s",
            envvar="CONNECTOR_LEASE_TTL_S",
            help="Seconds a replica's claim on a connection lasts unless renewed (renewed "
            "every third of it): how soon survivors take over from a replica that died.",
        ),
    ] = 120.0,
    parallel_cycles: Annotated[
        int,
        typer.Option(
            "--parallel-cycles",
            envvar="CONNECTOR_PARALLEL_CYCLES",
            min=1,
            help="How many connections' cycles run at the same time (the others queue, "
            "oldest first); each running cycle holds its own pools and pages in memory.",
        ),
    ] = PARALLEL_CYCLES,
) -> None:
    """Run the daemon: every connection on its schedule, with health and metrics."""
    from connector.daemon import Daemon

    settings = settings_for(config)
    try:
        cfg = load_config(settings.config, max_bytes=settings.max_yaml_bytes)
        daemon = Daemon(
            settings,
            cfg,
            health_host=health_host,
            health_port=health_port,
            grace_s=grace_s,
            unready_after_s=unready_after_s,
            stalled_after_s=stalled_after_s,
            lease_ttl_s=lease_ttl_s,
            parallel_cycles=parallel_cycles,
        )
    except (ConfigError, MappingError) as exc:
        raise fail(exc.message, ExitCode.BAD_CONFIG) from None
    except ConnectorError as exc:
        raise fail(exc.message, ExitCode.FAILED) from None
    except OSError as exc:
        raise fail(
            f"cannot open the health port {health_host}:{health_port}: {exc.strerror}",
            ExitCode.BAD_CONFIG,
        ) from None
    daemon.install_signal_handlers()
    settle_heap_once()
    daemon.start()
    code = daemon.wait()
    if daemon.abandoned:  # a cycle thread still runs: do not wait for it at exit
        logging.shutdown()
        os._exit(code)
    raise typer.Exit(code)
