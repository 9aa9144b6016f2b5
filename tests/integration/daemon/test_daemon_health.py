"""/healthz, /readyz and /metrics of a running daemon against the HTTPS sandbox."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from daemon_world import get_json, sandbox_config_data, scrape, total, wait_for

from connector.daemon import Daemon
from connector.settings import ConfigFile, ConnectionSettings, Settings
from connector.state.store import Store
from sandbox.harness import SandboxServer

SF = "sandbox-salesforce"


class _QuickDaemon(Daemon):
    """Cycles every second instead of every few minutes, so the test sees several."""

    def trigger(self, conn: ConnectionSettings) -> IntervalTrigger | CronTrigger:
        return IntervalTrigger(seconds=1)


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(opportunities=40, seed=13) as sb:
        yield sb


@pytest.fixture
def admin(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with sandbox.client() as client:
        yield client


def start(sandbox: SandboxServer, tmp: Path, **kwargs: float) -> Daemon:
    # one attempt per call: a failing core fails the cycle at once instead of after retries
    data = sandbox_config_data(sandbox, core={"max_attempts": 1})
    settings = Settings(state_url=f"sqlite:///{tmp / 'state.db'}")
    d = _QuickDaemon(settings, ConfigFile.model_validate(data), health_port=0, **kwargs)
    d.start()
    return d


def stop(d: Daemon) -> None:
    d.request_stop()
    assert d.wait() == 0


def cycles_after(d: Daemon, n: int) -> int:
    return d.health[SF].cycles + n


def test_readyz_turns_unready_while_the_core_fails_and_ready_again_after(
    sandbox: SandboxServer, admin: httpx.Client, tmp_path: Path
) -> None:
    d = start(sandbox, tmp_path, grace_s=30)
    address = d.health_address
    try:
        wait_for(lambda: d.health[SF].cycles >= 1, "the first cycle")
        assert get_json(address, "/healthz") == (200, {"status": "ok"})
        status, body = get_json(address, "/readyz")
        assert status == 200, body
        assert body["state"] == "ok"

        admin.put("/_sandbox/faults", json={"core": {"rate_503": 1.0}}).raise_for_status()
        target = cycles_after(d, 2)  # the one running now may have finished before the fault
        wait_for(lambda: d.health[SF].cycles >= target, "two cycles with the core failing")
        status, body = get_json(address, "/readyz")
        assert status == 503, body
        assert body["ready"] is False
        assert body["connections"][SF]["failing"] is True
        assert body["connections"][SF]["last_outcome"] == "failed"
        assert get_json(address, "/healthz")[0] == 200  # alive, only not ready

        admin.put("/_sandbox/faults", json={"core": {}}).raise_for_status()
        target = cycles_after(d, 2)
        wait_for(lambda: d.health[SF].cycles >= target, "two cycles with the core back")
        status, body = get_json(address, "/readyz")
        assert status == 200, body
        assert body["connections"][SF]["failing"] is False
    finally:
        stop(d)
    outcomes = [r.outcome for r in d.reports]
    assert "failed" in outcomes
    assert outcomes[-1] in ("ok", "partial")


def test_a_failure_shorter_than_the_threshold_keeps_the_daemon_ready(
    sandbox: SandboxServer, admin: httpx.Client, tmp_path: Path
) -> None:
    admin.put("/_sandbox/faults", json={"core": {"rate_503": 1.0}}).raise_for_status()
    d = start(sandbox, tmp_path, grace_s=30, unready_after_s=3600)
    try:
        wait_for(lambda: d.health[SF].cycles >= 2, "two failed cycles")
        status, body = get_json(d.health_address, "/readyz")
        assert d.health[SF].last_outcome == "failed"
        assert status == 200, body
        assert body["connections"][SF]["failing"] is False
    finally:
        stop(d)


def test_metrics_match_the_run_reports(
    sandbox: SandboxServer, admin: httpx.Client, tmp_path: Path
) -> None:
    d = start(sandbox, tmp_path, grace_s=30)
    try:
        wait_for(lambda: len(d.reports) >= 3, "three cycles")
        d.scheduler.pause()  # no new cycle: the reports and the counters hold still
        wait_for(lambda: not d.running(), "the running cycle to end")
        samples = scrape(d.health_address)
        reports = list(d.reports)
    finally:
        stop(d)
    assert reports[0].created > 0
    outcomes = Counter(r.outcome for r in reports)
    for outcome, n in outcomes.items():
        assert total(samples, "connector_cycles_total", connection=SF, outcome=outcome) == n
    assert total(samples, "connector_cycles_total") == len(reports)
    records: Counter[tuple[str, str]] = Counter()
    for r in reports:
        for action in ("created", "updated", "closed", "mirrored"):
            records[(action, "")] += getattr(r, action)
        for action in ("skipped", "rejected", "failed"):
            for reason, n in getattr(r, action).items():
                records[(action, reason)] += n
    for (action, reason), n in records.items():
        got = total(samples, "connector_records_total", connection=SF, action=action, reason=reason)
        assert got == n, (action, reason)
    calls: Counter[str] = Counter()
    for r in reports:
        calls.update(r.api_calls)
    assert set(calls) == {"salesforce", "core"}
    for system, n in calls.items():
        assert total(samples, "connector_api_calls_total", connection=SF, system=system) == n
    assert total(samples, "connector_cycle_duration_seconds_count", connection=SF) == len(reports)
    duration = sum(r.duration_s for r in reports)
    got = total(samples, "connector_cycle_duration_seconds_sum", connection=SF)
    assert got == pytest.approx(duration)
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        letters = len(store.list_dead_letters(SF))
    assert letters > 0  # the sandbox seeds invalid records
    assert total(samples, "connector_dead_letters", connection=SF) == letters
    for cursor in ("crm", "core"):
        lag = [
            v
            for (n, ls), v in samples.items()
            if n == "connector_cursor_lag_seconds" and ("cursor", cursor) in ls
        ]
        assert len(lag) == 1 and lag[0] >= 0, cursor
    quota = total(samples, "connector_quota_used_ratio", connection=SF, system="salesforce")
    assert quota == reports[-1].quota["salesforce"]
