"""A daemon that gives up on a cycle at its grace limit leaves no lease behind.

The core answers each call after 3 s, so the first cycle is still pushing when the
daemon is stopped with a grace period of a fraction of a second: the daemon gives the
cycle up (130) and, on that path too, releases the connection's lease, so that a
restarted daemon (another holder) runs the connection at once instead of skipping it
until the lease expires.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from guard_world import GuardWorld, guard_world

from connector.daemon import Daemon
from connector.settings import Settings, load_config
from connector.state.store import Store

SF = "sandbox-salesforce"
LEASE_TTL_S = 120.0


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[GuardWorld]:
    with guard_world(tmp_path, opportunities=30, seed=7) as w:
        yield w


@pytest.mark.timeout(120)
def test_a_cycle_abandoned_at_the_grace_limit_releases_its_lease(world: GuardWorld) -> None:
    world.put("/_sandbox/latency", {"core": 3000})
    state_url = world.state_url
    daemon = Daemon(
        Settings(state_url=state_url),
        load_config(world.config("salesforce")),
        health_port=0,
        grace_s=0.2,
        lease_ttl_s=LEASE_TTL_S,
    )
    other = Store.open(state_url)
    try:
        daemon.start()
        wait_until(
            lambda: world.get("/_sandbox/stats")["totals"].get("core", 0) > 0,
            "the cycle to reach the core",
        )
        assert daemon.running() == {SF}
        # the daemon holds the lease now: another holder is refused
        assert other.connection(SF).lease.acquire("restarted-replica", LEASE_TTL_S) is False

        daemon.request_stop()
        code = daemon.wait()

        assert code == 130 and daemon.abandoned
        # a restart (another holder) takes the connection at once, not in 120 s
        assert other.connection(SF).lease.acquire("restarted-replica", LEASE_TTL_S) is True
    finally:
        world.put("/_sandbox/latency", {"core": 0})
        wait_until(lambda: not daemon.running(), "the abandoned cycle to end")
        # the abandoned cycle's own release must not take the new holder's lease
        assert other.connection(SF).lease.acquire("third-replica", LEASE_TTL_S) is False
        other.close()
        daemon.store.close()
