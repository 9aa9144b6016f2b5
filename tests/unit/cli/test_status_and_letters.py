"""``connector status`` and ``connector errors list``: ages, next run, JSON, filters, limits."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from connector.cli import app
from connector.settings import load_config
from connector.state.store import Store
from connector.status_view import as_json, gather, render

ROOT = Path(__file__).parents[3]
CONFIG = ROOT / "config" / "sandbox.yaml"
SF = "sandbox-salesforce"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW - timedelta(minutes=10)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def state(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    clock = Clock()
    with Store.open(url, clock=clock) as store:
        sf = store.connection(SF)
        ok = sf.runs.start()
        clock.now += timedelta(seconds=30)
        sf.runs.finish(ok, "partial", {"created": 5, "skipped": {"unchanged": 2}}, {}, 30.0)
        clock.now += timedelta(minutes=4)
        failed = sf.runs.start()
        sf.runs.finish(failed, "failed", {"created": 0}, {}, 1.0, "core down")
        sf.cursors.set("crm", "2026-03-02T11:50:00.000Z")
        for i in range(3):
            sf.dead_letters.add(f"006{i}", "invalid_record", f"no close date {'x' * 90}")
        sf.dead_letters.add("0069", "transient:ServiceUnavailable", "core down")
    return url


def cli(*args: str, state_url: str) -> Any:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return CliRunner().invoke(
            app, [*args, "--config", str(CONFIG)], env={"CONNECTOR_STATE_URL": state_url}
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_status_tells_the_last_success_its_age_and_the_next_run(state: str) -> None:
    cfg = load_config(CONFIG)
    with Store.open(state, existing=True) as store:
        report = gather(store, cfg.connection(SF), limit=5, now=NOW)
    (sf,) = as_json(report)["connections"]
    assert sf["last_outcome"] == "failed"
    assert sf["last_success_age_s"] == pytest.approx(570.0)  # the partial cycle, 9.5 min ago
    assert (
        sf["next_run"]
        == (NOW - timedelta(minutes=5, seconds=30) + timedelta(seconds=60)).isoformat()
    )
    assert sf["dead_letters"] == 4
    out = io.StringIO()
    render(report, Console(file=out, width=250))
    text = out.getvalue()
    assert "9m 30s ago" in text and "due (every 1m; is `connector run` running?)" in text
    assert "{" not in text  # counts are columns, not raw JSON


def test_status_json_filter_and_limit_on_the_command_line(state: str) -> None:
    result = cli("status", "--json", "--connection", SF, "--limit", "1", state_url=state)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [c["name"] for c in data["connections"]] == [SF]
    assert [r["outcome"] for r in data["runs"]] == ["failed"]
    assert data["runs"][0]["error"] == "core down"


def test_errors_list_filters_limits_and_prints_whole_messages_as_json(state: str) -> None:
    result = cli("errors", "list", "--json", "--reason", "invalid", "--limit", "2", state_url=state)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["total"] == 3 and len(data["letters"]) == 2
    assert all(d["reason"] == "invalid_record" for d in data["letters"])
    assert data["letters"][0]["message"].endswith("x" * 90)  # whole, not cut
    table = cli("errors", "list", "--limit", "1", state_url=state)
    assert "the latest 1 of 4 (--limit 0 for all)" in table.output
    transient = cli("errors", "list", "--json", "--reason", "transient:", state_url=state)
    assert [d["crm_id"] for d in json.loads(transient.output)["letters"]] == ["0069"]
