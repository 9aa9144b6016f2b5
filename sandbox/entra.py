"""An Entra-ID-style token endpoint: client credentials, device code and refresh tokens.

Audiences: a scope naming ``api.partner.microsoft.com`` gets a token for the
referrals API ("core"), one naming ``api.partnercenter.microsoft.com`` a token for
the Partner Center API (its webhook registration, "partnercenter"); any other scope a
token for Dataverse.
"""

from __future__ import annotations

import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.context import SANDBOX_CLIENT_ID, SandboxContext
from sandbox.http import read_form

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def audience_of(scope: str) -> str:
    if "api.partnercenter.microsoft.com" in scope:
        return "partnercenter"
    return "core" if "api.partner.microsoft.com" in scope else "dataverse"


def _error(code: str, description: str, status: int = 400) -> Response:
    return JSONResponse({"error": code, "error_description": description}, status_code=status)


def routes(ctx: SandboxContext) -> list[BaseRoute]:
    refresh_tokens: dict[str, str] = {}  # refresh token → audience
    device_codes: dict[str, str] = {}  # device code → audience

    def grant(audience: str, with_refresh: bool) -> Response:
        token = ctx.tokens.issue(audience)
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": int((token.expires_at - ctx.clock.now()).total_seconds()),
            "access_token": token.value,
        }
        if with_refresh:
            refresh = secrets.token_urlsafe(32)
            refresh_tokens[refresh] = audience
            body["refresh_token"] = refresh
        return JSONResponse(body)

    async def token(request: Request) -> Response:
        form = await read_form(request)
        grant_type = str(form.get("grant_type", ""))
        scope = str(form.get("scope", ""))
        if form.get("client_id") != SANDBOX_CLIENT_ID:
            return _error("invalid_client", "AADSTS700016: unknown client id", 401)
        if grant_type == "client_credentials":
            if form.get("client_secret") not in ctx.client_secrets:
                return _error("invalid_client", "AADSTS7000215: invalid client secret", 401)
            return grant(audience_of(scope), with_refresh=False)
        if grant_type == "refresh_token":
            audience = refresh_tokens.pop(str(form.get("refresh_token", "")), None)
            if audience is None:
                return _error("invalid_grant", "AADSTS70000: the refresh token is not valid")
            return grant(audience, with_refresh=True)
        if grant_type == DEVICE_GRANT:
            audience = device_codes.pop(str(form.get("device_code", "")), None)
            if audience is None:
                return _error("expired_token", "AADSTS70019: the device code expired")
            return grant(audience, with_refresh=True)
        return _error("unsupported_grant_type", f"grant type {grant_type!r} is not supported")

    async def devicecode(request: Request) -> Response:
        form = await read_form(request)
        if form.get("client_id") != SANDBOX_CLIENT_ID:
            return _error("invalid_client", "AADSTS700016: unknown client id", 401)
        code = secrets.token_urlsafe(16)
        # The sandbox approves every device code at once: there is no user to ask.
        device_codes[code] = audience_of(str(form.get("scope", "")))
        user_code = secrets.token_hex(4).upper()
        return JSONResponse(
            {
                "device_code": code,
                "user_code": user_code,
                "verification_uri": "https://127.0.0.1/devicelogin",
                "expires_in": 900,
                "interval": 1,
                "message": f"Sandbox: the code {user_code} is approved already.",
            }
        )

    return [
        Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
        Route("/{tenant}/oauth2/v2.0/devicecode", devicecode, methods=["POST"]),
    ]
