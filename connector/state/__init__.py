"""Durable state: cursors, links, dead letters, runs and leases (SQLite or PostgreSQL).

Use :meth:`Store.open` with a database URL; migrations run on open.
:meth:`Store.connection` hands out one connection's :class:`ConnectionState`: its
``cursors``, ``links``, ``dead_letters``, ``runs`` and ``lease`` (one module per table).
"""

from connector.state.store import ConnectionState, DeadLetter, Link, LinkState, Run, Store

__all__ = ["ConnectionState", "DeadLetter", "Link", "LinkState", "Run", "Store"]
