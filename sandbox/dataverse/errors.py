"""The Dataverse sandbox's errors: ``{"error": {"code", "message"}}`` with Dataverse's hex codes.

Codes marked "sandbox choice" are plausible Dataverse codes picked for the
sandbox where the public documentation names none; docs/sandbox-dataverse.md
lists them all.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.responses import Response

#: 401: no token, an expired token or one for another audience
UNAUTHORIZED = "0x80040220"
#: 404: the record does not exist
NOT_FOUND = "0x80040217"
#: 412: ``If-Match`` names an older row version
VERSION_MISMATCH = "0x80060882"
#: 412: a create with a key that already exists
DUPLICATE_KEY = "0x80040237"
#: 400: a query option or property the service does not know or refuses
BAD_QUERY = "0x80060888"
#: 400: a value outside a column's type or range (sandbox choice)
INVALID_VALUE = "0x80044331"
#: 400: writing to a closed opportunity, or changing its state without the actions (sandbox choice)
INVALID_STATE = "0x80040203"
#: 400: the delta token is too old or was invalidated: start a full resync (sandbox choice)
DELTA_TOKEN_EXPIRED = "0x80044352"
#: 429: the request budget of the 5-minute window is spent
TOO_MANY_REQUESTS = "0x80072322"
#: 429: too many requests in flight at once
TOO_MANY_CONCURRENT = "0x80072326"
#: 500/503 injected by the fault middleware
UNEXPECTED = "0x80040216"

#: the fault injector's generic codes, translated to Dataverse's
GENERIC_CODES = {
    "throttled": TOO_MANY_REQUESTS,
    "unauthenticated": UNAUTHORIZED,
    "serviceNotAvailable": UNEXPECTED,
}

ODATA_HEADERS = {"OData-Version": "4.0"}
JSON_TYPE = "application/json; odata.metadata=minimal"


class DataverseError(Exception):
    """An error answer: raised anywhere in a request, turned into a response at the edge."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}

    def headers(self) -> dict[str, str]:
        headers = dict(ODATA_HEADERS)
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        if self.status == 401:
            headers["WWW-Authenticate"] = (
                "Bearer authorization_uri=https://login.microsoftonline.com/common/oauth2/authorize"
            )
        return headers


def error_response(
    status: int, code: str, message: str, retry_after: float | None = None
) -> Response:
    """A Dataverse-shaped error response (``Retry-After`` in whole seconds when given)."""
    err = DataverseError(status, GENERIC_CODES.get(code, code), message, retry_after)
    return Response(
        json.dumps(err.body()),
        status_code=status,
        headers=err.headers(),
        media_type=JSON_TYPE,
    )
