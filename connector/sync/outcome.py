"""What happened to one CRM record in a cycle (shared by the engine and its lifecycle steps)."""

from __future__ import annotations

from dataclasses import dataclass

from connector.state.store import Link


@dataclass
class RecordOutcome:
    """What happened to one record in the push step."""

    crm_id: str
    kind: str  # created | updated | closed | skipped | rejected | failed
    reason: str | None = None
    message: str | None = None
    link: Link | None = None
    notice: str | None = None
    transient: bool = False
    #: the record's fingerprint when it was skipped (kept so the skip is not repeated)
    fingerprint: str | None = None
