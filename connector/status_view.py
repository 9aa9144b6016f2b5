"""``connector status``: where each connection stands, for a person and as JSON.

Per connection: its cursors, links by state, open dead letters, the last successful
cycle and how long ago it ended, the last cycle's outcome, and when the schedule runs
it next (when ``connector run`` is running: the interval counted from the last
cycle's start, or the cron expression's next time). Then the recent cycles, each with
its counts as columns. Everything is read from the state store; nothing is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from connector.settings import ConnectionSettings, Schedule
from connector.state.records import Run
from connector.state.store import Store

#: the outcomes of a cycle that did its work (some records may still have failed)
SUCCESS = ("ok", "partial")
#: the counts shown as columns of the recent cycles, in order
RUN_COUNTS = ("created", "updated", "closed", "skipped", "rejected", "failed", "mirrored")


@dataclass
class ConnectionStatus:
    name: str
    enabled: bool
    schedule: str
    crm_cursor: str | None
    core_cursor: str | None
    links: dict[str, int]
    dead_letters: int
    last_outcome: str | None
    last_started: datetime | None
    last_success: datetime | None
    next_run: datetime | None


@dataclass
class StatusReport:
    now: datetime
    connections: list[ConnectionStatus] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)


def gather(
    store: Store, connections: Sequence[ConnectionSettings], *, limit: int, now: datetime
) -> StatusReport:
    """Read the store for ``connections`` and their ``limit`` latest cycles."""
    report = StatusReport(now)
    for conn in connections:
        state = store.connection(conn.name)
        last = state.runs.last()
        success = state.runs.last(SUCCESS)
        report.connections.append(
            ConnectionStatus(
                name=conn.name,
                enabled=conn.enabled,
                schedule=describe_schedule(conn.schedule),
                crm_cursor=state.cursors.get("crm"),
                core_cursor=state.cursors.get("core"),
                links={str(k): v for k, v in state.links.count().items()},
                dead_letters=state.dead_letters.count(),
                last_outcome=(last.outcome or "running") if last else None,
                last_started=last.started if last else None,
                last_success=(success.finished or success.started) if success else None,
                next_run=next_run(conn.schedule, last.started if last else None, now)
                if conn.enabled
                else None,
            )
        )
    names = {c.name for c in connections}
    runs = store.recent_runs(limit=limit * max(1, len(names))) if limit > 0 else []
    report.runs = [r for r in runs if r.connection in names][:limit] if limit > 0 else []
    return report


def describe_schedule(schedule: Schedule) -> str:
    if schedule.cron:
        return f"cron {schedule.cron}"
    return f"every {_span(timedelta(seconds=schedule.interval_s or 300))}"


def next_run(schedule: Schedule, last_started: datetime | None, now: datetime) -> datetime | None:
    """When the daemon runs the connection next (None: at once, when it starts).

    Interval schedules count from the last cycle's start (the jitter is left out);
    a time already past means the daemon is not running, or the cycle is due.
    """
    if schedule.cron:
        from apscheduler.triggers.cron import CronTrigger

        minute, hour, day, month, day_of_week = schedule.cron.split()
        trigger = CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week, timezone=UTC
        )
        fire: datetime | None = trigger.get_next_fire_time(None, now)
        return fire
    if last_started is None:
        return None
    return last_started + timedelta(seconds=schedule.interval_s or 300)


def as_json(report: StatusReport) -> dict[str, Any]:
    now = report.now
    return {
        "now": now.isoformat(),
        "connections": [
            {
                "name": c.name,
                "enabled": c.enabled,
                "schedule": c.schedule,
                "cursors": {"crm": c.crm_cursor, "core": c.core_cursor},
                "links": c.links,
                "dead_letters": c.dead_letters,
                "last_outcome": c.last_outcome,
                "last_success": _iso(c.last_success),
                "last_success_age_s": _age_s(c.last_success, now),
                "next_run": _iso(c.next_run),
            }
            for c in report.connections
        ],
        "runs": [
            {
                "id": r.id,
                "connection": r.connection,
                "started": _iso(r.started),
                "finished": _iso(r.finished),
                "outcome": r.outcome or "running",
                "duration_s": r.duration_s,
                "counts": dict(r.counts or {}),
                "api_calls": dict(r.api_calls or {}),
                "error": r.error,
            }
            for r in report.runs
        ],
    }


def render(report: StatusReport, console: Console) -> None:
    now = report.now
    table = Table(title="Connections")
    for col in (
        "connection",
        "last success",
        "last cycle",
        "next run",
        "links",
        "dead letters",
        "CRM cursor",
        "core cursor",
    ):
        table.add_column(col)
    for c in report.connections:
        table.add_row(
            escape(c.name),
            _ago(c.last_success, now) if c.last_success else "never",
            c.last_outcome or "-",
            _next(c, now),
            ", ".join(f"{k} {v}" for k, v in sorted(c.links.items()) if v) or "0",
            str(c.dead_letters),
            escape(_short(c.crm_cursor)),
            escape(_short(c.core_cursor)),
        )
    console.print(table)
    runs = Table(title="Recent cycles")
    for col in ("connection", "started", "outcome", "duration"):
        runs.add_column(col)
    for name in RUN_COUNTS:
        runs.add_column(name, justify="right")
    for r in report.runs:
        counts = r.counts or {}
        runs.add_row(
            escape(r.connection),
            f"{r.started:%Y-%m-%d %H:%M:%S} ({_ago(r.started, now)})",
            r.outcome or "running",
            f"{r.duration_s or 0:.1f}s",
            *(_count(counts.get(name)) for name in RUN_COUNTS),
        )
    console.print(runs)


def _next(c: ConnectionStatus, now: datetime) -> str:
    if not c.enabled:
        return "disabled"
    if c.next_run is None:
        return f"when `connector run` starts ({c.schedule})"
    if c.next_run <= now:
        return f"due ({c.schedule}; is `connector run` running?)"
    return f"in {_span(c.next_run - now)} ({c.schedule})"


def _count(value: Any) -> str:
    if isinstance(value, dict):  # skipped / rejected / failed: counts by reason
        return str(sum(v for v in value.values() if isinstance(v, int)))
    return str(value or 0)


def _ago(when: datetime, now: datetime) -> str:
    return f"{_span(now - when)} ago"


def _span(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {seconds}s" if seconds else f"{minutes}m"
    return f"{seconds}s"


def _short(cursor: str | None, width: int = 32) -> str:
    if not cursor:
        return "-"
    return cursor if len(cursor) <= width else cursor[: width - 1] + "…"


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def _age_s(when: datetime | None, now: datetime) -> float | None:
    return round((now - when).total_seconds(), 1) if when else None
