"""A throttle asking for a day (or an HTTP date decades ahead) ends the run, not the process.

Before, a 429 with ``Retry-After: 86400`` closed the core's rate gate for a day:
``sync --once`` sat silent and the daemon's connection stopped cycling while ``/readyz``
said ready. Now every system's wait is capped by the connection's
``max_throttle_wait_s`` (one wait or all of a run's together): past it the run stops
as ``throttled`` (exit code 3, in the JSON report), the next cycle resumes, and the
daemon reports the connection unready; a cycle that stops moving records for
``stalled_after_s`` makes it unready too. The tests are bounded by pytest-timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import responses
import respx
import yaml
from guard_world import GuardWorld, guard_world
from pydantic import SecretStr

from connector.crm.dynamics.adapter import DataverseOpportunities
from connector.crm.dynamics.auth import DataverseTokens
from connector.crm.salesforce.adapter import SalesforceOpportunities
from connector.crm.salesforce.auth import ExistingToken, SalesforceAuth
from connector.daemon import Daemon
from connector.dealcore.client import ReferralsClient
from connector.errors import Throttled
from connector.retry import RateGate, RetryPolicy
from connector.settings import Settings, load_config
from connector.sync.report import Outcome

A_DAY = 86400
#: an HTTP date decades ahead, in the obsolete "-0000" zone (no zone: a naive datetime)
DECADES_AHEAD = "Wed, 21 Oct 2065 07:28:00 -0000"
SF = "sandbox-salesforce"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[GuardWorld]:
    with guard_world(tmp_path, opportunities=40) as w:
        yield w


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- sync --once against the sandbox ----------------------------------------------------


@pytest.mark.timeout(120)
def test_sync_once_stops_as_throttled_and_exits_3(world: GuardWorld) -> None:
    config = world.config("salesforce")
    world.put("/_sandbox/faults", {"core": {"rate_429": 1.0, "retry_after_s": A_DAY}})
    report_file = world.folder / "run.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env["CONNECTOR_LOG_FORMAT"] = "text"

    started = time.monotonic()
    done = subprocess.run(
        [
            *(sys.executable, "-m", "connector", "sync", "--once"),
            *("--config", str(config), "--report-json", str(report_file)),
        ],
        env=env,
        cwd=world.folder,
        capture_output=True,
        text=True,
        timeout=100,
    )

    elapsed = time.monotonic() - started
    assert done.returncode == 3, done.stdout + done.stderr
    report = json.loads(report_file.read_text(encoding="utf-8"))
    core_calls = world.get("/_sandbox/stats")["totals"]["core"]
    print(
        f"Retry-After {A_DAY} s on every core call: exit {done.returncode}, outcome "
        f"{report['outcome']}, core calls {core_calls}, process ran {elapsed:.1f} s"
    )
    assert report["outcome"] == "throttled"
    assert "max_throttle_wait_s" in report["error"] and "next cycle" in report["error"]
    assert report["failed"] == {}  # no record blamed for the throttle
    # the first throttled answer stopped the run: no request per record after it
    assert core_calls <= 8


@pytest.mark.timeout(120)
def test_dataverse_throttling_past_the_cap_ends_the_run_as_throttled(world: GuardWorld) -> None:
    config = world.config("dynamics")
    world.put("/_sandbox/faults", {"dataverse": {"rate_429": 1.0, "retry_after_s": A_DAY}})

    report = world.sync(config)

    assert report.outcome == Outcome.THROTTLED
    assert report.error is not None and "Dataverse" in report.error


@pytest.mark.timeout(120)
def test_the_cap_is_the_connections_setting(world: GuardWorld) -> None:
    # 5 s throttles, a cap of 4 s: the first one already ends the run
    path = world.config("salesforce")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["connections"][0]["max_throttle_wait_s"] = 4
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    world.put("/_sandbox/faults", {"core": {"rate_429": 1.0, "retry_after_s": 5}})

    report = world.sync(path)

    assert report.outcome == Outcome.THROTTLED
    assert report.error is not None and "at most 4 s" in report.error


# -- the daemon ------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_the_daemon_reports_a_throttled_connection_unready(world: GuardWorld) -> None:
    world.put("/_sandbox/faults", {"core": {"rate_429": 1.0, "retry_after_s": A_DAY}})
    daemon = Daemon(
        Settings(state_url=world.state_url), load_config(world.config("salesforce")), health_port=0
    )
    daemon.start()
    try:
        wait_until(lambda: daemon.health[SF].cycles >= 1, "the first cycle to end")
        ok, detail = daemon.ready()
        assert detail["connections"][SF]["last_outcome"] == "throttled"
        assert detail["connections"][SF]["failing"] is True
        assert ok is False
    finally:
        daemon.request_stop()
        assert daemon.wait() == 0


@pytest.mark.timeout(120)
def test_the_daemon_reports_a_stalled_cycle_unready(world: GuardWorld) -> None:
    world.put("/_sandbox/latency", {"core": 4000})  # every push takes 4 s: no progress for 1 s
    daemon = Daemon(
        Settings(state_url=world.state_url),
        load_config(world.config("salesforce")),
        health_port=0,
        stalled_after_s=1.0,
    )
    daemon.start()
    try:
        wait_until(
            lambda: daemon.ready()[1]["connections"][SF]["stalled"], "the cycle to look stalled"
        )
        assert daemon.ready()[0] is False
        assert daemon.health[SF].running
    finally:
        world.put("/_sandbox/latency", {"core": 0})
        daemon.request_stop()
        assert daemon.wait() == 0
    assert daemon.ready()[1]["connections"][SF]["stalled"] is False  # the cycle ended


# -- each system's client, HTTP dates and proxies ----------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("retry_after", [str(A_DAY), DECADES_AHEAD])
def test_the_core_client_stops_instead_of_waiting(retry_after: str) -> None:
    class Tokens:
        def token(self) -> str:
            return "t"

        def invalidate(self) -> None:
            return None

    base = "https://core.example/v1.0/engagements"
    slept: list[float] = []
    with respx.mock() as mock, httpx.Client() as http:
        route = mock.get(f"{base}/referrals/r1").respond(
            429, json={"error": {"code": "throttled"}}, headers={"Retry-After": retry_after}
        )
        client = ReferralsClient(
            base,
            Tokens(),
            http=http,
            correlation_id="c",
            gate=RateGate(max_wait_s=300, sleep=slept.append),
            sleep=slept.append,
        )
        with pytest.raises(Throttled) as stopped:
            client.get("r1")
        with pytest.raises(Throttled):  # every later call too, without sending
            client.get("r1")
    assert route.call_count == 1 and slept == []
    assert "max_throttle_wait_s" in stopped.value.message


@pytest.mark.timeout(60)
def test_dataverse_reads_an_http_date_decades_ahead_and_stops() -> None:
    env = "https://org.crm.example"
    slept: list[float] = []
    with respx.mock() as mock:
        mock.post(url__regex=r".*/oauth2/v2.0/token").respond(
            200, json={"access_token": "t", "expires_in": 3600}
        )
        mock.get(url__regex=r".*/opportunities.*").respond(
            429,
            json={"error": {"code": "0x80072322", "message": "limit"}},
            headers={"Retry-After": DECADES_AHEAD},
        )
        http = httpx.Client()
        tokens = DataverseTokens(
            environment_url=env, tenant="t", client_id="c", client_secret="s", http=http
        )
        adapter = DataverseOpportunities(
            environment_url=env, http=http, tokens=tokens, sleep=slept.append, owns_http=True
        )
        try:
            with pytest.raises(Throttled):
                adapter.fetch("11111111-1111-1111-1111-111111111111", fields=["name"])
        finally:
            adapter.close()
    assert slept == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("retry_after", [str(A_DAY), DECADES_AHEAD])
def test_a_proxy_throttling_salesforce_stops_the_run(retry_after: str) -> None:
    instance = "https://acme.my.salesforce.com"
    slept: list[float] = []
    auth = SalesforceAuth(ExistingToken(instance, SecretStr("t")))
    adapter = SalesforceOpportunities(
        auth, retry=RetryPolicy(attempts=3), sleep=slept.append, max_throttle_wait_s=300
    )
    with responses.RequestsMock() as mock:
        mock.get(
            url=f"{instance}/services/data/v59.0/query/",
            status=429,
            body="Too Many Requests",
            headers={"Retry-After": retry_after},
        )
        with pytest.raises(Throttled):
            adapter.stage_metadata()
    assert slept == []


@pytest.mark.timeout(60)
def test_a_short_proxy_throttle_is_waited_out_then_retried() -> None:
    instance = "https://acme.my.salesforce.com"
    slept: list[float] = []
    auth = SalesforceAuth(ExistingToken(instance, SecretStr("t")))
    adapter = SalesforceOpportunities(auth, retry=RetryPolicy(attempts=3), sleep=slept.append)
    stages: dict[str, Any] = {"totalSize": 0, "done": True, "records": []}
    with responses.RequestsMock() as mock:
        url = f"{instance}/services/data/v59.0/query/"
        mock.get(url=url, status=429, body="slow down", headers={"Retry-After": "7"})
        mock.get(url=url, json=stages)
        assert adapter.stage_metadata() == []
    assert slept and max(slept) >= 7  # the Retry-After, not a guess
