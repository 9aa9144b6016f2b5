"""The referrals this run wrote or read, by eTag: the pull-back's shortcut.

A first sync lists back everything it created (and, for co-sell deals, Microsoft's
referral it looked up or created): each listed referral was then compared with the
store (its link's eTag, or the links of its engagement), one query per batch. A
referral listed with the eTag this run last saw of it has not changed since, and the
link saved then already holds what it says, so it needs neither. :class:`SeenEtags`
remembers those eTags for the run, up to a bound (the store answers for the rest).

Only a hit is trusted, and only for the run that recorded it (cleared when a cycle
starts): a referral whose eTag moved since is checked against the store as before.
"""

from __future__ import annotations

import threading


class SeenEtags:
    """Referral id -> the eTag this run saw, for at most ``limit`` referrals."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._etags: dict[str, str] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._etags = {}

    def add(self, referral_id: str | None, etag: str | None) -> None:
        """Remember ``etag`` for ``referral_id`` (nothing when either is missing)."""
        if not referral_id or not etag:
            return
        with self._lock:
            if referral_id in self._etags or len(self._etags) < self.limit:
                self._etags[referral_id] = etag

    def unchanged(self, referral_id: str, etag: str | None) -> bool:
        """Whether the referral is listed with the eTag this run last saw of it."""
        return etag is not None and self._etags.get(referral_id) == etag

    def __len__(self) -> int:
        return len(self._etags)
