"""Reading pages: connections, runs, one run's records, one record's history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from connector.console.auth import Session
from connector.console.views import (
    Sparkline,
    crm_kind,
    crm_record_url,
    cursor_lag,
    safe_link,
    sparkline,
)
from connector.console.web import Request, Response, Router, url
from connector.state.console_reads import ConnectionOverview
from connector.state.history import RunDetails
from connector.state.records import Run
from connector.sync.history import crm_values_of

if TYPE_CHECKING:
    from connector.console.app import Console

#: what a run's record list can be narrowed to
RECORD_KINDS = ("created", "updated", "closed", "skipped", "rejected", "failed", "mirrored")


def register(router: Router) -> None:
    router.add("GET", "/", connections_page)
    router.add("GET", "/runs", runs_page)
    router.add("GET", "/runs/{run_id}", run_page)
    router.add("GET", "/records", find_record)
    router.add("GET", "/records/{conn}/{crm_id}", record_page)


@dataclass
class ConnectionRow:
    name: str
    kind: str
    enabled: bool
    state: str
    overview: ConnectionOverview
    next_run: datetime | None
    crm_lag: str
    core_lag: str
    quota: dict[str, float]
    spark: Sparkline


def _state(app: Console, name: str, enabled: bool, view: ConnectionOverview, now: datetime) -> str:
    if not enabled:
        return "disabled"
    live = app.live
    if live is not None and live.running(name):
        return "running"
    if view.lease is not None and view.lease.expires > now:
        return f"running on {view.lease.holder}"
    if live is not None and live.failing(name):
        return "failing"
    if view.last_run is not None and view.last_run.outcome == "failed":
        return "last run failed"
    return "idle" if live is not None else "no daemon attached"


def connections_page(app: Console, request: Request, session: Session | None) -> Response:
    now = app.clock()
    rows = []
    overviews = {c.name: app.reads.overview(c.name, now) for c in app.config.connections}
    last_ids = [v.last_run.id for v in overviews.values() if v.last_run is not None]
    details = app.history.run_details(last_ids)
    for conn in app.config.connections:
        view = overviews[conn.name]
        last = view.last_run
        rows.append(
            ConnectionRow(
                name=conn.name,
                kind=crm_kind(conn),
                enabled=conn.enabled,
                state=_state(app, conn.name, conn.enabled, view, now),
                overview=view,
                next_run=app.live.next_run(conn.name) if app.live and conn.enabled else None,
                crm_lag=cursor_lag(view.cursors.get("crm"), now),
                core_lag=cursor_lag(view.cursors.get("core"), now),
                quota=dict(details[last.id].quota) if last and last.id in details else {},
                spark=sparkline(view.recent),
            )
        )
    return app.page(
        "connections.html",
        request,
        session,
        rows=rows,
        daemon=app.live is not None,
        nav="connections",
    )


def runs_page(app: Console, request: Request, session: Session | None) -> Response:
    size = app.options.page_size
    conn = request.arg("connection")
    before = request.int_arg("before")
    runs = app.reads.runs(conn, before=before, limit=size + 1)
    older = None
    if len(runs) > size:
        runs = runs[:size]
        older = url("/runs", connection=conn, before=runs[-1].id)
    return app.page(
        "runs.html",
        request,
        session,
        runs=runs,
        connection=conn,
        older=older,
        details=app.history.run_details([r.id for r in runs]),
        nav="runs",
    )


def run_page(app: Console, request: Request, session: Session | None, run_id: str) -> Response:
    run = app.reads.run(int(run_id)) if run_id.isdigit() else None
    if run is None:
        return app.page(
            "error.html",
            request,
            session,
            status=404,
            title="No such run",
            message=f"There is no run {run_id}.",
        )
    size = app.options.page_size
    kind = request.arg("kind")
    kind = kind if kind in RECORD_KINDS else None
    after = request.int_arg("after")
    entries = app.history.of_run(run.id, limit=size + 1, after=after, kind=kind)
    newer = None
    if len(entries) > size:
        entries = entries[:size]
        newer = url(f"/runs/{run.id}", kind=kind, after=entries[-1].id)
    details = app.history.run_details([run.id]).get(run.id)
    return app.page(
        "run.html",
        request,
        session,
        run=run,
        entries=entries,
        next_page=newer,
        kind=kind,
        kinds=RECORD_KINDS,
        phases=_phases(details),
        quota=details.quota if details else {},
        counts=_counts(run),
        nav="runs",
    )


def _phases(details: RunDetails | None) -> list[tuple[str, float]]:
    if details is None:
        return []
    return sorted(details.phases.items(), key=lambda item: -item[1])


def _counts(run: Run) -> list[tuple[str, Any]]:
    counts = dict(run.counts or {})
    out: list[tuple[str, Any]] = []
    for key in ("pulled", "created", "updated", "closed", "mirrored"):
        out.append((key, counts.get(key, 0)))
    for key in ("skipped", "rejected", "failed"):
        by_reason = counts.get(key) or {}
        out.append((key, {k: v for k, v in by_reason.items() if v}))
    return out


def find_record(app: Console, request: Request, session: Session | None) -> Response:
    conn = request.arg("connection")
    crm_id = request.arg("crm_id")
    if conn is None or crm_id is None or app.connection(conn) is None:
        return app.page(
            "error.html",
            request,
            session,
            status=400,
            title="Which record?",
            message="Choose a connection and type the CRM record's id.",
        )
    return Response.redirect(url(f"/records/{conn}/{crm_id}"))


def record_page(
    app: Console, request: Request, session: Session | None, conn: str, crm_id: str
) -> Response:
    settings = app.connection(conn)
    if settings is None:
        return app.page(
            "error.html",
            request,
            session,
            status=404,
            title="No such connection",
            message=f"The config has no connection {conn!r}.",
        )
    size = app.options.page_size
    before = request.int_arg("before")
    entries = app.history.of_record(conn, crm_id, limit=size + 1, before=before)
    older = None
    if len(entries) > size:
        entries = entries[:size]
        older = url(f"/records/{conn}/{crm_id}", before=entries[-1].id)
    state = app.store.connection(conn)
    link = state.links.get(crm_id)
    letter = state.dead_letters.open_of([crm_id]).get(crm_id)
    facts = dict(link.core_facts or {}) if link else {}
    mapping = app.mappings.load(settings).mapping
    crm_values = {
        e.id: crm_values_of(e, mapping.status_fields) if mapping is not None else None
        for e in entries
    }
    return app.page(
        "record.html",
        request,
        session,
        conn=conn,
        crm_id=crm_id,
        link=link,
        facts=facts,
        letter=letter,
        entries=entries,
        crm_values=crm_values,
        older=older,
        crm_url=crm_record_url(settings, crm_id),
        referral_url=safe_link(facts.get("link")),
        back=request.path,
        keep_per_record=app.config.history.keep_per_record,
        keep_days=app.config.history.keep_days,
        nav="runs",
    )
