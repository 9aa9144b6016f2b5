"""What the lifecycle steps read from the state store, streamed in pages by CRM id:

- :func:`links_with_countdown`: the links whose deal waits for an answer before an expiry
  (an incoming deal still New, or Microsoft invited and not answering yet);
- :func:`links_to_close`: incoming deals declined or expired whose CRM record the
  connector has not closed yet.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa

from connector.state.records import Link, LinkState
from connector.state.schema import links
from connector.state.store import Store

#: the stored facts (sorted, compact JSON: connector.state.schema.JsonText) of a deal whose
#: Microsoft referral is New (invited, not answered yet)
_MICROSOFT_PENDING = '%"microsoft_status":"New%'


#: the stored facts of a deal whose CRM record the connector closed (a substatus, not null)
_CRM_CLOSED = '%"crm_closed":"%'


def _facts_text() -> sa.ColumnElement[str]:
    # compared as the stored text: a LIKE on the JSON column would encode its pattern
    return sa.cast(links.c.core_facts, sa.Text)


def links_with_countdown(store: Store, conn: str) -> Iterator[Link]:
    """Open links of ``conn`` with an expiry pending: their own referral New, or Microsoft's.

    Without their sent bodies: the countdown only writes status fields.
    """
    return store.connection(conn).links.stream(
        f"list the links with an expiry pending ({conn})",
        links.c.state != LinkState.TERMINAL.value,
        links.c.core_facts.is_not(None),
        sa.or_(links.c.status == "New", _facts_text().like(_MICROSOFT_PENDING)),
        bodies=False,
    )


def links_to_close(store: Store, conn: str) -> Iterator[Link]:
    """Incoming deals of ``conn`` declined or expired, their CRM record not closed yet."""
    return _links(
        store,
        conn,
        "the incoming deals to close",
        links.c.direction == "Incoming",
        links.c.status == "Closed",
        links.c.substatus.in_(("Declined", "Expired")),
        links.c.core_facts.is_not(None),
        sa.not_(_facts_text().like(_CRM_CLOSED)),
    )


def _links(
    store: Store, conn: str, what: str, *conditions: sa.ColumnElement[bool]
) -> Iterator[Link]:
    return store.connection(conn).links.stream(f"list {what} ({conn})", *conditions)
