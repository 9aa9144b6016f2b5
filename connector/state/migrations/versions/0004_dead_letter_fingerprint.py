"""Dead letters remember the record's content as the mapping read it.

Revision ID: 0004_dead_letter_fingerprint
Revises: 0003_create_intents
Create Date: 2026-12-03

A record's CRM stamp moves when the connector writes its error field, so the stamp
alone cannot tell a record the user changed from one the connector wrote to; the hash
of what the mapping reads can. Letters written before this revision keep NULL and are
compared by their stamp, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_dead_letter_fingerprint"
down_revision: str | Sequence[str] | None = "0003_create_intents"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.add_column(sa.Column("crm_fingerprint", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_column("crm_fingerprint")
