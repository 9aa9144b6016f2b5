"""Prometheus metrics of the daemon, on a registry of its own."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from connector.sync.report import RunReport


class Metrics:
    """The daemon's counters; values match the run reports they are fed from."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.cycles = Counter(
            "connector_cycles", "Sync cycles by outcome.", ["connection", "outcome"], registry=r
        )
        self.records = Counter(
            "connector_records",
            "Records handled, by action and reason.",
            ["connection", "action", "reason"],
            registry=r,
        )
        self.api_calls = Counter(
            "connector_api_calls", "API calls by system.", ["connection", "system"], registry=r
        )
        self.quota_used = Gauge(
            "connector_quota_used_ratio",
            "Share of a CRM's API allowance in use, as last reported.",
            ["connection", "system"],
            registry=r,
        )
        self.duration = Histogram(
            "connector_cycle_duration_seconds",
            "Duration of sync cycles.",
            ["connection"],
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.lag = Gauge(
            "connector_cursor_lag_seconds",
            "Now minus each committed cursor.",
            ["connection", "cursor"],
            registry=r,
        )
        self.dead_letters = Gauge(
            "connector_dead_letters", "Unresolved dead letters.", ["connection"], registry=r
        )
        self.mapping_errors = Counter(
            "connector_mapping_reload_errors",
            "Mapping reloads refused because the edited file is invalid.",
            ["connection"],
            registry=r,
        )
        self.last_success = Gauge(
            "connector_last_success_timestamp_seconds",
            "When the last successful cycle ended.",
            ["connection"],
            registry=r,
        )

    def observe(self, report: RunReport) -> None:
        c = report.connection
        self.cycles.labels(c, report.outcome).inc()
        self.duration.labels(c).observe(report.duration_s)
        for action in ("created", "updated", "closed", "mirrored"):
            n = getattr(report, action)
            if n:
                self.records.labels(c, action, "").inc(n)
        for action, counter in (
            ("skipped", report.skipped),
            ("rejected", report.rejected),
            ("failed", report.failed),
        ):
            for reason, n in counter.items():
                self.records.labels(c, action, reason).inc(n)
        for system, n in report.api_calls.items():
            if n:
                self.api_calls.labels(c, system).inc(n)
        for system, share in report.quota.items():
            if isinstance(share, (int, float)):
                self.quota_used.labels(c, system).set(share)
        if report.outcome in ("ok", "partial"):
            self.last_success.labels(c).set(datetime.now(UTC).timestamp())

    def set_lag(self, connection: str, cursor: str, value: str | None, now: datetime) -> None:
        if not value:
            return
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return  # an opaque cursor (a Dataverse delta link) has no time
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        self.lag.labels(connection, cursor).set(max(0.0, (now - when).total_seconds()))
