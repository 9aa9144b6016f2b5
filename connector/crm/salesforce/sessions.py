"""Salesforce sessions kept in memory across a daemon's cycles.

Every cycle of a connection builds its clients afresh; without a cache each one would
sign in again (one token call a cycle, counted among the adapter's calls). The daemon
holds one :class:`SessionCache` for all its connections: a cycle starts with the
session (access token and instance URL) its connection last had, and signs in again
only when Salesforce answers that it expired (``INVALID_SESSION_ID``).

A session is kept in this process's memory only, never written to disk or logs (the
token is registered for redaction when it is issued). The key names the connection
and who signs in (grant, login URL, client id, user), so a configuration that changes
any of them starts with a sign-in of its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pydantic import SecretStr


@dataclass(frozen=True, slots=True)
class SalesforceToken:
    """A signed-in session: the access token and the instance it belongs to."""

    access_token: SecretStr
    instance_url: str


#: (connection, grant kind, login origin, client id, username)
SessionKey = tuple[str, str, str, str, str]


class SessionCache:
    """The latest Salesforce session of each connection, by :data:`SessionKey`; thread-safe."""

    def __init__(self) -> None:
        self._sessions: dict[SessionKey, SalesforceToken] = {}
        self._lock = threading.Lock()

    def get(self, key: SessionKey) -> SalesforceToken | None:
        with self._lock:
            return self._sessions.get(key)

    def put(self, key: SessionKey, token: SalesforceToken) -> None:
        with self._lock:
            self._sessions[key] = token

    def drop(self, key: SessionKey, access_token: str) -> None:
        """Forget the session under ``key`` if it is still ``access_token`` (an expired one;
        a newer session another thread signed in with stays)."""
        with self._lock:
            held = self._sessions.get(key)
            if held is not None and held.access_token.get_secret_value() == access_token:
                del self._sessions[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def __repr__(self) -> str:  # never the tokens
        return f"SessionCache({len(self)} session(s))"
