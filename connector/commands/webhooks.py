"""``connector webhooks``: the Partner Center webhook registration, and what to set up in the CRM.

``register`` points Partner Center's referral events at this connector's receiver
(``events.public_url`` + ``/events/partner-center``, or ``--url``) and prints what each
connection's CRM needs so that its own changes arrive as events too; ``list`` shows
the registration; ``delete`` removes it. Exit codes: 0 done, 2 Partner Center
refused or could not be reached, 4 the config is wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from connector import logs
from connector.errors import ConfigError, ConnectorError
from connector.events.callbacks import DATAVERSE_PATH, PARTNER_CENTER_PATH
from connector.events.config import REFERRAL_EVENTS
from connector.events.registration import WebhookRegistration
from connector.settings import (
    ConfigFile,
    ConnectionSettings,
    DataverseSettings,
    Settings,
    load_config,
)

webhooks_app = typer.Typer(
    help="Partner Center webhook registration (near-real-time sync): register, list, delete.",
    no_args_is_help=True,
)

console = Console(soft_wrap=True)  # URLs and settings stay whole, to be copied
err_console = Console(stderr=True)
_BAD_CONFIG = 4
_FAILED = 2

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Config file (default: $CONNECTOR_CONFIG or config/sandbox.yaml)."
    ),
]
ConnectionOpt = Annotated[
    str | None,
    typer.Option("--connection", help="The connection whose Partner Center credentials are used."),
]


def _fail(message: str, code: int) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(logs.scrub(message))}", highlight=False)
    return typer.Exit(code)


def _load(config: Path | None) -> tuple[Settings, ConfigFile]:
    settings = Settings()
    if config is not None:
        settings = settings.model_copy(update={"config": config})
    logs.setup(settings.log_level, settings.log_format)
    try:
        return settings, load_config(settings.config, max_bytes=settings.max_yaml_bytes)
    except ConfigError as exc:
        raise _fail(exc.message, _BAD_CONFIG) from None


def _connection(cfg: ConfigFile, name: str | None) -> ConnectionSettings:
    try:
        chosen = cfg.connection(name)
    except ConfigError as exc:
        raise _fail(exc.message, _BAD_CONFIG) from None
    if not chosen:
        raise _fail("no enabled connection in the config file", _BAD_CONFIG)
    return chosen[0]


@contextmanager
def _client(
    settings: Settings, cfg: ConfigFile, conn: ConnectionSettings
) -> Iterator[WebhookRegistration]:
    """The registration API with the connection's Partner Center credentials."""
    from connector.runtime import core_http, core_tokens

    pc = cfg.events.partner_center
    core = conn.core.model_copy(update={"scope": pc.registration_scope})
    with core_http(core) as http:
        tokens = core_tokens(core, http, f"connections[{conn.name}]", settings.secrets_dir)
        yield WebhookRegistration(pc.registration_url, tokens, http)


@webhooks_app.command("register")
def register(
    config: ConfigOpt = None,
    connection: ConnectionOpt = None,
    url: Annotated[
        str | None,
        typer.Option(
            help="The callback URL (default: events.public_url + /events/partner-center)."
        ),
    ] = None,
    event: Annotated[
        list[str] | None,
        typer.Option(
            "--event", help="An event to register (repeat; default: the referral events)."
        ),
    ] = None,
    signature_header: Annotated[
        bool,
        typer.Option(help="Ask for the signature in x-ms-signature instead of Authorization."),
    ] = False,
) -> None:
    """Register this connector's receiver for Partner Center's referral events."""
    settings, cfg = _load(config)
    conn = _connection(cfg, connection)
    callback = url or (
        cfg.events.public_url.rstrip("/") + PARTNER_CENTER_PATH if cfg.events.public_url else None
    )
    if callback is None:
        raise _fail(
            "give --url, or set events.public_url (the https address Partner Center reaches "
            "the receiver at)",
            _BAD_CONFIG,
        )
    if not callback.startswith("https://"):
        raise _fail("the callback URL must be https://", _BAD_CONFIG)
    try:
        with _client(settings, cfg, conn) as client:
            answer = client.register(
                callback, list(event or REFERRAL_EVENTS), signature_header=signature_header
            )
    except ConfigError as exc:
        raise _fail(exc.message, _BAD_CONFIG) from None
    except ConnectorError as exc:
        raise _fail(exc.message, _FAILED) from None
    console.print(f"registered: {escape(str(answer.get('WebhookUrl', callback)))}", highlight=False)
    console.print(f"events: {escape(', '.join(map(str, answer.get('WebhookEvents') or [])))}")
    _print_crm_setup(cfg)


@webhooks_app.command("list")
def list_registration(config: ConfigOpt = None, connection: ConnectionOpt = None) -> None:
    """Show the tenant's webhook registration."""
    settings, cfg = _load(config)
    conn = _connection(cfg, connection)
    try:
        with _client(settings, cfg, conn) as client:
            current = client.current()
    except ConfigError as exc:
        raise _fail(exc.message, _BAD_CONFIG) from None
    except ConnectorError as exc:
        raise _fail(exc.message, _FAILED) from None
    if current is None:
        console.print("no webhook registration")
        return
    console.print(f"url: {escape(str(current.get('WebhookUrl')))}", highlight=False)
    console.print(f"events: {escape(', '.join(map(str, current.get('WebhookEvents') or [])))}")


@webhooks_app.command("delete")
def delete(config: ConfigOpt = None, connection: ConnectionOpt = None) -> None:
    """Remove the tenant's webhook registration (Partner Center stops posting events)."""
    settings, cfg = _load(config)
    conn = _connection(cfg, connection)
    try:
        with _client(settings, cfg, conn) as client:
            removed = client.delete()
    except ConfigError as exc:
        raise _fail(exc.message, _BAD_CONFIG) from None
    except ConnectorError as exc:
        raise _fail(exc.message, _FAILED) from None
    console.print("deleted" if removed else "no webhook registration")


def _print_crm_setup(cfg: ConfigFile) -> None:
    """What each connection's CRM needs so that its changes arrive as events."""
    base = (cfg.events.public_url or "https://<events.public_url>").rstrip("/")
    for conn in cfg.connections:
        if not conn.events.crm:
            console.print(
                escape(
                    f"\n{conn.name}: CRM events are off (connections[{conn.name}].events.crm); "
                    "its changes wait for the scheduled poll"
                ),
                highlight=False,
            )
        elif isinstance(conn.crm, DataverseSettings):
            auth = conn.events.dataverse
            how = "?"
            if auth is not None:
                how = {
                    "header": f"HttpHeader, key {auth.name}",
                    "webhook_key": "WebhookKey (the code query parameter)",
                    "query": f"HttpQueryString, key {auth.name}",
                }[auth.kind]
            console.print(
                escape(
                    f"\n{conn.name} (Dataverse): register a webhook service endpoint (Plug-in "
                    f"Registration tool) with URL {base}{DATAVERSE_PATH}/{conn.name}, "
                    f"authentication {how}, value: the secret connections[{conn.name}].events."
                    "dataverse.secret refers to; then a step on it: messages Create, Update and "
                    "Delete, primary entity opportunity, post-operation, asynchronous."
                ),
                highlight=False,
            )
        else:
            channel = conn.events.salesforce.channel
            console.print(
                escape(
                    f"\n{conn.name} (Salesforce): in Setup, Change Data Capture, select Opportunity; "
                    f"the connected app's user needs the View All Data permission (or the change "
                    f"events' own permissions). The daemon subscribes to {channel} itself."
                ),
                highlight=False,
            )
