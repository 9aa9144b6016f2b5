"""The ceiling a bare HTTP client reaches against the sandbox core on this machine.

    .venv/bin/python benchmarks/http_ceiling.py                 # 50 ms, 16 threads
    .venv/bin/python benchmarks/http_ceiling.py --latency-ms 50 --concurrency 16 --requests 1600

The pipeline benchmark compares the connector with the bound N x latency / concurrency.
On a small machine the client's and the sandbox's own CPU per request keep even a bare
httpx pool below that bound; this prints how far below (GET and POST, one shared
client and one client per thread), so that the connector's figure can be read against
what the machine allows. The sandbox runs in its own process on loopback; every loop
is bounded by --requests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import connection_config, sandbox
from sandbox_rps import BODY, REFERRALS, client

from connector.runtime import build_core, core_http
from connector.settings import CoreSettings


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=1600)
    args = parser.parse_args()
    bound = args.concurrency / (args.latency_ms / 1000)
    with tempfile.TemporaryDirectory() as tmp, sandbox(Path(tmp), args.latency_ms) as sb:
        base = REFERRALS
        shared = client(sb.url, str(sb.ca_file))  # one token, one pool of connections
        referral_id = shared.post(base, json=BODY).raise_for_status().json()["id"]
        local = threading.local()

        def per_thread() -> httpx.Client:
            own = getattr(local, "client", None)
            if own is None:
                own = local.client = client(sb.url, str(sb.ca_file))
            return own

        clients: dict[str, Callable[[], httpx.Client]] = {
            "shared client": lambda: shared,
            "client per thread": per_thread,
        }
        print(f"bound: {bound:.0f} requests/s ({args.concurrency} x 1 / {args.latency_ms:g} ms)")
        # the connector's own core client (token, headers, gate, retries, parsing) as the
        # sync's push pool uses it: what is lost between a bare pool and the pipeline
        settings = CoreSettings.model_validate(
            connection_config("salesforce", sb, args.concurrency)["connections"][0]["core"]
        )
        core_http_client = core_http(settings)
        core = build_core(settings, "bench", None, core_http_client)
        connector_ops: dict[str, Callable[[int], object]] = {
            "GET": lambda _: core.get(referral_id),
            "POST": lambda _: core.create(dict(BODY)),
        }
        for name, get in clients.items():
            for method in ("GET", "POST"):

                def one(
                    _: int, get: Callable[[], httpx.Client] = get, method: str = method
                ) -> None:
                    http = get()
                    if method == "GET":
                        http.get(f"{base}/{referral_id}").raise_for_status()
                    else:
                        http.post(base, json=BODY).raise_for_status()

                with ThreadPoolExecutor(args.concurrency) as pool:
                    list(pool.map(one, range(2 * args.concurrency)))  # warm the connections
                    started = time.monotonic()
                    list(pool.map(one, range(args.requests)))
                    rate = args.requests / (time.monotonic() - started)
                report(name, method, rate, bound)
        for method, op in connector_ops.items():
            with ThreadPoolExecutor(args.concurrency) as pool:
                list(pool.map(op, range(2 * args.concurrency)))
                started = time.monotonic()
                list(pool.map(op, range(args.requests)))
                rate = args.requests / (time.monotonic() - started)
            report("connector client", method, rate, bound)
        core_http_client.close()
        shared.close()
    return 0


def report(name: str, method: str, rate: float, bound: float) -> None:
    print(f"{name:18} {method:4} {rate:6.0f} requests/s  ratio to bound {rate / bound:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
