"""Token providers: caching, refresh-token rotation and file modes, the device-code flow."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from dealcore_fakes import FakeClock
from pydantic import SecretStr

from connector.dealcore.auth import (
    DEVICE_CODE_GRANT,
    ClientCredentialsTokens,
    RefreshTokenTokens,
    device_code_login,
    read_refresh_token,
    write_refresh_token,
)
from connector.errors import ConfigError, CoreError

TOKEN_URL = "https://login.test/tenant/oauth2/v2.0/token"
DEVICE_URL = "https://login.test/tenant/oauth2/v2.0/devicecode"
SCOPE = "https://api.partner.microsoft.com/.default"


def form(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ── client credentials ─────────────────────────────────────────────────────


def test_client_credentials_are_cached_until_shortly_before_expiry(http: httpx.Client) -> None:
    clock = FakeClock()
    with respx.mock() as mock:
        route = mock.post(TOKEN_URL).mock(
            side_effect=[
                httpx.Response(200, json={"access_token": "a1", "expires_in": 3600}),
                httpx.Response(200, json={"access_token": "a2", "expires_in": 3600}),
            ]
        )
        tokens = ClientCredentialsTokens(
            TOKEN_URL, "sandbox", SecretStr("s3cret"), SCOPE, http, clock=clock
        )
        assert tokens.token() == "a1"
        clock.now = 3000
        assert tokens.token() == "a1"
        clock.now = 3490  # within the renewal margin before expiry
        assert tokens.token() == "a2"
        assert route.call_count == 2
        sent = form(route.calls[0].request)
    assert sent == {
        "grant_type": "client_credentials",
        "client_id": "sandbox",
        "client_secret": "s3cret",
        "scope": SCOPE,
    }


def test_invalidate_forces_a_new_token(http: httpx.Client) -> None:
    with respx.mock() as mock:
        route = mock.post(TOKEN_URL).mock(
            side_effect=[
                httpx.Response(200, json={"access_token": "a1", "expires_in": 3600}),
                httpx.Response(200, json={"access_token": "a2", "expires_in": 3600}),
            ]
        )
        tokens = ClientCredentialsTokens(TOKEN_URL, "sandbox", SecretStr("s"), SCOPE, http)
        assert tokens.token() == "a1"
        tokens.invalidate()
        assert tokens.token() == "a2"
        assert route.call_count == 2


def test_refused_client_secret_is_permanent_and_not_echoed(http: httpx.Client) -> None:
    with respx.mock() as mock:
        mock.post(TOKEN_URL).respond(
            401, json={"error": "invalid_client", "error_description": "AADSTS7000215"}
        )
        tokens = ClientCredentialsTokens(TOKEN_URL, "sandbox", SecretStr("s3cret"), SCOPE, http)
        with pytest.raises(CoreError) as raised:
            tokens.token()
    assert raised.value.code == "invalid_client" and not raised.value.transient
    assert "s3cret" not in str(raised.value)


def test_token_endpoint_transport_error_is_transient(http: httpx.Client) -> None:
    with respx.mock() as mock:
        mock.post(TOKEN_URL).mock(side_effect=httpx.ConnectError("refused"))
        tokens = ClientCredentialsTokens(TOKEN_URL, "sandbox", SecretStr("s"), SCOPE, http)
        with pytest.raises(CoreError) as raised:
            tokens.token()
    assert raised.value.transient


# ── refresh-token cache ────────────────────────────────────────────────────


def test_written_cache_is_0600_and_readable(tmp_path: Path) -> None:
    cache = tmp_path / "sub" / "core-token.json"
    write_refresh_token(cache, "rt-1")
    assert mode_of(cache) == 0o600
    assert read_refresh_token(cache) == "rt-1"
    write_refresh_token(cache, "rt-2")  # overwrite stays private and leaves no temp files
    assert mode_of(cache) == 0o600
    assert read_refresh_token(cache) == "rt-2"
    assert [p.name for p in cache.parent.iterdir()] == ["core-token.json"]


def test_a_0644_cache_is_refused_with_the_chmod_to_run(tmp_path: Path) -> None:
    cache = tmp_path / "core-token.json"
    cache.write_text(json.dumps({"refresh_token": "rt-SECRET-VALUE"}))
    cache.chmod(0o644)
    with pytest.raises(ConfigError) as raised:
        read_refresh_token(cache)
    assert f"chmod 600 {cache}" in str(raised.value)
    assert "0644" in str(raised.value)
    assert "rt-SECRET-VALUE" not in str(raised.value)


def test_a_missing_cache_says_to_sign_in(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="device-code login"):
        read_refresh_token(tmp_path / "nope.json")


def test_a_cache_without_token_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "c.json"
    write_refresh_token(cache, "x")
    cache.write_text("{}")
    with pytest.raises(ConfigError, match="no refresh token"):
        read_refresh_token(cache)


def test_refresh_tokens_rotate_into_the_cache(tmp_path: Path, http: httpx.Client) -> None:
    cache = tmp_path / "core-token.json"
    write_refresh_token(cache, "rt-1")
    with respx.mock() as mock:
        route = mock.post(TOKEN_URL).mock(
            side_effect=[
                httpx.Response(
                    200, json={"access_token": "a1", "refresh_token": "rt-2", "expires_in": 3600}
                ),
                httpx.Response(
                    200, json={"access_token": "a2", "refresh_token": "rt-3", "expires_in": 3600}
                ),
            ]
        )
        tokens = RefreshTokenTokens(TOKEN_URL, "app-id", SCOPE, cache, http)
        assert tokens.token() == "a1"
        assert tokens.token() == "a1"  # cached: no second exchange
        assert read_refresh_token(cache) == "rt-2"
        assert mode_of(cache) == 0o600
        tokens.invalidate()
        assert tokens.token() == "a2"
        assert read_refresh_token(cache) == "rt-3"
        first = form(route.calls[0].request)
        second = form(route.calls[1].request)
    assert first["grant_type"] == "refresh_token" and first["refresh_token"] == "rt-1"
    assert first["client_id"] == "app-id" and first["scope"] == SCOPE
    assert second["refresh_token"] == "rt-2"


def test_refresh_tokens_refuse_a_readable_cache_before_any_request(
    tmp_path: Path, http: httpx.Client
) -> None:
    cache = tmp_path / "core-token.json"
    write_refresh_token(cache, "rt-1")
    cache.chmod(0o640)
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(TOKEN_URL).respond(200, json={"access_token": "a"})
        tokens = RefreshTokenTokens(TOKEN_URL, "app-id", SCOPE, cache, http)
        with pytest.raises(ConfigError, match="chmod 600"):
            tokens.token()
        assert route.call_count == 0


def test_a_revoked_refresh_token_says_to_sign_in_again(tmp_path: Path, http: httpx.Client) -> None:
    cache = tmp_path / "core-token.json"
    write_refresh_token(cache, "rt-1")
    with respx.mock() as mock:
        mock.post(TOKEN_URL).respond(400, json={"error": "invalid_grant"})
        tokens = RefreshTokenTokens(TOKEN_URL, "app-id", SCOPE, cache, http)
        with pytest.raises(CoreError) as raised:
            tokens.token()
    assert raised.value.code == "unauthenticated" and not raised.value.transient
    assert "sign in again" in str(raised.value) and "rt-1" not in str(raised.value)


# ── device code ────────────────────────────────────────────────────────────


def device_start(**overrides: object) -> httpx.Response:
    body = {
        "device_code": "dc-1",
        "user_code": "ABCD1234",
        "verification_uri": "https://microsoft.com/devicelogin",
        "expires_in": 900,
        "interval": 5,
        "message": "To sign in, use a web browser to open the page and enter ABCD1234.",
        **overrides,
    }
    return httpx.Response(200, json=body)


def test_device_code_polls_until_signed_in(tmp_path: Path, http: httpx.Client) -> None:
    clock = FakeClock()
    shown: list[str] = []
    cache = tmp_path / "core-token.json"
    with respx.mock() as mock:
        start = mock.post(DEVICE_URL).mock(return_value=device_start())
        poll = mock.post(TOKEN_URL).mock(
            side_effect=[
                httpx.Response(400, json={"error": "authorization_pending"}),
                httpx.Response(400, json={"error": "slow_down"}),
                httpx.Response(400, json={"error": "authorization_pending"}),
                httpx.Response(
                    200, json={"access_token": "a", "refresh_token": "rt-d", "expires_in": 3600}
                ),
            ]
        )
        device_code_login(
            DEVICE_URL,
            TOKEN_URL,
            "app-id",
            SCOPE,
            cache,
            http,
            shown.append,
            sleep=clock.sleep,
            clock=clock,
        )
        started = form(start.calls[0].request)
        polled = form(poll.calls[0].request)
    assert "ABCD1234" in shown[0]
    assert started["client_id"] == "app-id"
    assert "offline_access" in started["scope"].split() and SCOPE in started["scope"].split()
    assert polled == {"grant_type": DEVICE_CODE_GRANT, "client_id": "app-id", "device_code": "dc-1"}
    assert poll.call_count == 4
    assert clock.sleeps == [5, 10, 10]  # interval, then +5 after slow_down
    assert read_refresh_token(cache) == "rt-d" and mode_of(cache) == 0o600


def test_device_code_gives_up_when_the_code_expires(tmp_path: Path, http: httpx.Client) -> None:
    clock = FakeClock()
    with respx.mock() as mock:
        mock.post(DEVICE_URL).mock(return_value=device_start(expires_in=30, interval=5))
        poll = mock.post(TOKEN_URL).respond(400, json={"error": "authorization_pending"})
        with pytest.raises(CoreError) as raised:
            device_code_login(
                DEVICE_URL,
                TOKEN_URL,
                "app-id",
                SCOPE,
                tmp_path / "c.json",
                http,
                lambda _: None,
                sleep=clock.sleep,
                clock=clock,
            )
        assert poll.call_count == 6  # t = 0, 5, … 25: bounded by expires_in
    assert raised.value.code == "expired_token"
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize(
    ("error", "code"),
    [("expired_token", "expired_token"), ("authorization_declined", "access_denied")],
)
def test_device_code_stops_on_final_errors(
    tmp_path: Path, http: httpx.Client, error: str, code: str
) -> None:
    clock = FakeClock()
    with respx.mock() as mock:
        mock.post(DEVICE_URL).mock(return_value=device_start())
        poll = mock.post(TOKEN_URL).respond(400, json={"error": error})
        with pytest.raises(CoreError) as raised:
            device_code_login(
                DEVICE_URL,
                TOKEN_URL,
                "app-id",
                SCOPE,
                tmp_path / "c.json",
                http,
                lambda _: None,
                sleep=clock.sleep,
                clock=clock,
            )
        assert poll.call_count == 1
    assert raised.value.code == code
