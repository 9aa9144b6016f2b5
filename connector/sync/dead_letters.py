"""Records read again after they failed: changed since, or the same record as then (pure).

A dead letter remembers how its record was when it failed: the CRM stamp and, for a
record the mapping rejected, a hash of the record's content as the mapping reads it.
The stamp alone cannot tell a change made by a user from the connector's own write of
the record's error field (that write moves the stamp too), so a record read again
counts as unchanged when its stamp *or* its content is the same as then. The content
hash covers the mapping too: after the mapping file is edited, a record read again is
evaluated again. A failure the core or the CRM answered keeps the stamp alone: the
same content may get another answer next time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from connector.mapping.schema import MappingFile
from connector.model import CrmOpportunity
from connector.state.records import LetterStamp

#: the skip reason of a record read again unchanged since it was dead-lettered
UNCHANGED_SINCE_FAILURE = "unchanged_since_failure"


class ContentFingerprints:
    """Hashes of records' content as one mapping reads it."""

    def __init__(self, mapping: MappingFile) -> None:
        self._fields = sorted(mapping.read_fields())
        self._mapping = hashlib.blake2b(
            mapping.model_dump_json().encode(), digest_size=16
        ).hexdigest()

    def of(self, record: CrmOpportunity) -> str:
        """The record's fields the mapping reads (and the mapping itself), hashed.

        The status fields the connector writes are never read by a mapping (the mapping
        file refuses that), so writing them does not change this hash.
        """
        content = {name: record.fields.get(name) for name in self._fields}
        text = json.dumps([self._mapping, content], sort_keys=True, default=str)
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def unchanged_since_failure(
    record: CrmOpportunity, last: LetterStamp | None, fingerprint: str
) -> bool:
    """Whether ``record`` is as it was when its last dead letter was written."""
    if last is None:
        return False
    if last.modstamp is not None and last.modstamp == record.modstamp:
        return True
    return last.fingerprint is not None and last.fingerprint == fingerprint


def split_unchanged(
    records: Sequence[CrmOpportunity],
    stamps: Mapping[str, LetterStamp],
    fingerprints: ContentFingerprints,
) -> tuple[list[CrmOpportunity], list[CrmOpportunity]]:
    """``records`` split into (to process, unchanged since their last dead letter)."""
    changed: list[CrmOpportunity] = []
    unchanged: list[CrmOpportunity] = []
    for record in records:
        last = stamps.get(record.id)
        if last is not None and unchanged_since_failure(record, last, fingerprints.of(record)):
            unchanged.append(record)
        else:
            changed.append(record)
    return changed, unchanged
