"""The sandbox behind a lying front: servers that echo credentials, invent error codes,
or present a certificate for another host; and a plain-HTTP listener that records
what a client would send in clear text.

:class:`Liar` wraps the sandbox's ASGI app; each ``mode`` switched on rewrites one
kind of answer, every other request reaches the sandbox unchanged:

    echo_token     token endpoints (Entra, Salesforce) refuse the sign-in and echo the
                   request: the client secret raw, the form as sent (URL-encoded), the
                   secret JSON-escaped inside a string, and base64("client_id:secret")
    echo_sf_api    the Salesforce REST API refuses every call, echoing the bearer token
    echo_core      the referrals API refuses every create, echoing the bearer token
    unique_codes   the referrals API refuses every create with an error code of its own
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import trustme
from guard_world import GuardWorld

from sandbox.harness import SandboxServer, TlsFiles

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class Liar:
    """ASGI middleware: the sandbox, with the answers of the switched-on modes rewritten."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.modes: set[str] = set()
        self.counter = 0
        self.lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.modes:
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        answer = self._lie(scope, body)
        if answer is None:
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send)
            return
        status, payload = answer
        data = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    def _lie(self, scope: Scope, body: bytes) -> tuple[int, Any] | None:
        path, method = str(scope["path"]), str(scope["method"])
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        bearer = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if "echo_token" in self.modes and method == "POST" and path.endswith("/token"):
            form = dict(parse_qsl(body.decode(), keep_blank_values=True))
            secret = form.get("client_secret", "")
            basic = base64.b64encode(f"{form.get('client_id')}:{secret}".encode()).decode()
            quoted = json.dumps({"client_secret": secret})  # JSON inside the text
            described = f"bad secret {secret}; request {body.decode()}; {quoted}; Basic {basic}"
            return 401, {"error": f"invalid_client {secret}", "error_description": described}
        if "echo_sf_api" in self.modes and path.startswith("/services/data/v") and bearer:
            said = f"session {bearer} (Bearer {bearer}) refused"
            return 400, [{"errorCode": "MALFORMED_QUERY", "message": said}]
        creates = method == "POST" and path.rstrip("/").endswith("/engagements/referrals")
        if "echo_core" in self.modes and creates and bearer:
            error = {"code": "invalidInput", "message": f"token {bearer} is not allowed"}
            return 400, {"error": {**error, "innerError": {"code": f"bad {bearer}"}}}
        if "unique_codes" in self.modes and creates:
            with self.lock:
                self.counter += 1
                code = f"weirdCode{self.counter}"
            return 400, {"error": {"code": code, "message": "the core invented a code"}}
        return None


@dataclass
class HostileWorld:
    world: GuardWorld
    liar: Liar


@contextmanager
def hostile_world(
    folder: Path, opportunities: int = 30, *, certificate_hosts: tuple[str, ...] = ()
) -> Iterator[HostileWorld]:
    """The sandbox behind a :class:`Liar`; ``certificate_hosts``: serve a certificate
    (from a CA of its own, which the configs trust) naming only these hosts."""
    sb = SandboxServer(opportunities=opportunities, seed=11)
    liar = Liar(sb.app)
    sb.app = liar  # type: ignore[assignment]
    if certificate_hosts:
        sb.tls = _tls_for(certificate_hosts, folder)
    with sb:
        verify = ssl.create_default_context(cafile=str(sb.ca_file))
        verify.check_hostname = not certificate_hosts  # the admin client only
        with httpx.Client(base_url=sb.url, verify=verify, timeout=30) as admin:
            yield HostileWorld(GuardWorld(sb, admin, folder), liar)


def _tls_for(hosts: tuple[str, ...], folder: Path) -> TlsFiles:
    ca = trustme.CA(organization_name="another CA")
    cert = ca.issue_cert(*hosts)
    tls = TlsFiles(folder / "other-ca.pem", folder / "other.pem", folder / "other.key")
    ca.cert_pem.write_to_path(str(tls.ca_file))
    cert.cert_chain_pems[0].write_to_path(str(tls.cert_file))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(tls.cert_file), append=True)
    cert.private_key_pem.write_to_path(str(tls.key_file))
    return tls


@dataclass
class PlainListener:
    """A plain-HTTP listener on loopback that records every byte sent to it."""

    sock: socket.socket
    received: list[bytes] = field(default_factory=list)
    connections: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.connections += 1
            with conn:
                conn.settimeout(2)
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                self.received.append(data)
                reply = b'{"error": "nothing here"}'
                conn.sendall(
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(reply), reply)
                )


@contextmanager
def plain_listener() -> Iterator[PlainListener]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    listener = PlainListener(sock)
    thread = threading.Thread(target=listener.serve, name="plain-listener", daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        sock.close()
        thread.join(timeout=5)
