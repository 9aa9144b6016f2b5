"""The redaction registry: every form of a registered value is masked, nothing else."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from urllib.parse import quote, quote_plus, urlencode

import pytest

from connector import redaction
from connector.errors import CoreError
from connector.redaction import MASK, SecretRegistry
from connector.settings import ConfigFile, Settings, state_url
from connector.sync.report import RunReport

SECRET = 'Zq9+/x=&%"\\é-secret-value'


@pytest.fixture
def registry() -> SecretRegistry:
    reg = SecretRegistry(max_tokens=3)
    reg.add_secret(SECRET)
    return reg


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        quote(SECRET, safe=""),
        quote(SECRET),
        quote_plus(SECRET),
        re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), quote_plus(SECRET)),
        json.dumps(SECRET)[1:-1],
        json.dumps(SECRET, ensure_ascii=False)[1:-1],
    ],
    ids=["raw", "quote", "quote-path", "quote_plus", "lower-hex", "json", "json-utf8"],
)
def test_every_textual_form_is_masked(registry: SecretRegistry, form: str) -> None:
    text = f"the server said: {form} (twice: {form})"
    scrubbed = registry.scrub(text)
    assert form not in scrubbed
    assert scrubbed.count(MASK) >= 2


@pytest.mark.parametrize("prefix", ["", "a", "ab", "client:", "client-x:"])
def test_base64_is_masked_wherever_the_value_starts(registry: SecretRegistry, prefix: str) -> None:
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        blob = encode(f"{prefix}{SECRET}".encode()).decode()
        scrubbed = registry.scrub(f"Authorization: Basic {blob}")
        assert MASK in scrubbed
        # at most two characters on each side of the value survive: not enough to decode it
        left, _, right = scrubbed.removeprefix("Authorization: Basic ").partition(MASK)
        assert len(left) <= len(base64.b64encode(prefix.encode())) and len(right) <= 4


def test_a_form_body_with_the_secret_is_masked(registry: SecretRegistry) -> None:
    body = urlencode({"grant_type": "client_credentials", "client_secret": SECRET})
    assert registry.scrub(body) == "grant_type=client_credentials&client_secret=" + MASK


def test_ordinary_text_and_public_values_are_left_alone() -> None:
    reg = SecretRegistry()
    reg.add_secret("sandbox")  # the sandbox's public fake secret
    reg.add_secret("abc")  # too short to be told apart from ordinary text
    text = "sandbox-salesforce: abc, 42 records"
    assert reg.scrub(text) == text
    assert not reg


def test_only_the_newest_tokens_are_kept(registry: SecretRegistry) -> None:
    tokens = [f"token-number-{n}-abcdefgh" for n in range(5)]
    for token in tokens:
        registry.add_token(token)
    scrubbed = registry.scrub(" ".join([SECRET, *tokens]))
    # configured secrets are always kept; of the tokens, the three newest (long expired
    # tokens are forgotten, so a long-running daemon does not scrub an ever longer list)
    assert scrubbed.split() == [MASK, tokens[0], tokens[1], MASK, MASK, MASK]


@pytest.fixture
def process_registry() -> Iterator[None]:
    redaction.REGISTRY.clear()
    try:
        yield
    finally:
        redaction.REGISTRY.clear()


@pytest.mark.usefixtures("process_registry")
def test_errors_and_reports_are_scrubbed_as_they_are_built() -> None:
    redaction.register_token("issued-token-123456789")
    error = CoreError("denied: Bearer issued-token-123456789", code="issued-token-123456789")
    assert "issued-token" not in error.message and "issued-token" not in error.code
    report = RunReport("c", error="sign-in failed: issued-token-123456789")
    report.failed["code issued-token-123456789"] += 1
    assert "issued-token" not in (report.error or "")
    assert "issued-token" not in json.dumps(report.as_json())
    assert "issued-token" not in json.dumps(report.log_fields())


@pytest.mark.usefixtures("process_registry")
def test_the_state_store_password_is_a_secret_too() -> None:
    url = "postgresql+psycopg://sync:pa%2Fss-w0rd@db.example/connector"
    config = ConfigFile.model_construct(state_url=url, connections=[])
    assert state_url(Settings(), config) == url
    assert redaction.scrub("could not connect with pa/ss-w0rd (pa%2Fss-w0rd)") == (
        f"could not connect with {MASK} ({MASK})"
    )
