"""How fast the admin console's pages answer over a large state store.

    .venv/bin/python benchmarks/console.py                       # 100,000 deals, 10,000 runs
    .venv/bin/python benchmarks/console.py --deals 5000 --runs 500 --requests 5   # a quick look

Seeds a fresh store (SQLite by default, or ``--state-url``) by direct inserts: ``--deals``
linked deals over two connections, ``--runs`` runs with their details, 20 record-history
entries per run, a few thousand dead letters and audit rows. Then serves the console over
real HTTP on loopback (the same server ``connector console`` runs), signs in, and requests
every page that reads the store ``--requests`` times after two warm-ups: the median and the
95th percentile of each page against the 200 ms target. Pages that read the CRM (the stage
check, explain) depend on the CRM and are not measured here. Bounded: a fixed number of
requests, no waiting on anything.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from connector.console import open_console
from connector.settings import ConfigFile, Settings
from connector.state.schema import console_audit, dead_letters, links, record_history, run_details
from connector.state.schema import runs as runs_table
from connector.state.store import Link, LinkState, Store
from connector.sync.history import HistoryRecorder
from connector.sync.outcome import RecordOutcome

ROOT = Path(__file__).parents[1]
TARGET_MS = 200.0
CONNECTIONS = ("sandbox-salesforce", "sandbox-dynamics")
ENTRIES_PER_RUN = 20
BATCH = 5000
NOW = datetime.now(UTC)


def config(console_port: int) -> ConfigFile:
    text = (ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8")
    from ruamel.yaml import YAML

    data: dict[str, Any] = YAML(typ="safe").load(text)
    for conn in data["connections"]:
        conn["mapping"] = str(ROOT / conn["mapping"])
    data.pop("state_url", None)
    data["console"] = {
        "enabled": True,
        "port": console_port,
        "admin": {"env": "BENCH_CONSOLE_ADMIN"},
    }
    return ConfigFile.model_validate(data)


def crm_id(conn_index: int, n: int) -> str:
    return f"006BENCH{conn_index}{n:09d}"


def body(n: int) -> dict[str, Any]:
    return {
        "name": f"Deal {n}",
        "details": {"dealValue": 1000 + n, "currency": "USD", "closingDateTime": "2027-01-31"},
        "customerProfile": {
            "name": f"Customer {n % 5000}",
            "address": {"country": "US", "city": "Seattle", "addressLine1": "1 Main St"},
        },
        "team": [{"firstName": "Ada", "lastName": "Lovelace", "email": "ada@partner.example"}],
    }


def facts(n: int) -> dict[str, Any]:
    return {
        "referral_id": f"R-{n}",
        "status": "Active",
        "substatus": "Accepted",
        "direction": "Outgoing",
        "link": f"https://partner.microsoft.com/dashboard/referrals/v2/R-{n}",
        "registration_eligible": False,
        "registration_status": "None",
    }


def batches(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def seed(store: Store, deals: int, runs: int, letters: int) -> dict[str, Any]:
    """Direct inserts; returns what the measured URLs need (ids that exist)."""
    rng = random.Random(7)
    engine = store.database.engine
    per_conn = deals // len(CONNECTIONS)
    with engine.begin() as db:
        for name in CONNECTIONS:
            store.database.register(db, name)

        def link_rows() -> Iterator[dict[str, Any]]:
            for c, name in enumerate(CONNECTIONS):
                for n in range(per_conn):
                    yield {
                        "connection": name,
                        "crm_id": crm_id(c, n),
                        "referral_id": f"R-{c}-{n}",
                        "engagement_id": f"E-{c}-{n}",
                        "etag": f'"{n}"',
                        "fingerprint": f"{n:064x}",
                        "sent_body": body(n),
                        "state": "linked",
                        "status": "Active",
                        "substatus": "Accepted",
                        "crm_modstamp": NOW - timedelta(days=1),
                        "direction": "Outgoing",
                        "mirrored_fingerprint": f"{n:064x}",
                        "updated": NOW - timedelta(days=1),
                        "core_facts": facts(n),
                    }

        for batch in batches(link_rows()):
            db.execute(sa.insert(links), batch)
        # runs every 5 minutes, oldest first, the two connections taking turns
        run_rows = [
            {
                "connection": CONNECTIONS[i % len(CONNECTIONS)],
                "started": NOW - timedelta(minutes=5 * (runs - i)),
                "finished": NOW - timedelta(minutes=5 * (runs - i)) + timedelta(seconds=3),
                "outcome": "ok" if i % 17 else "partial",
                "counts": {
                    "pulled": rng.randint(0, 400),
                    "created": rng.randint(0, 20),
                    "updated": rng.randint(0, 40),
                    "closed": rng.randint(0, 3),
                    "mirrored": rng.randint(0, 60),
                    "skipped": {"unchanged": rng.randint(0, 300)},
                    "rejected": {"invalid_record": rng.randint(0, 2)},
                    "failed": {},
                },
                "api_calls": {"salesforce": rng.randint(2, 20), "core": rng.randint(1, 80)},
                "duration_s": rng.uniform(0.5, 30),
            }
            for i in range(runs)
        ]
        for batch in batches(iter(run_rows)):
            db.execute(sa.insert(runs_table), batch)
        run_ids = [
            row[0]
            for row in db.execute(
                sa.select(runs_table.c.id, runs_table.c.connection).order_by(runs_table.c.id)
            )
        ]
        run_conn = dict(db.execute(sa.select(runs_table.c.id, runs_table.c.connection)).all())
        for batch in batches(
            {
                "run_id": r,
                "phases": {"outbound": 1.2, "pull_back": 0.4},
                "quota": {"salesforce": 0.01},
            }
            for r in run_ids
        ):
            db.execute(sa.insert(run_details), batch)

        def history_rows() -> Iterator[dict[str, Any]]:
            for r in run_ids:
                c = CONNECTIONS.index(run_conn[r])
                for _ in range(ENTRIES_PER_RUN):
                    n = rng.randrange(per_conn)
                    yield {
                        "connection": run_conn[r],
                        "crm_id": crm_id(c, n),
                        "run_id": r,
                        "at": NOW,
                        "kind": "updated",
                        "reason": None,
                        "message": None,
                        "referral_id": f"R-{c}-{n}",
                        "core_status": "Active",
                        "core_substatus": "Accepted",
                        "sent": {
                            "changes": [{"op": "replace", "path": "/details/dealValue", "value": n}]
                        },
                        "answer": facts(n),
                    }

        for batch in batches(history_rows()):
            db.execute(sa.insert(record_history), batch)
        reasons = [
            "invalid_record",
            "transient:ServerError",
            "InvalidTransition",
            "retry:invalid_record",
        ]
        letter_rows = [
            {
                "connection": CONNECTIONS[i % 2],
                "crm_id": crm_id(i % 2, i),
                "reason_code": reasons[0] if i % 50 else reasons[1 + i % 3],
                "message": f"the close date is empty (CRM field CloseDate); set one ({i})",
                "attempts": 1 + i % 4,
                "first_seen": NOW - timedelta(hours=i % 500),
                "last_seen": NOW - timedelta(minutes=i % 500),
                "crm_modstamp": None,
                "resolved": i % 10 == 0,
            }
            for i in range(letters)
        ]
        db.execute(sa.insert(dead_letters), letter_rows)
        db.execute(
            sa.insert(console_audit),
            [
                {
                    "at": NOW,
                    "actor": "admin",
                    "session": "abc",
                    "address": "127.0.0.1",
                    "action": "retry",
                    "target": f"dead letters {i}",
                    "outcome": "ok",
                    "detail": None,
                }
                for i in range(2000)
            ],
        )
        busiest = db.execute(
            sa.select(record_history.c.connection, record_history.c.crm_id)
            .group_by(record_history.c.connection, record_history.c.crm_id)
            .order_by(sa.func.count().desc())
            .limit(1)
        ).one()
    return {"runs": run_ids, "record": busiest}


def history_page_cost(store: Store, pages: int = 5, size: int = 2000) -> float:
    """Median ms the engine spends writing one page's history (insert + trim per record).

    A page of ``size`` created records with their full create bodies, the engine's default
    CRM page, written as :class:`HistoryRecorder` does; the cost lands on the sync's main
    thread at each page boundary.
    """
    recorder = HistoryRecorder(store, CONNECTIONS[0])
    recorder.run_id = store.connection(CONNECTIONS[0]).runs.start()
    samples = []
    for page in range(pages):
        outcomes = []
        for n in range(size):
            link = Link(
                CONNECTIONS[0],
                crm_id(0, page * size + n),
                LinkState.LINKED,
                referral_id=f"R-new-{page}-{n}",
                etag='"1"',
                sent_body=body(n),
                status="Active",
                substatus="Accepted",
                core_facts=facts(n),
            )
            outcomes.append(RecordOutcome(link.crm_id, "created", link=link))
        started = time.perf_counter()
        recorder.record(outcomes, {}, NOW)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def timed(client: httpx.Client, path: str, requests: int) -> dict[str, Any]:
    for _ in range(2):
        warm = client.get(path)
        assert warm.status_code == 200, (path, warm.status_code, warm.text[:300])
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, path
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return {
        "path": path,
        "median_ms": round(statistics.median(samples), 1),
        "p95_ms": round(p95, 1),
        "max_ms": round(samples[-1], 1),
        "bytes": len(answer.content),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deals", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--letters", type=int, default=5_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--state-url", help="a PostgreSQL URL (an empty database); default SQLite")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/console.json")
    args = parser.parse_args()

    out = Console(width=140)
    secret = secrets.token_urlsafe(24)
    os.environ["BENCH_CONSOLE_ADMIN"] = secret
    with tempfile.TemporaryDirectory() as tmp:
        url = args.state_url or f"sqlite:///{tmp}/state.db"
        settings = Settings(state_url=url)
        started = time.perf_counter()
        with Store.open(url) as store:
            ids = seed(store, args.deals, args.runs, args.letters)
            seeded_s = time.perf_counter() - started
            out.print(
                f"seeded {args.deals:,} linked deals, {args.runs:,} runs, "
                f"{args.runs * ENTRIES_PER_RUN:,} history entries, {args.letters:,} dead letters "
                f"in {seeded_s:.1f} s ({store.dialect})"
            )
            history_ms = history_page_cost(store)
            out.print(f"writing one page's history (2,000 created records): {history_ms:.0f} ms")
            server = open_console(config(0), settings, store)
            server.start()
            try:
                rows = measure(server.url, secret, ids, args.requests)
            finally:
                server.stop()
    table = Table(title=f"console pages, {args.requests} requests each (target {TARGET_MS:.0f} ms)")
    for col in ("page", "median ms", "p95 ms", "max ms", "KB", "within target"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(
            row["path"],
            str(row["median_ms"]),
            str(row["p95_ms"]),
            str(row["max_ms"]),
            f"{row['bytes'] / 1024:.0f}",
            "yes" if row["p95_ms"] <= TARGET_MS else "NO",
        )
    out.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "deals": args.deals,
        "runs": args.runs,
        "letters": args.letters,
        "requests": args.requests,
        "target_ms": TARGET_MS,
        "pages": rows,
    }
    args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0 if all(r["p95_ms"] <= TARGET_MS for r in rows) else 1


def measure(base: str, secret: str, ids: dict[str, Any], requests: int) -> list[dict[str, Any]]:
    run_ids: list[int] = ids["runs"]
    conn, record = ids["record"]
    with httpx.Client(base_url=base, timeout=60) as client:
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/sign-in").text)
        assert token is not None
        signed = client.post("/sign-in", data={"csrf": token.group(1), "secret": secret})
        assert signed.status_code == 303
        paths = [
            "/",
            "/runs",
            f"/runs?connection={CONNECTIONS[1]}&before={run_ids[len(run_ids) // 2]}",
            f"/runs/{run_ids[-1]}",
            f"/runs/{run_ids[len(run_ids) // 3]}?kind=updated",
            f"/records/{conn}/{record}",
            "/dead-letters",
            "/dead-letters?reason=InvalidTransition",
            f"/dead-letters?connection={CONNECTIONS[0]}&resolved=1",
            "/mappings",
            "/audit",
        ]
        return [timed(client, path, requests) for path in paths]


if __name__ == "__main__":
    sys.exit(main())
