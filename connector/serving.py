"""What the process's own small HTTP servers share (the event receiver, the console):
serving on a thread of their own, their address and URL, and TLS from a certificate and
key named in their settings."""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path
from socketserver import BaseServer
from typing import Any

from connector.errors import ConfigError

log = logging.getLogger(__name__)


def server_tls(cert_file: Path | None, key_file: Path | None, setting: str) -> ssl.SSLContext:
    """A server-side TLS context (1.2 at least); ``setting`` names the block in errors."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{setting}.tls_cert_file / tls_key_file: cannot load the certificate and key: {exc}"
        ) from None
    return context


class BackgroundServer:
    """A bound ``_server`` served on a thread named ``_name`` until :meth:`stop`."""

    _server: BaseServer
    #: the serving thread's name, and how the start is logged ("<label> on <url>")
    _name: str
    _label: str
    _tls: bool
    _thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        bound: Any = self._server.server_address  # (host, port) of an AF_INET server
        host, port = bound[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"{'https' if self._tls else 'http'}://{host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=self._name, daemon=True
        )
        self._thread.start()
        log.info("%s on %s", self._label, self.url)

    def stop(self) -> None:
        """Stop serving (requests in progress finish on their own threads) and close."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()
