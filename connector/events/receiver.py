"""The event port of ``connector run``: a threaded stdlib HTTP(S) server, bounded.

Bounds: a body larger than ``max_body_bytes`` is refused from its ``Content-Length``
before it is read (413), a request without one is refused (411), a slow client is cut
off after :data:`READ_TIMEOUT_S`, and at most ``max_in_flight`` requests are handled
at once (503 beyond, at once). The query string (Dataverse may carry its key there) is
never logged. TLS is served when configured (``tls_cert_file``/``tls_key_file``).
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from connector.errors import ConfigError
from connector.events.callbacks import Answer, Callbacks
from connector.events.config import EventsSettings
from connector.events.verify import Refused
from connector.serving import BackgroundServer, server_tls

log = logging.getLogger(__name__)

#: seconds a client may take to send its request (headers and body)
READ_TIMEOUT_S = 10.0


class EventReceiver(BackgroundServer):
    """Serves :class:`Callbacks` on ``options.host:options.port``."""

    def __init__(self, options: EventsSettings, callbacks: Callbacks) -> None:
        self.options = options
        self.callbacks = callbacks
        self._slots = threading.BoundedSemaphore(options.max_in_flight)
        try:
            self._server = ThreadingHTTPServer((options.host, options.port), self._handler())
        except OSError as exc:
            raise ConfigError(
                f"events: cannot listen on {options.host}:{options.port}: {exc.strerror}; "
                "choose another events.port"
            ) from None
        self._server.daemon_threads = True
        if options.tls:
            self._server.socket = server_tls(
                options.tls_cert_file, options.tls_key_file, "events"
            ).wrap_socket(self._server.socket, server_side=True, do_handshake_on_connect=False)
        self._name, self._label, self._tls = "events", "event receiver", options.tls

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self
        limit = self.options.max_body_bytes

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = READ_TIMEOUT_S

            def do_POST(self) -> None:
                self._serve()

            def do_GET(self) -> None:
                self._serve()

            def do_PUT(self) -> None:
                self._serve()

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                source = Callbacks.source_of(parts.path)
                if not receiver._slots.acquire(blocking=False):
                    self._answer(
                        receiver.callbacks.refuse(
                            source, Refused("busy", "too many events at once", status=503)
                        ),
                        close=True,
                    )
                    return
                try:
                    body = self._body(source)
                    if body is None:
                        return
                    headers = {k: v for k, v in self.headers.items()}
                    query = dict(parse_qsl(parts.query, keep_blank_values=True))
                    answer = receiver.callbacks.handle(
                        self.command, parts.path, headers, query, body
                    )
                    self._answer(answer)
                except Exception:  # a bug must not take the port down: 500, logged
                    log.exception("event receiver: the request failed")
                    self._answer(Answer(500, {"error": "internal"}), close=True)
                finally:
                    receiver._slots.release()

            def _body(self, source: str | None) -> bytes | None:
                if self.command != "POST":
                    return b""  # refused by the callbacks (405), nothing to read
                length = self.headers.get("Content-Length")
                if length is None or not length.strip().isdigit():
                    refusal = Refused("malformed", "Content-Length is required", status=411)
                    self._answer(receiver.callbacks.refuse(source, refusal), close=True)
                    return None
                size = int(length)
                if size > limit:
                    refusal = Refused(
                        "body_too_large",
                        f"the body is larger than {limit} bytes (events.max_body_bytes)",
                        status=413,
                    )
                    self._answer(receiver.callbacks.refuse(source, refusal), close=True)
                    return None
                return self.rfile.read(size)

            def _answer(self, answer: Answer, *, close: bool = False) -> None:
                data = answer.encoded()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # the request line can carry a key in its query string

        return Handler
