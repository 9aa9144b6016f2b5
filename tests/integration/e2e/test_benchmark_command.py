"""The README's benchmark command runs end to end, at a small size, and writes its JSON.

Only counts are asserted (never times): the first sync creates referrals and costs the
core writes it reports, with the same run's bare-client ceiling and CPU beside it, and the no-change cycle stays within the issue's call budget
(at most 2 calls to each CRM and 2 to the core, tokens aside).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("crm", ["salesforce", "dynamics"])
def test_the_benchmark_command_measures_every_part(crm: str, tmp_path: Path) -> None:
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "pipeline.py"),
        *("--crm", crm, "--latency-ms", "2"),
        *("--first-n", "300", "--nochange-n", "400", "--rss-n", "200", "300"),
        *("--ceiling-requests", "40", "--window-n", "300"),
        *("--out", str(tmp_path)),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ratio to bound (core writes)" in done.stdout
    (out,) = tmp_path.glob("pipeline-*.json")
    results = json.loads(out.read_text())["results"][crm]

    first = results["first_sync"]
    assert first["created"] > 0
    assert first["core_writes"] == first["calls"]["core"].get("POST", 0) + first["calls"][
        "core"
    ].get("PATCH", 0)
    assert first["ratio_to_bound_core_writes"] > 0
    # the same run's bare-client ceiling, the share of it, the connector's own CPU
    assert set(first["ceiling_requests_per_s"]) == {
        "bare POST",
        "bare GET",
        "connector POST",
        "connector GET",
    }
    assert first["share_of_ceiling_core_writes"] > 0
    assert first["share_of_ceiling_all_core_calls"] >= first["share_of_ceiling_core_writes"]
    assert first["cpu_ms_per_referral"] > 0
    assert "share of bare-client ceiling" in done.stdout

    if crm == "dynamics":  # the run under Dataverse's 5-minute window
        window = results["dataverse_window"]
        assert window["dataverse_requests"] > 0
        assert 0 < window["max_requests_per_5min_window"] <= 6000
        assert window["throttled_responses"] == 0
        assert window["second_run_created"] == 0
    else:
        assert "dataverse_window" not in results

    crm_api = "salesforce" if crm == "salesforce" else "dataverse"
    nochange = results["no_change_cycle"]
    assert nochange["linked"] > 0
    assert sum(nochange["calls"][crm_api].values()) <= 2, nochange
    assert sum(nochange["calls"]["core"].values()) <= 2, nochange

    incremental = results["incremental_1pct"]
    assert incremental["changed"] > 0
    assert incremental["updated"] == incremental["changed"]

    runs = results["peak_rss"]["runs"]
    assert [r["n"] for r in runs] == [200, 300]
    assert all(r["peak_rss_mb"] > 0 for r in runs)
