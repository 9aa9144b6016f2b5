"""Initial state store: connections, cursors, links, dead letters, runs, leases.

Revision ID: 0001
Revises:
Create Date: 2025-11-27

Self-contained on purpose: it must build the same tables in a year's time,
whatever ``connector.state.schema`` says by then.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = sa.String(200)
_ID = sa.String(100)


def _when(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _connection(table: str) -> sa.Column[str]:
    return sa.Column(
        "connection",
        _NAME,
        sa.ForeignKey(
            "connections.name",
            name=f"fk_{table}_connection_connections",
            ondelete="CASCADE",
        ),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "connections",
        sa.Column("name", _NAME, nullable=False),
        _when("created"),
        sa.PrimaryKeyConstraint("name", name="pk_connections"),
    )
    op.create_table(
        "cursors",
        _connection("cursors"),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        _when("updated"),
        sa.PrimaryKeyConstraint("connection", "name", name="pk_cursors"),
    )
    op.create_table(
        "links",
        _connection("links"),
        sa.Column("crm_id", _ID, nullable=False),
        sa.Column("referral_id", _ID, nullable=True),
        sa.Column("engagement_id", _ID, nullable=True),
        sa.Column("etag", sa.String(200), nullable=True),
        sa.Column("fingerprint", sa.String(128), nullable=True),
        sa.Column("sent_body", sa.Text(), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("substatus", sa.String(32), nullable=True),
        _when("crm_modstamp", nullable=True),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("mirrored_fingerprint", sa.String(128), nullable=True),
        _when("updated"),
        # the core's facts about the referral as last seen (JSON), for the CRM mirror
        sa.Column("core_facts", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("connection", "crm_id", name="pk_links"),
        sa.UniqueConstraint("connection", "referral_id", name="uq_links_connection_referral_id"),
        sa.CheckConstraint(
            "state IN ('pending_create', 'linked', 'terminal')", name="ck_links_state"
        ),
        sa.CheckConstraint("direction IN ('Outgoing', 'Incoming')", name="ck_links_direction"),
    )
    op.create_index("ix_links_connection_state", "links", ["connection", "state"])
    op.create_index("ix_links_connection_engagement", "links", ["connection", "engagement_id"])
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _connection("dead_letters"),
        sa.Column("crm_id", _ID, nullable=False),
        sa.Column("reason_code", sa.String(64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _when("first_seen"),
        _when("last_seen"),
        _when("crm_modstamp", nullable=True),
        sa.Column("resolved", sa.Boolean(create_constraint=False), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )
    op.create_index(
        "uq_dead_letters_open",
        "dead_letters",
        ["connection", "crm_id"],
        unique=True,
        sqlite_where=sa.text("resolved = false"),
        postgresql_where=sa.text("resolved = false"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _connection("runs"),
        _when("started"),
        _when("finished", nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("counts", sa.Text(), nullable=True),
        sa.Column("api_calls", sa.Text(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_connection_id", "runs", ["connection", "id"])
    op.create_table(
        "leases",
        _connection("leases"),
        sa.Column("holder", sa.String(200), nullable=False),
        _when("expires"),
        sa.PrimaryKeyConstraint("connection", name="pk_leases"),
    )


def downgrade() -> None:
    for table in ("leases", "runs", "dead_letters", "links", "cursors", "connections"):
        op.drop_table(table)
