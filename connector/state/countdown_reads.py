"""What the daily countdown reads from the state store: the links whose deal waits for an
answer before an expiry (an incoming deal still New, or Microsoft invited and not yet
answering), streamed in pages by CRM id.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa

from connector.state.records import Link, LinkState
from connector.state.schema import links
from connector.state.store import _LINK_COLUMNS, ITER_PAGE, Store, _link

#: the stored facts (sorted, compact JSON: connector.state.schema.JsonText) of a deal whose
#: Microsoft referral is New (invited, not answered yet)
_MICROSOFT_PENDING = '%"microsoft_status":"New%'


def links_with_countdown(store: Store, conn: str) -> Iterator[Link]:
    """Open links of ``conn`` with an expiry pending: their own referral New, or Microsoft's."""
    after: str | None = None
    while True:
        query = (
            sa.select(*_LINK_COLUMNS)
            .where(
                links.c.connection == conn,
                links.c.state != LinkState.TERMINAL.value,
                links.c.core_facts.is_not(None),
                sa.or_(
                    links.c.status == "New",
                    sa.cast(links.c.core_facts, sa.Text).like(_MICROSOFT_PENDING),
                ),
            )
            .order_by(links.c.crm_id)
            .limit(ITER_PAGE)
        )
        if after is not None:
            query = query.where(links.c.crm_id > after)
        with store._read(f"list the links with an expiry pending ({conn})") as db:
            page = [_link(row) for row in db.execute(query)]
        yield from page
        if len(page) < ITER_PAGE:
            return
        after = page[-1].crm_id
