"""Who may use the console: credentials, signed session cookies, CSRF tokens, throttling.

Sign-in takes one token or password; it is compared (constant time, against both)
with the ``admin`` and ``read_only`` secrets of the config's ``console`` section, and
the match decides the role. A session is a random id kept in memory (so signing out,
or a restart, ends it) and sent as a cookie signed with HMAC-SHA256 under a key made
at start-up; its CSRF token is an HMAC of the id under the same key. Nothing here
ever stores or logs what was typed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import SecretStr

from connector.errors import ConfigError
from connector.logs import redact
from connector.settings import ConsoleSettings

#: shorter secrets are refused at start-up (they could be guessed)
MIN_SECRET_LENGTH = 12
#: sessions kept at once; the oldest is dropped beyond this
MAX_SESSIONS = 1000

Clock = Callable[[], float]


class Role(StrEnum):
    ADMIN = "admin"
    READ_ONLY = "read_only"

    @property
    def label(self) -> str:
        return "admin" if self is Role.ADMIN else "read-only"


@dataclass(frozen=True)
class Session:
    id: str
    role: Role
    expires: float
    csrf: str

    @property
    def tag(self) -> str:
        """A short, one-way name of the session for the audit trail."""
        return hashlib.sha256(self.id.encode()).hexdigest()[:12]


class Credentials:
    """The console's two secrets; :meth:`role_for` says which one a sign-in matches."""

    def __init__(self, admin: SecretStr | None, read_only: SecretStr | None) -> None:
        self._digests: list[tuple[Role, bytes]] = []
        for role, secret in ((Role.ADMIN, admin), (Role.READ_ONLY, read_only)):
            if secret is not None:
                value = secret.get_secret_value()
                self._digests.append((role, hashlib.sha256(value.encode()).digest()))
        if not self._digests:
            raise ConfigError("console: no credential configured (admin or read_only)")

    @classmethod
    def from_settings(cls, console: ConsoleSettings, secrets_dir: Path | None) -> Credentials:
        """Resolve the secret references; refuse short or identical secrets."""
        resolved: dict[str, SecretStr | None] = {}
        for role in ("admin", "read_only"):
            ref = getattr(console, role)
            if ref is None:
                resolved[role] = None
                continue
            secret = ref.resolve(f"console.{role}", secrets_dir)
            value = secret.get_secret_value()
            if len(value) < MIN_SECRET_LENGTH:
                raise ConfigError(
                    f"console.{role}: the token or password is shorter than "
                    f"{MIN_SECRET_LENGTH} characters; use a longer one (e.g. "
                    "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`)"
                )
            redact(value)
            resolved[role] = secret
        admin, read_only = resolved["admin"], resolved["read_only"]
        if (
            admin is not None
            and read_only is not None
            and hmac.compare_digest(admin.get_secret_value(), read_only.get_secret_value())
        ):
            raise ConfigError(
                "console.admin and console.read_only are the same secret, so the role "
                "of a sign-in could not be told; give each role its own"
            )
        return cls(admin, read_only)

    @property
    def roles(self) -> list[Role]:
        return [role for role, _ in self._digests]

    def role_for(self, given: str) -> Role | None:
        """The role whose secret is ``given``; every secret is compared, in constant time."""
        digest = hashlib.sha256(given.encode("utf-8", "replace")).digest()
        found: Role | None = None
        for role, expected in self._digests:
            if hmac.compare_digest(digest, expected):
                found = role
        return found


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Sessions:
    """Signed session cookies over an in-memory registry (thread-safe, bounded)."""

    def __init__(self, ttl_s: float, *, clock: Clock = time.time, key: bytes | None = None):
        self.ttl_s = ttl_s
        self._clock = clock
        self._key = key or secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._open: OrderedDict[str, Session] = OrderedDict()

    def _sign(self, purpose: str, value: str) -> str:
        mac = hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256)
        return _b64(mac.digest())

    def open(self, role: Role) -> tuple[Session, str]:
        """A new session and its cookie value."""
        session_id = secrets.token_urlsafe(32)
        session = Session(
            session_id, role, self._clock() + self.ttl_s, self._sign("csrf", session_id)
        )
        with self._lock:
            self._open[session_id] = session
            while len(self._open) > MAX_SESSIONS:
                self._open.popitem(last=False)
        return session, f"{session_id}.{self._sign('session', session_id)}"

    def find(self, cookie: str | None) -> Session | None:
        """The live session a cookie names, if its signature holds and it has not ended."""
        if not cookie or "." not in cookie:
            return None
        session_id, _, signature = cookie.partition(".")
        if not hmac.compare_digest(signature, self._sign("session", session_id)):
            return None
        with self._lock:
            session = self._open.get(session_id)
            if session is not None and session.expires <= self._clock():
                del self._open[session_id]
                return None
        return session

    def close(self, session: Session) -> None:
        with self._lock:
            self._open.pop(session.id, None)

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, session.csrf)

    # the sign-in form has no session yet: its token is bound to a random cookie instead

    def login_nonce(self) -> str:
        return secrets.token_urlsafe(16)

    def login_token(self, nonce: str) -> str:
        return self._sign("login", nonce)

    def login_ok(self, nonce: str | None, token: str | None) -> bool:
        if not nonce or not token:
            return False
        return hmac.compare_digest(token, self.login_token(nonce))


class SignInThrottle:
    """At most ``limit`` failed sign-ins per address within ``window_s`` (memory bounded)."""

    def __init__(
        self, limit: int = 5, window_s: float = 60.0, *, clock: Clock = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def blocked(self, address: str) -> bool:
        with self._lock:
            recent = self._recent(address)
            return recent is not None and len(recent) >= self.limit

    def failed(self, address: str) -> None:
        with self._lock:
            recent = self._recent(address)
            if recent is None:
                recent = self._failures[address] = deque(maxlen=self.limit)
            recent.append(self._clock())
            self._failures.move_to_end(address)
            while len(self._failures) > MAX_SESSIONS:
                self._failures.popitem(last=False)

    def _recent(self, address: str) -> deque[float] | None:
        recent = self._failures.get(address)
        if recent is None:
            return None
        horizon = self._clock() - self.window_s
        while recent and recent[0] < horizon:
            recent.popleft()
        return recent
