"""Starting a sandbox for tests and benchmarks: the one start-up they all use.

Two ways to run it, with the same face (``url``, ``ca_file``, ``client()``,
``localize()``, ``set_faults()``):

- :class:`SandboxServer`: on a background thread of this process (fast to start, its
  parts reachable in memory: ``sb.part("core")``, ``sb.events``, ``sb.ctx``);
- :class:`SandboxProcess`: in a process of its own (``python -m sandbox``), so that
  killing or loading a client never touches it, and it holds no GIL of the client's.

Either one serves HTTPS on 127.0.0.1 with a fresh certificate authority (trustme)
written to ``ca_file``, seeds ``opportunities`` records in each CRM from ``seed``, and
holds every answer ``latency_ms``. The configs under ``config/`` point at the default
sandbox (``https://127.0.0.1:8700``, ``.connector/sandbox-ca.pem``): ``localize``
points such a text at this one.

>>> with SandboxServer(opportunities=10) as sb, sb.client() as admin:
...     admin.get("/_sandbox/stats").raise_for_status()
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from sandbox.app import create_app
from sandbox.context import SandboxContext
from sandbox.server import TlsFiles, make_tls, uvicorn_config

__all__ = [
    "DEFAULT_CA_FILE",
    "DEFAULT_URL",
    "SandboxProcess",
    "SandboxServer",
    "TlsFiles",
    "free_port",
    "make_tls",
]

#: where the configs under config/ expect the sandbox and its CA
DEFAULT_URL = "https://127.0.0.1:8700"
DEFAULT_CA_FILE = ".connector/sandbox-ca.pem"


def free_port() -> int:
    """A port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Reachable:
    """What a running sandbox offers a client: its URL, its CA, an admin client."""

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def ca_file(self) -> Path:
        raise NotImplementedError

    def ssl_context(self) -> ssl.SSLContext:
        """Verification against the sandbox's own CA (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client(self, timeout: float = 30) -> httpx.Client:
        """An HTTPS client of the sandbox (its admin API under ``/_sandbox/``); close it."""
        return httpx.Client(base_url=self.url, verify=self.ssl_context(), timeout=timeout)

    def localize(self, text: str) -> str:
        """A config text written for the default sandbox, pointed at this one."""
        return text.replace(DEFAULT_URL, self.url).replace(DEFAULT_CA_FILE, str(self.ca_file))

    def set_faults(self, faults: dict[str, dict[str, Any]]) -> None:
        """Fault rates per API (``core``, ``salesforce``, ``dataverse``, ...)."""
        with self.client() as admin:
            admin.put("/_sandbox/faults", json=faults).raise_for_status()


class SandboxServer(_Reachable):
    """The sandbox on a background thread of this process.

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
        """The sandbox's change events (sandbox.events.hub.SandboxEvents)."""
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


class SandboxProcess(_Reachable):
    """The sandbox in a process of its own (``python -m sandbox``), its log in ``workdir``.

    ``admin`` is an open client of it while it runs. Stopped with SIGINT (then killed
    after 10 s), as Ctrl-C stops ``connector sandbox``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        opportunities: int = 0,
        seed: int = 1,
        latency_ms: float = 0.0,
        port: int | None = None,
        ca_file: Path | None = None,
        admin_timeout: float = 60,
        start_timeout_s: float = 60,
    ) -> None:
        self.workdir = workdir
        self.opportunities = opportunities
        self.seed = seed
        self.latency_ms = latency_ms
        self.port = port or free_port()
        self._ca_file = ca_file or workdir / "sandbox-ca.pem"
        self.admin_timeout = admin_timeout
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.admin: httpx.Client | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self._ca_file

    @property
    def log_file(self) -> Path:
        return self.workdir / "sandbox.log"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "sandbox",
            "--port",
            str(self.port),
            "--opportunities",
            str(self.opportunities),
            "--seed",
            str(self.seed),
            "--latency-ms",
            str(self.latency_ms),
            "--ca-file",
            str(self.ca_file),
        ]

    def start(self) -> SandboxProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                self.command(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the sandbox exited: " + self.log_file.read_text()[-2000:])
            if self.ca_file.exists():
                client = self.client(self.admin_timeout)
                try:
                    client.get("/_sandbox/stats").raise_for_status()
                except (httpx.HTTPError, ssl.SSLError, OSError):
                    client.close()
                else:
                    self.admin = client
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the sandbox did not answer within {self.start_timeout_s:g} s")

    def stop(self) -> None:
        if self.admin is not None:
            self.admin.close()
            self.admin = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
