"""The event metrics, on the daemon's registry; every label value from a closed set.

``source`` is one of :data:`~connector.events.notices.SOURCES`, ``reason`` one of
:data:`~connector.events.verify.REASONS`, ``connection`` a configured name, and
``outcome`` a run outcome.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from connector.events.notices import SOURCES
from connector.events.verify import REASONS
from connector.sync.report import RunReport

#: event → synced seconds: a targeted cycle takes about a second; the poll, minutes
LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 120, 300, 900)


class EventMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.received = Counter(
            "connector_events_received", "Events received, by source.", ["source"], registry=r
        )
        self.accepted = Counter(
            "connector_events_accepted",
            "Events authenticated and read, by source.",
            ["source"],
            registry=r,
        )
        self.rejected = Counter(
            "connector_events_rejected",
            "Events refused, by source and reason.",
            ["source", "reason"],
            registry=r,
        )
        self.ignored = Counter(
            "connector_events_ignored",
            "Accepted events that named nothing to sync (the connector's own writes, "
            "event kinds it does not use).",
            ["source"],
            registry=r,
        )
        self.pending = Gauge(
            "connector_event_ids_pending",
            "Record and referral ids waiting for a targeted cycle.",
            ["connection"],
            registry=r,
        )
        self.overflows = Counter(
            "connector_event_overflows",
            "Times a connection's waiting ids exceeded events.max_pending (a full cycle ran).",
            ["connection"],
            registry=r,
        )
        self.cycles = Counter(
            "connector_targeted_cycles",
            "Targeted cycles (for the records events named), by outcome.",
            ["connection", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "connector_event_to_sync_seconds",
            "From an event's arrival to the end of the cycle that synced what it named.",
            ["connection", "source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        for source in SOURCES:  # export the series at 0, so alerts can use increase()
            self.received.labels(source)
            self.accepted.labels(source)
            for reason in REASONS:
                self.rejected.labels(source, reason)

    def observe_records(self, records: Counter, api_calls: Counter, report: RunReport) -> None:
        """A targeted cycle's records and API calls, in the daemon's own counters."""
        from connector.metrics import reason_label

        c = report.connection
        for action in ("created", "updated", "closed", "mirrored"):
            n = getattr(report, action)
            if n:
                records.labels(c, action, "").inc(n)
        for action, counter in (
            ("skipped", report.skipped),
            ("rejected", report.rejected),
            ("failed", report.failed),
        ):
            for reason, n in counter.items():
                records.labels(c, action, reason_label(action, reason)).inc(n)
        for system, n in report.api_calls.items():
            if n:
                api_calls.labels(c, system).inc(n)
