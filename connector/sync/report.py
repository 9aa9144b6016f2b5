"""The run report: what a cycle did, under stable keys (``--report-json``).

The report leaves the process (JSON report, summary, logs, the state store's runs),
so its error and everything :meth:`RunReport.as_json` returns is scrubbed of the
registered secrets and tokens (:mod:`connector.redaction`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from connector.redaction import scrub, scrub_data

log = logging.getLogger("connector.sync.engine")


class Outcome:
    OK = "ok"  # every record synced or skipped
    PARTIAL = "partial"  # some records rejected or failed (dead letters)
    QUOTA = "quota_stopped"  # stopped at the configured share of a CRM's API allowance
    THROTTLED = "throttled"  # a system asked for a longer wait than the run may take
    INTERRUPTED = "interrupted"  # a stop was requested; the committed cursor is safe
    FAILED = "failed"  # the run itself failed (configuration, unreachable system, ...)
    LEASE_HELD = "lease_held"  # another run holds the connection's lease: nothing was done


#: the level of a cycle's log line by its outcome (a failed cycle is an error)
CYCLE_LOG_LEVEL = {
    Outcome.OK: logging.INFO,
    Outcome.PARTIAL: logging.INFO,
    Outcome.INTERRUPTED: logging.WARNING,
    Outcome.QUOTA: logging.WARNING,
    Outcome.FAILED: logging.ERROR,
}


@dataclass
class RunReport:
    connection: str
    dry_run: bool = False
    created: int = 0
    updated: int = 0
    closed: int = 0
    mirrored: int = 0
    pulled: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    api_calls: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    outcome: str = Outcome.OK
    error: str | None = None
    quota: dict[str, Any] = field(default_factory=dict)
    plan: list[dict[str, Any]] = field(default_factory=list)
    #: seconds spent in each phase of the cycle (outbound, pull_back, ...)
    phases: dict[str, float] = field(default_factory=dict)
    #: the run failed because the CRM refused a request as malformed (HTTP 400)
    crm_refused_request: bool = False
    #: a failed run's cause found in the mapping file (``file:line:col: ...``)
    mapping_problems: list[str] = field(default_factory=list)

    def __setattr__(self, name: str, value: Any) -> None:
        # the error is often a remote system's text: scrubbed as it is set, wherever from
        if name == "error" and isinstance(value, str):
            value = scrub(value)
        super().__setattr__(name, value)

    def counts(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "closed": self.closed,
            "mirrored": self.mirrored,
            "pulled": self.pulled,
            # a reason counted zero times is no reason: left out
            "skipped": {k: n for k, n in self.skipped.items() if n},
            "rejected": {k: n for k, n in self.rejected.items() if n},
            "failed": {k: n for k, n in self.failed.items() if n},
        }

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "connection": self.connection,
            "outcome": self.outcome,
            "dry_run": self.dry_run,
            **self.counts(),
            "api_calls": dict(self.api_calls),
            "duration_s": round(self.duration_s, 3),
            "phases_s": {k: round(v, 3) for k, v in self.phases.items()},
        }
        if self.error:
            data["error"] = self.error
        if self.quota:
            data["quota"] = self.quota
        if self.mapping_problems:
            data["mapping_problems"] = list(self.mapping_problems)
        if self.dry_run:
            data["plan"] = self.plan
        scrubbed: dict[str, Any] = scrub_data(data)
        return scrubbed

    def log_fields(self) -> dict[str, Any]:
        """The structured fields of the cycle's log line (JSON logs)."""
        return {
            "outcome": self.outcome,
            "counts": scrub_data(self.counts()),
            "api_calls": dict(self.api_calls),
            "duration_s": round(self.duration_s, 3),
        }

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the time spent in the ``with`` block to :attr:`phases` under ``name``."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.monotonic() - started

    def finish_outcome(self) -> None:
        if self.outcome == Outcome.OK and (self.rejected or self.failed):
            self.outcome = Outcome.PARTIAL


def log_settled_writes(connection: str, counts: Mapping[str, int]) -> None:
    """One line per cycle for the status writes a CRM refused for good, by reason.

    A closed Dataverse row is read-only: a large sync meets thousands, each logged only
    at DEBUG; this line says how many there were.
    """
    counts = {reason: n for reason, n in counts.items() if n}
    if counts:
        log.info(
            "%s: status fields of %d record(s) not written, the CRM refuses writes to them "
            "(%s); each is logged at DEBUG",
            connection,
            sum(counts.values()),
            ", ".join(f"{reason} {n}" for reason, n in counts.items()),
            extra={"event": "status_not_written", "connection": connection, "counts": counts},
        )
