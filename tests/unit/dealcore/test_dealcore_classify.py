"""classify(): every kind of answer of the deal core, mapped to ok or to the right error."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from connector.dealcore.classify import classify, classify_token_response
from connector.errors import CoreError, NotFound, PreconditionFailed
from connector.retry import retry_after_seconds

WHAT = "GET referral r1"


def response(
    status: int, body: Any = None, *, text: str | None = None, **headers: str
) -> httpx.Response:
    if text is not None:
        return httpx.Response(status, text=text, headers=headers)
    if body is None:
        return httpx.Response(status, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def error_body(code: str, inner: str | None = None, message: str = "m") -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innerError"] = {"code": inner}
    return {"error": error}


def test_a_referral_is_ok() -> None:
    assert (
        classify(response(200, {"id": "r1", "status": "Active"}), what=WHAT, expect="referral")
        is None
    )


def test_an_empty_204_is_ok_when_a_referral_may_be_absent() -> None:
    assert classify(response(204), what=WHAT, expect="referral_or_empty") is None


def test_an_empty_200_is_not_a_referral() -> None:
    error = classify(response(200), what=WHAT, expect="referral")
    assert error is not None and error.code == "malformed_response"


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (404, NotFound, "not_found"),
        (412, PreconditionFailed, "precondition_failed"),
        # ERR: resourceModified or preconditionFailed for a stale eTag, status unsaid
        (409, PreconditionFailed, "precondition_failed"),
    ],
)
def test_404_and_412_have_their_own_classes(status: int, kind: type[CoreError], code: str) -> None:
    error = classify(response(status, error_body("itemNotFound")), what=WHAT)
    assert type(error) is kind
    assert error.code == code and error.status == status and not error.transient


def test_401_is_unauthenticated_and_permanent() -> None:
    error = classify(response(401, error_body("unauthenticated")), what=WHAT)
    assert error is not None
    assert error.code == "unauthenticated" and not error.transient


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_is_transient_with_retry_after_seconds(status: int) -> None:
    error = classify(
        response(status, error_body("serviceNotAvailable"), **{"Retry-After": "7"}), what=WHAT
    )
    assert error is not None and error.transient
    assert error.retry_after == 7.0 and error.status == status


def test_retry_after_as_http_date() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    error = classify(
        response(429, **{"Retry-After": "Sun, 01 Mar 2026 12:00:30 GMT"}), what=WHAT, now=now
    )
    assert error is not None and error.retry_after == 30.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("3", 3.0), ("1.5", 1.5), ("-4", 0.0), ("soon", None), ("", None), (None, None)],
)
def test_retry_after_values(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value) == seconds


@pytest.mark.parametrize("status", [500, 502, 504])
def test_server_errors_are_transient(status: int) -> None:
    error = classify(response(status, text="<html>Bad gateway</html>"), what=WHAT)
    assert error is not None and error.transient and error.retry_after is None


def test_400_surfaces_the_inner_error_code_and_is_permanent() -> None:
    error = classify(
        response(400, error_body("invalidRequest", "ReferralClosed", "The referral is closed")),
        what="PATCH referral r1",
    )
    assert error is not None and not error.transient
    assert error.code == "ReferralClosed"
    assert "invalidRequest/ReferralClosed" in error.message
    assert "PATCH referral r1" in error.message


def test_the_innermost_error_code_is_reported_whatever_the_key_case() -> None:
    """ERR: innerError objects nest; the most detailed code is the deepest one."""
    body = {
        "error": {
            "code": "unAuthorized",  # ERR's own sample, outside its code list
            "message": "m",
            "innererror": {"code": "outer", "innerError": {"code": "innermost"}},
        }
    }
    error = classify(response(400, body), what=WHAT)
    assert error is not None and error.code == "innermost"
    ok_outage = {"error": {"code": "ServiceNotAvailable", "message": "m"}}
    wrapped = classify(response(200, ok_outage), what=WHAT, expect="referral")
    assert wrapped is not None and wrapped.transient


def test_400_without_inner_error_uses_the_outer_code() -> None:
    error = classify(response(400, error_body("invalidRequest")), what=WHAT)
    assert error is not None and error.code == "invalidRequest"


def test_html_in_a_200_is_a_clear_error() -> None:
    error = classify(
        response(200, text="<html>Sign in</html>", **{"Content-Type": "text/html"}),
        what=WHAT,
        expect="referral",
    )
    assert error is not None and not error.transient
    assert error.code == "malformed_response" and "not JSON" in error.message


def test_truncated_json_is_a_clear_error() -> None:
    error = classify(response(200, text='{"id": "r1", "sta'), what=WHAT, expect="referral")
    assert error is not None and error.code == "malformed_response"


def test_an_error_object_in_a_200_is_permanent() -> None:
    error = classify(response(200, error_body("generalException")), what=WHAT, expect="referral")
    assert error is not None and not error.transient and error.code == "generalException"


def test_service_not_available_in_a_200_is_transient() -> None:
    error = classify(response(200, error_body("serviceNotAvailable")), what=WHAT, expect="list")
    assert error is not None and error.transient


def test_a_referral_without_id_is_malformed() -> None:
    error = classify(response(200, {"status": "Active"}), what=WHAT, expect="referral")
    assert error is not None and error.code == "malformed_referral" and not error.transient


def test_a_list_without_value_is_malformed() -> None:
    error = classify(response(200, {"items": []}), what=WHAT, expect="list")
    assert error is not None and error.code == "malformed_response"


@pytest.mark.parametrize(
    "exc",
    [
        httpx.RemoteProtocolError("peer closed connection"),
        httpx.ReadTimeout("timed out"),
        httpx.ConnectError("refused"),
    ],
)
def test_transport_errors_are_transient(exc: httpx.TransportError) -> None:
    error = classify(exc, what=WHAT)
    assert error is not None and error.transient and error.code == "transport"


def test_messages_never_carry_the_query_string_or_token() -> None:
    request = httpx.Request(
        "GET",
        "https://core.test/referrals?$filter=externalReferenceId eq 'secret'",
        headers={"Authorization": "Bearer tok-xyz"},
    )
    failed = httpx.Response(500, text="oops", request=request)
    error = classify(failed, what="GET referral by externalReferenceId")
    assert error is not None
    assert "$filter" not in error.message and "tok-xyz" not in error.message


def test_token_endpoint_refusal_keeps_the_oauth_code_but_not_the_description() -> None:
    refused = response(400, {"error": "invalid_grant", "error_description": "AADSTS70000 user@x"})
    error = classify_token_response(refused, what="refresh")
    assert error is not None and error.code == "invalid_grant" and not error.transient
    assert "user@x" not in error.message


def test_token_endpoint_outage_is_transient() -> None:
    error = classify_token_response(response(503, {"error": "temporarily_unavailable"}), what="t")
    assert error is not None and error.transient
