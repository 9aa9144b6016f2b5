"""SIGTERM in the middle of a page: the requests in flight finish, exit 0, nothing lost.

`connector run` runs as a real process against the HTTPS sandbox, slowed down so that a
page takes several seconds to push; it is stopped while it pushes the first page. It
sends nothing more, saves the links of what it sent, and leaves the CRM cursor before
the page it did not finish. The next start (`connector sync --once`) reads that page
again: no referral is created twice and every synced opportunity ends up linked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from daemon_world import free_port, get_json, sandbox_config_data, wait_for, write_yaml

from connector.state.store import LinkState, Store
from sandbox.harness import SandboxServer
from sandbox.partner_center.fields import is_partners

SF = "sandbox-salesforce"
GRACE_S = 60


def partner_referrals(admin: httpx.Client) -> list[dict[str, Any]]:
    data = admin.get("/_sandbox/core/referrals").raise_for_status().json()
    return [r for r in data["value"] if is_partners(r) and r.get("direction") == "Outgoing"]


def clean_env(state_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env.update(CONNECTOR_STATE_URL=state_url, CONNECTOR_LOG_FORMAT="json")
    return env


def test_sigterm_mid_cycle_loses_nothing_and_the_next_start_resumes(tmp_path: Path) -> None:
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    with SandboxServer(opportunities=600, seed=3) as sb, sb.client() as admin:
        # every core call takes 40 ms: a page of 200 records takes seconds to push
        admin.put("/_sandbox/latency", json={"core": 40}).raise_for_status()
        # pages of 200 records (the smallest Salesforce batch): the stop lands in the first
        data = sandbox_config_data(sb, crm={"batch_size": 200})
        config = write_yaml(tmp_path / "config.yaml", data)
        port = free_port()
        daemon = subprocess.Popen(
            [
                *(sys.executable, "-m", "connector", "run", "--config", str(config)),
                *("--health-port", str(port), "--grace-s", str(GRACE_S)),
            ],
            env=clean_env(state_url),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: len(partner_referrals(admin)) > 0, "the first referrals")
            assert get_json(("127.0.0.1", port), "/healthz")[0] == 200
            daemon.send_signal(signal.SIGTERM)
            _, stderr = daemon.communicate(timeout=GRACE_S + 15)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.communicate()
        assert daemon.returncode == 0, stderr
        events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        cycles = [e for e in events if e.get("event") == "cycle"]
        assert [c["outcome"] for c in cycles] == ["interrupted"], stderr
        assert cycles[0]["connection"] == SF
        assert any("stop requested" in e["message"] for e in events)
        assert any("stopped cleanly" in e["message"] for e in events)

        at_stop = partner_referrals(admin)
        with Store.open(state_url) as store:
            cursor = store.connection(SF).cursors.get("crm")
            links = list(store.connection(SF).links.iterate())
            runs = store.recent_runs(SF)
        assert cursor is None  # the first page was not finished: read again next time
        assert runs[0].outcome == "interrupted"
        assert any("left for the next run" in e["message"] for e in events)
        states = Counter(link.state for link in links)
        assert states[LinkState.PENDING_CREATE] == 0
        assert {link.referral_id for link in links} == {r["id"] for r in at_stop}
        created_first = cycles[0]["counts"]["created"]
        assert created_first == len(at_stop)

        admin.put("/_sandbox/latency", json={"core": 0}).raise_for_status()
        report_file = tmp_path / "report.json"
        once = subprocess.run(
            [
                *(sys.executable, "-m", "connector", "sync", "--once", "--config", str(config)),
                *("--report-json", str(report_file)),
            ],
            env=clean_env(state_url),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert once.returncode in (0, 1), once.stderr  # 1: the seeded invalid records
        report = json.loads(report_file.read_text(encoding="utf-8"))
        final = partner_referrals(admin)
        with Store.open(state_url) as store:
            links = list(store.connection(SF).links.iterate())
        opportunities = admin.get("/_sandbox/salesforce/opportunities").json()["records"]

    assert len(final) > len(at_stop)  # the stop really left work for the next start
    external = Counter(r["externalReferenceId"] for r in final)
    assert [k for k, n in external.items() if n > 1] == []  # nothing created twice
    assert report["created"] == len(final) - len(at_stop)
    assert {link.referral_id for link in links} == {r["id"] for r in final}
    assert all(link.state in (LinkState.LINKED, LinkState.TERMINAL) for link in links)
    by_id = {o["Id"]: o for o in opportunities}
    for link in links:  # and each CRM record carries its referral
        assert by_id[link.crm_id]["Referral_Identifier__c"] == link.referral_id
