"""Reproducible pipeline benchmarks against the sandbox (issue: performance).

    .venv/bin/python benchmarks/pipeline.py                 # defaults below, both CRMs
    .venv/bin/python benchmarks/pipeline.py --crm salesforce --first-n 2000 --nochange-n 10000 \
        --rss-n 2000 5000 10000                                # a quick run

It starts the sandbox in its own process (loopback only) with a fixed per-request
latency, seeds it, runs `connector sync --once` as a child process, and measures:

1. the first sync of N opportunities: wall time, referrals per second, the ratio
   of the bound (core writes x latency / concurrency) to the wall time, the connector
   process's CPU ms per referral, and - measured right after it against the same
   sandbox, latency and concurrency - the bare-client ceiling (`benchmarks/ceiling.py`)
   and the first sync's share of it (the time a bare httpx pool needs for the sync's
   core calls, over the sync's wall time);
2. a no-change cycle over M linked deals: wall time and API calls per system
   (token calls listed apart);
3. an incremental cycle with 1 % of the records changed: calls and time;
4. Salesforce calls per 1,000 status updates written back;
5. the connector process's peak RSS for several N;
6. (Dynamics, with --window-n) a first sync of that many rows under Dataverse's default limits (6000
   requests per 5 minutes): the most requests in any 5-minute window, the 429s met,
   and what a second run still had to create (0: one run did it all).

Figures are printed as a table and written as JSON (benchmarks/results/*.json).
Everything is bounded: each child process has a timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sandbox.harness import SandboxProcess

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TOKEN_PATHS = ("/oauth2/",)


@dataclass
class Sandbox:
    url: str
    ca_file: Path
    proc: subprocess.Popen[bytes]
    admin: httpx.Client

    def put(self, path: str, body: Any) -> Any:
        return self.admin.put(path, json=body).raise_for_status().json()

    def post(self, path: str, body: Any = None) -> Any:
        return self.admin.post(path, json=body or {}).raise_for_status().json()

    def get(self, path: str) -> Any:
        return self.admin.get(path).raise_for_status().json()

    def calls(self) -> dict[str, Counter[str]]:
        """Calls per system since the last reset, with token calls apart."""
        rows = self.get("/_sandbox/arrivals")["arrivals"]
        out: dict[str, Counter[str]] = {}
        for row in rows:
            api = row["api"]
            if any(p in row["path"] for p in TOKEN_PATHS):
                api = f"{api}:token"
            out.setdefault(api, Counter())[row["method"]] += 1
        return out

    def reset_stats(self) -> None:
        self.post("/_sandbox/stats/reset")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process so far (Linux /proc), 0 once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds every core of the machine spent busy so far (Linux /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@contextmanager
def sandbox(workdir: Path, latency_ms: float) -> Iterator[Sandbox]:
    """The sandbox in its own process (sandbox.harness), empty: each case seeds it."""
    with SandboxProcess(workdir, latency_ms=latency_ms, admin_timeout=600) as sb:
        assert sb.process is not None and sb.admin is not None
        yield Sandbox(sb.url, sb.ca_file, sb.process, sb.admin)


def connection_config(
    crm: str, sb: Sandbox, concurrency: int, co_sell_mode: str = "two_referrals"
) -> dict[str, Any]:
    core = {
        "base_url": f"{sb.url}/v1.0/engagements",
        "auth": "client_credentials",
        "token_url": f"{sb.url}/bench-tenant/oauth2/v2.0/token",
        "client_id": "sandbox",
        "client_secret": {"value": "sandbox"},
        "scope": "https://api.partner.microsoft.com/.default",
        "ca_file": str(sb.ca_file),
        "referral_link_base": f"{sb.url}/dashboard/referrals/v2",
        "concurrency": concurrency,
        "co_sell_mode": co_sell_mode,
    }
    if crm == "salesforce":
        crm_settings: dict[str, Any] = {
            "kind": "salesforce",
            "login_url": sb.url,
            "client_id": "sandbox",
            "client_secret": {"value": "sandbox"},
            "allowed_instance_origin": sb.url,
            "ca_file": str(sb.ca_file),
            "max_quota_share": 1.0,
        }
        mapping = ROOT / "mappings" / "salesforce.yaml"
    else:
        crm_settings = {
            "kind": "dynamics",
            "environment_url": sb.url,
            # the sandbox is its own Entra ID: never the public authority
            "authority": sb.url,
            "tenant": "bench-tenant",
            "client_id": "sandbox",
            "client_secret": {"value": "sandbox"},
            "ca_file": str(sb.ca_file),
            "change_tracking": True,
        }
        mapping = ROOT / "mappings" / "dynamics.yaml"
    return {
        "connections": [
            {"name": f"bench-{crm}", "mapping": str(mapping), "crm": crm_settings, "core": core}
        ]
    }


@dataclass
class SyncRun:
    wall_s: float
    peak_rss_mb: float
    report: dict[str, Any]
    exit_code: int
    #: CPU seconds (user + system) of the connector's process alone: the sandbox runs in
    #: its own process and is not counted (the child's rusage from wait4)
    cpu_s: float = 0.0
    #: Dataverse's 429 answers the connector logged (each retried after Retry-After)
    throttled: int = 0


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a connector child process: with its bytecode kept.

    An installed connector (the wheel, the container image) has its modules compiled;
    a checkout run with PYTHONDONTWRITEBYTECODE compiles every module of the connector
    again at each start (about 0.3 s here), which is not the sync's time. The children
    may write their bytecode (``__pycache__``, git-ignored), compiled once beforehand.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, **extra}


def warm_bytecode() -> None:
    """Compile the connector's modules once, as installing it would."""
    subprocess.run(
        [PYTHON, "-m", "compileall", "-q", "-j", "0", str(ROOT / "connector")],
        env=child_env(),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def run_sync(config: Path, state_url: str, timeout_s: float) -> SyncRun:
    report_file = config.with_suffix(".report.json")
    env = child_env(
        CONNECTOR_STATE_URL=state_url,
        CONNECTOR_LOG_LEVEL="WARNING",
        CONNECTOR_LOG_FORMAT="json",
    )
    # BENCH_PROFILE=DIR: the sync runs under py-spy (pip install py-spy into the venv;
    # not a dependency), one collapsed-stack file per run in DIR, to read where the
    # connector's CPU goes (py-spy samples from its own process: the figures above are
    # the connector's own, a little slower)
    profile = os.environ.get("BENCH_PROFILE")
    prefix: list[str] = []
    if profile:
        Path(profile).mkdir(parents=True, exist_ok=True)
        out = Path(profile) / f"{config.stem}-{time.strftime('%H%M%S')}.txt"
        spy = str(Path(PYTHON).with_name("py-spy"))
        prefix = [
            spy,
            "record",
            # BENCH_PROFILE_FLAGS="--gil": only the thread holding the GIL (where the
            # process's one core of Python goes)
            *os.environ.get("BENCH_PROFILE_FLAGS", "--nonblocking").split(),
            "-r",
            os.environ.get("BENCH_PROFILE_RATE", "50"),
            "-f",
            "raw",
            "-o",
            str(out),
            "--",
        ]
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            *prefix,
            PYTHON,
            "-m",
            "connector",
            "sync",
            "--once",
            "--config",
            str(config),
            "--report-json",
            str(report_file),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = started + timeout_s
    peak_kib = 0
    while True:
        # the child's own peak (VmHWM): the rusage of a forked child also counts the
        # parent's pages it shared until exec, so a large benchmark process inflates it
        peak_kib = max(peak_kib, _vm_hwm_kib(proc.pid))
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the sync did not finish within {timeout_s:.0f} s")
        time.sleep(0.05)
    wall = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = code
    if code not in (0, 1):
        raise RuntimeError(f"the sync failed with exit code {code}:\n{stderr[-3000:]}")
    cpu = rusage.ru_utime + rusage.ru_stime
    throttled = stderr.count("throttled by Dataverse")
    report = json.loads(report_file.read_text())
    return SyncRun(wall, peak_kib / 1024, report, code, cpu, throttled)


def _vm_hwm_kib(pid: int) -> int:
    """The process's peak resident set size so far (Linux /proc), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


@dataclass
class Bench:
    crm: str
    latency_ms: float
    concurrency: int
    workdir: Path
    #: requests per loop of the bare-client ceiling measured after the first sync (0: none)
    ceiling_requests: int = 3200
    #: core.co_sell_mode of the connection (two_referrals: the documented default)
    co_sell_mode: str = "two_referrals"
    results: dict[str, Any] = field(default_factory=dict)

    def config(self, sb: Sandbox, name: str) -> Path:
        path = self.workdir / f"{self.crm}-{name}.yaml"
        # JSON is YAML: the config loader reads it as is
        path.write_text(
            json.dumps(
                connection_config(self.crm, sb, self.concurrency, self.co_sell_mode), indent=2
            )
        )
        return path

    def seed(self, sb: Sandbox, n: int, *, no_window_limit: bool = False) -> None:
        api = "salesforce" if self.crm == "salesforce" else "dataverse"
        sb.post("/_sandbox/seed", {"opportunities": n, "seed": 11, "apis": [api]})
        sb.post("/_sandbox/core/reset")
        if no_window_limit and self.crm == "dynamics":
            # Memory and the steady state are measured here, not Dataverse's 5-minute
            # window: a first sync of 100,000 rows makes about 7,400 Dataverse calls,
            # more than the 6,000 a window allows, and on a real org (as on the sandbox
            # by default) it is throttled and finishes over two cycles.
            sb.put("/_sandbox/dataverse/limits", {"requests_per_5min": 10_000_000})

    def first_sync(self, n: int) -> None:
        with sandbox(self.workdir / f"first-{n}", self.latency_ms) as sb:
            self.seed(sb, n)
            sb.reset_stats()
            sandbox_cpu, busy = process_cpu_s(sb.proc.pid), machine_busy_s()
            run = run_sync(self.config(sb, "first"), self.state(f"first-{n}"), timeout_s=3600)
            sandbox_cpu = process_cpu_s(sb.proc.pid) - sandbox_cpu
            busy = machine_busy_s() - busy
            calls = sb.calls()
            # the machine's ceiling in the same run: a bare httpx pool against the same
            # sandbox, latency and concurrency, right after the sync (after, so that its
            # referrals are not in the core the sync lists first)
            ceiling = self.ceiling(sb) if self.ceiling_requests else {}
        core = calls.get("core", Counter())
        writes = core["POST"] + core["PATCH"]
        created = run.report["created"]
        bound_writes = writes * self.latency_ms / 1000 / self.concurrency
        bound_referrals = created * self.latency_ms / 1000 / self.concurrency
        crm_api = "salesforce" if self.crm == "salesforce" else "dataverse"
        status_writes = run.report["mirrored"]
        crm_write_calls = (
            calls.get(crm_api, Counter())["PATCH"] + calls.get(crm_api, Counter())["POST"]
        )
        self.results["first_sync"] = {
            "n": n,
            "created": created,
            "wall_s": round(run.wall_s, 2),
            "referrals_per_s": round(created / run.wall_s, 1),
            "core_writes": writes,
            "core_writes_per_referral": round(writes / max(created, 1), 3),
            "bound_s_core_writes": round(bound_writes, 2),
            "ratio_to_bound_core_writes": round(bound_writes / run.wall_s, 3),
            "bound_s_one_write_per_referral": round(bound_referrals, 2),
            "ratio_to_bound_one_write_per_referral": round(bound_referrals / run.wall_s, 3),
            "calls": {k: dict(v) for k, v in calls.items()},
            "status_updates_written": status_writes,
            "crm_write_calls": crm_write_calls,
            "crm_calls_per_1000_status_updates": round(
                crm_write_calls / max(status_writes, 1) * 1000, 2
            ),
            "peak_rss_mb": round(run.peak_rss_mb, 1),
            "cpu_s": round(run.cpu_s, 2),
            "cpu_ms_per_referral": round(run.cpu_s * 1000 / max(created, 1), 3),
            # Whether the machine had CPU to spare: the connector's share of one core
            # (its threads share one interpreter lock), the sandbox's, and the busy share
            # of all the machine's cores over the sync's wall time (1.0: every core busy)
            "connector_cpu_share_of_one_core": round(run.cpu_s / run.wall_s, 3),
            "sandbox_cpu_s": round(sandbox_cpu, 2),
            "sandbox_cpu_share_of_one_core": round(sandbox_cpu / run.wall_s, 3),
            "machine_busy_share": round(busy / run.wall_s / (os.cpu_count() or 1), 3),
            # where the run's time went, from the run report (outbound includes the
            # time spent waiting for the push pool)
            "phases_s": run.report.get("phases_s", {}),
        }
        # The process's wall time includes its start (interpreter, imports, settings, the
        # state store) and its exit; a daemon pays them once, not per cycle. The cycle's
        # own duration (the run report's) is given beside it.
        cycle_s = float(run.report.get("duration_s") or 0.0)
        first = self.results["first_sync"]
        first["co_sell_mode"] = self.co_sell_mode
        first["process_start_and_exit_s"] = round(run.wall_s - cycle_s, 2)
        if cycle_s:
            first["cycle_s"] = round(cycle_s, 2)
            first["cycle_ratio_to_bound_core_writes"] = round(bound_writes / cycle_s, 3)
            first["cycle_ratio_to_bound_one_write_per_referral"] = round(
                bound_referrals / cycle_s, 3
            )
        if ceiling:
            first.update(self.ceiling_shares(ceiling, calls, run.wall_s))
            if cycle_s:
                shares = self.ceiling_shares(ceiling, calls, cycle_s)
                first["cycle_share_of_ceiling_core_writes"] = shares["share_of_ceiling_core_writes"]
                first["cycle_share_of_ceiling_all_core_calls"] = shares[
                    "share_of_ceiling_all_core_calls"
                ]

    def ceiling(self, sb: Sandbox) -> dict[str, float]:
        from ceiling import measure

        core = connection_config(self.crm, sb, self.concurrency)["connections"][0]["core"]
        return measure(
            sb.url,
            str(sb.ca_file),
            core,
            concurrency=self.concurrency,
            requests=self.ceiling_requests,
        )

    def ceiling_shares(
        self, rates: dict[str, float], calls: dict[str, Counter[str]], wall_s: float
    ) -> dict[str, Any]:
        """The first sync against the time a bare client needs for the same core calls.

        ``core writes``: the sync's POSTs and PATCHes at the bare client's POST rate (the
        figure comparable with the bound's); ``all core calls``: its GETs too, at the bare
        GET rate. A share of 1.0 is the pipeline sending its core calls as fast as a bare
        pool can on this machine at this hour.
        """
        core = calls.get("core", Counter())
        writes = core["POST"] + core["PATCH"]
        reads = sum(v for k, v in core.items() if k not in ("POST", "PATCH"))
        bound = self.concurrency / (self.latency_ms / 1000)
        ceiling_writes_s = writes / rates["bare POST"]
        ceiling_all_s = ceiling_writes_s + reads / rates["bare GET"]
        return {
            "ceiling_requests_per_s": {k: round(v, 1) for k, v in rates.items()},
            "ceiling_ratio_to_bound": {k: round(v / bound, 3) for k, v in rates.items()},
            "ceiling_s_core_writes": round(ceiling_writes_s, 2),
            "share_of_ceiling_core_writes": round(ceiling_writes_s / wall_s, 3),
            "ceiling_s_all_core_calls": round(ceiling_all_s, 2),
            "share_of_ceiling_all_core_calls": round(ceiling_all_s / wall_s, 3),
        }

    def dataverse_window(self, n: int) -> None:
        """A Dynamics first sync of ``n`` rows against Dataverse's default limits (6000
        requests per user and sliding 5 minutes): the most requests the sandbox received
        in any 5 minutes, the 429s the connector met, and whether one run did it all."""
        with sandbox(self.workdir / f"window-{n}", self.latency_ms) as sb:
            self.seed(sb, n)  # the sandbox's limits as Dataverse documents them
            sb.reset_stats()
            run = run_sync(self.config(sb, "window"), self.state(f"window-{n}"), timeout_s=14400)
            times = sorted(a["at"] for a in sb.get("/_sandbox/arrivals?api=dataverse")["arrivals"])
            again = run_sync(self.config(sb, "window"), self.state(f"window-{n}"), timeout_s=3600)
        peak, start = 0, 0
        for end, t in enumerate(times):
            while times[start] <= t - 300.0:
                start += 1
            peak = max(peak, end - start + 1)
        self.results["dataverse_window"] = {
            "n": n,
            "wall_s": round(run.wall_s, 1),
            "outcome": run.report.get("outcome"),
            "exit_code": run.exit_code,
            "created": run.report["created"],
            "dataverse_requests": len(times),
            "max_requests_per_5min_window": peak,
            "limit_per_5min": 6000,
            "throttled_responses": run.throttled,
            "second_run_created": again.report["created"],
            "second_run_outcome": again.report.get("outcome"),
        }

    def steady_state(self, n: int, change_share: float) -> None:
        """No-change cycle and 1 % incremental cycle over n linked deals."""
        with sandbox(self.workdir / f"steady-{n}", 0) as sb:
            self.seed(sb, n, no_window_limit=True)
            config = self.config(sb, "steady")
            state = self.state(f"steady-{n}")
            setup = run_sync(config, state, timeout_s=7200)  # first sync, no latency
            run_sync(config, state, timeout_s=3600)  # reads back the echo of the status writes
            # let every overlap window pass, then measure with latency
            sb.post("/_sandbox/clock", {"minutes": 20})
            run_sync(config, state, timeout_s=3600)
            sb.put(
                "/_sandbox/latency",
                dict.fromkeys(("core", "salesforce", "dataverse", "entra"), self.latency_ms),
            )
            sb.reset_stats()
            nochange = run_sync(config, state, timeout_s=3600)
            nochange_calls = sb.calls()
            ids = self.record_ids(sb)
            changed = ids[: max(1, int(len(ids) * change_share))]
            for i, record_id in enumerate(changed):
                self.edit(sb, record_id, i)
            sb.reset_stats()
            incremental = run_sync(config, state, timeout_s=3600)
            incremental_calls = sb.calls()
        self.results["setup_first_sync_no_latency"] = {
            "n": n,
            "wall_s": round(setup.wall_s, 1),
            "peak_rss_mb": round(setup.peak_rss_mb, 1),
            "created": setup.report["created"],
        }
        self.results["no_change_cycle"] = {
            "linked": setup.report["created"],
            "wall_s": round(nochange.wall_s, 2),
            "calls": {k: dict(v) for k, v in nochange_calls.items()},
            "report_api_calls": nochange.report["api_calls"],
        }
        self.results["incremental_1pct"] = {
            "changed": len(changed),
            "wall_s": round(incremental.wall_s, 2),
            "updated": incremental.report["updated"],
            "calls": {k: dict(v) for k, v in incremental_calls.items()},
        }

    def record_ids(self, sb: Sandbox) -> list[str]:
        if self.crm == "salesforce":
            rows = sb.get("/_sandbox/salesforce/opportunities?Sync_with_Partner_Center__c=true")[
                "records"
            ]
            return sorted(
                r["Id"] for r in rows if r.get("Referral_Identifier__c") and not r.get("IsClosed")
            )
        rows = sb.get("/_sandbox/dataverse/opportunities")
        rows = rows.get("value", rows) if isinstance(rows, dict) else rows
        return sorted(
            r["opportunityid"]
            for r in rows
            if r.get("cosell_referralid") and r.get("statecode") == 0
        )

    def edit(self, sb: Sandbox, record_id: str, i: int) -> None:
        if self.crm == "salesforce":
            sb.post(f"/_sandbox/salesforce/opportunities/{record_id}", {"Amount": 777000 + i})
        else:
            sb.post(
                f"/_sandbox/dataverse/opportunities/{record_id}", {"estimatedvalue": 777000 + i}
            )

    def memory(self, sizes: list[int]) -> None:
        rows = []
        for n in sizes:
            with sandbox(self.workdir / f"rss-{n}", 0) as sb:
                self.seed(sb, n, no_window_limit=True)
                run = run_sync(self.config(sb, f"rss-{n}"), self.state(f"rss-{n}"), timeout_s=7200)
            rows.append(
                {"n": n, "peak_rss_mb": round(run.peak_rss_mb, 1), "wall_s": round(run.wall_s, 1)}
            )
        growth = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"] - 1 if len(rows) > 1 else 0.0
        self.results["peak_rss"] = {"runs": rows, "growth_first_to_last": round(growth, 3)}

    def state(self, name: str) -> str:
        return f"sqlite:///{self.workdir / (self.crm + '-' + name + '.db')}"


def print_table(all_results: dict[str, Any]) -> None:
    print()
    print(f"{'measure':58} " + " ".join(f"{crm:>14}" for crm in all_results))
    keys = [
        ("first sync: N", ("first_sync", "n")),
        ("first sync: wall s", ("first_sync", "wall_s")),
        ("first sync: referrals/s", ("first_sync", "referrals_per_s")),
        (
            "first sync: share of bare-client ceiling (core writes)",
            ("first_sync", "share_of_ceiling_core_writes"),
        ),
        (
            "first sync: share of bare-client ceiling (all core calls)",
            ("first_sync", "share_of_ceiling_all_core_calls"),
        ),
        (
            "first sync, cycle alone: share of ceiling (core writes)",
            ("first_sync", "cycle_share_of_ceiling_core_writes"),
        ),
        (
            "first sync, cycle alone: share of ceiling (all core calls)",
            ("first_sync", "cycle_share_of_ceiling_all_core_calls"),
        ),
        ("first sync: process start and exit s", ("first_sync", "process_start_and_exit_s")),
        ("first sync: co_sell_mode", ("first_sync", "co_sell_mode")),
        ("bare-client ceiling, ratio to bound", ("first_sync", "ceiling_ratio_to_bound")),
        ("first sync: connector CPU ms per referral", ("first_sync", "cpu_ms_per_referral")),
        (
            "first sync: connector CPU share of one core",
            ("first_sync", "connector_cpu_share_of_one_core"),
        ),
        (
            "first sync: sandbox CPU share of one core",
            ("first_sync", "sandbox_cpu_share_of_one_core"),
        ),
        ("first sync: machine busy share (all cores)", ("first_sync", "machine_busy_share")),
        ("first sync: core writes per referral", ("first_sync", "core_writes_per_referral")),
        ("first sync: ratio to bound (core writes)", ("first_sync", "ratio_to_bound_core_writes")),
        (
            "first sync: ratio to bound (1 write per referral)",
            ("first_sync", "ratio_to_bound_one_write_per_referral"),
        ),
        (
            "first sync, cycle alone: ratio to bound (1 write per referral)",
            ("first_sync", "cycle_ratio_to_bound_one_write_per_referral"),
        ),
        (
            "CRM write calls per 1,000 status updates",
            ("first_sync", "crm_calls_per_1000_status_updates"),
        ),
        ("Dataverse window run: N", ("dataverse_window", "n")),
        ("Dataverse window run: wall s", ("dataverse_window", "wall_s")),
        ("Dataverse window run: outcome", ("dataverse_window", "outcome")),
        ("Dataverse: requests in all", ("dataverse_window", "dataverse_requests")),
        (
            "Dataverse: max requests per 5 min (limit 6000)",
            ("dataverse_window", "max_requests_per_5min_window"),
        ),
        ("Dataverse: throttled responses", ("dataverse_window", "throttled_responses")),
        ("Dataverse: created by a second run", ("dataverse_window", "second_run_created")),
        ("no-change cycle: linked deals", ("no_change_cycle", "linked")),
        ("no-change cycle: wall s", ("no_change_cycle", "wall_s")),
        ("no-change cycle: calls", ("no_change_cycle", "calls")),
        ("1 % incremental: changed", ("incremental_1pct", "changed")),
        ("1 % incremental: wall s", ("incremental_1pct", "wall_s")),
        ("1 % incremental: calls", ("incremental_1pct", "calls")),
        ("peak RSS MB by N", ("peak_rss", "runs")),
        ("peak RSS growth first -> last N", ("peak_rss", "growth_first_to_last")),
    ]
    for label, (section, key) in keys:
        cells = []
        for results in all_results.values():
            value = results.get(section, {}).get(key, "-")
            if isinstance(value, dict):
                value = "; ".join(
                    f"{k.replace('connector ', 'conn ')} "
                    f"{sum(v.values()) if isinstance(v, dict) else v}"
                    for k, v in value.items()
                )
            elif isinstance(value, list):
                value = ", ".join(f"{r['n']}:{r['peak_rss_mb']}" for r in value)
            cells.append(str(value))
        print(f"{label:58} " + " ".join(f"{c:>14}" for c in cells))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--crm", choices=["salesforce", "dynamics", "both"], default="both")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--first-n", type=int, default=20_000)
    parser.add_argument(
        "--window-n",
        type=int,
        default=0,
        help="rows of the Dynamics first sync under Dataverse's 5-minute limit (0: no such "
        "run; the README's figure is 100000)",
    )
    parser.add_argument("--nochange-n", type=int, default=100_000)
    parser.add_argument("--rss-n", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    parser.add_argument(
        "--ceiling-requests",
        type=int,
        default=3200,
        help="requests per loop of the bare-client ceiling measured after the first sync "
        "(0: skip it)",
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["first", "window", "steady", "memory"]
    )
    parser.add_argument(
        "--co-sell-mode",
        choices=["two_referrals", "consent_only"],
        default="two_referrals",
        help="core.co_sell_mode of the synced connection (two_referrals, the documented "
        "default: a co-sell deal's create is followed by the look for Microsoft's referral "
        "in its engagement and, when none is there, its POST; consent_only: one write per "
        "referral)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    crms = ["salesforce", "dynamics"] if args.crm == "both" else [args.crm]
    all_results: dict[str, Any] = {}
    args.out.mkdir(parents=True, exist_ok=True)
    warm_bytecode()
    for crm in crms:
        with tempfile.TemporaryDirectory(prefix=f"bench-{crm}-") as tmp:
            bench = Bench(
                crm,
                args.latency_ms,
                args.concurrency,
                Path(tmp),
                args.ceiling_requests,
                co_sell_mode=args.co_sell_mode,
            )
            if "first" not in args.skip:
                bench.first_sync(args.first_n)
                print(f"{crm}: first sync done", flush=True)
            if crm == "dynamics" and args.window_n and "window" not in args.skip:
                bench.dataverse_window(args.window_n)
                print(f"{crm}: Dataverse window run done", flush=True)
            if "steady" not in args.skip:
                bench.steady_state(args.nochange_n, 0.01)
                print(f"{crm}: steady-state cycles done", flush=True)
            if "memory" not in args.skip:
                bench.memory(sorted(args.rss_n))
                print(f"{crm}: memory runs done", flush=True)
            all_results[crm] = bench.results
    meta = {
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "command": " ".join(sys.argv),
    }
    out = args.out / f"pipeline-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"meta": meta, "results": all_results}, indent=2))
    print_table(all_results)
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
