"""Prometheus metrics of the daemon, on a registry of its own.

Every label value comes from a closed set, so that the number of series stays fixed
whatever the remote systems answer: a record's reason is one of the connector's own
codes (:data:`SKIP_REASONS`, :data:`REJECT_REASONS`, :data:`FAILURE_REASONS`), a
failure family (``crm_write``, ``inbound_create``), or ``remote_error`` / ``other``
for a code a remote system chose (its detail stays in the dead letters and logs).
"""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)

from connector import __version__
from connector.sync.dead_letters import UNCHANGED_SINCE_FAILURE
from connector.sync.plan import SkipReason
from connector.sync.pullback import NOT_THIS_CONNECTION
from connector.sync.report import RunReport

SKIP_REASONS = frozenset(
    {r.value for r in SkipReason}
    | {"deleted", "incoming_not_linked", "read_only_closed", "answer_refused", "skipped"}
    | {UNCHANGED_SINCE_FAILURE, NOT_THIS_CONNECTION}
)
REJECT_REASONS = frozenset({"invalid_record"})
#: failure codes the connector itself gives (classification, transport, state)
FAILURE_REASONS = frozenset(
    {
        "error",
        "transport",
        "tls",
        "unauthenticated",
        "accessDenied",
        "not_found",
        "precondition_failed",
        "malformed_referral",
        "malformed_response",
        "bad_response",
        "state_conflict",
        "quota_exhausted",
        "core_error",
        "crm_error",
    }
)
#: reasons written ``family:code`` (the code is a CRM's): counted under the family
FAILURE_FAMILIES = frozenset({"crm_write", "inbound_create"})


def reason_label(action: str, reason: str) -> str:
    """The metric label of a record's ``reason`` under ``action``: always from a closed set."""
    if action == "skipped":
        return reason if reason in SKIP_REASONS else "other"
    if action == "rejected":
        return reason if reason in REJECT_REASONS else "other"
    family = reason.partition(":")[0]
    if family in FAILURE_FAMILIES:
        return family
    return reason if reason in FAILURE_REASONS else "remote_error"


class Metrics:
    """The daemon's counters; values match the run reports they are fed from."""

    def __init__(self) -> None:
        # Each counter and histogram would also export a ``_created`` series (its
        # creation time), doubling the series for nothing an alert uses. The switch is
        # process-wide in prometheus_client; this process exports only these metrics.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        # the process's CPU, memory, open files and start time (process_* series)
        ProcessCollector(registry=r)
        self.build = Info("connector_build", "The connector's version.", registry=r)
        self.build.info({"version": __version__})
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
                self.records.labels(c, action, reason_label(action, reason)).inc(n)
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
