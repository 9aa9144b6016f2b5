"""The sandbox's imitation of the Salesforce REST API subset the connector uses.

Routes (any API version ``vNN.N``)::

    POST /services/oauth2/token                  client_credentials or JWT bearer
    GET  /services/data/                          versions (no token needed)
    GET  /services/data/vNN.N/query?q=…           also queryAll, and query/<locator>-<offset>
    GET|PATCH|DELETE …/sobjects/<Type>/<id>       POST …/sobjects/<Type>, …/describe, …/deleted
    POST|PATCH|DELETE …/composite/sobjects        up to 200 records, per-record results
    GET  …/limits                                 DailyApiRequests
    /_sandbox/salesforce/…                        the admin API (admin.py)

Every API response carries ``Sforce-Limit-Info: api-usage=USED/MAX``; at MAX the
API answers 403 REQUEST_LIMIT_EXCEEDED. Errors are Salesforce's JSON arrays.
The JWT bearer grant checks ``iss`` and ``exp`` but **not the signature**.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.context import SANDBOX_CLIENT_ID, SandboxContext
from sandbox.http import read_form
from sandbox.salesforce import admin as salesforce_admin
from sandbox.salesforce import rest as salesforce_rest
from sandbox.salesforce.rest import QueryCursors, sf_error
from sandbox.salesforce.schema import make_id
from sandbox.salesforce.seed import build_org
from sandbox.salesforce.store import SalesforceOrg, ValidationRule

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ORG_ID = make_id("00D", 1)
DEFAULT_DAILY_LIMIT = 100_000
_VERSIONED = re.compile(r"^v(\d{2,3}\.\d)(?:/(.*))?$")
_FAULT_CODES = {
    429: ("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."),
    500: ("UNKNOWN_EXCEPTION", "An unexpected error occurred."),
    503: ("SERVER_UNAVAILABLE", "The server is unavailable."),
}


class SalesforcePart:
    """The imitated Salesforce org: data, API budget, query cursors and routes."""

    api = "salesforce"

    def __init__(self, ctx: SandboxContext) -> None:
        self.ctx = ctx
        self.org = SalesforceOrg(ctx.clock.now)
        self.cursors = QueryCursors(ctx.clock.now)
        self.limit_max = DEFAULT_DAILY_LIMIT
        self.limit_used = 0
        #: seeded opportunity id -> its one co-sell defect (see salesforce_seed.DEFECTS)
        self.defects: dict[str, str] = {}
        self.last_seed = (0, ctx.seed)
        self.seed(0, ctx.seed)

    # --- Part protocol -----------------------------------------------------

    @property
    def routes(self) -> list[BaseRoute]:
        methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
        return [
            Route("/services/oauth2/token", self._token, methods=["POST"]),
            Route("/services/data", self._versions, methods=["GET"]),
            Route("/services/data/", self._versions, methods=["GET"]),
            Route("/services/data/{rest:path}", self._api, methods=methods),
            *salesforce_admin.routes(self),
        ]

    def error_response(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> Response:
        """An injected fault in Salesforce's shape (Salesforce never sends Retry-After)."""
        if code == "unauthenticated" or status == 401:
            return sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        error_code, text = _FAULT_CODES.get(status, (code.upper(), message))
        response = sf_error(status, error_code, f"{text} ({message})")
        response.headers["Sforce-Limit-Info"] = self.limit_info
        return response

    def seed(self, n: int, seed: int) -> None:
        """Replace the org with ``n`` deterministic opportunities (and their accounts…)."""
        org = build_org(n, seed, self.ctx.clock.now())
        self.org.replace_all(org.records, org.counters)
        self.defects = org.defects
        self.cursors.clear()
        self.last_seed = (n, seed)

    def dump(self) -> dict[str, Any]:
        with self.org.lock:
            return {
                "records": {name: list(rows.values()) for name, rows in self.org.records.items()},
                "counters": dict(self.org.counters),
                "rules": [r.as_json() for r in self.org.rules],
                "limits": {"max": self.limit_max, "used": self.limit_used},
                "defects": self.defects,
                "last_seed": list(self.last_seed),
            }

    def load(self, data: dict[str, Any]) -> None:
        self.org.replace_all(data["records"], data["counters"])
        self.org.rules = [ValidationRule.from_json(r) for r in data.get("rules", [])]
        limits = data.get("limits", {})
        self.limit_max = int(limits.get("max", DEFAULT_DAILY_LIMIT))
        self.limit_used = int(limits.get("used", 0))
        self.defects = dict(data.get("defects", {}))
        n, s = data.get("last_seed", [0, self.ctx.seed])
        self.last_seed = (int(n), int(s))
        self.cursors.clear()

    # --- API budget --------------------------------------------------------

    @property
    def limit_info(self) -> str:
        return f"api-usage={self.limit_used}/{self.limit_max}"

    def set_limits(self, max_requests: int | None = None, used: int | None = None) -> None:
        if max_requests is not None:
            self.limit_max = max_requests
        if used is not None:
            self.limit_used = used

    # --- handlers ----------------------------------------------------------

    async def _versions(self, request: Request) -> Response:
        return JSONResponse(
            [
                {"label": f"v{v}", "url": f"/services/data/v{v}", "version": v}
                for v in ("58.0", "59.0", "60.0", "61.0", "62.0")
            ]
        )

    async def _api(self, request: Request) -> Response:
        if not self.ctx.tokens.check(request.headers.get("authorization"), "salesforce"):
            return sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        m = _VERSIONED.match(request.path_params["rest"])
        if m is None:
            return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        if self.limit_used >= self.limit_max:
            response = sf_error(
                403,
                "REQUEST_LIMIT_EXCEEDED",
                f"TotalRequests Limit exceeded: {self.limit_used} of {self.limit_max} "
                "daily API requests used; wait for the rolling 24-hour window.",
            )
        else:
            self.limit_used += 1
            response = await salesforce_rest.handle(self, request, m.group(1), m.group(2) or "")
        response.headers["Sforce-Limit-Info"] = self.limit_info
        return response

    async def _token(self, request: Request) -> Response:
        form = await read_form(request)
        grant_type = form.get("grant_type", "")
        if grant_type == "client_credentials":
            if (
                form.get("client_id") != SANDBOX_CLIENT_ID
                or form.get("client_secret") not in self.ctx.client_secrets
            ):
                return _oauth_error("invalid_client", "invalid client credentials")
        elif grant_type == JWT_GRANT:
            origin = f"{request.url.scheme}://{request.headers.get('host', '127.0.0.1')}"
            problem = self._check_assertion(form.get("assertion", ""), origin)
            if problem is not None:
                return problem
        else:
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        token = self.ctx.tokens.issue("salesforce")
        instance_url = f"https://{request.headers.get('host', '127.0.0.1')}"
        users = self.org.records["User"]
        user_id = next(iter(users)) if users else make_id("005", 1)
        identity = f"{instance_url}/id/{ORG_ID}/{user_id}"
        issued_at = str(int(self.ctx.clock.now().timestamp() * 1000))
        digest = hmac.new(b"sandbox", (identity + issued_at).encode(), hashlib.sha256).digest()
        return JSONResponse(
            {
                "access_token": token.value,
                "instance_url": instance_url,
                "id": identity,
                "token_type": "Bearer",
                "issued_at": issued_at,
                "signature": base64.b64encode(digest).decode(),
                "scope": "api",
            }
        )

    def _check_assertion(self, assertion: str, origin: str) -> Response | None:
        """Claims checks of the JWT bearer grant; the signature is deliberately not verified.

        ``aud`` must be one of the audiences Salesforce names: its production or test
        login host, or a site of the org (here: the sandbox's own origin, which also
        stands for a My Domain, since whether Salesforce refuses one is not documented).
        """
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return _oauth_error("invalid_grant", "invalid assertion: not a JWT")
        if claims.get("iss") != SANDBOX_CLIENT_ID:
            return _oauth_error("invalid_client", "client identifier invalid")
        if not claims.get("sub") or not claims.get("aud"):
            return _oauth_error("invalid_grant", "invalid assertion: sub and aud are required")
        if str(claims["aud"]).rstrip("/") not in (*JWT_AUDIENCES, origin):
            return _oauth_error("invalid_grant", "audience is invalid")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp <= self.ctx.clock.now().timestamp():
            return _oauth_error("invalid_grant", "expired assertion: exp is missing or past")
        return None


#: the fixed audiences of Salesforce's JWT bearer flow (production and sandbox login)
JWT_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")


def _oauth_error(code: str, description: str) -> Response:
    return JSONResponse({"error": code, "error_description": description}, status_code=400)


def create(ctx: SandboxContext) -> SalesforcePart:
    """The Salesforce part of the sandbox (see :mod:`sandbox.app`)."""
    return SalesforcePart(ctx)
