"""Metric labels stay a closed set whatever the remote systems answer.

The core below refuses every create with an error code of its own invention; the run
report keeps every code (the dead letters and the summary need them), but the
Prometheus series the daemon exports from that report do not grow with them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_world import HostileWorld, hostile_world
from prometheus_client import generate_latest

import connector.metrics as metrics_module
from connector.metrics import Metrics
from connector.sync.report import Outcome


def closed_reasons() -> dict[str, set[str]]:
    """The reasons each action may carry; the counted actions (created, ...) carry none."""
    m = metrics_module
    return {
        "skipped": set(m.SKIP_REASONS) | {"other"},
        "rejected": set(m.REJECT_REASONS) | {"other"},
        "failed": set(m.FAILURE_REASONS) | set(m.FAILURE_FAMILIES) | {"remote_error"},
    }


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[HostileWorld]:
    with hostile_world(tmp_path, opportunities=80) as hw:
        yield hw


def record_series(metrics: Metrics) -> set[tuple[str, str]]:
    """(action, reason) of every ``connector_records_total`` series exported."""
    series = set()
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "connector_records_total":
                series.add((sample.labels["action"], sample.labels["reason"]))
    return series


def test_error_codes_a_server_invents_do_not_become_metric_series(
    hostile: HostileWorld,
) -> None:
    world, liar = hostile.world, hostile.liar
    liar.modes = {"unique_codes"}
    metrics = Metrics()

    report = world.sync(world.config("salesforce"))
    metrics.observe(report)

    assert report.outcome == Outcome.PARTIAL
    assert len(report.failed) >= 50, len(report.failed)  # the report keeps each code ...
    series = record_series(metrics)
    failed = {reason for action, reason in series if action == "failed"}
    assert failed == {"remote_error"}  # ... the metrics count them under one label
    closed = closed_reasons()
    for action, reason in series:
        assert reason in closed.get(action, {""}), (action, reason)
    exported = generate_latest(metrics.registry).decode()
    assert "weirdCode" not in exported
    assert sum(report.failed.values()) == sum(
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == "connector_records_total" and sample.labels["action"] == "failed"
    )
