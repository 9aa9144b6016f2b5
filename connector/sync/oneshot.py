"""``connector sync --once``: one cycle per connection, with progress and a summary table.

Each connection's cycle runs under the connection's lease, as the daemon's do
(:mod:`connector.lease`): a ``sync --once`` started beside a daemon or another
``sync --once`` on the same state store waits for the lease (``--lease-wait-s``), then
runs, or stops with the outcome ``lease_held`` (exit code 5) and writes nothing. A dry
run writes nothing anyway and takes no lease.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from connector.errors import ConnectorError
from connector.lease import LeaseKeeper
from connector.redaction import scrub
from connector.runtime import open_runtime
from connector.settings import ConfigFile, ConnectionSettings, Settings, state_url
from connector.state.store import Store
from connector.sync.engine import SyncEngine
from connector.sync.report import Outcome, RunReport

log = logging.getLogger(__name__)

#: how often a waiting ``sync --once`` asks for the lease again
LEASE_POLL_S = 1.0


def run_once(
    settings: Settings,
    cfg: ConfigFile,
    connections: Sequence[ConnectionSettings],
    *,
    dry_run: bool,
    full: bool,
    console: Console,
    lease_wait_s: float = 60.0,
    lease_ttl_s: float = 120.0,
) -> list[RunReport]:
    store = Store.open(state_url(settings, cfg))
    # the daemon's form of holder: the process, so that its create intents name it
    holder = f"{socket.gethostname()}:{os.getpid()}"
    reports: list[RunReport] = []
    try:
        for conn in connections:
            cycle = functools.partial(
                _run,
                conn,
                settings,
                store,
                holder,
                dry_run=dry_run,
                full=full,
                console=console,
                cfg=cfg,
            )
            if dry_run:
                report = cycle(None)
            else:
                report = _leased(store, conn.name, holder, lease_ttl_s, lease_wait_s, cycle)
            reports.append(report)
            print_summary(report, console)
            if dry_run:
                print_plan(report, console)
    finally:
        store.close()
    return reports


def _leased(
    store: Store,
    conn: str,
    holder: str,
    ttl_s: float,
    wait_s: float,
    cycle: Callable[[threading.Event | None], RunReport],
) -> RunReport:
    """Run ``cycle`` under the connection's lease, waiting up to ``wait_s`` for it."""
    deadline = time.monotonic() + wait_s
    waiting = False
    while not store.acquire_lease(conn, holder, ttl_s):
        if not waiting:
            waiting = True
            lease = store.current_lease(conn)
            log.info(
                "%s: waiting up to %g s for the lease, held by %s",
                conn,
                wait_s,
                lease[0] if lease else "another run",
            )
        if time.monotonic() >= deadline:
            lease = store.current_lease(conn)
            who = f"{lease[0]}, until {lease[1]:%Y-%m-%d %H:%M:%S} UTC" if lease else "another run"
            message = (
                f"{conn}: another run holds this connection's lease ({who}): a daemon "
                f"(`connector run`) or another `connector sync --once` on the same state "
                f"store. Waited {wait_s:g} s; nothing was done. Run again once it has "
                "finished, or wait longer with --lease-wait-s"
            )
            log.warning(message)
            return RunReport(conn, outcome=Outcome.LEASE_HELD, error=message)
        time.sleep(min(LEASE_POLL_S, max(0.0, deadline - time.monotonic())))
    try:
        # renewed on its own thread; lost (expired while stalled): stop after the page
        with LeaseKeeper(store, conn, holder, ttl_s, threading.Event()) as keeper:
            return cycle(keeper.stop)
    finally:
        try:
            store.release_lease(conn, holder)
        except ConnectorError as exc:  # it expires by itself after ttl_s
            log.warning("%s: cannot release the lease: %s", conn, exc.message)


def _run(
    conn: ConnectionSettings,
    settings: Settings,
    store: Store,
    holder: str,
    stop: threading.Event | None,
    *,
    dry_run: bool,
    full: bool,
    console: Console,
    cfg: ConfigFile,
) -> RunReport:
    with open_runtime(conn, settings) as rt:
        return _run_with_progress(
            conn, rt, store, holder, stop, dry_run=dry_run, full=full, console=console, cfg=cfg
        )


def _run_with_progress(
    conn: ConnectionSettings,
    rt: object,
    store: Store,
    holder: str,
    stop: threading.Event | None,
    *,
    dry_run: bool,
    full: bool,
    console: Console,
    cfg: ConfigFile,
) -> RunReport:
    from connector.runtime import Runtime

    assert isinstance(rt, Runtime)
    show = console.is_terminal
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not show,
        transient=True,
    ) as progress:
        task = progress.add_task(f"{conn.name}: syncing", counts="", total=None)
        totals = {"pulled": 0, "pushed": 0, "mirrored": 0}

        def on_progress(kind: str, n: int) -> None:
            totals[kind] = totals.get(kind, 0) + n
            progress.update(task, counts=", ".join(f"{k} {v}" for k, v in totals.items()))

        engine = SyncEngine(
            conn.name,
            crm=rt.crm,
            core=rt.core,
            store=store,
            mapping=rt.mapping,
            link_for=rt.link_for,
            concurrency=conn.core.concurrency,
            progress=on_progress,
            history=cfg.history,
            stop=stop,
            holder=holder,
        )
        return engine.run(dry_run=dry_run, full=full)


def print_summary(report: RunReport, console: Console) -> None:
    title = f"{report.connection}: {report.outcome}" + (
        " (dry run: nothing written)" if report.dry_run else ""
    )
    table = Table(title=title, show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_column("detail")
    table.add_row("pulled from the CRM", str(report.pulled), "")
    table.add_row("created", str(report.created), "")
    table.add_row("updated", str(report.updated), "")
    table.add_row("closed", str(report.closed), "")
    table.add_row("skipped", str(sum(report.skipped.values())), _reasons(report.skipped))
    table.add_row("rejected", str(sum(report.rejected.values())), _reasons(report.rejected))
    table.add_row("failed", str(sum(report.failed.values())), _reasons(report.failed))
    table.add_row("statuses written to the CRM", str(report.mirrored), "")
    calls = ", ".join(f"{k} {v}" for k, v in report.api_calls.items())
    table.add_row("API calls", str(sum(report.api_calls.values())), calls)
    table.add_row("duration", f"{report.duration_s:.1f}s", "")
    console.print(table)
    if report.error:  # a remote system's text: not markup, and scrubbed once more
        console.print(f"[red]{escape(scrub(report.error))}[/]", highlight=False)


def print_plan(report: RunReport, console: Console, limit: int = 50) -> None:
    table = Table(title=f"Plan ({len(report.plan)} records; first {min(limit, len(report.plan))})")
    for col in ("CRM id", "action", "detail"):
        table.add_column(col)
    for item in report.plan[:limit]:
        detail = {k: v for k, v in item.items() if k not in {"crm_id", "action"}}
        table.add_row(item["crm_id"], item["action"], str(detail)[:100])
    console.print(table)


def _reasons(counter: dict[str, int]) -> str:
    # reasons are codes, some of them a remote system's: scrubbed, and not markup
    ordered = sorted(counter.items(), key=lambda kv: -kv[1])
    return escape(scrub(", ".join(f"{k} {v}" for k, v in ordered)))
