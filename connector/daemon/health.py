"""The daemon's health and metrics port: ``/healthz``, ``/readyz`` and ``/metrics``.

Served on its own port by a small threaded HTTP server; it only reads what the daemon
says of itself (:class:`Observed`): whether it is alive, whether it is ready (and why
not), and its Prometheus registry.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connector.metrics import Metrics


class Observed(Protocol):
    """What the health port asks of the daemon."""

    metrics: Metrics

    def alive(self) -> bool: ...

    def ready(self) -> tuple[bool, dict[str, Any]]: ...


def bind_health_server(host: str, port: int, daemon: Observed) -> ThreadingHTTPServer:
    """Bind (not yet serve) the health port; a port in use raises :class:`OSError`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                alive = daemon.alive()
                self._send(200 if alive else 503, {"status": "ok" if alive else "stopping"})
            elif self.path == "/readyz":
                ok, detail = daemon.ready()
                self._send(200 if ok else 503, {"ready": ok, **detail})
            elif self.path == "/metrics":
                body = generate_latest(daemon.metrics.registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self._send(404, {"error": "not found"})

        def _send(self, status: int, data: dict[str, Any]) -> None:
            body = json.dumps(data, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
