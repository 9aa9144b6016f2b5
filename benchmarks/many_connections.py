"""Many connections in one daemon: first syncs, a no-change round, memory and fairness.

    .venv/bin/python benchmarks/many_connections.py                       # 10, 25, 50
    .venv/bin/python benchmarks/many_connections.py --connections 50 --per-connection 2000
    .venv/bin/python benchmarks/many_connections.py --connections 4 --per-connection 200  # quick

For each number of connections K (half Salesforce, half Dynamics) it starts the sandbox in
its own process (loopback, fixed latency per call), seeds K/2 x ``--per-connection``
opportunities in each CRM, and gives every connection its own slice of them: the
mapping's ``select`` AND a range of the opportunity's value (Amount / estimatedvalue,
cut at the seeded values' quantiles), so that the connections share the sandbox's
org, environment and core without sharing a record. One ``connector run`` daemon
(its own process, SQLite state) runs all K on their schedule. The benchmark reads the
daemon's /metrics every half second and reports:

- the time until every connection finished its first cycle (the first sync), and each
  connection's first-cycle end (min / median / max);
- fairness: the largest gap, at any sample, between the most and the least completed
  cycles of two connections (1 = no connection waited more than one cycle behind; a
  connection whose first sync is long falls behind those whose cycles are short, so
  the cycles the others completed before the last first sync ended are given too);
- the no-change round: after two rounds the sandbox clock moves 20 minutes (every
  overlap window has passed), every connection runs two more cycles and the last one is
  measured: its API calls per connection by system (``connector_api_calls``: the
  Salesforce adapter counts a sign-in among its calls, which the daemon makes once per
  connection and again only when the session expires, not once a cycle; Dataverse's and
  the core's token calls are not counted) and the time the round took;
- the daemon's peak RSS (VmHWM), its thread count at the peak of the first round;
- and how time and memory grow from the smallest K to the largest.

Figures are printed and written as JSON (benchmarks/results/many-*.json). Every wait is
bounded (``--timeout-s`` per phase); a first round the bound cuts short is reported as
how many first syncs ended within it (and when), with the memory so far.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import PYTHON, ROOT, Sandbox, connection_config, sandbox

from sandbox.harness import free_port

VALUE_FIELD = {"salesforce": "Amount", "dynamics": "estimatedvalue"}
METRIC = re.compile(r"^(connector_[a-z_]+)\{([^}]*)\} ([0-9.e+-]+)$")


def opportunities(sb: Sandbox, crm: str) -> list[dict[str, Any]]:
    if crm == "salesforce":
        rows = sb.get("/_sandbox/salesforce/opportunities")
        return list(rows["records"] if isinstance(rows, dict) else rows)
    rows = sb.get("/_sandbox/dataverse/opportunities")
    return list(rows.get("value", rows) if isinstance(rows, dict) else rows)


def slices(values: list[float], k: int) -> list[tuple[float | None, float | None]]:
    """``k`` value ranges [lo, hi) cut at the quantiles of ``values`` (None: open)."""
    ordered = sorted(values)
    cuts = [ordered[len(ordered) * i // k] for i in range(1, k)]
    bounds: list[float | None] = [None, *cuts, None]
    return [(bounds[i], bounds[i + 1]) for i in range(k)]


def sliced_mapping(crm: str, lo: float | None, hi: float | None, path: Path) -> Path:
    base = yaml.safe_load((ROOT / "mappings" / f"{crm}.yaml").read_text())
    field = VALUE_FIELD[crm]
    conditions: list[dict[str, Any]] = [base["select"]]
    if lo is not None:
        conditions.append({"field": field, "op": "ge", "value": lo})
    if hi is not None:
        conditions.append({"field": field, "op": "lt", "value": hi})
    base["select"] = {"all": conditions}
    path.write_text(yaml.safe_dump(base, sort_keys=False, allow_unicode=True))
    return path


def read_metrics(url: str) -> dict[str, dict[tuple[str, ...], float]]:
    """``connector_*`` samples by name, keyed by their label values in order."""
    out: dict[str, dict[tuple[str, ...], float]] = defaultdict(dict)
    try:
        text = httpx.get(url, timeout=10).text
    except httpx.HTTPError:
        return out
    for line in text.splitlines():
        m = METRIC.match(line)
        if m:
            labels = tuple(v for _, v in re.findall(r'([a-z_]+)="([^"]*)"', m.group(2)))
            out[m.group(1)][labels] = float(m.group(3))
    return out


def cycles(metrics: dict[str, dict[tuple[str, ...], float]]) -> dict[str, int]:
    done: dict[str, int] = defaultdict(int)
    for (conn, _outcome), n in metrics.get("connector_cycles_total", {}).items():
        done[conn] += int(n)
    return done


def calls(metrics: dict[str, dict[tuple[str, ...], float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for (conn, system), n in metrics.get("connector_api_calls_total", {}).items():
        out[conn][system] = n
    return out


def proc_status(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "VmRSS", "Threads"):
                    values[key] = int(rest.split()[0])
    except (OSError, ValueError):
        pass
    return values


class Daemon:
    """The `connector run` process and what was sampled of it."""

    def __init__(
        self, config: Path, state_url: str, workdir: Path, parallel_cycles: int | None
    ) -> None:
        self.port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.port}/metrics"
        self.log = (workdir / "daemon.log").open("wb")
        env = {
            **os.environ,
            "CONNECTOR_STATE_URL": state_url,
            "CONNECTOR_LOG_LEVEL": "WARNING",
            "CONNECTOR_LOG_FORMAT": "json",
        }
        self.proc = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "connector",
                "run",
                "--config",
                str(config),
                "--health-port",
                str(self.port),
                *(["--parallel-cycles", str(parallel_cycles)] if parallel_cycles else []),
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.peak_kib = 0
        self.peak_threads = 0
        self.max_gap = 0
        self.samples: list[tuple[float, dict[str, int]]] = []

    def sample(self, names: list[str]) -> tuple[dict[str, int], dict[str, dict[str, float]]]:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {self.proc.returncode}")
        status = proc_status(self.proc.pid)
        self.peak_kib = max(self.peak_kib, status.get("VmHWM", 0))
        self.peak_threads = max(self.peak_threads, status.get("Threads", 0))
        metrics = read_metrics(self.metrics_url)
        done = cycles(metrics)
        counts = [done.get(n, 0) for n in names]
        if any(counts):
            self.max_gap = max(self.max_gap, max(counts) - min(counts))
        self.samples.append((time.monotonic(), {n: done.get(n, 0) for n in names}))
        return {n: done.get(n, 0) for n in names}, calls(metrics)

    def wait_for(
        self, names: list[str], target: dict[str, int], timeout_s: float
    ) -> dict[str, float]:
        """Wait until every connection completed ``target[name]`` cycles; when each did."""
        deadline = time.monotonic() + timeout_s
        reached: dict[str, float] = {}
        while True:
            done, _ = self.sample(names)
            now = time.monotonic()
            for n in names:
                if n not in reached and done[n] >= target[n]:
                    reached[n] = now
            if len(reached) == len(names):
                return reached
            if now > deadline:
                raise NotFinished(reached, [n for n in names if n not in reached])
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class NotFinished(RuntimeError):
    """A phase's bound passed before every connection got there."""

    def __init__(self, reached: dict[str, float], missing: list[str]) -> None:
        super().__init__(f"{len(missing)} connection(s) did not finish: {missing[:5]}")
        self.reached = reached
        self.missing = missing


