"""What only a running daemon knows: the next scheduled cycle, the cycles running now.

``connector console`` has no daemon and shows the store alone; ``connector run`` hands
the console a :class:`DaemonLive` over itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from connector.daemon import Daemon


class LiveState(Protocol):
    def next_run(self, name: str) -> datetime | None: ...
    def running(self, name: str) -> bool: ...
    def failing(self, name: str) -> bool: ...


class DaemonLive:
    """:class:`LiveState` read from the daemon's scheduler and health (read only)."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def next_run(self, name: str) -> datetime | None:
        job = self._daemon.scheduler.get_job(name)
        when = getattr(job, "next_run_time", None) if job is not None else None
        return when if isinstance(when, datetime) else None

    def running(self, name: str) -> bool:
        return name in self._daemon.running()

    def failing(self, name: str) -> bool:
        health = self._daemon.health.get(name)
        return health is not None and health.failing_since is not None
