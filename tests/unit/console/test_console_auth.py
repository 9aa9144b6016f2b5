"""Credentials, sessions, CSRF tokens and the sign-in throttle, without HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from connector.console.auth import Credentials, Role, Sessions, SignInThrottle
from connector.errors import ConfigError
from connector.settings import ConsoleSettings


def test_the_secret_typed_decides_the_role() -> None:
    creds = Credentials(SecretStr("admin-secret-1"), SecretStr("viewer-secret-1"))
    assert creds.role_for("admin-secret-1") is Role.ADMIN
    assert creds.role_for("viewer-secret-1") is Role.READ_ONLY
    assert creds.role_for("admin-secret-") is None
    assert creds.role_for("") is None


def test_secrets_come_from_references_long_and_distinct(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "admin").write_text("a-long-enough-admin-secret\n")
    monkeypatch.setenv("VIEWER", "tiny-pw")
    console = ConsoleSettings.model_validate(
        {"enabled": True, "admin": {"file": "admin"}, "read_only": {"env": "VIEWER"}}
    )
    with pytest.raises(ConfigError, match=r"console.read_only: .* shorter than 12"):
        Credentials.from_settings(console, tmp_path)
    monkeypatch.setenv("VIEWER", "a-long-enough-admin-secret")
    with pytest.raises(ConfigError, match="the same secret"):
        Credentials.from_settings(console, tmp_path)
    monkeypatch.setenv("VIEWER", "another-long-viewer-secret")
    creds = Credentials.from_settings(console, tmp_path)
    assert creds.roles == [Role.ADMIN, Role.READ_ONLY]
    monkeypatch.delenv("VIEWER")
    with pytest.raises(ConfigError, match=r"console\.read_only: the environment variable VIEWER"):
        Credentials.from_settings(console, tmp_path)


@pytest.mark.parametrize(
    ("console", "problem"),
    [
        ({"enabled": True}, "needs a credential"),
        ({"enabled": True, "admin": {"value": "sandbox"}}, "never the literal"),
        (
            {"enabled": True, "admin": {"env": "A"}, "host": "0.0.0.0"},
            "reachable from other machines",
        ),
        ({"tls_cert_file": "cert.pem"}, "both tls_cert_file and tls_key_file"),
    ],
)
def test_unsafe_console_settings_are_refused(console: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        ConsoleSettings.model_validate(console)


def test_a_remote_console_needs_tls_or_a_tls_proxy() -> None:
    for extra in (
        {"tls_cert_file": "c.pem", "tls_key_file": "k.pem"},
        {"secure_cookies": True},
    ):
        ConsoleSettings.model_validate(
            {"enabled": True, "admin": {"env": "A"}, "host": "0.0.0.0", **extra}
        )
    assert ConsoleSettings().enabled is False and ConsoleSettings().host == "127.0.0.1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_cookie_holds_while_signed_unexpired_and_open() -> None:
    clock = Clock()
    sessions = Sessions(60, clock=clock)
    session, cookie = sessions.open(Role.ADMIN)
    assert sessions.find(cookie) == session
    session_id, _, signature = cookie.partition(".")
    tampered = signature[:-1] + ("B" if signature.endswith("A") else "A")
    assert sessions.find(f"{session_id}.{tampered}") is None
    assert sessions.find(session_id) is None
    other = Sessions(60, clock=clock)
    assert other.find(cookie) is None  # another key (a restart): signed in again
    clock.now += 61
    assert sessions.find(cookie) is None
    session, cookie = sessions.open(Role.READ_ONLY)
    sessions.close(session)
    assert sessions.find(cookie) is None


def test_csrf_tokens_belong_to_one_session() -> None:
    sessions = Sessions(60)
    first, _ = sessions.open(Role.ADMIN)
    second, _ = sessions.open(Role.ADMIN)
    assert sessions.csrf_ok(first, first.csrf)
    assert not sessions.csrf_ok(first, second.csrf)
    assert not sessions.csrf_ok(first, None)
    nonce = sessions.login_nonce()
    assert sessions.login_ok(nonce, sessions.login_token(nonce))
    assert not sessions.login_ok(sessions.login_nonce(), sessions.login_token(nonce))


def test_failed_sign_ins_are_throttled_per_address_for_a_window() -> None:
    clock = Clock()
    throttle = SignInThrottle(limit=3, window_s=60, clock=clock)
    for _ in range(3):
        assert not throttle.blocked("10.0.0.1")
        throttle.failed("10.0.0.1")
    assert throttle.blocked("10.0.0.1") and not throttle.blocked("10.0.0.2")
    clock.now += 61
    assert not throttle.blocked("10.0.0.1")
