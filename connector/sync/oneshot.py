"""``connector sync --once``: one cycle per connection, with progress and a summary table.

Each connection's cycle runs under the connection's lease, as the daemon's do
(:mod:`connector.lease`): a ``sync --once`` started beside a daemon or another
``sync --once`` on the same state store waits for the lease (``--lease-wait-s``), then
runs, or stops with the outcome ``lease_held`` (exit code 5) and writes nothing. A dry
run writes nothing anyway and takes no lease.

The summary and the plan go to the given console (stdout); the progress bar to the
console the log lines use (:data:`connector.terminal.stderr`), so lines print above
it. With ``quiet`` (``--json``) nothing is printed: the caller prints the reports.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from connector import terminal
from connector.errors import ConnectorError
from connector.lease import LeaseKeeper, acquire, process_holder
from connector.mapping.check import check_file
from connector.redaction import scrub
from connector.runtime import Runtime, open_runtime
from connector.settings import (
    ConfigFile,
    ConnectionSettings,
    SalesforceSettings,
    Settings,
    state_url,
)
from connector.state.store import Store
from connector.sync.engine import SyncEngine
from connector.sync.plan_view import ordered, print_plan
from connector.sync.progress import SyncProgress
from connector.sync.report import Outcome, RunReport
from connector.sync.tuning import DEFAULT_TUNING, Tuning

log = logging.getLogger(__name__)

#: how often a waiting ``sync --once`` asks for the lease again
LEASE_POLL_S = 1.0
#: what a transient error promises (the daemon's next cycle), and what it means here
LATER = "it will be retried"
ONE_SHOT_LATER = "run `connector sync --once` again later (`connector run` retries every cycle)"


def run_once(
    settings: Settings,
    cfg: ConfigFile,
    connections: Sequence[ConnectionSettings],
    *,
    dry_run: bool,
    full: bool,
    console: Console,
    stop: threading.Event | None = None,
    quiet: bool = False,
    lease_wait_s: float = 60.0,
    lease_ttl_s: float = 120.0,
    tuning: Tuning = DEFAULT_TUNING,
) -> list[RunReport]:
    """One cycle of each connection; after ``stop`` is set, the rest are not started."""
    stop = stop or threading.Event()
    store = Store.open(state_url(settings, cfg))
    # the daemon's form of holder: the process, so that its create intents name it
    holder = process_holder()
    reports: list[RunReport] = []
    try:
        for conn in connections:
            if stop.is_set():
                break

            def cycle(cycle_stop: threading.Event, conn: ConnectionSettings = conn) -> RunReport:
                with open_runtime(conn, settings) as rt:
                    report = _run_with_progress(
                        conn,
                        rt,
                        store,
                        dry_run=dry_run,
                        full=full,
                        stop=cycle_stop,
                        holder=holder,
                        cfg=cfg,
                        tuning=tuning,
                    )
                    if report.crm_refused_request:
                        report.mapping_problems = _mapping_causes(conn, rt, settings)
                return report

            if dry_run:
                report = cycle(stop)
            else:
                report = _leased(store, conn.name, holder, lease_ttl_s, lease_wait_s, stop, cycle)
            report.plan = [dict(item) for item in ordered(report.plan)]  # changes first
            reports.append(report)
            if quiet:
                continue
            print_summary(report, console, waiting=_open_letters(store, conn.name))
            if dry_run and report.outcome != Outcome.FAILED:
                print_plan(report.plan, console)
    finally:
        store.close()
    return reports


def _leased(
    store: Store,
    conn: str,
    holder: str,
    ttl_s: float,
    wait_s: float,
    stop: threading.Event,
    cycle: Callable[[threading.Event], RunReport],
) -> RunReport:
    """Run ``cycle`` under the connection's lease, waiting up to ``wait_s`` for it.

    The cycle stops at a record boundary when ``stop`` is set (a signal) or the lease
    is lost (it expired while the run stalled).
    """
    deadline = time.monotonic() + wait_s
    waiting = False
    while not acquire(store, conn, holder, ttl_s):
        if not waiting:
            waiting = True
            lease = store.current_lease(conn)
            log.info(
                "%s: waiting up to %g s for the lease, held by %s",
                conn,
                wait_s,
                lease[0] if lease else "another run",
            )
        if stop.is_set():
            return RunReport(conn, outcome=Outcome.INTERRUPTED)
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
        stop.wait(min(LEASE_POLL_S, max(0.0, deadline - time.monotonic())))
    try:
        # renewed on its own thread; lost (expired while stalled): stop after the page
        with LeaseKeeper(store, conn, holder, ttl_s, stop) as keeper:
            return cycle(keeper.stop)
    finally:
        try:
            store.release_lease(conn, holder)
        except ConnectorError as exc:  # it expires by itself after ttl_s
            log.warning("%s: cannot release the lease: %s", conn, exc.message)


def _run_with_progress(
    conn: ConnectionSettings,
    rt: Runtime,
    store: Store,
    *,
    dry_run: bool,
    full: bool,
    stop: threading.Event,
    holder: str,
    cfg: ConfigFile,
    tuning: Tuning,
) -> RunReport:
    with SyncProgress(terminal.stderr, conn.name, dry_run=dry_run) as progress:
        engine = SyncEngine(
            conn.name,
            crm=rt.crm,
            core=rt.core,
            store=store,
            mapping=rt.mapping,
            link_for=rt.link_for,
            concurrency=conn.core.concurrency,
            progress=progress,
            stop=stop,
            holder=holder,
            history=cfg.history,
            tuning=tuning,
        )
        return engine.run(dry_run=dry_run, full=full)


def _mapping_causes(conn: ConnectionSettings, rt: Runtime, settings: Settings) -> list[str]:
    """After the CRM refused a request: the mapping file's fields it does not have, if any.

    A misspelt field makes the CRM refuse the whole query; the CRM's answer names the
    field but not the line of the mapping: these problems do (the check costs a few
    metadata calls, only after such a refusal).
    """
    kind = "salesforce" if isinstance(conn.crm, SalesforceSettings) else "dynamics"
    try:
        check = check_file(
            conn.mapping, max_bytes=settings.max_yaml_bytes, crm=rt.crm, crm_kind=kind
        )
    except ConnectorError:
        return []  # the run's own error says what is wrong
    return check.problems


def _open_letters(store: Store, connection: str) -> int:
    try:
        return store.count_dead_letters(connection)
    except Exception:  # the summary is printed whatever the store says now
        return 0


def one_shot_wording(message: str) -> str:
    """A transient error's advice as it reads after a one-shot run: nothing retries it."""
    return message.replace(LATER, ONE_SHOT_LATER)


