"""The ``leases`` table: which process runs a connection's cycles, and until when.

One row per connection; every change is one atomic statement (an upsert or a
compare-and-set update), so two replicas never both hold a lease.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from connector.state.database import Database
from connector.state.schema import leases


class Lease:
    """The lease on one connection."""

    def __init__(self, db: Database, conn: str) -> None:
        self._db = db
        self.connection = conn

    def acquire(self, holder: str, ttl_s: float) -> bool:
        """Take (or extend) the lease for ``ttl_s`` seconds.

        One atomic upsert: succeeds when nobody holds the lease, when ``holder``
        already does, or when the other holder's lease has expired.
        """
        conn = self.connection
        now = self._db.clock()
        insert = self._db.insert(leases).values(
            connection=conn, holder=holder, expires=now + timedelta(seconds=ttl_s)
        )
        upsert = insert.on_conflict_do_update(
            index_elements=[leases.c.connection],
            set_={"holder": insert.excluded.holder, "expires": insert.excluded.expires},
            where=sa.or_(leases.c.holder == insert.excluded.holder, leases.c.expires <= now),
        ).returning(leases.c.holder)
        with self._db.write(f"acquire the lease of connection {conn!r}", conn) as db:
            return db.execute(upsert).first() is not None

    def current(self) -> tuple[str, datetime] | None:
        """Who holds the lease and until when; None when nobody does."""
        conn = self.connection
        query = sa.select(leases.c.holder, leases.c.expires).where(
            leases.c.connection == conn, leases.c.expires > self._db.clock()
        )
        with self._db.read(f"read the lease of connection {conn!r}") as db:
            row = db.execute(query).first()
        return None if row is None else (row.holder, row.expires)

    def renew(self, holder: str, ttl_s: float) -> bool:
        """Push the expiry of a lease ``holder`` still has; False when it was taken over."""
        conn = self.connection
        update = (
            sa.update(leases)
            .where(leases.c.connection == conn, leases.c.holder == holder)
            .values(expires=self._db.clock() + timedelta(seconds=ttl_s))
        )
        with self._db.write(f"renew the lease of connection {conn!r}") as db:
            return db.execute(update).rowcount > 0

    def take_over(self, gone: str, holder: str, ttl_s: float) -> bool:
        """Give ``holder`` the lease ``gone`` still has (a process known to be dead);
        False when the lease changed hands meanwhile (compare and set)."""
        conn = self.connection
        update = (
            sa.update(leases)
            .where(leases.c.connection == conn, leases.c.holder == gone)
            .values(holder=holder, expires=self._db.clock() + timedelta(seconds=ttl_s))
        )
        with self._db.write(f"take over the lease of connection {conn!r}", conn) as db:
            return db.execute(update).rowcount > 0

    def release(self, holder: str) -> bool:
        """Give the lease up (only if ``holder`` has it)."""
        conn = self.connection
        delete = sa.delete(leases).where(leases.c.connection == conn, leases.c.holder == holder)
        with self._db.write(f"release the lease of connection {conn!r}") as db:
            return db.execute(delete).rowcount > 0
