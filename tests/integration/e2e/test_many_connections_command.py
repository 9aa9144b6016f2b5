"""The README's many-connections benchmark runs end to end at a small size.

Only counts are asserted (never times): every connection finishes its first sync in one
daemon, the no-change round stays within the call budget (2 CRM calls and 2 core calls
per connection: the daemon keeps each Salesforce session, so no cycle of the round signs
in again) and the daemon's peak RSS is read.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]


def test_the_many_connections_command_measures_every_part(tmp_path: Path) -> None:
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "many_connections.py"),
        *("--connections", "4", "--per-connection", "60", "--latency-ms", "2"),
        *("--interval-s", "5", "--parallel-cycles", "2", "--timeout-s", "300"),
        *("--out", str(tmp_path)),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (out,) = tmp_path.glob("many-*.json")
    (run,) = json.loads(out.read_text())["runs"]
    assert (run["connections"], run["salesforce"], run["dynamics"]) == (4, 2, 2)
    assert run["opportunities_per_connection"]["min"] > 0
    by_connection = run["no_change_calls_by_connection"]
    assert len(by_connection) == 4
    for calls in by_connection.values():
        assert calls.get("salesforce", 0) + calls.get("dataverse", 0) <= 2, calls
        assert calls.get("core", 0) <= 2, calls
    assert run["peak_rss_mb"] > 0 and run["peak_threads"] > 0
