"""The progress bar of ``connector sync --once`` on a terminal.

One bar per connection: records handled (planned and settled, or pushed to the core)
out of the total the CRM's change query announced (Salesforce's ``totalSize``), with
the percentage and the time left; a pull whose size the CRM does not say (Dataverse)
shows the count alone. The bar lives on the same console as the log lines
(:data:`connector.terminal.stderr`), so they print above it. Not on a terminal, there
is no bar at all: the log has one line per event.

The engine reports through :meth:`SyncProgress.__call__` (``kind``, ``n``): ``total``
once, then ``settled`` and ``pushed`` (handled records), ``pulled`` and ``mirrored``.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: the kinds that count as handled records (the bar's progress)
HANDLED = frozenset({"settled", "pushed"})


class SyncProgress:
    """A progress bar for one connection's cycle; does nothing when not on a terminal."""

    def __init__(self, console: Console, connection: str, *, dry_run: bool = False) -> None:
        self.enabled = console.is_terminal
        self.counts: dict[str, int] = {"pulled": 0, "mirrored": 0}
        self.total: int | None = None
        self.handled = 0
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[counts]}"),
            console=console,
            disable=not self.enabled,
            transient=True,
        )
        verb = "planning" if dry_run else "syncing"
        self._task = self._progress.add_task(f"{connection}: {verb}", total=None, counts="")

    def __enter__(self) -> SyncProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def __call__(self, kind: str, n: int) -> None:
        if kind == "total":
            self.total = n
            self._progress.update(self._task, total=max(n, self.handled))
            return
        if kind in HANDLED:
            self.handled += n
            if self.total is not None and self.handled > self.total:
                self.total = self.handled  # the query's count was a lower bound
            self._progress.update(self._task, completed=self.handled, total=self.total)
            return
        self.counts[kind] = self.counts.get(kind, 0) + n
        shown = ", ".join(f"{k} {v:,}" for k, v in self.counts.items() if v)
        self._progress.update(self._task, counts=shown)
