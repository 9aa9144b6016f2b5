"""``connector sync --once``: one cycle per connection, with progress and a summary table."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from connector.redaction import scrub
from connector.runtime import open_runtime
from connector.settings import ConfigFile, ConnectionSettings, Settings, state_url
from connector.state.store import Store
from connector.sync.engine import SyncEngine
from connector.sync.report import RunReport


def run_once(
    settings: Settings,
    cfg: ConfigFile,
    connections: Sequence[ConnectionSettings],
    *,
    dry_run: bool,
    full: bool,
    console: Console,
) -> list[RunReport]:
    store = Store.open(state_url(settings, cfg))
    reports: list[RunReport] = []
    try:
        for conn in connections:
            with open_runtime(conn, settings) as rt:
                report = _run_with_progress(
                    conn, rt, store, dry_run=dry_run, full=full, console=console, cfg=cfg
                )
            reports.append(report)
            print_summary(report, console)
            if dry_run:
                print_plan(report, console)
    finally:
        store.close()
    return reports


def _run_with_progress(
    conn: ConnectionSettings,
    rt: object,
    store: Store,
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
