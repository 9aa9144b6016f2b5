"""Record history, run details and the console's audit trail.

Revision ID: 0002_record_history
Revises: 0001
Create Date: 2026-12-03

``record_history``: what each sync did to one CRM record (what was sent, what the core
answered), bounded by the config's ``history`` settings. ``run_details``: a run's phases
and quota share. ``console_audit``: every action taken in the admin console. An index
on dead letters by reason for the console's filter.

Self-contained on purpose: it must build the same tables in a year's time,
whatever ``connector.state.schema`` says by then.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002_record_history"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _when(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_index("ix_dead_letters_reason_code_id", "dead_letters", ["reason_code", "id"])
    op.create_table(
        "record_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column(
            "connection",
            sa.String(200),
            sa.ForeignKey(
                "connections.name",
                name="fk_record_history_connection_connections",
                ondelete="CASCADE",
            ),
            nullable=False,
        ),
        sa.Column("crm_id", sa.String(100), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        _when("at"),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("referral_id", sa.String(100), nullable=True),
        sa.Column("core_status", sa.String(32), nullable=True),
        sa.Column("core_substatus", sa.String(32), nullable=True),
        sa.Column("sent", sa.Text(), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_record_history"),
    )
    op.create_index(
        "ix_record_history_connection_crm_id_id", "record_history", ["connection", "crm_id", "id"]
    )
    op.create_index("ix_record_history_run_id_id", "record_history", ["run_id", "id"])
    op.create_table(
        "run_details",
        sa.Column(
            "run_id",
            sa.Integer(),
            sa.ForeignKey("runs.id", name="fk_run_details_run_id_runs", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("phases", sa.Text(), nullable=True),
        sa.Column("quota", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name="pk_run_details"),
    )
    op.create_table(
        "console_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _when("at"),
        sa.Column("actor", sa.String(32), nullable=False),
        sa.Column("session", sa.String(16), nullable=True),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(200), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_console_audit"),
    )


def downgrade() -> None:
    for table in ("console_audit", "run_details", "record_history"):
        op.drop_table(table)
    op.drop_index("ix_dead_letters_reason_code_id", table_name="dead_letters")
