"""Idempotent create without the undocumented filter: the newest referrals, matched here.

``externalReferenceId`` is not a documented ``$filter`` field (deal-core-api.md,
"Listing and paging"): the client lists ``$orderby=updatedDateTime desc``, stops at the
bound on its own, and matches ``externalReferenceId`` itself.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from dealcore_fakes import BASE, FakeClock, FakeTokens, sample_referral

from connector.dealcore.client import ReferralsClient
from connector.dealcore.retry import RateGate
from connector.errors import CoreError

REFERRALS = f"{BASE}/referrals"


def make_client(http: httpx.Client, tokens: FakeTokens, **kwargs: Any) -> ReferralsClient:
    clock = FakeClock()
    return ReferralsClient(
        BASE,
        tokens,
        http=http,
        correlation_id="corr-1",
        sleep=clock.sleep,
        gate=RateGate(clock=clock, sleep=clock.sleep),
        **kwargs,
    )


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def referral(rid: str, crm_id: str | None, updated: datetime) -> dict[str, Any]:
    return sample_referral(id=rid, externalReferenceId=crm_id, updatedDateTime=stamp(updated))


def page(
    items: list[dict[str, Any]], next_link: str | None = None, date: datetime | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"@odata.context": "ctx", "value": items}
    if next_link:
        body["@odata.nextLink"] = next_link
    headers = {"Date": email.utils.format_datetime(date, usegmt=True)} if date else {}
    return httpx.Response(200, json=body, headers=headers)


@pytest.fixture
def now() -> datetime:
    """This test's present (the client compares listed stamps with its own clock)."""
    return datetime.now(UTC).replace(microsecond=0)


def test_find_created_matches_client_side_and_stops_at_the_bound(
    http: httpx.Client, tokens: FakeTokens, now: datetime
) -> None:
    since = now - timedelta(minutes=5)
    with respx.mock() as mock:
        route = mock.get(url__startswith=REFERRALS).mock(
            side_effect=[
                page(
                    [
                        referral("r1", "someone-else", now),
                        referral("r2", None, now - timedelta(minutes=1)),
                        referral("r3", "crm-9", now - timedelta(minutes=6)),  # before the bound
                    ],
                    f"{REFERRALS}?$skiptoken=next",
                ),
            ]
        )
        client = make_client(http, tokens)
        assert client.find_created("crm-9", since) is None
    assert route.call_count == 1  # the next page is older still: never asked for
    assert dict(route.calls[0].request.url.params) == {"$orderby": "updatedDateTime desc"}


def test_find_created_follows_next_links_until_it_matches(
    http: httpx.Client, tokens: FakeTokens, now: datetime
) -> None:
    with respx.mock() as mock:
        route = mock.get(url__startswith=REFERRALS).mock(
            side_effect=[
                page([referral("r1", "a", now)], f"{REFERRALS}?$skiptoken=p2"),
                page([referral("r2", "crm-9", now - timedelta(seconds=1))], f"{REFERRALS}?x=3"),
                page([referral("r3", "b", now - timedelta(seconds=2))]),
            ]
        )
        found = make_client(http, tokens).find_created("crm-9", None)
    assert found is not None and found.id == "r2"
    assert route.call_count == 2  # found: the listing stops there


def test_a_listing_of_several_pages_reads_the_first_ones_again(
    http: httpx.Client, tokens: FakeTokens, now: datetime
) -> None:
    """A referral updated while the pages were read moved to the first page: read again."""
    with respx.mock() as mock:
        route = mock.get(url__startswith=REFERRALS).mock(
            side_effect=[
                page([referral("r1", "a", now)], f"{REFERRALS}?$skiptoken=p2"),
                page([referral("r2", "b", now - timedelta(minutes=1))]),
                # the moved one, now on top, then the listing's start is passed
                page(
                    [
                        referral("moved", "crm-9", now + timedelta(seconds=1)),
                        referral("r1", "a", now - timedelta(minutes=2)),
                    ]
                ),
            ]
        )
        found = make_client(http, tokens).find_created("crm-9", now - timedelta(minutes=10))
    assert found is not None and found.id == "moved"
    assert route.call_count == 3


def test_one_page_is_not_read_again(http: httpx.Client, tokens: FakeTokens, now: datetime) -> None:
    with respx.mock() as mock:
        route = mock.get(url__startswith=REFERRALS).mock(
            return_value=page([referral("r1", "a", now)])
        )
        assert [r.id for r in make_client(http, tokens).list_recent(None)] == ["r1"]
    assert route.call_count == 1


def test_an_endless_listing_is_cut_at_the_page_cap(
    http: httpx.Client, tokens: FakeTokens, now: datetime
) -> None:
    pages = [
        page([referral(f"r{n}", "a", now - timedelta(seconds=n))], f"{REFERRALS}?$skiptoken={n}")
        for n in range(10)
    ]
    with respx.mock() as mock:
        mock.get(url__startswith=REFERRALS).mock(side_effect=pages)
        with pytest.raises(CoreError) as caught:
            make_client(http, tokens, recent_page_cap=3).find_created("crm-9", None)
    assert caught.value.code == "listing_too_long"


def test_the_core_clock_comes_from_its_date_header(http: httpx.Client, tokens: FakeTokens) -> None:
    ahead = timedelta(hours=3)
    client = make_client(http, tokens)
    local = datetime.now(UTC)
    assert client.core_time(local) == local  # nothing heard from the core yet
    with respx.mock() as mock:
        mock.get(url__startswith=REFERRALS).mock(
            return_value=page([], date=datetime.now(UTC) + ahead)
        )
        list(client.list_recent(None))
    skew = client.core_time(local) - local
    # a lower bound: the Date header is floored to the second and stamped before arrival
    assert ahead - timedelta(seconds=2) < skew <= ahead


@pytest.mark.parametrize(
    ("age", "posts"),
    [(timedelta(seconds=30), 1), (timedelta(minutes=10), 2)],
    ids=["created-within-the-margin", "older-than-the-margin"],
)
def test_an_ambiguous_create_looks_back_to_its_start_on_the_cores_clock(
    http: httpx.Client, tokens: FakeTokens, age: timedelta, posts: int
) -> None:
    """The core's clock is an hour ahead: the bound is the create's start on *its* clock,
    minus the margin; a referral of that record older than the bound is not this create's."""
    ahead = timedelta(hours=1)
    core_now = datetime.now(UTC) + ahead
    body = {"name": "Contoso", "externalReferenceId": "crm-1"}
    with respx.mock() as mock:
        mock.get(f"{REFERRALS}/known").mock(
            return_value=httpx.Response(
                200,
                json=sample_referral(id="known"),
                headers={"Date": email.utils.format_datetime(core_now, usegmt=True)},
            )
        )
        post = mock.post(REFERRALS).mock(
            side_effect=[
                httpx.Response(502, json={"error": {"code": "generalException"}}),
                httpx.Response(201, json=sample_referral(id="posted-again")),
            ]
        )
        mock.get(REFERRALS).mock(
            return_value=page([referral("earlier", "crm-1", core_now - age)], date=core_now)
        )
        client = make_client(http, tokens, match_margin=timedelta(seconds=60))
        client.get("known")
        created = client.create(body)
    assert post.call_count == posts
    assert created.id == ("earlier" if posts == 1 else "posted-again")
