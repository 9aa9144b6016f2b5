"""The ``connector`` command line: sync, status, sandbox, auth, mappings."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from connector import logs
from connector.dead_letter_cli import errors_app
from connector.errors import ConfigError, ConnectorError, MappingError
from connector.events.cli import webhooks_app
from connector.memory import quicken_thread_switches, settle_heap, tune_malloc
from connector.settings import Settings, load_config, state_url

app = typer.Typer(
    help="Co-sell connector: keeps CRM opportunities and Partner Center referrals in step.",
    no_args_is_help=True,
    add_completion=False,
)
mappings_app = typer.Typer(help="Check and inspect mapping files.", no_args_is_help=True)
auth_app = typer.Typer(help="Sign in to Partner Center.", no_args_is_help=True)
app.add_typer(mappings_app, name="mappings")
app.add_typer(auth_app, name="auth")
app.add_typer(errors_app, name="errors")
app.add_typer(webhooks_app, name="webhooks")

console = Console(stderr=False)
err_console = Console(stderr=True)
log = logging.getLogger("connector")


class ExitCode:
    """Documented exit codes (README, "Exit codes")."""

    OK = 0  # every record synced or skipped
    PARTIAL = 1  # some records were rejected or failed: see `connector errors list`
    FAILED = 2  # the run failed: a remote system unreachable, a state error
    QUOTA = 3  # stopped at the configured share of a CRM's API allowance
    BAD_CONFIG = 4  # the config or a mapping file is invalid
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
) -> None:
    """Run one sync cycle for each connection (or one) and print a summary."""
    from connector.sync.oneshot import run_once

    settings = _settings(config)
    try:
        cfg = load_config(settings.config, max_bytes=settings.max_yaml_bytes)
        connections = cfg.connection(connection)
    except (ConfigError, MappingError) as exc:
        raise _fail(exc.message, ExitCode.BAD_CONFIG) from None
    _settle_heap()
    try:
        reports = run_once(settings, cfg, connections, dry_run=dry_run, full=full, console=console)
    except (ConfigError, MappingError) as exc:
        raise _fail(exc.message, ExitCode.BAD_CONFIG) from None
    except ConnectorError as exc:
        raise _fail(exc.message, ExitCode.FAILED) from None
    data: dict[str, Any] = _combined_report(reports)
    if report_json is not None:
        report_json.parent.mkdir(parents=True, exist_ok=True)
        report_json.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
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
    if Outcome.QUOTA in outcomes:
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
            help="How long a connection may fail before /readyz says unready.",
        ),
    ] = 0.0,
    lease_ttl_s: Annotated[
        float,
        typer.Option(
            "--lease-ttl-s",
            envvar="CONNECTOR_LEASE_TTL_S",
            help="Seconds a replica's claim on a connection lasts unless renewed (renewed "
            "every third of it): how soon survivors take over from a replica that died.",
        ),
    ] = 120.0,
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
            lease_ttl_s=lease_ttl_s,
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
def status(config: ConfigOpt = None) -> None:
    """Show cursors, link counts, dead letters and recent runs."""
    from connector.state.store import Store

    settings = _settings(config)
    try:
        cfg = load_config(settings.config, max_bytes=settings.max_yaml_bytes)
    except ConfigError as exc:
        raise _fail(exc.message, ExitCode.BAD_CONFIG) from None
    store = Store.open(state_url(settings, cfg))
    try:
        table = Table(title="Connections")
        for col in ("connection", "CRM cursor", "core cursor", "links", "dead letters"):
            table.add_column(col)
        for conn in cfg.connections:
            counts = store.count_links(conn.name)
            letters = store.list_dead_letters(conn.name)
            table.add_row(
                conn.name,
                store.get_cursor(conn.name, "crm") or "-",
                store.get_cursor(conn.name, "core") or "-",
                ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "0",
                str(len(letters)),
            )
        console.print(table)
        runs = Table(title="Recent runs")
        for col in ("connection", "started", "outcome", "duration", "counts"):
            runs.add_column(col)
        for run in store.recent_runs(limit=10):
            runs.add_row(
                run.connection,
                str(run.started)[:19],
                run.outcome or "running",
                f"{run.duration_s or 0:.1f}s",
                json.dumps({k: v for k, v in (run.counts or {}).items() if v}, default=str)[:80],
            )
        console.print(runs)
    finally:
        store.close()


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
    from connector.sandbox.server import serve

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
    import httpx

    from connector.dealcore.auth import device_code_login
    from connector.runtime import tls_context

    settings = _settings(config)
    try:
        cfg = load_config(settings.config, max_bytes=settings.max_yaml_bytes)
        conns = cfg.connection(connection)
    except ConfigError as exc:
        raise _fail(exc.message, ExitCode.BAD_CONFIG) from None
    for conn in conns:
        core = conn.core
        devicecode_url = core.devicecode_url or core.token_url.replace("/token", "/devicecode")
        with httpx.Client(verify=tls_context(core.ca_file), timeout=core.timeout_s) as http:
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


@mappings_app.command("check")
def mappings_check(
    file: Annotated[
        list[Path] | None, typer.Argument(help="Mapping files (default: those of the config).")
    ] = None,
    config: ConfigOpt = None,
    against_crm: Annotated[
        bool,
        typer.Option(
            "--against-crm",
            help="Also read the CRM's stages and show what each becomes (read-only).",
        ),
    ] = False,
    connection: Annotated[
        str | None,
        typer.Option("--connection", help="The connection whose CRM to read (--against-crm)."),
    ] = None,
) -> None:
    """Validate mapping files and report every problem with file:line:column."""
    from connector.mapping.live import check_against_crm, connection_for, print_stage_check
    from connector.mapping.load import load_mapping

    settings = _settings(config)
    files = list(file or [])
    try:
        cfg = (
            load_config(settings.config, max_bytes=settings.max_yaml_bytes)
            if against_crm or not files
            else None
        )
    except ConfigError as exc:
        raise _fail(exc.message, ExitCode.BAD_CONFIG) from None
    if not files and cfg is not None:
        files = [c.mapping for c in cfg.connection(connection)]
    bad = 0
    for path in files:
        try:
            mapping = load_mapping(path, max_bytes=settings.max_yaml_bytes)
        except MappingError as exc:
            bad += 1
            err_console.print(exc.message, highlight=False)
            continue
        console.print(f"{path}: ok")
        if cfg is None or not against_crm:
            continue
        try:
            conn = connection_for(cfg, path, connection)
            check = check_against_crm(conn, settings, mapping, path)
        except ConfigError as exc:
            raise _fail(exc.message, ExitCode.BAD_CONFIG) from None
        except ConnectorError as exc:
            raise _fail(exc.message, ExitCode.FAILED) from None
        print_stage_check(console, path, conn.name, check)
        bad += bool(check.problems)
    raise typer.Exit(ExitCode.BAD_CONFIG if bad else ExitCode.OK)


@mappings_app.command("explain")
def mappings_explain(
    record_id: Annotated[str, typer.Argument(help="The CRM opportunity's id.")],
    connection: Annotated[
        str | None, typer.Option("--connection", help="The connection to read it from.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Fetch one CRM record and show, field by field, the deal it would become (read-only)."""
    from connector.mapping.live import connection_for, explain_live, print_explanation
    from connector.mapping.load import load_mapping

    settings = _settings(config)
    try:
        cfg = load_config(settings.config, max_bytes=settings.max_yaml_bytes)
        conn = connection_for(cfg, None, connection)
        mapping = load_mapping(conn.mapping, max_bytes=settings.max_yaml_bytes)
        explanation = explain_live(conn, settings, mapping, record_id, state_url(settings, cfg))
    except (ConfigError, MappingError) as exc:
        raise _fail(exc.message, ExitCode.BAD_CONFIG) from None
    except ConnectorError as exc:
        raise _fail(exc.message, ExitCode.FAILED) from None
    print_explanation(console, conn.name, explanation)


@mappings_app.command("schema")
def mappings_schema() -> None:
    """Print the JSON Schema of mapping files (for editors)."""
    from connector.mapping.schema import MappingFile

    sys.stdout.write(json.dumps(MappingFile.model_json_schema(by_alias=True), indent=2) + "\n")


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
