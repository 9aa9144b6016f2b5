"""The ``connector`` command line: sync, status, sandbox, auth, mappings."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from connector import __version__, logs, terminal
from connector.cli_help import HelpGroup
from connector.dead_letter_cli import errors_app
from connector.errors import ConfigError, ConnectorError, MappingError
from connector.events.cli import webhooks_app
from connector.mapping_cli import mappings_app
from connector.memory import quicken_thread_switches, settle_heap, tune_malloc
from connector.settings import PARALLEL_CYCLES, Settings, load_config, state_url
from connector.signals import stop_on_signals

app = typer.Typer(
    help="Co-sell connector: keeps CRM opportunities and Partner Center referrals in step.",
    no_args_is_help=True,
    cls=HelpGroup,
)
auth_app = typer.Typer(help="Sign in to Partner Center.", no_args_is_help=True)
app.add_typer(mappings_app, name="mappings")
app.add_typer(auth_app, name="auth")
app.add_typer(errors_app, name="errors")
app.add_typer(webhooks_app, name="webhooks")

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


def _settings(config: Path | None) -> Settings:
    settings = Settings()
    if config is not None:
        settings = settings.model_copy(update={"config": config})
    logs.setup(settings.log_level, settings.log_format)
    return settings


def _fail(message: str, code: int) -> typer.Exit:
    # escaped: messages name settings such as connections[name].mapping, not markup
    err_console.print(f"[bold red]error:[/] {escape(logs.scrub(message))}", highlight=False)
    return typer.Exit(code)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"connector {__version__}", highlight=False)
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


@app.command()
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

    settings = _settings(config)
    try:
        cfg = load_config(settings.config, max_bytes=settings.max_yaml_bytes)
        connections = cfg.connection(connection)
    except (ConfigError, MappingError) as exc:
        raise _fail(exc.message, ExitCode.BAD_CONFIG) from None
    _settle_heap()
    try:
        with stop_on_signals(threading.Event()) as stop:
            reports = run_once(
                settings,
                cfg,
                connections,
                dry_run=dry_run,
                full=full,
                console=console,
                stop=stop,
                quiet=as_json,
                lease_wait_s=lease_wait_s,
                lease_ttl_s=lease_ttl_s,
            )
    except KeyboardInterrupt:
        raise _fail(
            "interrupted again: stopped at once; the committed cursor is safe (at most one "
            "page is read again next time)",
            ExitCode.INTERRUPTED,
        ) from None
    except (ConfigError, MappingError) as exc:
        raise _fail(exc.message, ExitCode.BAD_CONFIG) from None
    except ConnectorError as exc:
        raise _fail(one_shot_wording(exc.message), ExitCode.FAILED) from None
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


@app.command()
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

    settings = _settings(config)
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
        raise _fail(exc.message, ExitCode.BAD_CONFIG) from None
    except ConnectorError as exc:
        raise _fail(exc.message, ExitCode.FAILED) from None
    except OSError as exc:
        raise _fail(
            f"cannot open the health port {health_host}:{health_port}: {exc.strerror}",
            ExitCode.BAD_CONFIG,
        ) from None
    daemon.install_signal_handlers()
    _settle_heap()
    daemon.start()
    code = daemon.wait()
    if daemon.abandoned:  # a cycle thread still runs: do not wait for it at exit
        logging.shutdown()
        os._exit(code)
    raise typer.Exit(code)


@app.command("console")
def console_command(config: ConfigOpt = None) -> None:
    """Serve the admin console over the state store, without the daemon (Ctrl-C stops it)."""
    import signal
    import threading

    from connector.console import open_console
    from connector.state.store import Store

    settings = _settings(config)
    try:
        cfg = load_config(settings.config)
    except ConfigError as exc:
        raise _fail(exc.message, ExitCode.BAD_CONFIG) from None
    if not cfg.console.enabled:
        raise _fail(
            f"the console is off in {settings.config}; turn it on with a `console:` section "
            '(enabled: true, admin: {env: NAME}; see the README\'s "Admin console")',
            ExitCode.BAD_CONFIG,
        )
    try:
        store = Store.open(state_url(settings, cfg))
    except ConnectorError as exc:
        raise _fail(exc.message, ExitCode.FAILED) from None
    try:
        server = open_console(cfg, settings, store)
    except ConfigError as exc:
        store.close()
        raise _fail(exc.message, ExitCode.BAD_CONFIG) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    console.print(f"console on {server.url} (Ctrl-C stops it)", highlight=False)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
        store.close()


@app.command()
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

    from connector.state.store import Store
    from connector.status_view import as_json as status_json
    from connector.status_view import gather, render

    settings = _settings(config)
    try:
        cfg = load_config(settings.config, max_bytes=settings.max_yaml_bytes)
        connections = cfg.connections if connection is None else cfg.connection(connection)
    except ConfigError as exc:
        raise _fail(exc.message, ExitCode.BAD_CONFIG) from None
    try:
        store = Store.open(state_url(settings, cfg), existing=True)
    except ConnectorError as exc:
        raise _fail(exc.message, _store_exit_code(exc)) from None
    try:
        report = gather(store, connections, limit=limit, now=datetime.now(UTC))
    except ConnectorError as exc:
        raise _fail(exc.message, ExitCode.FAILED) from None
    finally:
        store.close()
    if as_json:
        sys.stdout.write(json.dumps(status_json(report), indent=2, default=str) + "\n")
    else:
        render(report, console)


def _store_exit_code(exc: ConnectorError) -> int:
    """A store that cannot be opened because of its URL is a configuration error."""
    return ExitCode.BAD_CONFIG if exc.code in ("config", "state_missing") else ExitCode.FAILED


#: what only the sandbox needs (the `sandbox` extra)
SANDBOX_DEPENDENCIES = frozenset({"starlette", "uvicorn", "trustme"})


def sandbox_missing(module: str) -> str:
    """What to do when the sandbox, or one of its dependencies, is not installed."""
    return (
        f"the sandbox is not installed (no module {module!r}): it is not part of the "
        "connector's package. From a clone of the repository, install it with "
        "`pip install -e '.[sandbox]'` (scripts/demo does)"
    )


@app.command()
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
        raise _fail(sandbox_missing(missing), ExitCode.BAD_CONFIG) from None

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
        raise _fail(str(exc), ExitCode.BAD_CONFIG) from None


@auth_app.command("login")
def auth_login(
    connection: Annotated[
        str | None, typer.Option("--connection", help="The connection to sign in for.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Sign in to Partner Center once with the device-code flow; the refresh token is cached."""
    from connector.dealcore.auth import device_code_login
    from connector.runtime import core_http

    settings = _settings(config)
    try:
        cfg = load_config(settings.config, max_bytes=settings.max_yaml_bytes)
        conns = cfg.connection(connection)
    except ConfigError as exc:
        raise _fail(exc.message, ExitCode.BAD_CONFIG) from None
    for conn in conns:
        core = conn.core
        devicecode_url = core.devicecode_url or core.token_url.replace("/token", "/devicecode")
        with core_http(core, conn.request_deadline_s) as http:
            try:
                device_code_login(
                    devicecode_url,
                    core.token_url,
                    core.client_id,
                    core.scope,
                    core.token_cache,
                    http,
                    # the endpoint's own words: text (not markup), scrubbed like any output
                    echo=lambda text: console.print(escape(logs.scrub(text)), highlight=False),
                )
            except ConnectorError as exc:
                raise _fail(exc.message, ExitCode.FAILED) from None
        console.print(f"{conn.name}: signed in; the refresh token is cached in {core.token_cache}")


#: set by :func:`main`: the process is the connector's own, so process-wide settings
#: apply (not when a test runner or another program calls the commands)
_own_process = False


def _settle_heap() -> None:
    """Start-up is over: shorter full collections from here on (see connector.memory)."""
    if _own_process:
        settle_heap()


def main() -> None:
    global _own_process
    _own_process = True
    tune_malloc()  # before any thread starts (see connector.memory)
    quicken_thread_switches()  # the push pool's responses wait less for the GIL
    app()
