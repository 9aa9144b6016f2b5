"""Serving the console: a threaded stdlib WSGI server on its own port, HTTPS when configured.

``open_console`` builds everything from the config (credentials resolved, the port
bound) so that a wrong setting or a port in use stops ``connector run`` / ``connector
console`` at start-up with a message naming the setting.
"""

from __future__ import annotations

import logging
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from connector.console.app import Console
from connector.console.auth import Credentials
from connector.console.live import LiveState
from connector.errors import ConfigError
from connector.serving import BackgroundServer, server_tls
from connector.settings import ConfigFile, ConsoleSettings, Settings
from connector.state.store import Store

log = logging.getLogger(__name__)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    # wsgiref names the server by a reverse DNS lookup: not needed, and slow offline
    def server_bind(self) -> None:
        super(WSGIServer, self).server_bind()  # HTTPServer's, without the lookup
        self.setup_environ()

    def setup_environ(self) -> None:
        super().setup_environ()
        self.base_environ["SERVER_NAME"] = str(self.server_address[0])


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # the path only: a query string is the console's own, but keep log lines short
        log.debug("console: %s %s", self.command, self.path.split("?", 1)[0])

    def get_stderr(self) -> Any:
        return _LogStream()


class _LogStream:
    """wsgiref reports an application's crash to a stream: send it to the log instead."""

    def write(self, text: str) -> None:
        if text.strip():
            log.error("console: %s", text.rstrip())

    def flush(self) -> None:
        return None


class ConsoleServer(BackgroundServer):
    """The console on its own port, served from a background thread."""

    def __init__(self, app: Console, options: ConsoleSettings) -> None:
        self.app = app
        self.options = options
        try:
            self._server = _Server((options.host, options.port), _Handler)
        except OSError as exc:
            raise ConfigError(
                f"console: cannot listen on {options.host}:{options.port}: {exc.strerror}; "
                "choose another console.port"
            ) from None
        self._server.set_app(app)
        if options.tls:
            # the handshake happens on the request's own thread, at its first read
            self._server.socket = server_tls(
                options.tls_cert_file, options.tls_key_file, "console"
            ).wrap_socket(self._server.socket, server_side=True, do_handshake_on_connect=False)
            self._server.base_environ["HTTPS"] = "on"  # wsgi.url_scheme: Secure cookies
        app.port = self.address[1]
        self._name, self._label, self._tls = "console", "console", options.tls


def open_console(
    config: ConfigFile, settings: Settings, store: Store, live: LiveState | None = None
) -> ConsoleServer:
    """The console, its credentials resolved and its port bound (not yet serving)."""
    credentials = Credentials.from_settings(config.console, settings.secrets_dir)
    app = Console(config=config, settings=settings, store=store, credentials=credentials, live=live)
    return ConsoleServer(app, config.console)
