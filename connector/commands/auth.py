"""``connector auth login``: sign in to Partner Center once (device code)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from connector import logs
from connector.commands import common
from connector.commands.common import (
    ConfigOpt,
    ExitCode,
    fail,
    settings_for,
)
from connector.errors import ConfigError, ConnectorError
from connector.settings import load_config

auth_app = typer.Typer(help="Sign in to Partner Center.", no_args_is_help=True)


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

    settings = settings_for(config)
    try:
        cfg = load_config(settings.config, max_bytes=settings.max_yaml_bytes)
        conns = cfg.connection(connection)
    except ConfigError as exc:
        raise fail(exc.message, ExitCode.BAD_CONFIG) from None
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
                    echo=lambda text: common.console.print(
                        escape(logs.scrub(text)), highlight=False
                    ),
                )
            except ConnectorError as exc:
                raise fail(exc.message, ExitCode.FAILED) from None
        common.console.print(
            f"{conn.name}: signed in; the refresh token is cached in {core.token_cache}"
        )
