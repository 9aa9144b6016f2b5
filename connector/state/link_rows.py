"""How a :class:`~connector.state.records.Link` meets the ``links`` table: its columns in
field order, rows to links and back, and the statements written through the driver.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from connector.state.database import Database
from connector.state.records import Link, LinkState
from connector.state.schema import links

LINK_KEY = (links.c.connection, links.c.crm_id)
_LINK_VALUES = [c.name for c in links.c if c.name not in ("connection", "crm_id")]

#: the table's columns in the order of Link's fields, so rows unpack straight into it
LINK_COLUMNS = [links.c[field.name] for field in fields(Link)]


def link_of(row: Sequence[Any]) -> Link:
    # positional and by hand: the hot path of every batch lookup
    return Link(row[0], row[1], LinkState(row[2]), *row[3:])


def link_row(link: Link, now: datetime) -> dict[str, Any]:
    """The table row of ``link``, stamped ``updated`` now."""
    return {
        "connection": link.connection,
        "crm_id": link.crm_id,
        "referral_id": link.referral_id,
        "engagement_id": link.engagement_id,
        "etag": link.etag,
        "fingerprint": link.fingerprint,
        "sent_body": None if link.sent_body is None else dict(link.sent_body),
        "state": LinkState(link.state).value,
        "status": link.status,
        "substatus": link.substatus,
        "crm_modstamp": link.crm_modstamp,
        "direction": link.direction,
        "mirrored_fingerprint": link.mirrored_fingerprint,
        "updated": now,
        "core_facts": None if link.core_facts is None else dict(link.core_facts),
        "intent_at": link.intent_at,
        "intent_by": link.intent_by,
    }


def pending_row(
    conn: str, crm_id: str, fingerprint: str, body: Mapping[str, Any], now: datetime, holder: str
) -> dict[str, Any]:
    """The row of ``holder``'s intent to create a referral for ``crm_id``."""
    return {
        "connection": conn,
        "crm_id": crm_id,
        "state": LinkState.PENDING_CREATE.value,
        "fingerprint": fingerprint,
        "sent_body": dict(body),
        "direction": "Outgoing",
        "updated": now,
        "intent_at": now,
        "intent_by": holder,
    }


def mark_pending_statement(db: Database) -> Any:
    """The upsert of create intents (built once per database: see ``Database.prepared``).

    A record already pending is marked again only by the run that holds its intent
    (a retry of its own create): a second run's intent is refused in the same
    statement, so two runs never both POST (see connector.sync.existing).
    """
    pending = db.insert(links)
    return pending.on_conflict_do_update(
        index_elements=list(LINK_KEY),
        set_={
            "fingerprint": pending.excluded.fingerprint,
            "sent_body": pending.excluded.sent_body,
            "updated": pending.excluded.updated,
            "intent_at": pending.excluded.intent_at,
        },
        where=(links.c.state == LinkState.PENDING_CREATE.value)
        & (links.c.intent_by == pending.excluded.intent_by),
    )


class BulkLinkUpsert:
    """``INSERT … ON CONFLICT DO UPDATE`` of links, compiled once, fed raw driver rows.

    SQLAlchemy's per-row parameter handling costs more than SQLite's own work on
    a 10,000-link batch; this keeps the statement and the column types' own
    bind processors (so values are stored exactly as the ORM-free path would)
    and hands the driver plain tuples (qmark) or dicts (pyformat).
    """

    def __init__(self, dialect: sa.Dialect) -> None:
        module = postgresql if dialect.name == "postgresql" else sqlite
        insert = module.insert(links)
        upsert = insert.on_conflict_do_update(
            index_elements=list(LINK_KEY),
            set_={name: insert.excluded[name] for name in _LINK_VALUES},
        )
        compiled = upsert.compile(dialect=dialect)
        self.sql = str(compiled)
        self._positional = compiled.positiontup is not None
        self._names: list[str] = list(compiled.positiontup or compiled.binds)
        self._processors = [
            links.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in self._names
        ]

    @classmethod
    def of(cls, db: Database) -> BulkLinkUpsert:
        return cls(db.engine.dialect)

    def parameters(self, rows: Iterable[Mapping[str, Any]]) -> list[Any]:
        columns = list(zip(self._names, self._processors, strict=True))
        params: list[Any] = []
        for row in rows:
            values = [
                row[name] if process is None else process(row[name]) for name, process in columns
            ]
            params.append(
                tuple(values) if self._positional else dict(zip(self._names, values, strict=True))
            )
        return params
