"""Create intents: when a pending link was marked and by which run.

Revision ID: 0003_create_intents
Revises: 0002_record_history
Create Date: 2026-12-02

A pending link is the intent to create a referral. Its time bounds the listing that
later finds out whether the POST went through (``updatedDateTime`` back to it, minus
a margin); its holder (the run's lease holder) tells a run that is still creating
the record from one that died, so that a second intent for the record is refused
while the first one is alive.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_create_intents"
down_revision: str | Sequence[str] | None = "0002_record_history"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("links") as links:
        links.add_column(sa.Column("intent_at", sa.DateTime(timezone=True), nullable=True))
        links.add_column(sa.Column("intent_by", sa.String(200), nullable=True))
    # Pending links written before this revision: their last write is their intent time.
    op.execute("UPDATE links SET intent_at = updated WHERE state = 'pending_create'")


def downgrade() -> None:
    with op.batch_alter_table("links") as links:
        links.drop_column("intent_by")
        links.drop_column("intent_at")
