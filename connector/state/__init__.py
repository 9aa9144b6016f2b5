"""Durable state: cursors, links, dead letters, runs and leases (SQLite or PostgreSQL).

Use :meth:`Store.open` with a database URL; migrations run on open.
"""

from connector.state.store import DeadLetter, Link, LinkState, Run, Store

__all__ = ["DeadLetter", "Link", "LinkState", "Run", "Store"]
