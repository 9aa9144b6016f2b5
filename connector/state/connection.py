"""One connection's state: its cursors, links, dead letters, runs and lease.

Hand out by :meth:`connector.state.store.Store.connection`; every table's methods
have the connection's name bound in.
"""

from __future__ import annotations

from connector.state.cursors import Cursors
from connector.state.database import Database
from connector.state.dead_letters import DeadLetters
from connector.state.leases import Lease
from connector.state.links import Links
from connector.state.runs import Runs


class ConnectionState:
    """The handle on one connection's rows in every table (cheap; share it freely)."""

    __slots__ = ("cursors", "dead_letters", "lease", "links", "name", "runs")

    def __init__(self, db: Database, name: str) -> None:
        self.name = name
        self.cursors = Cursors(db, name)
        self.links = Links(db, name)
        self.dead_letters = DeadLetters(db, name)
        self.runs = Runs(db, name)
        self.lease = Lease(db, name)

    def __repr__(self) -> str:
        return f"ConnectionState({self.name!r})"
