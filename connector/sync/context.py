"""What the steps around the stages share of one connection's sync: the remote systems,
the store, the mapping, the clocks and the stop. Data and leaf services only (never the
engine), so a step that holds it cannot call back up into the cycle."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from connector.crm.base import CrmAdapter
from connector.dealcore.base import DealCore
from connector.mapping.schema import MappingFile
from connector.state.store import Store
from connector.sync.countdown import CoreClock
from connector.sync.links import Linker
from connector.sync.pusher import Pusher


@dataclass(frozen=True)
class SyncContext:
    connection: str
    crm: CrmAdapter
    core: DealCore
    store: Store
    mapping: MappingFile
    clock: Callable[[], datetime]
    stop: threading.Event
    core_clock: CoreClock
    #: a referral's link in the core's UI, and a link after the core answered (pure)
    linker: Linker
    concurrency: int
    #: the one caller of the core's writes (the planner's actions, closes, invitations)
    pusher: Pusher

    @property
    def link_for(self) -> Callable[[str], str]:
        return self.linker.link_for
