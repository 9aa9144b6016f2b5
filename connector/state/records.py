"""What the state store hands out: frozen records, one per table row.

Re-exported by :mod:`connector.state.store` and :mod:`connector.state`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple


class LinkState(StrEnum):
    """Where a CRM record stands with its referral."""

    #: written before the POST; after a crash, look the referral up before posting again
    PENDING_CREATE = "pending_create"
    LINKED = "linked"
    #: won, lost, declined or expired: never patched again
    TERMINAL = "terminal"


@dataclass(frozen=True, slots=True)
class Link:
    """One CRM record ↔ referral pair, as the ``links`` table holds it.

    ``sent_body`` is the last referral body sent (the base of minimal patches);
    ``mirrored_fingerprint`` hashes the status values last written to the CRM;
    ``core_facts`` keeps what the core last said about the referral (JSON).
    ``updated`` is set by the store on every write. ``intent_at`` and ``intent_by``
    are the create intent of a pending link: when it was marked (before the POST)
    and by which run (its lease holder).
    """

    connection: str
    crm_id: str
    state: LinkState
    referral_id: str | None = None
    engagement_id: str | None = None
    etag: str | None = None
    fingerprint: str | None = None
    sent_body: Mapping[str, Any] | None = None
    status: str | None = None
    substatus: str | None = None
    crm_modstamp: datetime | None = None
    direction: str = "Outgoing"
    mirrored_fingerprint: str | None = None
    updated: datetime | None = None
    core_facts: Mapping[str, Any] | None = None
    intent_at: datetime | None = None
    intent_by: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that failed permanently; ``attempts`` counts failures while unresolved."""

    id: int
    connection: str
    crm_id: str
    reason_code: str
    message: str
    attempts: int
    first_seen: datetime
    last_seen: datetime
    crm_modstamp: datetime | None
    resolved: bool
    #: the record's content as the mapping read it, hashed (None: written before 0002)
    crm_fingerprint: str | None = None


class LetterStamp(NamedTuple):
    """How a record was when it was last dead-lettered: its CRM stamp and content hash."""

    modstamp: datetime | None
    fingerprint: str | None


@dataclass(frozen=True, slots=True)
class Run:
    """One sync cycle of one connection; ``outcome`` is None while it runs."""

    id: int
    connection: str
    started: datetime
    finished: datetime | None
    outcome: str | None
    counts: Mapping[str, Any] | None
    api_calls: Mapping[str, Any] | None
    duration_s: float | None
    error: str | None
