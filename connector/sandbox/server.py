"""Serving the sandbox over HTTPS with its own local certificate authority."""

from __future__ import annotations

import ipaddress
import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
import uvicorn

from connector.memory import settle_heap
from connector.sandbox.app import create_app
from connector.sandbox.context import SandboxContext

log = logging.getLogger(__name__)

DEFAULT_CA_FILE = Path(".connector/sandbox-ca.pem")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path
    #: a certificate for the connector's event receiver (127.0.0.1), next to the CA file
    receiver_cert_file: Path | None = None
    receiver_key_file: Path | None = None
    #: the CA itself: it signs the sandbox's Partner Center events
    ca_cert_pem: bytes = b""
    ca_key_pem: bytes = b""


def make_tls(ca_file: Path, workdir: Path) -> TlsFiles:
    """A fresh CA (written to ``ca_file`` for clients to trust) and a server certificate."""
    ca = trustme.CA(organization_name="co-sell connector sandbox")
    # "sandbox" is its host name on a compose network
    cert = ca.issue_cert("localhost", "127.0.0.1", "::1", "sandbox")
    ca_file.parent.mkdir(parents=True, exist_ok=True)
    ca.cert_pem.write_to_path(str(ca_file))
    cert_file = workdir / "server.pem"
    key_file = workdir / "server.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_file), append=True)
    cert.private_key_pem.write_to_path(str(key_file))
    key_file.chmod(0o600)
    receiver = ca.issue_cert("localhost", "127.0.0.1", "::1")
    receiver_cert = ca_file.with_name("sandbox-receiver.pem")
    receiver_key = ca_file.with_name("sandbox-receiver.key")
    receiver.cert_chain_pems[0].write_to_path(str(receiver_cert))
    receiver.private_key_pem.write_to_path(str(receiver_key))
    receiver_key.chmod(0o600)
    return TlsFiles(
        ca_file,
        cert_file,
        key_file,
        receiver_cert,
        receiver_key,
        ca.cert_pem.bytes(),
        ca.private_key_pem.bytes(),
    )


def uvicorn_config(
    app: Any, host: str, port: int, tls: TlsFiles, log_level: str = "warning"
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(tls.cert_file),
        ssl_keyfile=str(tls.key_file),
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_keep_alive=30,
        date_header=False,  # the app sends the sandbox clock's Date
        server_header=False,
        backlog=1024,
    )


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8700,
    opportunities: int = 0,
    seed: int = 1,
    latency_ms: float = 0.0,
    state_file: Path | None = None,
    ca_file: Path = DEFAULT_CA_FILE,
    allow_remote: bool = False,
) -> None:
    """Run the sandbox in the foreground until interrupted."""
    if not is_loopback(host) and not allow_remote:
        raise ValueError(
            f"the sandbox binds to loopback only; {host!r} is not a loopback address "
            "(pass --allow-remote to bind to it anyway)"
        )
    ctx = SandboxContext(seed=seed, latency_ms=latency_ms)
    # a process of its own: its data stay out of the collector's walks (every seed
    # settles them again), or a full collection, which grows with them, would stall
    # every request in flight (see connector.memory.settle_heap)
    ctx.settle_heap_after_seed = True
    app = create_app(ctx, opportunities=opportunities, state_file=state_file)
    settle_heap()
    with tempfile.TemporaryDirectory(prefix="sandbox-tls-") as tmp:
        tls = make_tls(ca_file, Path(tmp))
        app.state.events.use_ca(tls.ca_cert_pem, tls.ca_key_pem)
        server = uvicorn.Server(uvicorn_config(app, host, port, tls, log_level="info"))
        server.run()


class SandboxServer:
    """The sandbox on a background thread: for tests and benchmarks.

    >>> with SandboxServer(opportunities=10) as sb:
    ...     sb.url, sb.ca_file
    """

    def __init__(
        self,
        *,
        opportunities: int = 0,
        seed: int = 1,
        latency_ms: float = 0.0,
        port: int = 0,
        state_file: Path | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.ctx = SandboxContext(seed=seed, latency_ms=latency_ms)
        self.app = create_app(self.ctx, opportunities=opportunities, state_file=state_file)
        self._tmp = tempfile.TemporaryDirectory(prefix="sandbox-")
        work = workdir or Path(self._tmp.name)
        self.tls = make_tls(work / "sandbox-ca.pem", Path(self._tmp.name))
        self.app.state.events.use_ca(self.tls.ca_cert_pem, self.tls.ca_key_pem)
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    @property
    def port(self) -> int:
        assert self._server is not None
        sockets = self._server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def part(self, name: str) -> Any:
        return self.app.state.parts[name]

    @property
    def events(self) -> Any:
        """The sandbox's change events (connector.sandbox.events_hub.SandboxEvents)."""
        return self.app.state.events

    def start(self) -> SandboxServer:
        config = uvicorn_config(self.app, "127.0.0.1", self._port, self.tls)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="sandbox", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the sandbox did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._tmp.cleanup()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
