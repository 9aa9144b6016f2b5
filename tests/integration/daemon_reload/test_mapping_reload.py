"""A running daemon reloads an edited mapping, and keeps the last valid one on a bad edit.

The daemon runs for real (APScheduler, health port) against the HTTPS sandbox. Cycles
are started early through the scheduler (``next_run_time=now``) instead of waiting for
the interval, and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connector.daemon import Daemon
from connector.settings import ConfigFile, Schedule, Settings, load_config
from sandbox.harness import SandboxServer

ROOT = Path(__file__).parents[3]
CONN = "sandbox-salesforce"
WAIT_S = 90.0


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def config_for(sb: SandboxServer, tmp: Path, mapping: Path) -> ConfigFile:
    text = (ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8")
    text = sb.localize(text)
    text = text.replace("mappings/salesforce.yaml", str(mapping))
    path = tmp / "config.yaml"
    path.write_text(text, encoding="utf-8")
    cfg = load_config(path)
    salesforce = next(c for c in cfg.connections if c.name == CONN)
    salesforce = salesforce.model_copy(update={"schedule": Schedule(interval_s=5, jitter_s=0)})
    return cfg.model_copy(update={"connections": [salesforce]})


def get_json(daemon: Daemon, path: str) -> dict[str, object]:
    host, port = daemon.health_address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:  # /readyz answers 503 with a JSON body
        return dict(json.loads(exc.read()))


def reload_errors(daemon: Daemon) -> float:
    host, port = daemon.health_address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(f'connector_mapping_reload_errors_total{{connection="{CONN}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("connector_mapping_reload_errors_total is not exported")


def edit(path: Path, text: str, bump_s: float) -> None:
    """Write the file and move its mtime on, as a later save would."""
    path.write_text(text, encoding="utf-8")
    stamp = time.time() + bump_s
    os.utime(path, (stamp, stamp))


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Daemon, Path]]:
    mapping = tmp_path / "salesforce.yaml"
    mapping.write_text((ROOT / "mappings" / "salesforce.yaml").read_text(encoding="utf-8"))
    with SandboxServer(opportunities=20, seed=5) as sb:
        settings = Settings(state_url=f"sqlite:///{tmp_path / 'state.db'}")
        d = Daemon(settings, config_for(sb, tmp_path, mapping), health_port=0, grace_s=30)
        d.start()
        try:
            yield d, mapping
        finally:
            d.request_stop()
            assert d.wait() == 0


def next_cycle(daemon: Daemon) -> None:
    """Start the next cycle now and wait until it has finished."""
    before = daemon.health[CONN].cycles
    job = daemon.scheduler.get_job(CONN)
    assert job is not None
    wait_for(lambda: not daemon.health[CONN].running, "the running cycle to end")
    job.modify(next_run_time=datetime.now(UTC))
    wait_for(lambda: daemon.health[CONN].cycles > before, "the next cycle")


def test_a_running_daemon_keeps_the_last_valid_mapping_and_picks_up_the_fix(
    daemon: tuple[Daemon, Path],
) -> None:
    d, path = daemon
    conn = d.connections[0]
    wait_for(lambda: d.health[CONN].cycles >= 1, "the first cycle")
    original = d.current_mapping(conn)
    assert original.stages.unmapped == "by_probability"
    assert reload_errors(d) == 0
    good_text = path.read_text(encoding="utf-8")

    broken = good_text.replace("  unmapped: by_probability", "  unmaped: reject")
    edit(path, broken, bump_s=10)
    next_cycle(d)
    assert d.health[CONN].last_outcome in ("ok", "partial"), d.health[CONN].last_outcome
    assert d.current_mapping(conn) is original  # the cycle ran with the old mapping
    assert reload_errors(d) == 1
    ready = get_json(d, "/readyz")
    errors = ready["connections"][CONN]["mapping_errors"]  # type: ignore[index]
    assert errors == [
        f"{path}:36:3: stages.unmaped: unknown key 'unmaped'; did you mean 'unmapped'?"
    ]

    next_cycle(d)  # an unchanged broken file is not re-counted
    assert reload_errors(d) == 1

    edit(path, good_text.replace("  unmapped: by_probability", "  unmapped: reject"), bump_s=20)
    next_cycle(d)
    assert d.current_mapping(conn).stages.unmapped == "reject"
    assert d.current_mapping(conn) is not original
    ready = get_json(d, "/readyz")
    assert ready["connections"][CONN]["mapping_errors"] == []  # type: ignore[index]
    assert d.health[CONN].last_outcome in ("ok", "partial")
