"""Which URLs may carry a secret or a token: https only, named hosts, no credentials."""

from __future__ import annotations

import ssl

import pytest

from connector.certificates import host_mismatch, tls_url_problem, untrusted_message
from connector.crm.salesforce.auth import check_instance_url
from connector.errors import ConfigError
from connector.settings import CoreSettings, DataverseSettings, SalesforceSettings


@pytest.mark.parametrize(
    "url",
    ["https://login.salesforce.com", "https://127.0.0.1:8700/tenant/oauth2/v2.0/token"],
)
def test_https_urls_are_accepted(url: str) -> None:
    assert tls_url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://127.0.0.1:8700", "http:// is refused"),
        ("http://login.salesforce.com", "http:// is refused"),
        ("file:///etc/passwd", "file:// is refused"),
        ("ftp://host/x", "ftp:// is refused"),
        ("login.salesforce.com", "a URL without a scheme"),
        ("https://", "names no host"),
        ("https://admin:hunter2@host.example", "user name or password"),
    ],
)
def test_other_urls_are_refused_without_repeating_them(url: str, said: str) -> None:
    problem = tls_url_problem(url)
    assert problem is not None and said in problem
    assert "hunter2" not in problem and "/etc/passwd" not in problem


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        (SalesforceSettings, {"login_url": "http://x.example"}, "login_url"),
        (SalesforceSettings, {"instance_url": "http://x.example"}, "instance_url"),
        (SalesforceSettings, {"allowed_instance_origin": "http://x"}, "allowed_instance_origin"),
        (
            DataverseSettings,
            {
                "environment_url": "http://x",
                "tenant": "t",
                "client_id": "c",
                "client_secret": {"env": "X"},
            },
            "environment_url",
        ),
        (
            DataverseSettings,
            {
                "environment_url": "https://x",
                "authority": "http://x",
                "tenant": "t",
                "client_id": "c",
                "client_secret": {"env": "X"},
            },
            "authority",
        ),
        (CoreSettings, {"client_id": "c", "token_url": "http://x"}, "token_url"),
        (CoreSettings, {"client_id": "c", "base_url": "http://x"}, "base_url"),
        (CoreSettings, {"client_id": "c", "devicecode_url": "http://x"}, "devicecode_url"),
    ],
)
def test_settings_refuse_plain_http_for_every_endpoint(
    model: type[SalesforceSettings | DataverseSettings | CoreSettings],
    data: dict[str, object],
    field: str,
) -> None:
    with pytest.raises(ValueError, match="http:// is refused") as caught:
        model.model_validate(data)
    assert field in str(caught.value)


def test_a_server_given_instance_url_must_be_https_even_for_the_allowed_origin() -> None:
    with pytest.raises(ConfigError):
        check_instance_url("http://127.0.0.1:8700", "http://127.0.0.1:8700")
    assert check_instance_url("https://127.0.0.1:8700/x", "https://127.0.0.1:8700")


def test_a_certificate_for_another_host_has_its_own_message() -> None:
    mismatch = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch"
    )
    mismatch.verify_code = 62
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed: unable to get issuer")
    untrusted.verify_code = 20
    wrapped = ConnectionError("connect failed")
    wrapped.__cause__ = mismatch
    assert host_mismatch(wrapped) and not host_mismatch(untrusted)
    assert "another host name" in untrusted_message("core", "core.ca_file", wrapped)
    assert "core.ca_file" in untrusted_message("core", "core.ca_file", untrusted)
