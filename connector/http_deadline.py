"""A total deadline for each HTTP request, however slowly its answer trickles in.

A socket timeout bounds one read: a server (or a proxy) that sends one byte a second
never trips it, and the request hangs for as long as it likes. httpx and requests have
no total timeout, so the bound is kept where the bytes are read: every TLS socket the
connector opens is a :class:`DeadlineSSLSocket` (set as its contexts'
``sslsocket_class``), whose reads, writes and handshake wait at most until the
deadline of the request the thread is sending, and fail with :class:`TimeoutError`
(the socket timeout both libraries already report as a read timeout) once it has
passed. The request's deadline is set around it by :class:`DeadlineTransport` (httpx)
and :class:`DeadlineAdapter` (requests, under simple-salesforce), for the headers and
the whole body. Only TLS is covered: the connector never talks plain HTTP to a remote
system (secrets would travel in clear); requests sent through a proxy are not covered.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import requests
from requests.adapters import HTTPAdapter

#: the request deadline when none is configured (``request_deadline_s``)
DEFAULT_REQUEST_DEADLINE_S = 120.0

_current = threading.local()


def _deadline() -> float | None:
    value: float | None = getattr(_current, "deadline", None)
    return value


@contextmanager
def deadline_at(deadline: float) -> Iterator[None]:
    """Reads and writes of this thread's TLS sockets end by ``deadline`` (monotonic)."""
    outer = _deadline()
    _current.deadline = deadline if outer is None else min(outer, deadline)
    try:
        yield
    finally:
        _current.deadline = outer


def passed(deadline: float) -> bool:
    return time.monotonic() >= deadline


class DeadlineSSLSocket(ssl.SSLSocket):
    """A TLS socket whose every blocking step ends by the current request's deadline."""

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        with self._bounded("reading the answer"):
            return super().read(len, buffer)

    def send(self, data: Any, flags: int = 0) -> int:
        with self._bounded("sending the request"):
            return super().send(data, flags)

    def do_handshake(self, block: bool = False) -> None:
        with self._bounded("the TLS handshake"):
            super().do_handshake(block)

    @contextmanager
    def _bounded(self, step: str) -> Iterator[None]:
        deadline = _deadline()
        if deadline is None:
            yield
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"the request's deadline passed during {step}")
        previous = self.gettimeout()
        if previous is not None and previous <= remaining:
            yield
            return
        self.settimeout(remaining)
        try:
            yield
        finally:
            if self.fileno() != -1:  # still open: give back the timeout it had
                self.settimeout(previous)


def tls_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """Verification always on (the default store, or ``ca_file``), deadline-bound sockets.

    Each HTTP client gets its own context: urllib3 adjusts the context it is given.
    """
    context = (
        ssl.create_default_context(cafile=str(ca_file))
        if ca_file is not None
        else httpx.create_ssl_context()
    )
    context.sslsocket_class = DeadlineSSLSocket
    return context


class _DeadlineStream(httpx.SyncByteStream):
    """An answer's body, each chunk read under the request's deadline."""

    def __init__(self, inner: httpx.SyncByteStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def __iter__(self) -> Iterator[bytes]:
        chunks = iter(self._inner)
        while True:
            with deadline_at(self._deadline):
                chunk = next(chunks, None)
            if chunk is None:
                return
            yield chunk

    def close(self) -> None:
        self._inner.close()


class DeadlineTransport(httpx.BaseTransport):
    """An httpx transport whose every request ends within ``deadline_s``, body included.

    ``verify`` must come from :func:`tls_context`; the rest goes to
    :class:`httpx.HTTPTransport`.
    """

    def __init__(self, deadline_s: float, verify: ssl.SSLContext, **options: Any) -> None:
        if verify.sslsocket_class is not DeadlineSSLSocket:
            raise ValueError("DeadlineTransport needs a context from tls_context()")
        self.deadline_s = deadline_s
        self._inner = httpx.HTTPTransport(verify=verify, **options)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = time.monotonic() + self.deadline_s
        with deadline_at(deadline):
            response = self._inner.handle_request(request)
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _DeadlineStream(response.stream, deadline)
        return response

    def close(self) -> None:
        self._inner.close()


def deadline_client(
    *, deadline_s: float, ca_file: Path | None, timeout: float, **options: Any
) -> httpx.Client:
    """An httpx client for one remote system: verified TLS, ``timeout`` per socket step
    and ``deadline_s`` for each request in all."""
    # httpx.Client's own default pool when none is given
    limits = options.pop("limits", httpx.Limits(max_connections=100, max_keepalive_connections=20))
    transport = DeadlineTransport(deadline_s, tls_context(ca_file), limits=limits)
    return httpx.Client(transport=transport, timeout=timeout, **options)


class DeadlineAdapter(HTTPAdapter):
    """A requests adapter whose every request ends within ``deadline_s``, body included.

    The body is read inside the deadline even when the caller did not ask to stream
    (requests would read it after the adapter returned). A deadline passing while the
    body is read is raised as :class:`requests.ReadTimeout`, as it would be for the
    headers. Trust is the session's: urllib3 adds the CA file of ``Session.verify`` to
    the context given here, which holds the default store.
    """

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self._context = tls_context()
        super().__init__()

    def init_poolmanager(self, *args: Any, **pool_kwargs: Any) -> None:
        pool_kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **pool_kwargs)

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, stream: bool = False, **kwargs: Any
    ) -> requests.Response:
        deadline = time.monotonic() + self.deadline_s
        with deadline_at(deadline):
            response = super().send(request, stream=True, **kwargs)
            if stream:
                return response
            try:
                response.content  # noqa: B018 - read now, inside the deadline
            except requests.ConnectionError as exc:
                if passed(deadline):
                    response.close()
                    raise requests.ReadTimeout(
                        f"no whole answer within the request deadline of {self.deadline_s:g} s",
                        request=request,
                    ) from exc
                raise
        return response
