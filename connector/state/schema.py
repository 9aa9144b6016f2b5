"""The state store's tables, on one :class:`~sqlalchemy.MetaData`.

This is the *current* shape of the database. Migrations under
``connector/state/migrations/versions`` build it step by step and never import
this module (a migration must keep meaning what it meant when it was written);
``tests/unit/state/test_store.py`` checks that the two agree.

Portable between SQLite and PostgreSQL: strings, integers, text holding JSON,
timestamps always stored in UTC (:class:`UtcDateTime`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect

from connector.fastjson import dumps_sorted, loads

#: constraint names are stable so that later migrations can refer to them
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class _SqliteUtcText(sqlite.DATETIME):
    """SQLite's DATETIME column, fed and read as ISO text by :class:`UtcDateTime`.

    Same text as SQLAlchemy's own format, but through the C ``isoformat`` /
    ``fromisoformat`` instead of a regex: a third of the cost of a bulk save.
    """

    def bind_processor(self, dialect: Dialect) -> None:
        return None

    def result_processor(self, dialect: Dialect, coltype: object) -> None:
        return None


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """An aware UTC datetime on both backends.

    SQLite has no time zones: values are stored as naive UTC text (fixed width, so
    that ``<`` compares correctly) and come back aware. Naive input is refused
    because guessing its zone is how clocks drift apart.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_SqliteUtcText())  # type: ignore[no-untyped-call]
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given to the state store")
        if dialect.name == "sqlite":
            # "2025-02-01 08:30:15.123000+00:00" without its fixed-width offset
            return value.astimezone(UTC).isoformat(sep=" ", timespec="microseconds")[:-6]
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        when: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        if when.tzinfo is None:
            return when.replace(tzinfo=UTC)
        return when.astimezone(UTC)


