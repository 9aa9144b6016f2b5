"""The ``cursors`` table: where each of a connection's pulls got to (opaque strings)."""

from __future__ import annotations

import sqlalchemy as sa

from connector.state.database import Database
from connector.state.schema import cursors


class Cursors:
    """One connection's cursors, by name (``crm``, ``core``, ...)."""

    def __init__(self, db: Database, conn: str) -> None:
        self._db = db
        self.connection = conn

    def get(self, name: str) -> str | None:
        conn = self.connection
        query = sa.select(cursors.c.value).where(
            cursors.c.connection == conn, cursors.c.name == name
        )
        with self._db.read(f"read cursor {name!r} of connection {conn!r}") as db:
            return db.execute(query).scalar_one_or_none()

    def set(self, name: str, value: str) -> None:
        conn = self.connection
        insert = self._db.insert(cursors).values(
            connection=conn, name=name, value=value, updated=self._db.clock()
        )
        upsert = insert.on_conflict_do_update(
            index_elements=[cursors.c.connection, cursors.c.name],
            set_={"value": insert.excluded.value, "updated": insert.excluded.updated},
        )
        with self._db.write(f"save cursor {name!r} of connection {conn!r}", conn) as db:
            db.execute(upsert)
