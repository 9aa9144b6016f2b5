"""The bare-client ceiling against a running sandbox: requests per second a plain httpx
pool (and the connector's own core client) reaches at the given concurrency.

Used by `benchmarks/http_ceiling.py` (standalone) and by `benchmarks/pipeline.py`, which
measures it against the same sandbox, latency and concurrency as the first sync it
compares with, in the same run: the machine's load at that hour is in both figures.
Every loop is bounded by ``requests``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from sandbox_rps import BODY, REFERRALS, client

from connector.runtime import build_core, core_http
from connector.settings import CoreSettings


def _rate(op: Callable[[int], object], concurrency: int, requests: int) -> float:
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(op, range(2 * concurrency)))  # warm the connections and the token
        started = time.monotonic()
        list(pool.map(op, range(requests)))
        return requests / (time.monotonic() - started)


def measure(
    url: str,
    ca_file: str,
    core_settings: dict[str, Any],
    *,
    concurrency: int,
    requests: int,
    per_thread: bool = False,
    connector_client: bool = True,
) -> dict[str, float]:
    """Requests per second, keyed ``"<client> <METHOD>"`` (bare shared client, optionally
    one client per thread, and the connector's core client)."""
    shared = client(url, ca_file)  # one token, one pool of connections
    referral_id = shared.post(REFERRALS, json=BODY).raise_for_status().json()["id"]
    local = threading.local()

    def own() -> httpx.Client:
        mine = getattr(local, "client", None)
        if mine is None:
            mine = local.client = client(url, ca_file)
        return mine

    clients: dict[str, Callable[[], httpx.Client]] = {"bare": lambda: shared}
    if per_thread:
        clients["bare per thread"] = own
    rates: dict[str, float] = {}
    try:
        for name, get in clients.items():
            for method in ("POST", "GET"):

                def one(
                    _: int, get: Callable[[], httpx.Client] = get, method: str = method
                ) -> None:
                    http = get()
                    if method == "GET":
                        http.get(f"{REFERRALS}/{referral_id}").raise_for_status()
                    else:
                        http.post(REFERRALS, json=BODY).raise_for_status()

                rates[f"{name} {method}"] = _rate(one, concurrency, requests)
        if connector_client:
            # the connector's own core client (token, headers, gate, retries, parsing) as
            # the sync's push pool uses it: what is lost between a bare pool and the pipeline
            settings = CoreSettings.model_validate(core_settings)
            http = core_http(settings)
            core = build_core(settings, "bench", None, http)
            try:
                rates["connector POST"] = _rate(
                    lambda _: core.create(dict(BODY)), concurrency, requests
                )
                rates["connector GET"] = _rate(
                    lambda _: core.get(referral_id), concurrency, requests
                )
            finally:
                http.close()
    finally:
        shared.close()
    return rates