def print_summary(report: RunReport, console: Console, *, waiting: int = 0) -> None:
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
    skipped = report.counts()["skipped"]
    table.add_row("skipped", str(sum(skipped.values())), _reasons(skipped))
    table.add_row("rejected", str(sum(report.rejected.values())), _reasons(report.rejected))
    table.add_row("failed", str(sum(report.failed.values())), _reasons(report.failed))
    table.add_row("statuses written to the CRM", str(report.mirrored), "")
    calls = ", ".join(f"{k} {v}" for k, v in report.api_calls.items())
    table.add_row("API calls", str(sum(report.api_calls.values())), calls)
    table.add_row("duration", f"{report.duration_s:.1f}s", "")
    console.print(table)
    if report.error:  # a remote system's text: not markup, and scrubbed once more
        text = escape(scrub(one_shot_wording(report.error)))
        console.print(f"[red]{text}[/]", highlight=False)
    if report.mapping_problems:
        console.print("the mapping file names what the CRM does not have:", highlight=False)
        for problem in report.mapping_problems:
            console.print(escape(problem), highlight=False)
    if waiting and not report.dry_run:
        console.print(
            f"{waiting} record(s) of {escape(report.connection)} wait in the dead letters "
            "(each with its reason in the CRM): `connector errors list`",
            highlight=False,
        )


def _reasons(counter: dict[str, int]) -> str:
    # reasons are codes, some of them a remote system's: scrubbed, and not markup
    ordered = sorted(((k, n) for k, n in counter.items() if n), key=lambda kv: -kv[1])
    return escape(scrub(", ".join(f"{k} {v}" for k, v in ordered)))
