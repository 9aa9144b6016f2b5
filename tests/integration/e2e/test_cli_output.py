"""``connector sync --once`` as a person sees it on a terminal, and as a pipe receives it.

The command runs as a child process against the sandbox: once on a pseudo-terminal
whose output goes through a terminal emulator (pyte), once piped. On the terminal the
progress bar shows the pull's total, the share done and the time left, and log lines
appear whole above it (neither overwrites the other); piped there is no bar, each log
event is one JSON line, and no table line is wrapped at 80 columns.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyte
import pytest
import yaml
from e2e_world import World

from connector.state.store import Store

pytestmark = pytest.mark.parametrize("world", ["salesforce"], indirect=True)

COLUMNS, LINES = 150, 60
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def env(world: World, **more: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    base.update(CONNECTOR_STATE_URL=world.state_url, **more)
    return base


def on_a_terminal(args: list[str], environ: dict[str, str]) -> tuple[int, bytes]:
    """Run the command on a pseudo-terminal; its exit code and everything it wrote."""
    leader, follower = pty.openpty()
    environ = {**environ, "COLUMNS": str(COLUMNS), "LINES": str(LINES), "TERM": "xterm"}
    environ.pop("NO_COLOR", None)
    process = subprocess.Popen(
        args, stdin=follower, stdout=follower, stderr=follower, env=environ, close_fds=True
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # the child closed its side
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        return process.wait(timeout=30), b"".join(chunks)
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
            process.wait()


def frames(raw: bytes) -> Iterator[list[str]]:
    """The emulated screen after each write burst (what a person saw, moment by moment)."""
    screen = pyte.Screen(COLUMNS, LINES)
    stream = pyte.ByteStream(screen)
    for part in re.split(rb"(?=\x1b\[\?25l)|(?=\r\x1b\[2K)", raw):
        stream.feed(part)
        yield [line.rstrip() for line in screen.display]


def sync_args(world: World, *more: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "connector",
        "sync",
        "--once",
        "--config",
        str(world.config_path),
        *more,
    ]


@pytest.mark.opportunities(1500)
def test_on_a_terminal_the_bar_has_a_total_and_log_lines_stay_whole(world: World) -> None:
    code, raw = on_a_terminal(sync_args(world), env(world))
    assert code == 1, raw.decode(errors="replace")[-2000:]  # the seeded invalid records
    seen = list(frames(raw))
    bars = [line for screen in seen for line in screen if ": syncing" in line]
    assert bars, "no progress bar was drawn"
    totals = {m.group(1) for line in bars if (m := re.search(r"\d+/(\d+)", line))}
    assert len(totals) == 1 and int(totals.pop()) > 1000  # Salesforce's totalSize
    assert any(re.search(r"\d+%", line) and "ETA" in line for line in bars)
    final = seen[-1]
    started = [line for line in final if "cycle started" in line]
    assert len(started) == 1 and ": syncing" not in started[0]  # whole, not drawn over
    for screen in seen:  # no line ever mixes a log line with the bar
        for line in screen:
            assert not (": syncing" in line and ("INFO" in line or "WARNING" in line)), line
    assert any("sandbox-salesforce: partial" in line for line in final)  # the summary


@pytest.mark.opportunities(300)
def test_piped_there_is_no_bar_each_event_is_one_line_and_nothing_wraps(world: World) -> None:
    done = subprocess.run(
        sync_args(world), capture_output=True, text=True, env=env(world), timeout=180, check=False
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "\x1b[" not in done.stdout + done.stderr  # no escape codes, no bar
    events = [json.loads(line) for line in done.stderr.splitlines()]  # every line is JSON
    assert any(e.get("event") == "cycle" for e in events)
    assert not [e for e in events if "state store open" in e["message"]]
    table = [line for line in done.stdout.splitlines() if line.startswith("│")]
    assert max(len(line) for line in table) > 80  # wider than 80 columns, not wrapped
    skipped = next(line for line in table if "skipped" in line)
    assert "lost_before_shared" in skipped  # the reasons stay on the row's one line
    letters = subprocess.run(
        [sys.executable, "-m", "connector", "errors", "list", "--config", str(world.config_path)],
        capture_output=True,
        text=True,
        env=env(world),
        timeout=60,
        check=False,
    )
    assert letters.returncode == 0, letters.stderr
    rows = [line for line in letters.stdout.splitlines() if line.startswith("│")]
    with Store.open(world.state_url) as store:
        assert len(rows) == store.count_dead_letters() > 0  # one line per letter
    assert all("…" not in row for row in rows)  # whole messages when piped


def test_a_failed_one_shot_run_says_to_run_it_again_not_that_it_will_be_retried(
    world: World, tmp_path: Path
) -> None:
    data = yaml.safe_load(world.config_path.read_text(encoding="utf-8"))
    data["connections"][0]["core"]["max_attempts"] = 1
    config = tmp_path / "failing.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    world.admin.put("/_sandbox/faults", json={"core": {"rate_503": 1.0}}).raise_for_status()
    done = subprocess.run(
        [sys.executable, "-m", "connector", "sync", "--once", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env(world),
        timeout=180,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "it will be retried" not in done.stdout
    assert "run `connector sync --once` again later" in done.stdout
    cycle = [json.loads(line) for line in done.stderr.splitlines() if '"event": "cycle"' in line]
    assert [c["level"] for c in cycle] == ["error"]
