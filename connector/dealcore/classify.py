"""The one place that turns a deal-core answer into success or a :class:`CoreError`.

::

    outcome                               error                     transient
    ─────────────────────────────────────────────────────────────────────────
    2xx with the expected JSON            None (ok)                 -
    2xx, body not JSON / wrong shape      CoreError malformed_*     no
    2xx carrying {"error": …}             CoreError <code>          only serviceNotAvailable
    401                                   CoreError unauthenticated no (client refreshes once)
    403                                   CoreError accessDenied    no
    404                                   NotFound                  no
    409, 412                              PreconditionFailed        no
    408, 429, 503                         CoreError (retry_after)   yes
    500, 502, 504 and other 5xx           CoreError                 yes
    400 and other 4xx                     CoreError <innermost code or code>  no
    httpx.TransportError (reset, timeout) CoreError transport       yes

The token endpoint speaks OAuth's error shape instead; :func:`classify_token_response`
handles it. Messages name the request by method and path only: never a query string,
never a header value. Error codes are compared case-insensitively (the reference's own
sample says ``unAuthorized``); the most detailed ``innerError`` code is reported. Nothing
downstream branches on a code for the lifecycle: a refused write is judged by re-reading
the referral (see ``connector.sync.engine``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

import httpx

from connector.certificates import certificate_rejected, untrusted_message
from connector.errors import CoreError, NotFound, PreconditionFailed
from connector.retry import retry_after_seconds

#: what a successful answer must carry: a referral (or, for PATCH, possibly nothing),
#: a list page, or nothing in particular
Expect = Literal["referral", "referral_or_empty", "list", "any"]

_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_MAX_SERVER_TEXT = 300


def classify(
    outcome: httpx.Response | httpx.TransportError,
    *,
    what: str,
    expect: Expect = "any",
    now: datetime | None = None,
) -> CoreError | None:
    """Classify one answer of the deal core.

    ``what`` names the request for messages (``"GET referral 4111…"``); ``expect``
    says what a 2xx body must be; ``now`` is used to turn an HTTP-date ``Retry-After``
    into seconds. Returns None when the answer is usable, else the error to raise.
    """
    if isinstance(outcome, httpx.TransportError):
        if certificate_rejected(outcome):
            message = untrusted_message(what, "core.ca_file", outcome)
            return CoreError(message, code="tls", transient=False)
        kind = "timed out" if isinstance(outcome, httpx.TimeoutException) else "failed"
        return CoreError(
            f"{what}: the connection to the deal core {kind} ({type(outcome).__name__}); "
            "it will be retried",
            code="transport",
            transient=True,
        )
    response = outcome
    status = response.status_code
    if 200 <= status < 300:
        return _classify_success(response, what, expect)

    code, inner, text = _error_details(response)
    detail = "/".join(c for c in (code, inner) if c) or "no error code"
    said = f": {text}" if text else ""
    if status == 401:
        return CoreError(
            f"{what}: the deal core refused the access token (401 {detail}) even after a "
            "refresh; check the app registration and that the user still holds the "
            "Referrals Admin or Referrals User role",
            code="unauthenticated",
            transient=False,
            status=status,
        )
    if status == 403:
        return CoreError(
            f"{what}: access denied (403 {detail}){said}; the signed-in user needs the "
            "Partner Center role Referrals Admin or Referrals User",
            code="accessDenied",
            transient=False,
            status=status,
        )
    if status == 404:
        return NotFound(f"{what}: not found in the deal core (404 {detail})", status=status)
    if status in (409, 412):
        # The reference lists both preconditionFailed and resourceModified for a stale
        # eTag without saying which status carries which: both mean "read it again".
        return PreconditionFailed(
            f"{what}: the referral changed since it was read ({status} {detail}); "
            "re-read it and plan again",
            status=status,
        )
    if status in _TRANSIENT_STATUSES or status >= 500:
        retry_after = retry_after_seconds(response.headers.get("Retry-After"), now=now)
        wait = f", Retry-After {retry_after:g}s" if retry_after is not None else ""
        return CoreError(
            f"{what}: the deal core is busy or failing ({status} {detail}{wait}); "
            "it will be retried",
            code=code or f"http_{status}",
            transient=True,
            status=status,
            retry_after=retry_after,
        )
    return CoreError(
        f"{what}: the deal core rejected the request ({status} {detail}){said}; "
        "fix the record or the mapping, then retry",
        code=inner or code or f"http_{status}",
        transient=False,
        status=status,
    )


def _classify_success(response: httpx.Response, what: str, expect: Expect) -> CoreError | None:
    status = response.status_code
    if expect in ("any", "referral_or_empty") and not response.content.strip():
        return None
    try:
        data: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        ctype = response.headers.get("Content-Type", "unknown")
        return CoreError(
            f"{what}: the deal core answered {status} with a body that is not JSON "
            f"(Content-Type {ctype}); a proxy or an outage page may be in the way",
            code="malformed_response",
            transient=False,
            status=status,
        )
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        code = str(data["error"].get("code") or "error")
        inner = _inner_code(data["error"])
        return CoreError(
            f"{what}: the deal core answered {status} but the body is an error "
            f"({'/'.join(c for c in (code, inner) if c)})",
            code=inner or code,
            # Some gateways wrap an outage in a 200; only that case is worth a retry.
            transient=code.casefold() == "servicenotavailable",
            status=status,
        )
    is_referral = isinstance(data, dict) and bool(data.get("id"))
    if expect in ("referral", "referral_or_empty") and not is_referral:
        return CoreError(
            f"{what}: the deal core answered {status} but the body is not a referral "
            "(no id); report this to the deal core's operators",
            code="malformed_referral",
            transient=False,
            status=status,
        )
    if expect == "list" and not (isinstance(data, dict) and isinstance(data.get("value"), list)):
        return CoreError(
            f"{what}: the deal core answered {status} but the body is not a list "
            "(no 'value' array)",
            code="malformed_response",
            transient=False,
            status=status,
        )
    return None


def _error_details(response: httpx.Response) -> tuple[str | None, str | None, str | None]:
    """(code, innerError.code, message) of an error body, each None when absent."""
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, None, None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, None, None
    code = error.get("code")
    message = error.get("message")
    text = str(message)[:_MAX_SERVER_TEXT] if message else None
    return (str(code) if code else None), _inner_code(error), text


def _inner_code(error: dict[str, Any]) -> str | None:
    """The innermost ``innerError`` code (they nest: the deepest is the most detailed)."""
    found: str | None = None
    node: Any = error
    for _ in range(10):  # a bound: the nesting comes from the network
        inner = next(
            (v for k, v in node.items() if k.casefold() == "innererror" and isinstance(v, dict)),
            None,
        )
        if inner is None:
            break
        if inner.get("code"):
            found = str(inner["code"])
        node = inner
    return found


def classify_token_response(
    outcome: httpx.Response | httpx.TransportError, *, what: str
) -> CoreError | None:
    """Classify an answer of the OAuth token (or device-code) endpoint.

    OAuth errors look like ``{"error": "invalid_grant", "error_description": …}``.
    The description is not repeated: Entra puts trace ids and sometimes user names in it.
    """
    if isinstance(outcome, httpx.TransportError):
        if certificate_rejected(outcome):
            message = untrusted_message(what, "core.ca_file", outcome)
            return CoreError(message, code="tls", transient=False)
        return CoreError(
            f"{what}: the connection to the token endpoint failed "
            f"({type(outcome).__name__}); it will be retried",
            code="transport",
            transient=True,
        )
    status = outcome.status_code
    try:
        data: Any = outcome.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if 200 <= status < 300:
        if isinstance(data, dict) and data.get("access_token"):
            return None
        return CoreError(
            f"{what}: the token endpoint answered {status} without an access token",
            code="malformed_token_response",
            transient=False,
            status=status,
        )
    error = str(data.get("error")) if isinstance(data, dict) and data.get("error") else None
    if status in _TRANSIENT_STATUSES or status >= 500 or error == "temporarily_unavailable":
        return CoreError(
            f"{what}: the token endpoint is unavailable ({status}); it will be retried",
            code="token_endpoint_unavailable",
            transient=True,
            status=status,
            retry_after=retry_after_seconds(outcome.headers.get("Retry-After")),
        )
    return CoreError(
        f"{what}: the token endpoint refused the request ({status} {error or 'no error code'}); "
        "check the client id, secret and scope, or sign in again with the device-code login",
        code=error or "unauthenticated",
        transient=False,
        status=status,
    )
