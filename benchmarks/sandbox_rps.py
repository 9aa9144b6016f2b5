"""Requests per second of the sandbox core on loopback: GET by id, PATCH, and a listing.

    .venv/bin/python benchmarks/sandbox_rps.py                    # sandbox in this process
    .venv/bin/python benchmarks/sandbox_rps.py --subprocess       # sandbox in its own process
    .venv/bin/python benchmarks/sandbox_rps.py --subprocess --procs 2 --light
    .venv/bin/python benchmarks/sandbox_rps.py --subprocess --listing 100000

httpx clients with keep-alive, a handful of threads (``--procs`` client processes
of ``--threads`` threads each), a bounded number of requests. ``--light`` uses
http.client instead of httpx: on a small machine httpx's own CPU cost (about
1.5 ms a request) is what limits the figure, not the sandbox.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import ssl
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from sandbox.harness import SandboxProcess, SandboxServer

REFERRALS = "/v1.0/engagements/referrals"
#: a private deal as the connector creates it (connector.dealcore.payload.referral_body):
#: the sandbox core requires the consent object and keeps status and stage
BODY: dict[str, Any] = {
    "name": "Bench deal",
    "externalReferenceId": "006BENCH",
    "status": "Active",
    "substatus": "Accepted",
    "type": "Independent",
    "qualification": "SalesQualified",
    "customerProfile": {
        "name": "Contoso",
        "address": {"city": "Seattle", "country": "US"},
        "team": [],
    },
    "consent": {
        "consentToToShareInfoWithOthers": False,
        "consentToContact": False,
        "consentToShareReferralWithMicrosoftSellers": False,
    },
    "details": {
        "dealValue": 1000,
        "currency": "USD",
        "closingDateTime": "2026-11-14T00:00:00Z",
        "requirements": {"solutions": [{"id": "SOL-IP-1"}]},
    },
    "team": [{"firstName": "A", "lastName": "B", "phoneNumber": "1", "email": "a@b.example"}],
    "target": [],
    "salesStage": "30",
}


def client(url: str, ca_file: str) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=ca_file)
    http = httpx.Client(base_url=url, verify=ctx, timeout=30)
    token = http.post(
        "/t/oauth2/v2.0/token",
        data={
            "client_id": "sandbox",
            "client_secret": "sandbox",
            "grant_type": "client_credentials",
            "scope": "https://api.partner.microsoft.com/.default",
        },
    ).json()["access_token"]
    http.headers["Authorization"] = f"Bearer {token}"
    return http


def light_work(url: str, ca: str, token: str, ids: list[str], kind: str, n: int) -> None:
    """The same requests with http.client (much cheaper per request than httpx)."""
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, context=ssl.create_default_context(cafile=ca)
    )
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps([{"op": "replace", "path": "/details/notes", "value": "light"}])
    for i in range(n):
        ident = ids[i % len(ids)]
        if kind == "get":
            conn.request("GET", f"{REFERRALS}/{ident}", headers=headers)
        else:
            conn.request("PATCH", f"{REFERRALS}/{ident}", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status >= 300:
            raise SystemExit(f"{kind} {ident}: HTTP {response.status}")
    conn.close()


def process_main(
    url: str,
    ca: str,
    ids: list[str],
    kind: str,
    n: int,
    threads: int,
    light: bool,
    go: Any,
    times: Any,
) -> None:
    """One client process: set up, wait for the common start, report (start, end) wall time."""
    token = str(client(url, ca).headers["Authorization"]).split()[1]
    go.wait()
    started = time.time()
    if light:
        args = (url, ca, token, ids, kind, n // threads)
        workers = [threading.Thread(target=light_work, args=args) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    else:
        hammer(url, ca, ids, kind, n, threads)
    times.put((started, time.time()))


def hammer_procs(
    url: str, ca: str, ids: list[str], kind: str, total: int, procs: int, threads: int, light: bool
) -> float:
    """Requests per second over the window from the first start to the last finish."""
    ctx = mp.get_context("spawn")
    go, times = ctx.Event(), ctx.Queue()
    args = (url, ca, ids, kind, total // procs, threads, light, go, times)
    children = [ctx.Process(target=process_main, args=args) for _ in range(procs)]
    for child in children:
        child.start()
    time.sleep(3)  # let every process import and connect before the start signal
    go.set()
    windows = [times.get(timeout=300) for _ in children]
    for child in children:
        child.join()
    if any(child.exitcode for child in children):
        raise SystemExit("a client process failed")
    elapsed = max(end for _, end in windows) - min(start for start, _ in windows)
    return (total // procs // threads) * threads * procs / elapsed


def hammer(url: str, ca: str, ids: list[str], kind: str, total: int, threads: int) -> float:
    per_thread = total // threads
    clients = [client(url, ca) for _ in range(threads)]
    errors: list[str] = []

    def work(n: int, http: httpx.Client) -> None:
        for i in range(per_thread):
            ident = ids[(n * per_thread + i) % len(ids)]
            if kind == "get":
                response = http.get(f"{REFERRALS}/{ident}")
            else:
                op = {"op": "replace", "path": "/details/notes", "value": f"n{i}"}
                response = http.patch(f"{REFERRALS}/{ident}", json=[op])
            if response.status_code >= 300:
                errors.append(response.text)

    workers = [threading.Thread(target=work, args=(n, c)) for n, c in enumerate(clients)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    for c in clients:
        c.close()
    if errors:
        raise SystemExit(f"{len(errors)} errors, first: {errors[0]}")
    return per_thread * threads / elapsed


def run(url: str, ca: str, args: argparse.Namespace) -> None:
    total, threads, listing = args.requests, args.threads, args.listing
    http = client(url, ca)
    ids = [http.post(REFERRALS, json=BODY).json()["id"] for _ in range(200)]
    for kind in ("get", "patch"):
        if args.procs:
            rps = hammer_procs(url, ca, ids, kind, total, args.procs, threads, args.light)
            tool = "http.client" if args.light else "httpx"
            how = f"{args.procs} processes x {threads} threads, {tool}"
        else:
            rps = hammer(url, ca, ids, kind, total, threads)
            how = f"{threads} threads, httpx"
        print(f"{kind.upper():5} by id: {rps:7.0f} requests/s ({total} requests, {how})")
    if listing:
        # each seeded incoming referral from Microsoft brings Microsoft's related one: 2 per 100
        started = time.perf_counter()
        seeded = {"opportunities": listing * 50, "seed": 3, "apis": ["core"]}
        http.post("/_sandbox/seed", json=seeded, timeout=600).raise_for_status()
        print(f"seeded about {listing} referrals in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        page = http.get(REFERRALS, params={"$orderby": "updatedDateTime asc"}).json()  # full bodies
        pages, seen = 1, len(page["value"])
        while "@odata.nextLink" in page:
            # the published form is http: rebase onto the sandbox's https origin
            page = http.get(page["@odata.nextLink"].replace("http://", "https://", 1)).json()
            pages, seen = pages + 1, seen + len(page["value"])
        elapsed = time.perf_counter() - started
        print(
            f"listed {seen} referrals in {pages} pages: {elapsed:.1f} s ({pages / elapsed:.0f} pages/s)"
        )
    http.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--listing", type=int, default=0, help="also create and list N referrals")
    parser.add_argument("--subprocess", action="store_true", help="sandbox in its own process")
    parser.add_argument("--procs", type=int, default=0, help="client processes (0: threads here)")
    parser.add_argument("--light", action="store_true", help="http.client instead of httpx")
    args = parser.parse_args()
    if not args.subprocess:
        with SandboxServer() as sb:
            print("sandbox in this process (client and server share the GIL)")
            run(sb.url, str(sb.ca_file), args)
        return
    with tempfile.TemporaryDirectory() as tmp, SandboxProcess(Path(tmp)) as sb:
        print("sandbox in a separate process (uvicorn)")
        run(sb.url, str(sb.ca_file), args)


if __name__ == "__main__":
    main()
