"""The deal-core client against the sandbox's referrals API, over real HTTPS.

Skipped while the sandbox's Partner Center part is not in the build.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from connector.dealcore import (
    ClientCredentialsTokens,
    RateGate,
    ReferralsClient,
    RefreshTokenTokens,
    RetryPolicy,
    device_code_login,
    patch_ops,
    referral_body,
    status_ops,
)
from connector.errors import CoreError, NotFound, PreconditionFailed
from connector.model import (
    Contact,
    Customer,
    DealDraft,
    DealType,
    StandardStage,
    Status,
    Substatus,
)

pytest.importorskip("sandbox.partner_center.part")

from sandbox.harness import SandboxServer

SCOPE = "https://api.partner.microsoft.com/.default"
TENANT = "sandbox-tenant"


def draft(crm_id: str, **overrides: object) -> DealDraft:
    values: dict[str, object] = {
        "crm_id": crm_id,
        "name": f"Contoso – {crm_id}",
        "value": Decimal("50000.00"),
        "currency": "USD",
        "close_date": date.today() + timedelta(days=90),
        "customer": Customer(
            name="Contoso Customer Inc",
            country="US",
            city="Redmond",
            contacts=(Contact("Sue", "Smith", "+1 425 555 0100", "sue@contoso.com"),),
        ),
        "team": (Contact("John", "Doe", "+1 425 555 0199", "john@partner.example"),),
        "solutions": ("SOL-34104-EBB",),
        "stage": StandardStage.CREATED,
        "deal_type": DealType.CO_SELL,
        "assistance_code": "ProofOfConceptOrDemo",
        "notes": "Need a POC",
    }
    values.update(overrides)
    return DealDraft(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(opportunities=0) as sb:
        yield sb


@pytest.fixture
def http(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(sandbox.ca_file))
    with httpx.Client(verify=context, timeout=10) as client:
        yield client


@pytest.fixture
def client(sandbox: SandboxServer, http: httpx.Client) -> ReferralsClient:
    tokens = ClientCredentialsTokens(
        f"{sandbox.url}/{TENANT}/oauth2/v2.0/token", "sandbox", SecretStr("sandbox"), SCOPE, http
    )
    return ReferralsClient(
        f"{sandbox.url}/v1.0/engagements",
        tokens,
        http=http,
        correlation_id=str(uuid.uuid4()),
    )


def test_create_find_get_patch_close(client: ReferralsClient) -> None:
    crm_id = f"006-{uuid.uuid4().hex[:10]}'x"
    assert client.find_created(crm_id, None) is None
    first = draft(crm_id)
    created = client.create(referral_body(first))
    assert created.status == Status.ACTIVE and created.substatus == Substatus.ACCEPTED
    assert created.external_reference_id == crm_id and created.etag
    assert created.deal_type == DealType.CO_SELL

    # the sandbox's clock is the core's: the bound is taken on it
    found = client.find_created(crm_id, client.core_time(datetime.now(UTC)) - timedelta(minutes=1))
    assert found is not None and found.id == created.id
    assert client.get(created.id).etag == created.etag

    later = draft(crm_id, stage=StandardStage.DEVELOPED, value=Decimal("75000.50"))
    ops = patch_ops(referral_body(first), referral_body(later))
    assert {op["path"] for op in ops} == {"/salesStage", "/details/dealValue"}
    patched = client.patch(created.id, ops, created.etag)
    assert patched.sales_stage == 40 and patched.etag != created.etag
    assert patch_ops(dict(patched.raw), referral_body(later)) == []

    with pytest.raises(PreconditionFailed):
        client.patch(created.id, ops, created.etag)  # stale eTag

    closed = client.patch(created.id, status_ops(Status.CLOSED, Substatus.WON), patched.etag)
    assert closed.is_terminal
    with pytest.raises(CoreError) as raised:
        client.patch(created.id, ops, closed.etag)
    # a documented top-level code, no invented inner one: terminal is read from the referral
    assert not raised.value.transient and raised.value.status == 400
    assert raised.value.code == "invalidRequest"
    assert client.get(created.id).is_terminal


def test_a_won_deal_is_created_won_in_one_write(
    client: ReferralsClient, sandbox: SandboxServer
) -> None:
    sandbox.ctx.stats.reset()
    body = referral_body(draft(f"w-{uuid.uuid4().hex[:8]}", stage=StandardStage.WON))
    created = client.create(body)
    assert (created.status, created.substatus, created.sales_stage) == (
        Status.CLOSED,
        Substatus.WON,
        100,
    )
    assert sandbox.ctx.stats.as_json()["calls"]["core"] == {"POST": 1}


def test_a_refused_select_is_dropped_for_good(
    client: ReferralsClient, sandbox: SandboxServer
) -> None:
    client.create(referral_body(draft(f"s-{uuid.uuid4().hex[:8]}")))
    core = sandbox.app.state.parts["core"]
    core.store.behaviour.refuse_select = True
    try:
        listed = list(client.list_changed(None, select=("id", "eTag", "status")))
        again = list(client.list_changed(None, select=("id", "eTag", "status")))
    finally:
        core.store.behaviour.refuse_select = False
    assert listed and not any(r.partial for r in listed) and "details" in listed[0].raw
    assert client.select_refused and not any(r.partial for r in again)


def test_private_deal_and_engagement(client: ReferralsClient) -> None:
    created = client.create(
        referral_body(draft(f"p-{uuid.uuid4().hex[:8]}", deal_type=DealType.PRIVATE))
    )
    assert created.deal_type == DealType.PRIVATE
    assert created.engagement_id is not None
    assert created.id in [r.id for r in client.list_engagement(created.engagement_id)]


def test_get_unknown_is_not_found(client: ReferralsClient) -> None:
    with pytest.raises(NotFound):
        client.get(str(uuid.uuid4()))


def test_list_changed_pages_through_everything(client: ReferralsClient) -> None:
    marker = uuid.uuid4().hex[:6]
    for i in range(130):  # more than one page of 100
        client.create(referral_body(draft(f"bulk-{marker}-{i}")))
    listed = list(client.list_changed(None))
    assert len({r.id for r in listed}) == len(listed)
    ours = {r.external_reference_id for r in listed if r.external_reference_id}
    assert {f"bulk-{marker}-{i}" for i in range(130)} <= ours
    stamps = [r.updated for r in listed]
    assert all(s is not None for s in stamps)
    assert stamps == sorted(stamps)  # type: ignore[type-var]
    since = stamps[-1]
    assert since is not None
    tail = list(client.list_changed(since))
    # The bound is floored to the second (closed, so ties come back and are deduped later).
    floor = since.replace(microsecond=0)
    assert tail and all(r.updated is not None and r.updated >= floor for r in tail)
    assert listed[-1].id in {r.id for r in tail}


def test_device_code_then_refresh_tokens(
    sandbox: SandboxServer, http: httpx.Client, tmp_path: Path
) -> None:
    cache = tmp_path / "core-token.json"
    shown: list[str] = []
    login = f"{sandbox.url}/{TENANT}/oauth2/v2.0"
    device_code_login(
        f"{login}/devicecode", f"{login}/token", "sandbox", SCOPE, cache, http, shown.append
    )
    assert shown and cache.stat().st_mode & 0o777 == 0o600
    tokens = RefreshTokenTokens(f"{login}/token", "sandbox", SCOPE, cache, http)
    client = ReferralsClient(
        f"{sandbox.url}/v1.0/engagements", tokens, http=http, correlation_id="c"
    )
    assert client.find_created("nobody", None) is None
    tokens.invalidate()  # the rotated refresh token from the cache file still works
    assert client.find_created("nobody", None) is None


@pytest.mark.parametrize("form", ["seconds", "http_date"])
def test_a_503_with_retry_after_waits_as_the_server_says(
    sandbox: SandboxServer, http: httpx.Client, form: str
) -> None:
    """503 + Retry-After as seconds or as an HTTP date (on the server's clock, which the
    sandbox moved by a day: the wait counts from the answer's Date, not this host's)."""
    tokens = ClientCredentialsTokens(
        f"{sandbox.url}/{TENANT}/oauth2/v2.0/token", "sandbox", SecretStr("sandbox"), SCOPE, http
    )
    waits: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:  # a fake clock: the test does not wait
        waits.append(seconds)
        now[0] += seconds

    client = ReferralsClient(
        f"{sandbox.url}/v1.0/engagements",
        tokens,
        http=http,
        correlation_id="c",
        retry_policy=RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05, jitter=0.0),
        sleep=sleep,
        gate=RateGate(clock=lambda: now[0], sleep=sleep),
    )
    created = client.create(referral_body(draft(f"r-{uuid.uuid4().hex[:8]}")))
    faults = sandbox.ctx.faults["core"]
    sandbox.ctx.clock.advance(timedelta(days=1))
    faults.rate_503, faults.retry_after_s = 1.0, 2.0
    faults.retry_after_on_503, faults.retry_after_format = True, form
    try:
        with pytest.raises(CoreError) as raised:
            client.get(created.id)
    finally:
        faults.rate_503, faults.retry_after_on_503, faults.retry_after_format = (
            0.0,
            False,
            "seconds",
        )
    assert raised.value.status == 503 and raised.value.retry_after is not None
    assert 1.0 <= raised.value.retry_after <= 4.0
    assert waits and all(1.0 <= w <= 4.0 for w in waits)


def test_faults_are_survived_and_retry_after_is_honoured(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    tokens = ClientCredentialsTokens(
        f"{sandbox.url}/{TENANT}/oauth2/v2.0/token", "sandbox", SecretStr("sandbox"), SCOPE, http
    )
    fast = RetryPolicy(attempts=8, initial_wait=0.01, max_wait=0.05, jitter=0.01)
    client = ReferralsClient(
        f"{sandbox.url}/v1.0/engagements", tokens, http=http, correlation_id="c", retry_policy=fast
    )
    created = client.create(referral_body(draft(f"f-{uuid.uuid4().hex[:8]}")))
    faults = sandbox.ctx.faults["core"]
    sandbox.ctx.stats.reset()
    faults.rate_429, faults.retry_after_s = 0.1, 1.0
    faults.rate_500, faults.rate_503, faults.rate_reset = 0.15, 0.1, 0.1
    faults.rate_token_expiry = 0.05
    try:
        for _ in range(20):
            assert client.get(created.id).id == created.id
    finally:
        faults.rate_429 = faults.rate_500 = faults.rate_503 = 0.0
        faults.rate_reset = faults.rate_token_expiry = 0.0
    stats = sandbox.ctx.stats.as_json()
    assert sum(stats["faults"].get("core", {}).values()) > 0  # the faults did happen
    assert stats["early_retries"] == 0
