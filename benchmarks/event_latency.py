"""Change → other side written: latency with events on, against the scheduled poll alone.

    .venv/bin/python benchmarks/event_latency.py                         # 200 changes of each kind
    .venv/bin/python benchmarks/event_latency.py --mode poll --poll-s 60 # the poll alone
    .venv/bin/python benchmarks/event_latency.py --faults 0.2 --poll-s 30  # lossy events
    .venv/bin/python benchmarks/event_latency.py --changes 30            # a quick run

The sandbox runs in its own process with ``--latency-ms`` (50) on every API call, seeded
with ``--opportunities`` per CRM; ``connector run`` runs as a child process with both
sandbox connections (Salesforce and Dataverse) polling every ``--poll-s`` seconds and,
in ``events`` mode, its event receiver on (Partner Center webhooks, Dataverse webhook
posts, Salesforce Change Data Capture). After the first cycles, once the daemon is
quiet (the first cycles' own writes come back as Salesforce change events), changes
are made one by one, ``--every-ms`` apart:

- ``salesforce``: a linked opportunity's Amount; done when the referral carries it;
- ``dataverse``: a linked row's estimatedvalue; done when the referral carries it;
- ``core``: Microsoft accepts a co-sell deal; done when the CRM record's Microsoft
  status field says Active (deals of both CRMs, alternately).

The times come from the sandbox's change log (every write of the three systems, with
its time): latency = the other side's write - the moment before the change was made.
``--faults S`` drops, duplicates and reorders a share S of the events each: the poll
must still catch every change (``lost`` is the changes never written on the other
side before ``2 × poll + 60`` seconds after the last change). Reports p50/p95/max per
kind and overall, and the API calls made from the first change until the last one was
written on the other side (per API, and per change), as a table and as JSON
(``--json FILE``); every write of the three systems in that window goes to
``changes.jsonl`` in ``--workdir``. Fewer linked records than ``--changes`` of a kind
stops the run before any change is made (seed more with ``--opportunities``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import yaml

from sandbox.harness import SandboxProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SF, DV = "bench-salesforce", "bench-dynamics"
DV_KEY_ENV = "BENCH_DATAVERSE_EVENT_KEY"
DV_KEY = "bench-dataverse-key-2f7c"


def wait_until(condition: Any, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


@contextmanager
def child(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def config(sb_url: str, ca: Path, workdir: Path, mode: str, poll_s: int, events_port: int) -> Path:
    text = (ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8")
    text = text.replace("https://127.0.0.1:8700", sb_url).replace(
        ".connector/sandbox-ca.pem", str(ca)
    )
    data = yaml.safe_load(text)
    data.pop("state_url", None)
    names = {"sandbox-salesforce": SF, "sandbox-dynamics": DV}
    for conn in data["connections"]:
        conn["name"] = names[conn["name"]]
        conn["mapping"] = str(ROOT / conn["mapping"])
        conn["schedule"] = {"interval_s": poll_s, "jitter_s": 0}
        conn["core"]["concurrency"] = 8
        if mode == "events":
            conn["events"] = {"partner_center": True, "crm": True}
            if conn["name"] == DV:
                conn["events"]["dataverse"] = {
                    "kind": "header",
                    "name": "x-connector-key",
                    "secret": {"env": DV_KEY_ENV},
                }
    if mode == "events":
        data["events"] = {
            "enabled": True,
            "port": events_port,
            "tls_cert_file": str(ca.with_name("sandbox-receiver.pem")),
            "tls_key_file": str(ca.with_name("sandbox-receiver.key")),
            "partner_center": {
                "certificate_hosts": ["127.0.0.1"],
                "issuer_organization": "co-sell connector sandbox",
                "ca_file": str(ca),
            },
        }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Change:
    kind: str
    record_id: str
    expect: Any
    made_at: float
    after_seq: int
    done_at: float | None = None

    @property
    def latency(self) -> float | None:
        return None if self.done_at is None else self.done_at - self.made_at


@dataclass
class ChangeLog:
    admin: httpx.Client
    seq: int = 0
    entries: list[dict[str, Any]] = field(default_factory=list)

    def read(self) -> list[dict[str, Any]]:
        """The entries written since the last read (also kept in ``entries``)."""
        new: list[dict[str, Any]] = []
        while True:
            rows = self.admin.get("/_sandbox/changes", params={"after": self.seq}).json()["changes"]
            if not rows:
                self.entries.extend(new)
                return new
            new.extend(rows)
            self.seq = rows[-1]["seq"]


def _value(referral: dict[str, Any]) -> Decimal | None:
    value = (referral.get("details") or {}).get("dealValue")
    try:
        return None if value is None else Decimal(str(value))
    except ArithmeticError:
        return None


def match(change: Change, entry: dict[str, Any]) -> bool:
    record = entry["record"]
    if change.kind in ("salesforce", "dataverse"):
        return (
            entry["system"] == "core"
            and record.get("externalReferenceId") == change.record_id
            and _value(record) == Decimal(change.expect)
        )
    system, status_field = change.expect
    return (
        entry["system"] == system
        and entry["id"] == change.record_id
        and str(record.get(status_field) or "").startswith("Active")
    )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    with SandboxProcess(workdir, latency_ms=args.latency_ms) as sandbox:
        url, ca = sandbox.url, sandbox.ca_file
        with sandbox.client(120) as admin:
            admin.post(
                "/_sandbox/seed", json={"opportunities": args.opportunities, "seed": 3}
            ).raise_for_status()
            events_port = free_port()
            cfg = config(url, ca, workdir, args.mode, args.poll_s, events_port)
            health = free_port()
            state = workdir / "state.db"
            state.unlink(missing_ok=True)
            env = {
                **os.environ,
                "CONNECTOR_STATE_URL": f"sqlite:///{state}",
                "CONNECTOR_LOG_FORMAT": "json",
                "CONNECTOR_LOG_LEVEL": "WARNING",
                DV_KEY_ENV: DV_KEY,
            }
            daemon_cmd = [
                PYTHON,
                "-m",
                "connector",
                "run",
                "--config",
                str(cfg),
                "--health-port",
                str(health),
            ]
            with child(daemon_cmd, workdir / "daemon.log", env):
                wait_until(
                    lambda: _cycles(health, SF) >= 1 and _cycles(health, DV) >= 1,
                    "the first cycles",
                    600,
                )
                if args.mode == "events":
                    receiver = f"https://127.0.0.1:{events_port}"
                    faults = {
                        "drop": args.faults,
                        "duplicate": args.faults,
                        "reorder": args.faults,
                        "reorder_s": 1.0,
                    }
                    admin.put(
                        "/_sandbox/events",
                        json={
                            "partner_center": {"url": f"{receiver}/events/partner-center"},
                            "dataverse": {
                                "url": f"{receiver}/events/dataverse/{DV}",
                                "auth": {
                                    "kind": "header",
                                    "name": "x-connector-key",
                                    "secret": DV_KEY,
                                },
                            },
                            "salesforce": {"enabled": True, "hold_s": 20},
                            "faults": {
                                s: faults for s in ("partner_center", "dataverse", "salesforce")
                            },
                            "log_changes": True,
                        },
                    ).raise_for_status()
                else:
                    admin.put("/_sandbox/events", json={"log_changes": True}).raise_for_status()
                time.sleep(1.0)  # the CDC subscription is made
                wait_quiet(admin)
                before = admin.get("/_sandbox/events").json()["stats"]
                log = ChangeLog(admin)
                log.read()
                log.entries.clear()
                admin.post("/_sandbox/stats/reset").raise_for_status()
                started = time.time()
                changes = make_changes(admin, args)
                pending = Pending(changes)
                deadline = time.time() + 2 * args.poll_s + 60
                while time.time() < deadline and pending:
                    pending.settle(log.read())
                    time.sleep(0.5)
                window_s = time.time() - started
                log.read()
                with (workdir / "changes.jsonl").open("w", encoding="utf-8") as out:
                    for entry in log.entries:  # every write in the window, for a closer look
                        out.write(json.dumps(entry) + "\n")
                calls = admin.get("/_sandbox/stats").json()
                calls["by_path"] = by_path(admin.get("/_sandbox/arrivals").json()["arrivals"])
                metrics = _get(health, "/metrics")
                after = admin.get("/_sandbox/events").json()["stats"]
                stats = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k)}
    return summarise(changes, args, metrics, stats, calls, window_s)


def wait_quiet(admin: httpx.Client, timeout_s: float = 300.0) -> None:
    """Wait until the daemon is done with the first cycles' aftermath (Salesforce
    publishes change events from the daemon's first handshake on, so the first cycles'
    own writes come back as events): at most 3 API calls in 3 seconds (the Streaming
    API's held connects), so the measured window has only the changes' work."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        admin.post("/_sandbox/stats/reset").raise_for_status()
        time.sleep(3.0)
        totals = admin.get("/_sandbox/stats").json().get("totals", {})
        if sum(n for api, n in totals.items() if api != "entra") <= 3:
            return
    print(f"the daemon was still busy after {timeout_s:.0f} s: measuring anyway", file=sys.stderr)


def make_changes(admin: httpx.Client, args: argparse.Namespace) -> list[Change]:
    sf = [
        o
        for o in admin.get("/_sandbox/salesforce/opportunities").json()["records"]
        if o.get("Referral_Identifier__c") and not o.get("IsClosed")
    ]
    dv = [
        r
        for r in admin.get("/_sandbox/dataverse/opportunities").json()["value"]
        if r.get("cosell_referralid") and r.get("statecode") == 0
    ]
    referrals = admin.get("/_sandbox/core/referrals").json()["value"]
    waiting = {r["engagementId"] for r in referrals if _is_microsofts(r) and r["status"] == "New"}
    linked = {o["Id"]: (("salesforce", "CoSell_Microsoft_Status__c")) for o in sf}
    linked.update({r["opportunityid"]: ("dataverse", "cosell_microsoftstatus") for r in dv})
    cosell = [
        r
        for r in referrals
        if not _is_microsofts(r)
        and r["engagementId"] in waiting
        and r.get("externalReferenceId") in linked
    ]
    short = {
        kind: n
        for kind, n in (("salesforce", len(sf)), ("dataverse", len(dv)), ("core", len(cosell)))
        if n < args.changes
    }
    if short:
        raise SystemExit(
            f"too few linked records for {args.changes} changes of each kind: {short}; "
            "seed more with --opportunities"
        )
    plan: list[tuple[str, Any]] = []
    for i in range(args.changes):
        if i < len(sf):
            plan.append(("salesforce", sf[i]))
        if i < len(dv):
            plan.append(("dataverse", dv[i]))
        if i < len(cosell):
            plan.append(("core", cosell[i]))
    changes: list[Change] = []
    log_seq = ChangeLog(admin)
    log_seq.read()
    for n, (kind, item) in enumerate(plan):
        made = time.time()
        if kind == "salesforce":
            value = 100_000 + n
            admin.post(
                f"/_sandbox/salesforce/opportunities/{item['Id']}", json={"Amount": value}
            ).raise_for_status()
            changes.append(Change(kind, item["Id"], value, made, log_seq.seq))
        elif kind == "dataverse":
            value = 200_000 + n
            admin.post(
                f"/_sandbox/dataverse/opportunities/{item['opportunityid']}",
                json={"estimatedvalue": value},
            ).raise_for_status()
            changes.append(Change(kind, item["opportunityid"], value, made, log_seq.seq))
        else:
            crm_id = item["externalReferenceId"]
            admin.post(f"/_sandbox/core/microsoft/{item['id']}/accept", json={}).raise_for_status()
            changes.append(Change(kind, crm_id, linked[crm_id], made, log_seq.seq))
        time.sleep(args.every_ms / 1000)
    return changes


class Pending:
    """The changes not yet seen on the other side, by the record id the write carries
    (each log entry is looked at once: a full-size run logs thousands of writes)."""

    def __init__(self, changes: list[Change]) -> None:
        self.by_key: dict[str, list[Change]] = {}
        for change in changes:
            self.by_key.setdefault(change.record_id, []).append(change)

    def __bool__(self) -> bool:
        return bool(self.by_key)

    def settle(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            key = entry["record"].get("externalReferenceId") if entry["system"] == "core" else None
            waiting = self.by_key.get(str(key if key is not None else entry["id"]))
            if not waiting:
                continue
            for change in list(waiting):
                if entry["at"] >= change.made_at and match(change, entry):
                    change.done_at = entry["at"]
                    waiting.remove(change)
            if not waiting:
                self.by_key.pop(str(key if key is not None else entry["id"]), None)


def summarise(
    changes: list[Change],
    args: argparse.Namespace,
    metrics: str,
    stats: dict[str, int],
    calls: dict[str, Any],
    window_s: float,
) -> dict[str, Any]:
    totals = {api: n for api, n in calls.get("totals", {}).items() if api != "entra"}
    out: dict[str, Any] = {
        "mode": args.mode,
        "poll_s": args.poll_s,
        "latency_ms": args.latency_ms,
        "faults": args.faults,
        "sandbox_events": stats,
        # API calls the daemon made from the first change until the last one was seen
        # on the other side (or the deadline): per API, and per change made
        "window_s": round(window_s, 1),
        "calls": totals,
        "calls_per_change": round(sum(totals.values()) / max(1, len(changes)), 2),
        "calls_by_method": {api: m for api, m in calls.get("calls", {}).items() if api in totals},
        "calls_by_path": calls.get("by_path", {}),
        "token_calls": calls.get("totals", {}).get("entra", 0),
        "kinds": {},
    }
    for kind in ("salesforce", "dataverse", "core", "all"):
        chosen = [c for c in changes if kind in (c.kind, "all")]
        done = [c.latency for c in chosen if c.latency is not None]
        row: dict[str, Any] = {"changes": len(chosen), "lost": len(chosen) - len(done)}
        if done:
            row.update(
                p50=round(statistics.median(done), 2),
                p95=round(percentile(done, 95), 2),
                max=round(max(done), 2),
            )
        out["kinds"][kind] = row
    out["targeted_cycles"] = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("connector_targeted_cycles_total{")
    )
    out["scheduled_cycles"] = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("connector_cycles_total{")
    )
    return out


