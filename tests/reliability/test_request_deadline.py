"""A server trickling its answer at one byte a second cannot hold a request past its deadline.

A loopback HTTPS server answers every request one byte a second: the status line and
headers (``headers``), or the headers at once and then the body (``body``). Each byte
comes well within the socket timeout, so before, a request waited for as long as the
server kept trickling (the server here would go on for ten minutes). Now each of the
three systems' clients (the core's httpx client with its token endpoint, Dataverse's
httpx client, Salesforce's requests session under simple-salesforce) gives the request
up at ``request_deadline_s`` with a timeout error, retried like any other. The test is
bounded by pytest-timeout, not by a measured duration.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from pydantic import SecretStr

from connector.crm.dynamics.adapter import DataverseOpportunities
from connector.crm.salesforce.adapter import SalesforceOpportunities
from connector.crm.salesforce.auth import ExistingToken, SalesforceAuth
from connector.dealcore.auth import ClientCredentialsTokens
from connector.dealcore.client import ReferralsClient
from connector.errors import CoreError, CrmError
from connector.retry import RetryPolicy
from connector.runtime import core_http
from connector.settings import CoreSettings

DEADLINE_S = 2.0
#: the socket timeout: far longer than a byte takes, and than the deadline
SOCKET_TIMEOUT_S = 20.0
#: how long the server would trickle if nobody gave up (bytes at one a second)
TRICKLE_BYTES = 600
BODY = b'{"records": [], "done": true, "totalSize": 0}' + b" " * 4096


@dataclass
class TrickleServer:
    """HTTPS on 127.0.0.1 that answers one byte a second (bounded; stops with ``stop``)."""

    mode: str  # "headers" or "body"
    ca: trustme.CA = field(default_factory=trustme.CA)
    stop: threading.Event = field(default_factory=threading.Event)
    requests: int = 0

    def __post_init__(self) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(context)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._tls = context
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(raw,), daemon=True).start()

    def _answer(self, raw: socket.socket) -> None:
        try:
            with self._tls.wrap_socket(raw, server_side=True) as conn:
                conn.settimeout(5)
                self._read_request(conn)
                self.requests += 1
                head = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n"
                )
                if self.mode == "body":
                    conn.sendall(head)
                    answer = BODY
                else:
                    answer = head + BODY
                for byte in answer[:TRICKLE_BYTES]:
                    if self.stop.wait(1.0):
                        return
                    conn.sendall(bytes([byte]))
        except OSError:
            return  # the client gave up: what this test is about

    @staticmethod
    def _read_request(conn: ssl.SSLSocket) -> None:
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = conn.recv(4096)
            if not chunk:
                return
            body += chunk

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=5)
        self._listener.close()


@pytest.fixture(params=["headers", "body"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TrickleServer]:
    trickle = TrickleServer(request.param)
    trickle.ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    yield trickle
    trickle.close()


@contextmanager
def reported(what: str, server: TrickleServer) -> Iterator[None]:
    """Print how long the request took to be given up (a figure, not an assertion)."""
    started = time.monotonic()
    try:
        yield
    finally:
        print(
            f"{what}, {server.mode} trickled at 1 byte/s: given up after "
            f"{time.monotonic() - started:.1f} s (request_deadline_s {DEADLINE_S:g})"
        )


class StaticTokens:
    def token(self) -> str:
        return "a-token"

    def invalidate(self) -> None:
        return None


def core_settings(server: TrickleServer, tmp_path: Path) -> CoreSettings:
    return CoreSettings(
        base_url=f"{server.url}/v1.0/engagements",
        token_url=f"{server.url}/tenant/oauth2/v2.0/token",
        client_id="c",
        ca_file=tmp_path / "ca.pem",
        timeout_s=SOCKET_TIMEOUT_S,
    )


@pytest.mark.timeout(60)
def test_a_core_post_ends_at_the_deadline(server: TrickleServer, tmp_path: Path) -> None:
    http = core_http(core_settings(server, tmp_path), request_deadline_s=DEADLINE_S)
    client = ReferralsClient(
        f"{server.url}/v1.0/engagements",
        StaticTokens(),
        http=http,
        correlation_id="c",
        retry_policy=RetryPolicy(attempts=1),
    )
    try:
        with reported("core POST", server), pytest.raises(CoreError) as failed:
            client.create({"name": "Contoso", "externalReferenceId": "006000000000001AAA"})
    finally:
        http.close()
    assert failed.value.code == "transport" and failed.value.transient
    assert "timed out" in failed.value.message
    assert server.requests >= 1  # the POST was answered, slowly


@pytest.mark.timeout(60)
def test_the_core_token_endpoint_ends_at_the_deadline(
    server: TrickleServer, tmp_path: Path
) -> None:
    core = core_settings(server, tmp_path)
    http = core_http(core, request_deadline_s=DEADLINE_S)
    tokens = ClientCredentialsTokens(core.token_url, "c", SecretStr("s"), core.scope, http)
    try:
        with reported("core token", server), pytest.raises(CoreError) as failed:
            tokens.token()
    finally:
        http.close()
    assert failed.value.transient


@pytest.mark.timeout(60)
def test_a_salesforce_query_ends_at_the_deadline(server: TrickleServer, tmp_path: Path) -> None:
    auth = SalesforceAuth(
        ExistingToken(server.url, SecretStr("a-token")),
        ca_file=tmp_path / "ca.pem",
        allowed_origin=server.url,
        timeout=SOCKET_TIMEOUT_S,
        request_deadline_s=DEADLINE_S,
    )
    adapter = SalesforceOpportunities(auth, timeout=SOCKET_TIMEOUT_S, retry=RetryPolicy(attempts=1))
    try:
        with reported("Salesforce query", server), pytest.raises(CrmError) as failed:
            adapter.stage_metadata()
    finally:
        adapter.close()
    assert failed.value.code == "timeout" and failed.value.transient
    assert server.requests >= 1


@pytest.mark.timeout(60)
def test_a_dataverse_request_ends_at_the_deadline(server: TrickleServer, tmp_path: Path) -> None:
    adapter = DataverseOpportunities.connect(
        environment_url=server.url,
        tenant="tenant",
        client_id="c",
        client_secret="s",
        authority=server.url,
        ca_file=tmp_path / "ca.pem",
        timeout_s=SOCKET_TIMEOUT_S,
        request_deadline_s=DEADLINE_S,
        max_attempts=1,
    )
    try:
        with reported("Dataverse sign-in", server), pytest.raises(CrmError) as failed:
            adapter.stage_metadata()
    finally:
        adapter.close()
    assert failed.value.transient  # the sign-in did not answer in time: retried later
    assert server.requests >= 1
