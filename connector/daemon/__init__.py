"""``connector run``: the daemon (:mod:`.service`), its schedules and start-up checks
(:mod:`.schedule`), and its health and metrics port (:mod:`.health`)."""

from connector.daemon.schedule import schedule_trigger
from connector.daemon.service import Daemon

__all__ = ["Daemon", "schedule_trigger"]
