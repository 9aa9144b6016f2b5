"""Classifying simple-salesforce and requests failures into :class:`~connector.errors.CrmError`.

::

    failure                                         error           code             transient
    ───────────────────────────────────────────────────────────────────────────────────────────
    403 REQUEST_LIMIT_EXCEEDED                      QuotaExhausted  quota_exhausted  no
    5xx, or UNABLE_TO_LOCK_ROW / SERVER_UNAVAILABLE CrmError        <errorCode>      yes
    400, 401 (after one renewal), 403, 404          CrmError        <errorCode>      no
    connect timeout / read timeout                  CrmError        connect_timeout / timeout  yes
    connection dropped, broken chunked body         CrmError        connection       yes
    TLS verification failure                        CrmError        tls              no
    other requests errors (unreadable answer)       CrmError        bad_response     no

Messages name the action and Salesforce's own code and text, never a URL (the
exceptions' own messages carry the full query string) nor a header.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests
from simple_salesforce.exceptions import SalesforceError

from connector.certificates import untrusted_message
from connector.errors import CrmError, QuotaExhausted

#: whole-call error codes worth another attempt regardless of the HTTP status
TRANSIENT_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"})
_MAX_SERVER_TEXT = 300


def crm_error_from(exc: BaseException, what: str) -> CrmError:
    """Classify a simple-salesforce or requests exception raised while doing ``what``.

    The message names the action and Salesforce's own error code and text; never a
    URL (simple-salesforce's own messages carry the full query string) or a header.
    """
    if isinstance(exc, SalesforceError):
        status = int(exc.status)
        code, text = _first_error(exc.content)
        if status == 403 and code == "REQUEST_LIMIT_EXCEEDED":
            return QuotaExhausted(
                f"Salesforce refused {what}: the org's daily API allowance is spent "
                "(REQUEST_LIMIT_EXCEEDED); the run stops and resumes next cycle",
                transient=False,
                status=status,
            )
        transient = status >= 500 or code in TRANSIENT_CODES
        if transient:
            advice = "it will be retried"
        elif status == 401:
            advice = "signing in again did not help; check the credentials or supply a new token"
        elif status == 403:
            advice = "check the integration user's permissions and field-level security"
        elif status == 404:
            advice = "check the object and field names and the API version setting"
        else:
            advice = "fix the request or the record, then retry"
        detail = f"{code}: {text}" if text else code
        return CrmError(
            f"Salesforce refused {what} (HTTP {status} {detail}); {advice}",
            code=code,
            transient=transient,
            status=status,
        )
    name = type(exc).__name__
    if isinstance(exc, requests.exceptions.SSLError):
        return CrmError(
            untrusted_message(f"Salesforce instance, {what}", "crm.ca_file", exc),
            code="tls",
            transient=False,
        )
    if isinstance(exc, requests.ConnectTimeout):
        code, how = "connect_timeout", "could not connect in time"
    elif isinstance(exc, requests.Timeout):
        code, how = "timeout", "did not answer in time"
    elif isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
        code, how = "connection", "dropped the connection"
    elif isinstance(exc, requests.RequestException):
        return CrmError(
            f"Salesforce sent an unreadable answer to {what} ({name})",
            code="bad_response",
            transient=False,
        )
    else:
        return CrmError(f"{what} failed ({name})", code="error", transient=False)
    return CrmError(
        f"Salesforce {how} during {what} ({name}); it will be retried",
        code=code,
        transient=True,
    )


def _first_error(content: Any) -> tuple[str, str]:
    """``(errorCode, message)`` of a Salesforce error body (an array of errors, usually)."""
    first = content[0] if isinstance(content, list) and content else content
    if isinstance(first, Mapping):
        code = str(first.get("errorCode") or first.get("error") or "UNKNOWN")
        text = str(first.get("message") or first.get("error_description") or "")
        return code, text[:_MAX_SERVER_TEXT]
    return "UNKNOWN", ""
