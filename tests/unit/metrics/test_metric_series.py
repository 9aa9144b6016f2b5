"""What the daemon's registry exports besides the cycle metrics: process, build, no _created."""

from __future__ import annotations

import sys

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from connector import __version__
from connector.metrics import Metrics, reason_label
from connector.sync.pullback import NOT_THIS_CONNECTION
from connector.sync.report import RunReport


def _exported(metrics: Metrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = generate_latest(metrics.registry).decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def test_the_build_info_names_the_version() -> None:
    series = _exported(Metrics())
    assert series["connector_build_info"] == [({"version": __version__}, 1.0)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process metrics read /proc")
def test_the_process_collector_is_registered() -> None:
    series = _exported(Metrics())
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes"):
        assert name in series, sorted(series)


def test_no_created_series_is_exported() -> None:
    metrics = Metrics()
    report = RunReport("c", created=2, duration_s=1.5)
    report.skipped["unchanged"] += 3
    metrics.observe(report)
    series = _exported(metrics)
    assert "connector_records_total" in series
    assert not [name for name in series if name.endswith("_created")]


def test_another_connections_referrals_are_counted_under_their_own_reason() -> None:
    """A pull-back on a shared core tenant skips the others' referrals by the thousand:
    the reason has a series of its own, not "other"."""
    metrics = Metrics()
    report = RunReport("c")
    report.skipped[NOT_THIS_CONNECTION] += 7
    metrics.observe(report)
    skipped = {
        labels["reason"]: value
        for labels, value in _exported(metrics)["connector_records_total"]
        if labels["action"] == "skipped"
    }
    assert reason_label("skipped", NOT_THIS_CONNECTION) == NOT_THIS_CONNECTION
    assert skipped == {NOT_THIS_CONNECTION: 7}