def by_path(arrivals: list[dict[str, Any]]) -> dict[str, int]:
    """The window's calls by API, method and path with its ids left out, most first."""
    shapes: Counter[str] = Counter()
    for a in arrivals:
        if a["api"] == "entra":
            continue
        path = re.sub(r"\([^)]*\)", "(…)", a["path"].split("?", 1)[0])
        path = "/".join(
            "…" if re.search(r"\d", seg) and len(seg) >= 8 else seg for seg in path.split("/")
        )
        shapes[f"{a['api']} {a['method']} {path}"] += 1
    return dict(shapes.most_common())


def _is_microsofts(referral: dict[str, Any]) -> bool:
    from sandbox.partner_center.fields import is_microsofts

    return bool(is_microsofts(referral))


def _get(port: int, path: str) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10).text
    except httpx.HTTPError:
        return ""


def _cycles(port: int, name: str) -> int:
    try:
        data = json.loads(_get(port, "/readyz") or "{}")
    except ValueError:
        return 0
    return int(data.get("connections", {}).get(name, {}).get("cycles", 0))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("events", "poll"), default="events")
    parser.add_argument("--changes", type=int, default=200, help="changes of each kind")
    parser.add_argument("--opportunities", type=int, default=1000, help="seeded per CRM")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--poll-s", type=int, default=60)
    parser.add_argument("--every-ms", type=float, default=250.0, help="pause between two changes")
    parser.add_argument(
        "--faults",
        type=float,
        default=0.0,
        help="share of events dropped, duplicated, reordered (each)",
    )
    parser.add_argument("--workdir", default=".connector/bench-events")
    parser.add_argument("--json", dest="json_file")
    args = parser.parse_args()
    result = run(args)
    print(
        f"mode={result['mode']} poll={result['poll_s']}s latency={result['latency_ms']}ms faults={result['faults']}"
    )
    print(f"{'kind':<12}{'changes':>8}{'lost':>6}{'p50 s':>8}{'p95 s':>8}{'max s':>8}")
    for kind, row in result["kinds"].items():
        print(
            f"{kind:<12}{row['changes']:>8}{row['lost']:>6}{row.get('p50', '-'):>8}{row.get('p95', '-'):>8}{row.get('max', '-'):>8}"
        )
    print(
        f"targeted cycles {result['targeted_cycles']:.0f}, scheduled cycles {result['scheduled_cycles']:.0f}"
    )
    print(
        f"API calls in {result['window_s']} s: {json.dumps(result['calls'], sort_keys=True)}"
        f" ({result['calls_per_change']} per change; {result['token_calls']} token calls)"
    )
    for shape, n in list(result["calls_by_path"].items())[:10]:
        print(f"{n:>8}  {shape}")
    print(f"sandbox events: {json.dumps(result['sandbox_events'], sort_keys=True)}")
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
