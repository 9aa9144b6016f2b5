"""A refused credential stops the run at once: no record failed, nothing written to records.

Before, a wrong core secret (or a core answering 401 to every call) failed each record
on its own: every one became a dead letter and got the same authentication error in
its sync-error field, and every push sent its own refused request. Now the first
refusal stops the run (outcome ``failed``, exit code 2) with one message naming the
system and the settings to fix.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from guard_world import GuardWorld, guard_world
from reliability_world import check_world

from connector.state.store import Store
from connector.sync.report import Outcome

OPPORTUNITIES = 60
CONCURRENCY = 8
SECRET_VARIABLE = "HANG_TEST_CORE_SECRET"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[GuardWorld]:
    with guard_world(tmp_path, opportunities=OPPORTUNITIES) as w:
        yield w


def dead_letters(world: GuardWorld, connection: str) -> int:
    store = Store.open(world.state_url)
    try:
        return len(store.list_dead_letters(connection))
    finally:
        store.close()


def sync_errors(world: GuardWorld) -> list[str]:
    return [
        str(o["CoSell_Sync_Error__c"])
        for o in world.sf_opportunities()
        if o.get("CoSell_Sync_Error__c")
    ]


def calls(world: GuardWorld, api: str) -> int:
    return int(world.get("/_sandbox/stats")["totals"].get(api, 0))


def test_a_wrong_core_secret_stops_the_run_before_any_record_fails(
    world: GuardWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_VARIABLE, "not-the-secret")
    config = world.config("salesforce", core={"client_secret": {"env": SECRET_VARIABLE}})
    world.post("/_sandbox/stats/reset", {})

    report = world.sync(config)

    assert sync_errors(world) == []  # no record's error field written
    assert dead_letters(world, "sandbox-salesforce") == 0
    assert sum(report.failed.values()) == 0
    assert report.outcome == Outcome.FAILED
    assert report.error is not None
    assert "deal core" in report.error and "core.client_secret" in report.error
    assert "invalid_client" in report.error
    assert world.referrals() == []
    print(
        f"wrong core secret: core calls {calls(world, 'core')}, token calls "
        f"{calls(world, 'entra')}, dead letters 0, error fields written 0"
    )
    assert calls(world, "core") == 0
    # the refused token requests: the first, and at most the pushes already under way
    assert calls(world, "entra") <= CONCURRENCY


def test_the_run_after_the_fix_syncs_every_record(
    world: GuardWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the stopped run must not have moved the CRM cursor past the records it never pushed
    config = world.config("salesforce", core={"client_secret": {"env": SECRET_VARIABLE}})
    monkeypatch.setenv(SECRET_VARIABLE, "not-the-secret")
    assert world.sync(config).outcome == Outcome.FAILED

    monkeypatch.setenv(SECRET_VARIABLE, "sandbox")
    fixed = world.sync(config)

    assert fixed.outcome in (Outcome.OK, Outcome.PARTIAL), fixed.error
    assert check_world(world.admin).problems == {}
    assert fixed.created == len(world.referrals()) > 0


def test_a_core_answering_401_to_every_call_stops_the_run(world: GuardWorld) -> None:
    config = world.config("salesforce")
    world.put("/_sandbox/faults", {"core": {"rate_token_expiry": 1.0}})
    world.post("/_sandbox/stats/reset", {})

    report = world.sync(config)

    assert sync_errors(world) == []
    assert dead_letters(world, "sandbox-salesforce") == 0
    assert sum(report.failed.values()) == 0
    assert report.outcome == Outcome.FAILED
    assert report.error is not None
    assert "deal core" in report.error and "core.client_id" in report.error
    print(f"401 on every core call: core calls {calls(world, 'core')}, dead letters 0")
    # each push in flight asks at most twice (a fresh token, once): not once per record
    assert calls(world, "core") <= 2 * CONCURRENCY < OPPORTUNITIES


def test_a_wrong_dataverse_secret_names_dataverse_and_its_setting(
    world: GuardWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_VARIABLE, "not-the-secret")
    config = world.config("dynamics", crm={"client_secret": {"env": SECRET_VARIABLE}})

    report = world.sync(config)

    assert report.outcome == Outcome.FAILED
    assert report.error is not None
    assert "Dataverse" in report.error and "crm.client_secret" in report.error
    assert dead_letters(world, "sandbox-dynamics") == 0


def test_the_cli_exits_2_with_one_message(
    world: GuardWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = world.config("salesforce", core={"client_secret": {"env": SECRET_VARIABLE}})
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env.update(
        {SECRET_VARIABLE: "not-the-secret", "CONNECTOR_LOG_FORMAT": "text", "COLUMNS": "300"}
    )

    done = subprocess.run(
        [sys.executable, "-m", "connector", "sync", "--once", "--config", str(config)],
        env=env,
        cwd=world.folder,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 2, done.stdout + done.stderr
    output = done.stdout + done.stderr
    # the summary and the run's own log line; not one line per record
    assert 1 <= output.count("refused the connector's credentials") <= 2, output
    assert dead_letters(world, "sandbox-salesforce") == 0