def run(k: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    half = {"salesforce": k - k // 2, "dynamics": k // 2}
    with sandbox(workdir, args.latency_ms) as sb:
        for crm, api in (("salesforce", "salesforce"), ("dynamics", "dataverse")):
            if half[crm]:
                n = half[crm] * args.per_connection
                sb.post("/_sandbox/seed", {"opportunities": n, "seed": 11, "apis": [api]})
        sb.post("/_sandbox/core/reset")
        connections: list[dict[str, Any]] = []
        sizes: dict[str, int] = {}
        for crm, count in half.items():
            if not count:
                continue
            rows = opportunities(sb, crm)
            field = VALUE_FIELD[crm]
            values = [float(r[field]) for r in rows if r.get(field) is not None]
            for i, (lo, hi) in enumerate(slices(values, count)):
                name = f"{crm[:2]}-{i:02d}"
                sizes[name] = sum(
                    1 for v in values if (lo is None or v >= lo) and (hi is None or v < hi)
                )
                conn = connection_config(crm, sb, args.concurrency)["connections"][0]
                conn["name"] = name
                conn["mapping"] = str(sliced_mapping(crm, lo, hi, workdir / f"{name}.yaml"))
                conn["schedule"] = {"interval_s": args.interval_s, "jitter_s": 0}
                connections.append(conn)
        config = workdir / "daemon.yaml"
        config.write_text(json.dumps({"connections": connections}, indent=2))
        names = [c["name"] for c in connections]
        state = f"sqlite:///{workdir / 'state.db'}"
        started = time.monotonic()
        daemon = Daemon(config, state, workdir, args.parallel_cycles)
        try:
            try:
                first = daemon.wait_for(names, dict.fromkeys(names, 1), args.timeout_s)
            except NotFinished as late:
                # what the bound allowed: how many first syncs ended, when, and the memory
                ended = sorted(t - started for t in late.reached.values())
                return {
                    "connections": k,
                    "first_round_incomplete": {
                        "ended": len(ended),
                        "of": k,
                        "within_s": args.timeout_s,
                        "first_cycle_end_s": {
                            "min": round(ended[0], 1) if ended else None,
                            "median": round(statistics.median(ended), 1) if ended else None,
                            "max": round(ended[-1], 1) if ended else None,
                        },
                        "not_ended": late.missing,
                    },
                    "peak_rss_mb": round(daemon.peak_kib / 1024, 1),
                    "peak_threads": daemon.peak_threads,
                    "fairness_max_cycle_gap": daemon.max_gap,
                }
            first_round = {n: t - started for n, t in first.items()}
            # when the last first sync ended: how many cycles the others had run meanwhile
            at_last_first = daemon.samples[-1][1]
            ahead = max(at_last_first.values()) - 1
            first_peak_threads = daemon.peak_threads
            daemon.wait_for(names, dict.fromkeys(names, 2), args.timeout_s)
            # every overlap window passes: the next cycles read nothing they read before
            sb.post("/_sandbox/clock", {"minutes": 20})
            done, _ = daemon.sample(names)
            daemon.wait_for(names, {n: done[n] + 1 for n in names}, args.timeout_s)
            before, before_calls = daemon.sample(names)
            round_started = time.monotonic()
            ends = daemon.wait_for(names, {n: before[n] + 1 for n in names}, args.timeout_s)
            round_s = max(ends.values()) - round_started
            after, after_calls = daemon.sample(names)
        finally:
            daemon.stop()
    per_connection: dict[str, dict[str, float]] = {}
    for n in names:
        cycles_run = after[n] - before[n]
        per_connection[n] = {
            system: (after_calls[n].get(system, 0) - before_calls[n].get(system, 0)) / cycles_run
            for system in after_calls.get(n, {})
        }
    crm_calls = [
        sum(v for s, v in c.items() if s in ("salesforce", "dataverse"))
        for c in per_connection.values()
    ]
    core_calls = [c.get("core", 0.0) for c in per_connection.values()]
    ends_sorted = sorted(first_round.values())
    return {
        "connections": k,
        "salesforce": half["salesforce"],
        "dynamics": half["dynamics"],
        "opportunities_per_connection": {
            "min": min(sizes.values()),
            "max": max(sizes.values()),
        },
        "first_round_s": round(max(first_round.values()), 1),
        "first_cycle_end_s": {
            "min": round(ends_sorted[0], 1),
            "median": round(statistics.median(ends_sorted), 1),
            "max": round(ends_sorted[-1], 1),
        },
        "fairness_max_cycle_gap": daemon.max_gap,
        "cycles_others_ran_before_the_last_first_sync_ended": ahead,
        "no_change_round_s": round(round_s, 2),
        "no_change_calls_per_connection": {
            "crm_max": max(crm_calls),
            "crm_mean": round(statistics.mean(crm_calls), 2),
            "core_max": max(core_calls),
            "core_mean": round(statistics.mean(core_calls), 2),
        },
        "no_change_calls_by_connection": per_connection,
        "peak_rss_mb": round(daemon.peak_kib / 1024, 1),
        "peak_threads_first_round": first_peak_threads,
        "peak_threads": daemon.peak_threads,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--per-connection", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=16, help="core.concurrency each")
    parser.add_argument("--interval-s", type=int, default=30, help="each connection's schedule")
    parser.add_argument(
        "--parallel-cycles",
        type=int,
        default=None,
        help="the daemon's --parallel-cycles (default: the daemon's own)",
    )
    parser.add_argument("--timeout-s", type=float, default=3600, help="bound on each phase")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    rows = []
    for k in sorted(args.connections):
        with tempfile.TemporaryDirectory(prefix=f"bench-many-{k}-") as tmp:
            row = run(k, args, Path(tmp))
        rows.append(row)
        if "first_round_incomplete" in row:
            late = row["first_round_incomplete"]
            print(
                f"{k:3} connections: {late['ended']} of {k} first syncs ended within "
                f"{late['within_s']:.0f} s (the rest not measured), peak RSS "
                f"{row['peak_rss_mb']} MB, threads {row['peak_threads']}",
                flush=True,
            )
            continue
        print(
            f"{k:3} connections: first round {row['first_round_s']} s, "
            f"no-change round {row['no_change_round_s']} s, "
            f"peak RSS {row['peak_rss_mb']} MB, threads {row['peak_threads']}, "
            f"max cycle gap {row['fairness_max_cycle_gap']}, no-change calls per "
            f"connection {row['no_change_calls_per_connection']}",
            flush=True,
        )
    growth: dict[str, Any] = {}
    complete = [r for r in rows if "first_round_incomplete" not in r]
    if len(complete) > 1:
        a, b = complete[0], complete[-1]
        growth = {
            "connections": f"{a['connections']} -> {b['connections']}",
            "first_round_s_ratio": round(b["first_round_s"] / a["first_round_s"], 2),
            "peak_rss_mb_per_added_connection": round(
                (b["peak_rss_mb"] - a["peak_rss_mb"]) / (b["connections"] - a["connections"]), 2
            ),
        }
    meta = {
        "per_connection": args.per_connection,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "interval_s": args.interval_s,
        "parallel_cycles": args.parallel_cycles,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "command": " ".join(sys.argv),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"many-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"meta": meta, "runs": rows, "growth": growth}, indent=2))
    print()
    print(
        f"{'connections':>11} {'first round s':>14} {'no-change s':>12} {'peak RSS MB':>12} "
        f"{'threads':>8} {'cycle gap':>10} {'CRM/core calls (max)':>22}"
    )
    for r in complete:
        c = r["no_change_calls_per_connection"]
        print(
            f"{r['connections']:>11} {r['first_round_s']:>14} {r['no_change_round_s']:>12} "
            f"{r['peak_rss_mb']:>12} {r['peak_threads']:>8} {r['fairness_max_cycle_gap']:>10} "
            f"{c['crm_max']:>10g} / {c['core_max']:<10g}"
        )
    if growth:
        print(f"growth {growth}")
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
