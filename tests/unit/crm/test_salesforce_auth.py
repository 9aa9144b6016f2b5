"""Signing in to Salesforce: both grants, the instance URL check, re-authentication."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr
from responses import matchers
from salesforce_fakes import (
    FAST_RETRY,
    INSTANCE,
    LOGIN,
    QUERY_ALL,
    SECRET,
    TOKEN_URL,
    client_credentials_adapter,
    existing_token_adapter,
    page,
    sf_error,
    token_answer,
)

from connector.crm.factory import build_salesforce
from connector.crm.salesforce.adapter import SalesforceOpportunities
from connector.crm.salesforce.auth import (
    ALLOWED_ORIGIN_SETTING,
    ClientCredentials,
    JwtBearer,
    SalesforceAuth,
    check_instance_url,
)
from connector.crm.salesforce.sessions import SessionCache
from connector.errors import ConfigError, CrmError
from connector.settings import SalesforceSettings


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def test_client_credentials_posts_the_grant_and_uses_the_named_instance(
    rsps: responses.RequestsMock,
) -> None:
    rsps.post(
        TOKEN_URL,
        json=token_answer("tok-cc"),
        match=[
            matchers.urlencoded_params_matcher(
                {
                    "grant_type": "client_credentials",
                    "client_id": "the-client",
                    "client_secret": SECRET,
                }
            )
        ],
    )
    rsps.get(QUERY_ALL, json=page([]))
    adapter = client_credentials_adapter()
    pages = list(adapter.pull_changes(None, fields=["Name"], select=None))
    assert [p.records for p in pages] == [[]]
    query = [c for c in rsps.calls if "/queryAll/" in c.request.url]
    assert query and query[0].request.headers["Authorization"] == "Bearer tok-cc"
    assert adapter.usage.by_kind["token"] == 1


def test_jwt_bearer_signs_the_assertion_with_the_private_key(
    rsps: responses.RequestsMock, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "server.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    rsps.post(TOKEN_URL, json=token_answer("tok-jwt"))
    auth = SalesforceAuth(
        JwtBearer(LOGIN, "consumer-key", "integration@acme.example", key_file),
        clock=lambda: 1_777_600_000.0,
    )
    sf = auth.login()
    assert sf.session_id == "tok-jwt"
    form = dict(pair.split("=", 1) for pair in str(rsps.calls[0].request.body).split("&"))
    assert form["grant_type"] == "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
    claims = jwt.decode(
        form["assertion"],
        key.public_key(),
        algorithms=["RS256"],
        audience=LOGIN,
        options={"verify_exp": False},
    )
    assert claims == {
        "iss": "consumer-key",
        "sub": "integration@acme.example",
        "aud": LOGIN,
        "exp": 1_777_600_180,
    }


def test_jwt_bearer_with_an_unreadable_key_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    auth = SalesforceAuth(JwtBearer(LOGIN, "ck", "u@x", bad))
    with pytest.raises(ConfigError, match=r"not-a-key\.pem"):
        auth.login()
    with pytest.raises(ConfigError, match="cannot read"):
        SalesforceAuth(JwtBearer(LOGIN, "ck", "u@x", tmp_path / "missing.pem")).login()


@pytest.mark.parametrize(
    "url",
    [
        "https://acme.my.salesforce.com",
        "https://na139.salesforce.com/",
        "https://acme--uat.sandbox.my.salesforce.com",
        "https://acme.lightning.force.com",
        "HTTPS://ACME.MY.SALESFORCE.COM",
    ],
)
def test_salesforce_instance_hosts_are_accepted(url: str) -> None:
    assert check_instance_url(url, None).startswith("https://")


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com",
        "http://acme.my.salesforce.com",
        "https://salesforce.com.evil.example",
        "https://evilsalesforce.com",
        "https://127.0.0.1:8700",
        "https://127.0.0.1:8701",
        "ftp://acme.my.salesforce.com",
    ],
)
def test_other_instance_hosts_are_refused_naming_the_setting(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_instance_url(url, "https://127.0.0.1:8799")
    assert ALLOWED_ORIGIN_SETTING in str(caught.value)


def test_the_one_allowed_origin_is_accepted_exactly() -> None:
    assert check_instance_url("https://127.0.0.1:8700", "https://127.0.0.1:8700/") == (
        "https://127.0.0.1:8700"
    )
    with pytest.raises(ConfigError):
        check_instance_url("http://127.0.0.1:8700", "https://127.0.0.1:8700")


def test_a_token_answer_naming_a_foreign_instance_is_refused_before_any_use(
    rsps: responses.RequestsMock,
) -> None:
    rsps.post(TOKEN_URL, json=token_answer("tok-x", "https://attacker.example.net"))
    adapter = client_credentials_adapter()
    with pytest.raises(ConfigError, match=r"attacker\.example\.net") as caught:
        list(adapter.pull_changes(None, fields=[], select=None))
    assert "tok-x" not in str(caught.value)
    assert len(rsps.calls) == 1  # the token never travelled to the foreign host


def test_a_refused_sign_in_is_permanent_and_keeps_the_secret_out(
    rsps: responses.RequestsMock,
) -> None:
    rsps.post(
        TOKEN_URL,
        status=400,
        json={"error": "invalid_client", "error_description": "invalid client credentials"},
    )
    auth = SalesforceAuth(ClientCredentials(LOGIN, "the-client", SecretStr(SECRET)))
    with pytest.raises(CrmError) as caught:
        auth.login()
    assert caught.value.code == "invalid_client"
    assert not caught.value.transient
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(auth.grant)


def test_an_unavailable_login_host_is_transient(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, status=503, body="maintenance")
    auth = SalesforceAuth(ClientCredentials(LOGIN, "c", SecretStr(SECRET)))
    with pytest.raises(CrmError) as caught:
        auth.login()
    assert caught.value.transient


def test_an_expired_session_signs_in_again_once_and_retries(
    rsps: responses.RequestsMock,
) -> None:
    rsps.post(TOKEN_URL, json=token_answer("tok-1"))
    rsps.post(TOKEN_URL, json=token_answer("tok-2"))
    rsps.get(QUERY_ALL, status=401, json=sf_error("INVALID_SESSION_ID", "Session expired"))
    rsps.get(QUERY_ALL, json=page([]))
    adapter = client_credentials_adapter()
    pages = list(adapter.pull_changes(None, fields=[], select=None))
    assert len(pages) == 1
    auths = [c.request.headers.get("Authorization") for c in rsps.calls]
    assert auths == [None, "Bearer tok-1", None, "Bearer tok-2"]
    assert adapter.usage.by_kind == {"token": 2, "query": 2}


def test_a_second_expiry_in_a_row_is_an_error_not_a_loop(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, json=token_answer("tok-1"))
    rsps.get(QUERY_ALL, status=401, json=sf_error("INVALID_SESSION_ID", "Session expired"))
    adapter = client_credentials_adapter()
    with pytest.raises(CrmError) as caught:
        list(adapter.pull_changes(None, fields=[], select=None))
    assert caught.value.code == "INVALID_SESSION_ID"
    assert not caught.value.transient
    assert len(rsps.calls) == 4  # token, query, token, query


def test_an_existing_token_cannot_be_renewed(rsps: responses.RequestsMock) -> None:
    rsps.get(QUERY_ALL, status=401, json=sf_error("INVALID_SESSION_ID", "Session expired"))
    adapter = existing_token_adapter()
    with pytest.raises(CrmError, match="new token") as caught:
        list(adapter.pull_changes(None, fields=[], select=None))
    assert "tok-existing" not in str(caught.value)
    assert len(rsps.calls) == 1


def test_the_session_trusts_the_given_ca_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    auth = SalesforceAuth(
        ClientCredentials("https://127.0.0.1:8700", "sandbox", SecretStr("sandbox")),
        ca_file=ca,
        allowed_origin="https://127.0.0.1:8700",
    )
    assert auth.session.verify == str(ca)
    assert SalesforceAuth(ClientCredentials(LOGIN, "c", SecretStr("s"))).session.verify is True


def test_adapter_is_a_crm_adapter() -> None:
    from connector.crm.base import CrmAdapter

    adapter: CrmAdapter = existing_token_adapter()
    assert isinstance(adapter, SalesforceOpportunities)
    assert adapter.system == "salesforce"
    assert INSTANCE.startswith("https://")


def test_a_sign_in_during_a_pull_does_not_date_the_query(
    rsps: responses.RequestsMock,
) -> None:
    later = {"Date": "Fri, 01 May 2026 12:30:00 GMT"}
    rsps.post(TOKEN_URL, json=token_answer("tok-1"), headers=later)
    rsps.post(TOKEN_URL, json=token_answer("tok-2"), headers=later)
    rsps.get(
        QUERY_ALL,
        status=401,
        json=sf_error("INVALID_SESSION_ID", "Session expired"),
        headers={"Date": "Fri, 01 May 2026 12:20:00 GMT"},
    )
    rsps.get(QUERY_ALL, json=page([]), headers={"Date": "Fri, 01 May 2026 12:10:00 GMT"})
    adapter = client_credentials_adapter(server_margin_s=5)
    pages = list(adapter.pull_changes("2026-05-01T12:00:00.000Z", fields=[], select=None))
    assert [p.cursor for p in pages] == ["2026-05-01T12:00:00.000Z", "2026-05-01T12:09:55.000Z"]
    assert adapter.usage.by_kind == {"token": 2, "query": 2}


@pytest.mark.parametrize(
    ("login_url", "setting", "audience"),
    [
        ("https://acme.my.salesforce.com", None, "https://login.salesforce.com"),
        ("https://login.salesforce.com", None, "https://login.salesforce.com"),
        ("https://acme--uat.sandbox.my.salesforce.com", None, "https://test.salesforce.com"),
        ("https://test.salesforce.com", None, "https://test.salesforce.com"),
        ("https://acme.my.salesforce.com", "https://acme.my.site.com/partners", None),
    ],
)
def test_the_jwt_audience_is_its_own_setting_not_the_my_domain(
    rsps: responses.RequestsMock,
    tmp_path: Path,
    login_url: str,
    setting: str | None,
    audience: str | None,
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "server.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    rsps.post(f"{login_url}/services/oauth2/token", json=token_answer("tok-jwt"))
    grant = JwtBearer(login_url, "consumer-key", "u@acme.example", key_file, audience=setting)
    SalesforceAuth(grant, clock=lambda: 1_777_600_000.0).login()
    form = dict(pair.split("=", 1) for pair in str(rsps.calls[0].request.body).split("&"))
    claims = jwt.decode(form["assertion"], options={"verify_signature": False})
    assert claims["aud"] == (audience or setting)
    assert rsps.calls[0].request.url == f"{login_url}/services/oauth2/token"


def test_the_factory_passes_the_audience_setting_and_checks_its_form(tmp_path: Path) -> None:
    key_file = tmp_path / "k.pem"
    key_file.write_text("x")
    crm = SalesforceSettings(
        login_url="https://acme.my.salesforce.com",
        auth="jwt_bearer",
        client_id="ck",
        username="u@acme.example",
        private_key_file=key_file,
        jwt_audience="https://test.salesforce.com",
    )
    adapter = build_salesforce(crm, "connections[acme]", None)
    try:
        grant = adapter.auth.grant  # type: ignore[attr-defined]
        assert isinstance(grant, JwtBearer) and grant.audience == "https://test.salesforce.com"
    finally:
        adapter.close()
    with pytest.raises(ValueError, match="jwt_audience"):
        SalesforceSettings(jwt_audience="login.salesforce.com")


def cached_adapter(sessions: SessionCache, connection: str = "connections[c]") -> Any:
    grant = ClientCredentials(LOGIN, "the-client", SecretStr(SECRET))
    auth = SalesforceAuth(grant, sessions=sessions, connection=connection)
    return SalesforceOpportunities(auth, retry=FAST_RETRY, sleep=lambda seconds: None)


def test_cycles_sharing_the_daemons_sessions_sign_in_once(
    rsps: responses.RequestsMock,
) -> None:
    """Each cycle builds its adapter afresh; the second starts with the first's session."""
    token = rsps.post(TOKEN_URL, json=token_answer("tok-1"))
    rsps.get(QUERY_ALL, json=page([]))
    sessions = SessionCache()
    first, second = cached_adapter(sessions), cached_adapter(sessions)
    for adapter in (first, second):
        assert len(list(adapter.pull_changes(None, fields=[], select=None))) == 1
        adapter.close()
    assert token.call_count == 1
    auths = [c.request.headers.get("Authorization") for c in rsps.calls]
    assert auths == [None, "Bearer tok-1", "Bearer tok-1"]
    assert first.usage.by_kind == {"token": 1, "query": 1}
    assert second.usage.by_kind == {"query": 1}  # no sign-in counted among its calls
    assert "tok-1" not in repr(sessions)