class JsonText(sa.types.TypeDecorator[Any]):
    """JSON kept as text (sorted keys), identical on both backends."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else dumps_sorted(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else loads(value)


LINK_STATES = ("pending_create", "linked", "terminal")
DIRECTIONS = ("Outgoing", "Incoming")


def _fk_connection() -> sa.ForeignKey:
    return sa.ForeignKey("connections.name", ondelete="CASCADE")


connections = sa.Table(
    "connections",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("created", UtcDateTime(), nullable=False),
)

cursors = sa.Table(
    "cursors",
    metadata,
    sa.Column("connection", sa.String(200), _fk_connection(), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
    sa.Column("updated", UtcDateTime(), nullable=False),
)

links = sa.Table(
    "links",
    metadata,
    sa.Column("connection", sa.String(200), _fk_connection(), primary_key=True),
    sa.Column("crm_id", sa.String(100), primary_key=True),
    sa.Column("referral_id", sa.String(100), nullable=True),
    sa.Column("engagement_id", sa.String(100), nullable=True),
    sa.Column("etag", sa.String(200), nullable=True),
    sa.Column("fingerprint", sa.String(128), nullable=True),
    sa.Column("sent_body", JsonText(), nullable=True),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("status", sa.String(32), nullable=True),
    sa.Column("substatus", sa.String(32), nullable=True),
    sa.Column("crm_modstamp", UtcDateTime(), nullable=True),
    sa.Column("direction", sa.String(16), nullable=False),
    sa.Column("mirrored_fingerprint", sa.String(128), nullable=True),
    sa.Column("updated", UtcDateTime(), nullable=False),
    # the core's facts about the referral as last seen (JSON), for the CRM mirror
    sa.Column("core_facts", JsonText(), nullable=True),
    # a pending link's create intent: when it was marked (the POST came after) and by
    # which run (its lease holder); see connector.sync.existing
    sa.Column("intent_at", UtcDateTime(), nullable=True),
    sa.Column("intent_by", sa.String(200), nullable=True),
    # NULL referral ids (pending links) do not collide: both backends treat NULLs as distinct
    sa.UniqueConstraint("connection", "referral_id"),
    sa.CheckConstraint(sa.column("state").in_(LINK_STATES), name="state"),
    sa.CheckConstraint(sa.column("direction").in_(DIRECTIONS), name="direction"),
    sa.Index(None, "connection", "state"),
    sa.Index("ix_links_connection_engagement", "connection", "engagement_id"),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("connection", sa.String(200), _fk_connection(), nullable=False),
    sa.Column("crm_id", sa.String(100), nullable=False),
    sa.Column("reason_code", sa.String(64), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("first_seen", UtcDateTime(), nullable=False),
    sa.Column("last_seen", UtcDateTime(), nullable=False),
    sa.Column("crm_modstamp", UtcDateTime(), nullable=True),
    sa.Column("resolved", sa.Boolean(create_constraint=False), nullable=False),
    # the record's content as the mapping read it, hashed: its stamp also moves when the
    # connector writes the error field, its content does not (migration 0002)
    sa.Column("crm_fingerprint", sa.String(64), nullable=True),
)

#: at most one open dead letter per record; resolved ones stay as history
UNRESOLVED = sa.text("resolved = false")
sa.Index(
    "uq_dead_letters_open",
    dead_letters.c.connection,
    dead_letters.c.crm_id,
    unique=True,
    sqlite_where=UNRESOLVED,
    postgresql_where=UNRESOLVED,
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("connection", sa.String(200), _fk_connection(), nullable=False),
    sa.Column("started", UtcDateTime(), nullable=False),
    sa.Column("finished", UtcDateTime(), nullable=True),
    sa.Column("outcome", sa.String(32), nullable=True),
    sa.Column("counts", JsonText(), nullable=True),
    sa.Column("api_calls", JsonText(), nullable=True),
    sa.Column("duration_s", sa.Float(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Index(None, "connection", "id"),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("connection", sa.String(200), _fk_connection(), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires", UtcDateTime(), nullable=False),
)

#: the dead-letter page filters by reason, newest first
sa.Index("ix_dead_letters_reason_code_id", dead_letters.c.reason_code, dead_letters.c.id)

#: what each sync did to one CRM record (the console's record history), bounded by the
#: ``history`` settings: the newest entries per record, the runs of the last days
record_history = sa.Table(
    "record_history",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("connection", sa.String(200), _fk_connection(), nullable=False),
    sa.Column("crm_id", sa.String(100), nullable=False),
    sa.Column("run_id", sa.Integer(), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    # created | updated | closed | skipped | rejected | failed | mirrored
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(64), nullable=True),
    sa.Column("message", sa.Text(), nullable=True),
    sa.Column("referral_id", sa.String(100), nullable=True),
    sa.Column("core_status", sa.String(32), nullable=True),
    sa.Column("core_substatus", sa.String(32), nullable=True),
    # the create body or the patch sent to the core
    sa.Column("sent", JsonText(), nullable=True),
    # what the core answered (its facts about the referral, with the eTag); the CRM
    # status fields' values follow from it (connector.sync.history.crm_values_of)
    sa.Column("answer", JsonText(), nullable=True),
    sa.Index(None, "connection", "crm_id", "id"),
    sa.Index(None, "run_id", "id"),
)

#: what the runs table does not hold of a run: seconds per phase, the CRM quota share
run_details = sa.Table(
    "run_details",
    metadata,
    sa.Column(
        "run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("phases", JsonText(), nullable=True),
    sa.Column("quota", JsonText(), nullable=True),
)

#: every action taken in the console (sign-in, retry, discard, explain ...)
console_audit = sa.Table(
    "console_audit",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime(), nullable=False),
    # admin | read_only | anonymous
    sa.Column("actor", sa.String(32), nullable=False),
    # a short hash of the session: ties the actions of one sign-in together
    sa.Column("session", sa.String(16), nullable=True),
    sa.Column("address", sa.String(64), nullable=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("target", sa.String(200), nullable=True),
    # ok | nothing (no open letter matched) | refused | failed
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text(), nullable=True),
)
