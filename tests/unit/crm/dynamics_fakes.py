"""Builders shared by the Dataverse adapter's unit tests (respx-mocked endpoints)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import respx

from connector.crm.dynamics.adapter import DataverseOpportunities
from connector.crm.dynamics.auth import DataverseTokens

ENV = "https://org.crm.dynamics.com"
API = f"{ENV}/api/data/v9.2"
TOKEN_URL = "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token"
OPP1 = "11111111-1111-1111-1111-111111111111"
OPP2 = "22222222-2222-2222-2222-222222222222"
OPP3 = "33333333-3333-3333-3333-333333333333"
FV = "@OData.Community.Display.V1.FormattedValue"
TABLE_DEFINITIONS = f"{API}/EntityDefinitions"
OPPORTUNITY_ATTRIBUTES = f"{API}/EntityDefinitions(LogicalName='opportunity')/Attributes"


@contextmanager
def mocked_dataverse(*, tracking: bool = True) -> Iterator[respx.MockRouter]:
    """Every request must be mocked; the token endpoint issues tok1, tok2, ...

    The opportunity table's definition says whether change tracking is on.
    """
    issued = iter(range(1, 1000))

    def issue(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"access_token": f"tok{next(issued)}", "expires_in": 3600})

    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        router.post(TOKEN_URL).mock(side_effect=issue)
        router.get(TABLE_DEFINITIONS, name="definition").respond(json=definition(tracking))
        yield router


def definition(tracking: bool) -> dict[str, object]:
    """The tables with change tracking (``EntityDefinitions`` filtered on it), as answered."""
    tracked = [
        {
            "LogicalName": "audit",
            "SchemaName": "Audit",
            "MetadataId": "b5e0e8c6-6b1a-4f5e-9d6d-2f8a1c3e4d10",
        }
    ]
    if tracking:
        tracked.append(
            {
                "LogicalName": "opportunity",
                "SchemaName": "Opportunity",
                "MetadataId": "3518894b-8a2c-4f2d-b8d0-4e3a2c1f7a10",
            }
        )
    return {
        "@odata.context": f"{API}/$metadata#EntityDefinitions(LogicalName,SchemaName)",
        "value": tracked,
    }


def adapter(environment_url: str = ENV, **options: Any) -> DataverseOpportunities:
    """An adapter that never sleeps (the caller closes it)."""
    http = httpx.Client()
    tokens = DataverseTokens(
        environment_url=environment_url,
        tenant="tenant-1",
        client_id="app-1",
        client_secret="s3cr3t-value",
        http=http,
    )
    options.setdefault("sleep", lambda seconds: None)
    return DataverseOpportunities(
        environment_url=environment_url, http=http, tokens=tokens, owns_http=True, **options
    )


def row(opp: str, **extra: Any) -> dict[str, Any]:
    """One opportunities row as the Web API answers it."""
    base: dict[str, Any] = {
        "@odata.etag": 'W/"1001"',
        "opportunityid": opp,
        "name": f"Deal {opp[:4]}",
        "modifiedon": "2026-05-01T10:00:00Z",
        "statecode": 0,
        "statuscode": 1,
        "salesstage": 1,
        f"salesstage{FV}": "Develop",
    }
    base.update(extra)
    return base


def attributes(**types: str) -> dict[str, Any]:
    """``EntityDefinitions(...)/Attributes`` as Dataverse lists them: name and type."""
    return {
        "value": [
            {"LogicalName": name, "AttributeType": kind, "MetadataId": f"m-{name}"}
            for name, kind in types.items()
        ]
    }


def states(mock: respx.MockRouter, **by_id: int) -> respx.Route:
    """The statecode query the writer sends before writing."""
    return mock.get(f"{API}/opportunities", params={"$select": "opportunityid,statecode"}).respond(
        json={"value": [{"opportunityid": k, "statecode": v} for k, v in by_id.items()]}
    )


def batch_part(status: int, content_id: str | None, code: str = "0x80060882") -> list[str]:
    """The lines of one ``application/http`` answer inside a ``$batch`` response."""
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"HTTP/1.1 {status} X", "OData-Version: 4.0"]
    if status >= 300:
        error = {"error": {"code": code, "message": f"refused ({code})"}}
        lines += ["Content-Type: application/json; odata.metadata=minimal", "", json.dumps(error)]
    else:
        lines += [""]
    return lines


def multipart(status: int, parts: list[list[str]], *, boundary: str = "batchresponse_1") -> bytes:
    body: list[str] = []
    for part in parts:
        body += [f"--{boundary}", *part]
    body += [f"--{boundary}--", ""]
    return "\r\n".join(body).encode()


def batch_response(
    status: int, parts: list[list[str]], *, with_content_type: bool = True
) -> httpx.Response:
    headers = {"OData-Version": "4.0"}
    if with_content_type:
        headers["Content-Type"] = "multipart/mixed; boundary=batchresponse_1"
    return httpx.Response(status, headers=headers, content=multipart(status, parts))


def batch_ops(request: httpx.Request) -> list[tuple[str, str]]:
    """(content id, request line) of each operation in a ``$batch`` request."""
    out = []
    for chunk in request.content.decode().split("Content-Type: application/http\r\n")[1:]:
        head, _, rest = chunk.partition("\r\n\r\n")
        content_id = head.split("Content-ID: ")[1].strip()
        out.append((content_id, rest.partition("\r\n")[0]))
    return out
