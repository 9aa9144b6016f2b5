"""``connector console``: the admin console over the state store, without the daemon."""

from __future__ import annotations

import threading

from connector.commands import common
from connector.commands.common import (
    ConfigOpt,
    ExitCode,
    fail,
    settings_for,
)
from connector.errors import ConfigError, ConnectorError
from connector.settings import load_config, state_url


def console_command(config: ConfigOpt = None) -> None:
    """Serve the admin console over the state store, without the daemon (Ctrl-C stops it)."""
    import signal

    from connector.console import open_console
    from connector.state.store import Store

    settings = settings_for(config)
    try:
        cfg = load_config(settings.config)
    except ConfigError as exc:
        raise fail(exc.message, ExitCode.BAD_CONFIG) from None
    if not cfg.console.enabled:
        raise fail(
            f"the console is off in {settings.config}; turn it on with a `console:` section "
            '(enabled: true, admin: {env: NAME}; see the README\'s "Admin console")',
            ExitCode.BAD_CONFIG,
        )
    try:
        store = Store.open(state_url(settings, cfg))
    except ConnectorError as exc:
        raise fail(exc.message, ExitCode.FAILED) from None
    try:
        server = open_console(cfg, settings, store)
    except ConfigError as exc:
        store.close()
        raise fail(exc.message, ExitCode.BAD_CONFIG) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    common.console.print(f"console on {server.url} (Ctrl-C stops it)", highlight=False)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
        store.close()
