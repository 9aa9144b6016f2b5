"""Following next links safely, dropping a refused $select, inviting Microsoft, and a
Retry-After date read on the server's clock (respx)."""

from __future__ import annotations

import email.utils
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from dealcore_fakes import BASE, FakeClock, FakeTokens, sample_referral

from connector.dealcore.client import ReferralsClient
from connector.dealcore.options import CoreOptions, MicrosoftReferralRule
from connector.dealcore.paging import next_page_url
from connector.errors import CoreError
from connector.retry import RateGate, RetryPolicy

REFERRALS = f"{BASE}/referrals"
#: the host's own next-link path, as Microsoft publishes it (GL19, GL20)
PUBLISHED = "http://core.test/v1.0/referrals?$skiptoken=k181pEdP0ykypkieJfcxX%2fFUEbbvZ%2bqT%3d"


def make_client(
    http: httpx.Client, tokens: FakeTokens, clock: FakeClock | None = None, **kwargs: Any
) -> ReferralsClient:
    clock = clock or FakeClock()
    return ReferralsClient(
        BASE,
        tokens,
        http=http,
        correlation_id="corr-1",
        sleep=clock.sleep,
        gate=RateGate(clock=clock, sleep=clock.sleep),
        **kwargs,
    )


def page(items: list[dict[str, Any]], next_link: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {
        "@odata.context": "http://core.test/v1.0/$metadata#Referrals",
        "@odata.count": len(items),
        "value": items,
    }
    if next_link:
        body["@odata.nextLink"] = next_link
    return httpx.Response(200, json=body)


# ── next links ─────────────────────────────────────────────────────────────


def test_the_published_next_link_is_followed_over_https_with_path_and_token_intact(
    http: httpx.Client, tokens: FakeTokens
) -> None:
    """Before: refused as "another host" (http), so every listing stopped after page one."""
    with respx.mock() as mock:
        first = mock.get(REFERRALS).mock(return_value=page([sample_referral(id="a")], PUBLISHED))
        second = mock.get(url__startswith="https://core.test/v1.0/referrals").mock(
            return_value=page([sample_referral(id="b")])
        )
        ids = [r.id for r in make_client(http, tokens).list_changed(None)]
    assert ids == ["a", "b"]
    assert first.call_count == second.call_count == 1
    sent = second.calls[0].request
    assert sent.url.scheme == "https", "the bearer token never travels over http"
    assert sent.url.raw_path == httpx.URL(PUBLISHED).raw_path  # %2f %2b %3d kept as sent
    assert sent.headers["Authorization"] == "Bearer token-1"


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        (PUBLISHED, "https://core.test/v1.0/referrals?$skiptoken="),
        ("https://CORE.test/v1.0/engagements/referrals?$skiptoken=x", "https://core.test/"),
        ("/v1.0/referrals?$skiptoken=x", "https://core.test/v1.0/referrals?$skiptoken=x"),
        ("referrals?$skiptoken=x", "https://core.test/v1.0/engagements/referrals?$skiptoken=x"),
        ("http://core.test:80/v1.0/referrals?$skiptoken=x", "https://core.test/v1.0/referrals"),
    ],
)
def test_next_page_url_stays_on_the_configured_origin(link: str, expected: str) -> None:
    url = next_page_url(link, httpx.URL(f"{BASE}/"), "GET x")
    assert str(url).startswith(expected)
    assert (url.scheme, url.host, url.port) == ("https", "core.test", None)


@pytest.mark.parametrize(
    "link",
    [
        "https://evil.test/v1.0/referrals?$skiptoken=1",
        "http://core.test.evil.test/v1.0/referrals",
        "https://core.test:8443/v1.0/referrals?$skiptoken=1",
        "ftp://core.test/v1.0/referrals",
    ],
)
def test_next_links_off_the_configured_origin_are_refused(link: str) -> None:
    with pytest.raises(CoreError) as raised:
        next_page_url(link, httpx.URL(f"{BASE}/"), "GET x")
    assert raised.value.code == "foreign_next_link" and not raised.value.transient
    assert "skiptoken" not in raised.value.message


def test_a_sandbox_next_link_keeps_its_port() -> None:
    base = httpx.URL("https://127.0.0.1:8700/v1.0/engagements/")
    url = next_page_url("http://127.0.0.1:8700/v1.0/referrals?$skiptoken=1%2f", base, "GET x")
    assert str(url) == "https://127.0.0.1:8700/v1.0/referrals?$skiptoken=1%2f"


def test_a_listing_stops_at_the_page_cap(http: httpx.Client, tokens: FakeTokens) -> None:
    links = iter(f"{REFERRALS}?$skiptoken={i}" for i in range(100))
    with respx.mock() as mock:
        route = mock.get(url__startswith=REFERRALS).mock(
            side_effect=lambda request: page(
                [sample_referral(id=request.url.query.decode())], next(links)
            )
        )
        client = make_client(http, tokens, options=CoreOptions(max_pages=3))
        with pytest.raises(CoreError) as raised:
            list(client.list_changed(None))
    assert route.call_count == 3
    assert raised.value.code == "paging_cap" and "core.max_pages" in raised.value.message


# ── $select ────────────────────────────────────────────────────────────────