def test_a_kept_session_that_expired_signs_in_again_and_the_new_one_is_kept(
    rsps: responses.RequestsMock,
) -> None:
    rsps.post(TOKEN_URL, json=token_answer("tok-1"))
    rsps.post(TOKEN_URL, json=token_answer("tok-2"))
    rsps.get(QUERY_ALL, json=page([]))
    rsps.get(QUERY_ALL, status=401, json=sf_error("INVALID_SESSION_ID", "Session expired"))
    rsps.get(QUERY_ALL, json=page([]))
    rsps.get(QUERY_ALL, json=page([]))
    sessions = SessionCache()
    for _ in range(3):
        adapter = cached_adapter(sessions)
        assert len(list(adapter.pull_changes(None, fields=[], select=None))) == 1
        adapter.close()
    auths = [c.request.headers.get("Authorization") for c in rsps.calls]
    # cycle 1 signs in; cycle 2 meets the expiry with the kept session, signs in again
    # and succeeds; cycle 3 starts with the renewed session
    assert auths == [None, "Bearer tok-1", "Bearer tok-1", None, "Bearer tok-2", "Bearer tok-2"]
    assert adapter.usage.by_kind == {"query": 1}


def test_sessions_are_kept_per_connection_and_per_sign_in(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, json=token_answer("tok-1"))
    rsps.post(TOKEN_URL, json=token_answer("tok-2"))
    rsps.post(TOKEN_URL, json=token_answer("tok-3"))
    rsps.get(QUERY_ALL, json=page([]))
    sessions = SessionCache()
    one, other = cached_adapter(sessions, "connections[a]"), cached_adapter(sessions, "b")
    grant = ClientCredentials(LOGIN, "another-client", SecretStr(SECRET))
    renamed = SalesforceOpportunities(
        SalesforceAuth(grant, sessions=sessions, connection="connections[a]"),
        retry=FAST_RETRY,
        sleep=lambda seconds: None,
    )
    for adapter in (one, other, renamed):
        list(adapter.pull_changes(None, fields=[], select=None))
    auths = [c.request.headers.get("Authorization") for c in rsps.calls]
    assert auths == [None, "Bearer tok-1", None, "Bearer tok-2", None, "Bearer tok-3"]
    assert len(sessions) == 3


def test_without_the_daemons_sessions_every_adapter_signs_in(
    rsps: responses.RequestsMock,
) -> None:
    """A one-shot run (``connector sync --once``) keeps nothing: it signs in as before."""
    token = rsps.post(TOKEN_URL, json=token_answer("tok-1"))
    rsps.get(QUERY_ALL, json=page([]))
    for _ in range(2):
        adapter = client_credentials_adapter()
        list(adapter.pull_changes(None, fields=[], select=None))
        assert adapter.usage.by_kind == {"token": 1, "query": 1}
    assert token.call_count == 2
