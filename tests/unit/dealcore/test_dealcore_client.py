"""ReferralsClient against respx: headers, paging, errors, retries, the rate gate."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx
from dealcore_fakes import BASE, FakeClock, FakeTokens, sample_referral

from connector.dealcore.client import ReferralsClient, odata_string
from connector.errors import CoreError, NotFound, PreconditionFailed
from connector.retry import RateGate, RetryPolicy

REFERRALS = f"{BASE}/referrals"
RID = "4111fffc-0000-0000-0000-000000000001"


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
    body: dict[str, Any] = {"@odata.context": "ctx", "value": items}
    if next_link:
        body["@odata.nextLink"] = next_link
    return httpx.Response(200, json=body)


def core_error(status: int, code: str, inner: str | None = None, **headers: str) -> httpx.Response:
    error: dict[str, Any] = {"code": code, "message": "server says no"}
    if inner:
        error["innerError"] = {"code": inner}
    return httpx.Response(status, json={"error": error}, headers=headers)


def params_of(request: httpx.Request) -> dict[str, str]:
    return dict(request.url.params)


# ── headers ────────────────────────────────────────────────────────────────


def test_every_call_carries_the_documented_headers(http: httpx.Client, tokens: FakeTokens) -> None:
    with respx.mock() as mock:
        route = mock.get(f"{REFERRALS}/{RID}").mock(
            side_effect=[httpx.Response(200, json=sample_referral()) for _ in range(2)]
        )
        client = make_client(http, tokens)
        client.get(RID)
        client.get(RID)
    first, second = (call.request.headers for call in route.calls)
    assert first["Authorization"] == "Bearer token-1"
    assert first["Accept"] == "application/json"
    assert first["Content-Type"] == "application/json"
    assert first["MS-CorrelationId"] == "corr-1" == second["MS-CorrelationId"]
    uuid.UUID(first["client-request-id"])
    assert first["client-request-id"] != second["client-request-id"]
    assert client.calls == {"GET": 2}


def test_logs_carry_neither_token_nor_query(
    http: httpx.Client, tokens: FakeTokens, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with respx.mock() as mock:
        mock.get(REFERRALS).mock(side_effect=[httpx.ReadTimeout("slow"), page([sample_referral()])])
        make_client(http, tokens).find_created("006Ax00000ABCDe", None)
    text = caplog.text
    assert "token-1" not in text and "$filter" not in text and "006Ax00000ABCDe'" not in text


# ── create / get / patch ───────────────────────────────────────────────────


def test_create_posts_the_body_and_parses_the_answer(
    http: httpx.Client, tokens: FakeTokens
) -> None:
    body = {"name": "Contoso", "externalReferenceId": "crm-1", "type": "Shared"}
    with respx.mock() as mock:
        route = mock.post(REFERRALS).respond(201, json=sample_referral(externalReferenceId="crm-1"))
        state = make_client(http, tokens).create(body)
    assert json.loads(route.calls[0].request.content) == body
    assert state.id == RID and state.external_reference_id == "crm-1"


def test_create_after_an_ambiguous_failure_looks_up_before_posting_again(
    http: httpx.Client, tokens: FakeTokens
) -> None:
    body = {"name": "Contoso", "externalReferenceId": "crm-1"}
    with respx.mock() as mock:
        post = mock.post(REFERRALS).mock(side_effect=httpx.ReadTimeout("no answer"))
        just_now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        lookup = mock.get(REFERRALS).mock(
            return_value=page(
                [sample_referral(externalReferenceId="crm-1", updatedDateTime=just_now)]
            )
        )
        state = make_client(http, tokens).create(body)
    assert post.call_count == 1  # never a second POST: the first one had worked
    assert lookup.call_count == 1 and state.id == RID
    # the documented listing, matched client-side: no filter on externalReferenceId
    assert params_of(lookup.calls[0].request) == {"$orderby": "updatedDateTime desc"}


def test_create_after_a_throttle_posts_again_without_lookup(
    http: httpx.Client, tokens: FakeTokens
) -> None:
    with respx.mock() as mock:
        post = mock.post(REFERRALS).mock(
            side_effect=[
                core_error(429, "throttled", **{"Retry-After": "1"}),
                httpx.Response(201, json=sample_referral()),
            ]
        )
        make_client(http, tokens).create({"externalReferenceId": "crm-1"})
    assert post.call_count == 2


def test_get_404_is_not_found(http: httpx.Client, tokens: FakeTokens) -> None:
    with respx.mock() as mock:
        route = mock.get(f"{REFERRALS}/{RID}").mock(return_value=core_error(404, "itemNotFound"))
        with pytest.raises(NotFound):
            make_client(http, tokens).get(RID)
        assert route.call_count == 1


def test_patch_sends_if_match_and_prefer(http: httpx.Client, tokens: FakeTokens) -> None:
    ops = [{"op": "replace", "path": "/salesStage", "value": "60"}]
    with respx.mock() as mock:
        route = mock.patch(f"{REFERRALS}/{RID}").respond(
            200, json=sample_referral(salesStage="60", eTag='"2"')
        )
        state = make_client(http, tokens).patch(RID, ops, '"00006d10-0000"')
    request = route.calls[0].request
    assert request.headers["If-Match"] == '"00006d10-0000"'
    assert request.headers["Prefer"] == "return=representation"
    assert json.loads(request.content) == ops
    assert state.sales_stage == 60 and state.etag == '"2"'


def test_patch_204_reads_the_referral_back(http: httpx.Client, tokens: FakeTokens) -> None:
    with respx.mock() as mock:
        mock.patch(f"{REFERRALS}/{RID}").respond(204)
        get = mock.get(f"{REFERRALS}/{RID}").respond(200, json=sample_referral(eTag='"3"'))
        client = make_client(http, tokens)
        state = client.patch(RID, [], None)
        assert "If-Match" not in mock.calls[0].request.headers
    assert get.call_count == 1 and state.etag == '"3"'
    assert client.calls == {"PATCH": 1, "GET": 1}


def test_patch_412_is_precondition_failed_and_not_retried(
    http: httpx.Client, tokens: FakeTokens
) -> None:
    with respx.mock() as mock:
        route = mock.patch(f"{REFERRALS}/{RID}").mock(
            return_value=core_error(412, "preconditionFailed")
        )
        with pytest.raises(PreconditionFailed):
            make_client(http, tokens).patch(RID, [], '"stale"')
        assert route.call_count == 1


def test_permanent_400_is_not_retried_and_surfaces_the_inner_code(
    http: httpx.Client, tokens: FakeTokens
) -> None:
    clock = FakeClock()
    with respx.mock() as mock:
        route = mock.patch(f"{REFERRALS}/{RID}").mock(
            return_value=core_error(400, "invalidRequest", "ReferralClosed")
        )
        with pytest.raises(CoreError) as raised:
            make_client(http, tokens, clock).patch(RID, [], '"1"')
        assert route.call_count == 1
    assert raised.value.code == "ReferralClosed" and not raised.value.transient
    assert clock.sleeps == []


def test_referral_ids_are_escaped_in_the_path(http: httpx.Client, tokens: FakeTokens) -> None:
    with respx.mock() as mock:
        route = mock.get(f"{REFERRALS}/a%2Fb").respond(200, json=sample_referral(id="a/b"))
        assert make_client(http, tokens).get("a/b").id == "a/b"
        assert route.call_count == 1


# ── 401, retries, throttling ───────────────────────────────────────────────


def test_401_refreshes_the_token_once_and_succeeds(http: httpx.Client, tokens: FakeTokens) -> None:
    with respx.mock() as mock:
        route = mock.get(f"{REFERRALS}/{RID}").mock(
            side_effect=[
                core_error(401, "unauthenticated"),
                httpx.Response(200, json=sample_referral()),
            ]
        )
        make_client(http, tokens).get(RID)
    assert tokens.invalidations == 1
    assert [c.request.headers["Authorization"] for c in route.calls] == [
        "Bearer token-1",
        "Bearer token-2",
    ]


def test_401_twice_fails_as_unauthenticated(http: httpx.Client, tokens: FakeTokens) -> None:
    with respx.mock() as mock:
        route = mock.get(f"{REFERRALS}/{RID}").mock(return_value=core_error(401, "unauthenticated"))
        with pytest.raises(CoreError) as raised:
            make_client(http, tokens).get(RID)
        assert route.call_count == 2
    assert raised.value.code == "unauthenticated" and not raised.value.transient
    assert tokens.invalidations == 1


def test_transient_5xx_and_resets_are_retried_then_succeed(
    http: httpx.Client, tokens: FakeTokens
) -> None:
    clock = FakeClock()
    with respx.mock() as mock:
        route = mock.get(f"{REFERRALS}/{RID}").mock(
            side_effect=[
                httpx.Response(502, text="<html>Bad gateway</html>"),
                httpx.RemoteProtocolError("peer closed connection without sending complete body"),
                core_error(500, "generalException"),
                httpx.Response(200, json=sample_referral()),
            ]
        )
        client = make_client(http, tokens, clock)
        assert client.get(RID).id == RID
        assert route.call_count == 4
    assert len(clock.sleeps) == 3 and client.calls == {"GET": 4}


def test_retries_are_bounded(http: httpx.Client, tokens: FakeTokens) -> None:
    with respx.mock() as mock:
        route = mock.get(f"{REFERRALS}/{RID}").respond(503)
        with pytest.raises(CoreError) as raised:
            make_client(http, tokens, retry_policy=RetryPolicy(attempts=3)).get(RID)
        assert route.call_count == 3
    assert raised.value.transient and raised.value.status == 503


def test_429_retry_after_is_honoured_and_closes_the_shared_gate(
    http: httpx.Client, tokens: FakeTokens
) -> None:
    clock = FakeClock()
    gate = RateGate(clock=clock, sleep=clock.sleep)
    sent_at: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent_at.append(clock())
        if len(sent_at) == 1:
            return core_error(429, "throttled", **{"Retry-After": "12"})
        return httpx.Response(200, json=sample_referral())

    with respx.mock() as mock:
        mock.get(f"{REFERRALS}/{RID}").mock(side_effect=answer)
        client = ReferralsClient(
            BASE, tokens, http=http, correlation_id="c", sleep=clock.sleep, gate=gate
        )
        client.get(RID)
    assert clock.sleeps[0] >= 12.0
    assert sent_at[1] - sent_at[0] >= 12.0


def test_a_throttled_gate_delays_other_callers_too(http: httpx.Client, tokens: FakeTokens) -> None:
    clock = FakeClock()
    gate = RateGate(clock=clock, sleep=clock.sleep)
    with respx.mock() as mock:
        mock.get(f"{REFERRALS}/{RID}").mock(
            return_value=core_error(429, "throttled", **{"Retry-After": "30"})
        )
        other = mock.get(f"{REFERRALS}/other").mock(
            side_effect=lambda request: httpx.Response(200, json=sample_referral(id="other"))
        )
        throttled = ReferralsClient(
            BASE,
            tokens,
            http=http,
            correlation_id="c",
            sleep=lambda s: None,
            gate=gate,
            retry_policy=RetryPolicy(attempts=1),
        )
        with pytest.raises(CoreError):
            throttled.get(RID)
        assert gate.blocked_for == 30
        second = ReferralsClient(
            BASE, tokens, http=http, correlation_id="c", sleep=clock.sleep, gate=gate
        )
        second.get("other")
        assert other.call_count == 1
    assert clock.now >= 30  # the second caller waited at the gate first


# ── lists ──────────────────────────────────────────────────────────────────


def test_list_changed_pages_through_next_links_verbatim(
    http: httpx.Client, tokens: FakeTokens
) -> None:
    next_1 = f"{REFERRALS}?$skiptoken=abc%3D%3D&$filter=whatever"
    next_2 = "/v1.0/engagements/referrals?$skiptoken=def"
    with respx.mock() as mock:
        route = mock.get(url__startswith=REFERRALS).mock(
            side_effect=[
                page([sample_referral(id="a", eTag='"1"')], next_1),
                page([sample_referral(id="b", eTag='"1"')], next_2),
                page([sample_referral(id="c", eTag='"1"')]),
            ]
        )
        client = make_client(http, tokens)
        since = datetime(2026, 1, 1, 8, 30, 15, 999_000, tzinfo=UTC)
        ids = [r.id for r in client.list_changed(since)]
    assert ids == ["a", "b", "c"]
    first, second, third = (c.request for c in route.calls)
    assert params_of(first) == {
        "$filter": "updatedDateTime ge 2026-01-01T08:30:15Z",
        "$orderby": "updatedDateTime asc",
    }
    assert str(second.url) == next_1
    assert params_of(second)["$skiptoken"] == "abc=="
    assert str(third.url) == "https://core.test/v1.0/engagements/referrals?$skiptoken=def"
    assert all(r.headers["Authorization"] == "Bearer token-1" for r in (second, third))


def test_list_changed_is_lazy_and_dedupes_repeats(http: httpx.Client, tokens: FakeTokens) -> None:
    with respx.mock() as mock:
        route = mock.get(url__startswith=REFERRALS).mock(
            side_effect=[
                page([sample_referral(id="a", eTag='"1"')], f"{REFERRALS}?$skiptoken=2"),
                page([sample_referral(id="a", eTag='"1"'), sample_referral(id="a", eTag='"2"')]),
            ]
        )
        changed = make_client(http, tokens).list_changed(None)
        assert route.call_count == 0
        first = next(changed)
        assert route.call_count == 1 and first.id == "a"
        rest = list(changed)
    assert [(r.id, r.etag) for r in rest] == [("a", '"2"')]
    assert "$filter" not in params_of(route.calls[0].request)


def test_list_changed_combines_an_extra_filter(http: httpx.Client, tokens: FakeTokens) -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    with respx.mock() as mock:
        route = mock.get(REFERRALS).mock(return_value=page([]))
        list(make_client(http, tokens).list_changed(since, extra_filter="direction eq 'Incoming'"))
    assert params_of(route.calls[0].request)["$filter"] == (
        "updatedDateTime ge 2026-01-01T00:00:00Z and (direction eq 'Incoming')"
    )


def test_list_changed_asks_for_selected_fields_and_marks_them_partial(
    http: httpx.Client, tokens: FakeTokens
) -> None:
    with respx.mock() as mock:
        route = mock.get(REFERRALS).mock(return_value=page([sample_referral(id="a")]))
        (partial,) = make_client(http, tokens).list_changed(None, select=("id", "eTag", "status"))
        (whole,) = make_client(http, tokens).list_changed(None)
    assert params_of(route.calls[0].request)["$select"] == "id,eTag,status"
    assert "$select" not in params_of(route.calls[1].request)
    assert partial.partial and not whole.partial


def test_list_changed_skips_malformed_items(http: httpx.Client, tokens: FakeTokens) -> None:
    with respx.mock() as mock:
        mock.get(REFERRALS).mock(
            return_value=page([{"status": "Active"}, sample_referral(id="ok")])
        )
        client = make_client(http, tokens)
        assert [r.id for r in client.list_changed(None)] == ["ok"]
    assert client.malformed_skipped == 1


def test_list_changed_rejects_a_naive_since(http: httpx.Client, tokens: FakeTokens) -> None:
    with pytest.raises(ValueError, match="timezone"):
        list(make_client(http, tokens).list_changed(datetime(2026, 1, 1)))


def test_a_next_link_to_another_host_is_refused(http: httpx.Client, tokens: FakeTokens) -> None:
    with respx.mock() as mock:
        mock.get(REFERRALS).mock(return_value=page([], "https://evil.test/referrals?$skiptoken=1"))
        with pytest.raises(CoreError) as raised:
            list(make_client(http, tokens).list_changed(None))
    assert raised.value.code == "foreign_next_link"


def test_a_repeated_next_link_stops_paging(http: httpx.Client, tokens: FakeTokens) -> None:
    loop = f"{REFERRALS}?$skiptoken=same"
    with respx.mock() as mock:
        route = mock.get(url__startswith=REFERRALS).mock(side_effect=lambda request: page([], loop))
        with pytest.raises(CoreError) as raised:
            list(make_client(http, tokens).list_changed(None))
        assert route.call_count == 2  # the first page, then the link once
    assert raised.value.code == "paging_loop"


def test_a_list_with_an_error_in_a_200_is_classified(
    http: httpx.Client, tokens: FakeTokens
) -> None:
    with respx.mock() as mock:
        route = mock.get(REFERRALS).respond(200, json={"error": {"code": "generalException"}})
        with pytest.raises(CoreError) as raised:
            list(make_client(http, tokens).list_changed(None))
        assert route.call_count == 1
    assert raised.value.code == "generalException" and not raised.value.transient


def test_list_engagement(http: httpx.Client, tokens: FakeTokens) -> None:
    with respx.mock() as mock:
        route = mock.get(REFERRALS).mock(
            return_value=page(
                [
                    sample_referral(id="ours", engagementId="e-1"),
                    sample_referral(id="microsofts", engagementId="e-1", direction="Incoming"),
                    sample_referral(id="unrelated", engagementId="e-2"),
                ]
            )
        )
        states = make_client(http, tokens).list_engagement("e-1")
    assert [s.id for s in states] == ["ours", "microsofts"]
    assert params_of(route.calls[0].request)["$filter"] == "engagementId eq 'e-1'"


def test_odata_string() -> None:
    assert odata_string("plain") == "'plain'"
    assert odata_string("it's") == "'it''s'"
    assert odata_string("''") == "''''''"