def test_a_refused_select_is_dropped_for_the_clients_lifetime(
    http: httpx.Client, tokens: FakeTokens
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if "$select" in request.url.params:
            return httpx.Response(400, json={"error": {"code": "invalidRequest", "message": "no"}})
        return page([sample_referral(id="a")])

    with respx.mock() as mock:
        route = mock.get(REFERRALS).mock(side_effect=answer)
        client = make_client(http, tokens)
        (first,) = client.list_changed(None, select=("id", "eTag"))
        (second,) = client.list_changed(None, select=("id", "eTag"))
    assert not first.partial and not second.partial and client.select_refused
    assert ["$select" in c.request.url.params for c in route.calls] == [True, False, False]


def test_other_refusals_of_a_listing_are_not_hidden(http: httpx.Client, tokens: FakeTokens) -> None:
    with respx.mock() as mock:
        mock.get(REFERRALS).respond(403, json={"error": {"code": "accessDenied"}})
        client = make_client(http, tokens)
        with pytest.raises(CoreError) as raised:
            list(client.list_changed(None, select=("id",)))
    assert raised.value.status == 403 and not client.select_refused


# ── Microsoft's referral ───────────────────────────────────────────────────


MICROSOFTS = {"organizationId": "72f988bf-0000", "organizationName": "Microsoft"}


def test_inviting_microsoft_looks_at_the_engagement_first(
    http: httpx.Client, tokens: FakeTokens
) -> None:
    with respx.mock(assert_all_called=False) as mock:
        listing = mock.get(REFERRALS).mock(
            return_value=page(
                [
                    sample_referral(id="ours", engagementId="e-1"),
                    sample_referral(id="ms", engagementId="e-1", **MICROSOFTS),
                ]
            )
        )
        post = mock.post(REFERRALS).respond(200, json=sample_referral(id="dup"))
        found = make_client(http, tokens).invite_microsoft("e-1", {"engagementId": "e-1"})
    assert found.id == "ms" and post.call_count == 0
    assert listing.calls[0].request.url.params["$filter"] == "engagementId eq 'e-1'"


def test_inviting_microsoft_posts_cr20s_second_referral_once(
    http: httpx.Client, tokens: FakeTokens
) -> None:
    body = {"engagementId": "e-1", "target": [{"type": "BusinessProfileLocation", "id": "msft"}]}
    with respx.mock() as mock:
        listing = mock.get(REFERRALS).mock(
            side_effect=[page([sample_referral(id="ours", engagementId="e-1")]), page([])]
        )
        post = mock.post(REFERRALS).mock(
            side_effect=[
                httpx.Response(504),  # the outcome is unknown: look again before posting
                httpx.Response(200, json=sample_referral(id="ms", **body)),
            ]
        )
        created = make_client(
            http, tokens, retry_policy=RetryPolicy(attempts=3, initial_wait=0.0, jitter=0.0)
        ).invite_microsoft("e-1", body)
    assert created.id == "ms"
    assert listing.call_count == 2 and post.call_count == 2
    assert json.loads(post.calls[0].request.content) == body


def test_microsofts_referral_is_recognised_by_the_configured_rule(
    http: httpx.Client, tokens: FakeTokens
) -> None:
    by_target = sample_referral(
        id="t", engagementId="e", target=[{"type": "BusinessProfileLocation", "id": "MSFT"}]
    )
    by_id = sample_referral(id="i", engagementId="e", organizationId="msft")
    by_name = sample_referral(id="n", engagementId="e", organizationName="microsoft ")
    ours = sample_referral(
        id="o", engagementId="e", inviteContext={"invitedBy": {"organizationId": "msft"}}
    )
    default = MicrosoftReferralRule()
    assert [default.matches(r) for r in (by_target, by_id, by_name, ours)] == [
        True,
        True,
        True,
        False,  # an incoming deal Microsoft sent is the partner's own referral
    ]
    names_only = MicrosoftReferralRule.of(
        target_msft=False, organization_ids=[], organization_names=["Microsoft"]
    )
    assert [names_only.matches(r) for r in (by_target, by_id, by_name)] == [False, False, True]


# ── Retry-After as a date ──────────────────────────────────────────────────


def test_a_retry_after_date_counts_from_the_servers_date_header(
    http: httpx.Client, tokens: FakeTokens
) -> None:
    """A server whose clock runs a day ahead: a date Retry-After read on this host's
    clock would mean a day's wait."""
    server_now = datetime.now(UTC) + timedelta(days=1)
    headers = {
        "Date": email.utils.format_datetime(server_now, usegmt=True),
        "Retry-After": email.utils.format_datetime(server_now + timedelta(seconds=3), usegmt=True),
    }
    clock = FakeClock()
    with respx.mock() as mock:
        mock.get(f"{REFERRALS}/r-1").mock(
            side_effect=[
                httpx.Response(
                    503, headers=headers, json={"error": {"code": "serviceNotAvailable"}}
                ),
                httpx.Response(200, json=sample_referral(id="r-1")),
            ]
        )
        client = make_client(http, tokens, clock, retry_policy=RetryPolicy(jitter=0.0))
        assert client.get("r-1").id == "r-1"
    assert clock.sleeps and 2.0 <= max(clock.sleeps) <= 4.0
