"""Serving the sandbox over HTTPS with its own local certificate authority.

``serve`` runs it in the foreground (``connector sandbox``, ``python -m sandbox``);
tests and benchmarks start it through :mod:`sandbox.harness`.
"""

from __future__ import annotations

import ipaddress
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
import uvicorn

from sandbox.app import create_app
from sandbox.context import SandboxContext
from sandbox.heap import settle_heap

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
    # every request in flight (see sandbox.heap.settle_heap)
    ctx.settle_heap_after_seed = True
    app = create_app(ctx, opportunities=opportunities, state_file=state_file)
    settle_heap()
    with tempfile.TemporaryDirectory(prefix="sandbox-tls-") as tmp:
        tls = make_tls(ca_file, Path(tmp))
        app.state.events.use_ca(tls.ca_cert_pem, tls.ca_key_pem)
        server = uvicorn.Server(uvicorn_config(app, host, port, tls, log_level="info"))
        server.run()
