"""The daemon's scheduling: one job per connection on its own schedule, never overlapped."""

from __future__ import annotations

import itertools
import logging
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from daemon_world import sandbox_config_data, wait_for

from connector.daemon import Daemon, schedule_trigger
from connector.settings import ConfigFile, ConnectionSettings, Schedule, Settings
from connector.sync.report import RunReport
from sandbox.harness import SandboxServer

SF = "sandbox-salesforce"
DV = "sandbox-dynamics"


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(opportunities=30, seed=11) as sb:
        yield sb


def test_two_connections_on_different_schedules_both_cycle(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    data = sandbox_config_data(
        sandbox,
        names=(SF, DV),
        schedules={SF: {"interval_s": 5, "jitter_s": 0}, DV: {"interval_s": 7, "jitter_s": 0}},
    )
    settings = Settings(state_url=f"sqlite:///{tmp_path / 'state.db'}")
    d = Daemon(settings, ConfigFile.model_validate(data), health_port=0, grace_s=30)
    d.start()
    try:
        jobs = {job.id: job for job in d.scheduler.get_jobs()}
        assert set(jobs) == {SF, DV}
        for job in jobs.values():
            assert job.max_instances == 1
            assert job.coalesce is True
        assert isinstance(jobs[SF].trigger, IntervalTrigger)
        assert jobs[SF].trigger.interval.total_seconds() == 5
        assert jobs[DV].trigger.interval.total_seconds() == 7
        wait_for(
            lambda: d.health[SF].cycles >= 2 and d.health[DV].cycles >= 2,
            "two cycles of each connection",
        )
    finally:
        d.request_stop()
        assert d.wait() == 0
    by_connection: dict[str, list[RunReport]] = {SF: [], DV: []}
    for report in d.reports:
        by_connection[report.connection].append(report)
    for name, reports in by_connection.items():
        assert len(reports) >= 2, name
        assert all(r.outcome in ("ok", "partial") for r in reports), [r.as_json() for r in reports]
        assert reports[0].created > 0, name  # each synced its own CRM
        assert reports[-1].created == 0, name  # and the next cycle found nothing new


class _SlowDaemon(Daemon):
    """Fires every 0.2 s while each cycle takes far longer: the scheduler must not overlap."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.active = 0
        self.most_active = 0
        self.spans: list[tuple[float, float]] = []
        self._count_lock = threading.Lock()

    def trigger(self, conn: ConnectionSettings) -> IntervalTrigger | CronTrigger:
        return IntervalTrigger(seconds=0.2)

    def run_cycle(self, conn: ConnectionSettings) -> RunReport:
        with self._count_lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        started = time.monotonic()
        try:
            return super().run_cycle(conn)
        finally:
            with self._count_lock:
                self.active -= 1
                self.spans.append((started, time.monotonic()))


def test_a_slow_cycle_is_never_overlapped(
    sandbox: SandboxServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with httpx.Client(
        base_url=sandbox.url, verify=ssl.create_default_context(cafile=str(sandbox.ca_file))
    ) as admin:
        # every Salesforce call takes 300 ms: a cycle lasts well over a second
        admin.put("/_sandbox/latency", json={"salesforce": 300}).raise_for_status()
    data = sandbox_config_data(sandbox, names=(SF,))
    settings = Settings(state_url=f"sqlite:///{tmp_path / 'state.db'}")
    d = _SlowDaemon(settings, ConfigFile.model_validate(data), health_port=0, grace_s=60)
    caplog.set_level(logging.WARNING, logger="apscheduler")
    d.start()
    try:
        wait_for(lambda: len(d.spans) >= 3, "three cycles")
    finally:
        d.request_stop()
        assert d.wait() == 0
    assert d.most_active == 1
    spans = sorted(d.spans)
    for (_, end), (next_start, _) in itertools.pairwise(spans):
        assert next_start >= end, spans
    skipped = [r for r in caplog.records if "maximum number of running instances" in r.message]
    assert skipped, "the scheduler never tried to start a cycle while one was running"


def test_a_cron_schedule_becomes_a_cron_trigger_with_jitter() -> None:
    conn = ConnectionSettings.model_validate(
        {
            "name": "c",
            "mapping": "mappings/salesforce.yaml",
            "crm": {"kind": "salesforce"},
            "core": {"client_id": "x"},
            "schedule": {"cron": "*/10 * * * *", "jitter_s": 30},
        }
    )
    trigger = schedule_trigger(conn)
    assert isinstance(trigger, CronTrigger)
    assert trigger.jitter == 30
    assert str(trigger.fields[CronTrigger.FIELD_NAMES.index("minute")]) == "*/10"
    interval = schedule_trigger(
        conn.model_copy(update={"schedule": Schedule(interval_s=45, jitter_s=0)})
    )
    assert isinstance(interval, IntervalTrigger)
    assert interval.interval.total_seconds() == 45
    assert interval.jitter is None


def test_parallel_cycles_caps_the_cycles_running_at_once(
    sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One worker: two connections due at once run one after the other, both in turn."""
    data = sandbox_config_data(
        sandbox,
        names=(SF, DV),
        schedules={SF: {"interval_s": 5, "jitter_s": 0}, DV: {"interval_s": 5, "jitter_s": 0}},
    )
    settings = Settings(state_url=f"sqlite:///{tmp_path / 'state.db'}")
    d = Daemon(
        settings, ConfigFile.model_validate(data), health_port=0, grace_s=30, parallel_cycles=1
    )
    lock = threading.Lock()
    running: list[str] = []
    most = 0
    order: list[str] = []

    def cycle(conn: ConnectionSettings) -> RunReport:
        nonlocal most
        with lock:
            running.append(conn.name)
            most = max(most, len(running))
            order.append(conn.name)
        time.sleep(0.3)
        with lock:
            running.remove(conn.name)
        return RunReport(conn.name)

    monkeypatch.setattr(d, "run_cycle", cycle)
    d.start()
    try:
        wait_for(lambda: d.health[SF].cycles >= 1 and d.health[DV].cycles >= 1, "a cycle each")
    finally:
        d.request_stop()
        assert d.wait() == 0
    assert most == 1
    assert sorted(order[:2]) == [DV, SF]
