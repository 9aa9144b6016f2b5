"""Values no JSON answer can carry are refused when written, not stored to break reads.

A number too large for a double (``1e309``), ``NaN``, a lone UTF-16 surrogate and an
impossible date, sent to each of the sandbox's three APIs: each write is refused with
400 in the error shape of the API it imitates, and every later read still answers 200
with JSON a strict reader accepts (before, the value was stored and every read of the
table answered 500).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.harness import SandboxServer

SF_API = "/services/data/v59.0"
DV_API = "/api/data/v9.2"
REFERRALS = "/v1.0/engagements/referrals"
#: a stand-in for the hostile value, replaced in the serialised body
HOLE = "__VALUE__"

#: (name, raw JSON text, the field kind it is aimed at)
HOSTILE = [
    ("overflowing number", "1e309", "number"),
    ("NaN", "NaN", "number"),
    ("negative infinity", "-Infinity", "number"),
    ("lone surrogate", '"caf\\ud800e"', "text"),
    ("impossible date", '"2026-02-30"', "date"),
]


def body_with(template: Any, raw: str) -> bytes:
    """``template`` as JSON with the string ``HOLE`` replaced by ``raw`` verbatim."""
    return json.dumps(template).replace(json.dumps(HOLE), raw).encode()


def strict(text: str) -> Any:
    """Parse as a strict JSON reader does (no NaN/Infinity, valid Unicode)."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} in an answer")

    data = json.loads(text, parse_constant=refuse)
    json.dumps(data, allow_nan=False).encode("utf-8")  # raises on a lone surrogate
    return data


@pytest.fixture(scope="module")
def sb() -> Iterator[SandboxServer]:
    with SandboxServer(opportunities=8, seed=5) as server:
        yield server


@pytest.fixture(scope="module")
def http(sb: SandboxServer) -> Iterator[httpx.Client]:
    with sb.client() as client:
        yield client


def token(http: httpx.Client, path: str, **form: str) -> dict[str, str]:
    data = {"grant_type": "client_credentials", "client_id": "sandbox", "client_secret": "sandbox"}
    answer = http.post(path, data={**data, **form})
    answer.raise_for_status()
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@pytest.mark.parametrize(("name", "raw", "kind"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_salesforce_refuses_the_value_and_reads_stay_whole(
    http: httpx.Client, name: str, raw: str, kind: str
) -> None:
    auth = {**token(http, "/services/oauth2/token"), "Content-Type": "application/json"}
    query = {"q": "SELECT Id, Name, Amount, CloseDate, Description FROM Opportunity"}
    first = http.get(f"{SF_API}/query", params=query, headers=auth).json()["records"][0]["Id"]
    field = {"number": "Amount", "text": "Description", "date": "CloseDate"}[kind]

    one = http.patch(
        f"{SF_API}/sobjects/Opportunity/{first}",
        content=body_with({field: HOLE}, raw),
        headers=auth,
    )
    collection = http.patch(
        f"{SF_API}/composite/sobjects",
        content=body_with(
            {
                "allOrNone": False,
                "records": [{"attributes": {"type": "Opportunity"}, "id": first, field: HOLE}],
            },
            raw,
        ),
        headers=auth,
    )

    assert one.status_code == 400, one.text
    errors = one.json()
    assert isinstance(errors, list) and errors[0]["errorCode"] in {
        "JSON_PARSER_ERROR",
        "NUMBER_OUTSIDE_VALID_RANGE",
    }
    if collection.status_code == 400:  # the whole body unreadable: an error array
        assert collection.json()[0]["errorCode"] == "JSON_PARSER_ERROR"
    else:  # readable, the record refused: one result per record
        assert collection.status_code == 200, collection.text
        (result,) = collection.json()
        assert result["success"] is False
        assert result["errors"][0]["statusCode"] == "NUMBER_OUTSIDE_VALID_RANGE"
        assert result["errors"][0]["fields"] == [field]
    read = http.get(f"{SF_API}/query", params=query, headers=auth)
    assert read.status_code == 200, read.text
    assert len(strict(read.text)["records"]) == 8


@pytest.mark.parametrize(("name", "raw", "kind"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_dataverse_refuses_the_value_and_reads_stay_whole(
    sb: SandboxServer, http: httpx.Client, name: str, raw: str, kind: str
) -> None:
    auth = token(http, "/sandbox-tenant/oauth2/v2.0/token", scope=f"{sb.url}/.default")
    rows = http.get(f"{DV_API}/opportunities", params={"$select": "name"}, headers=auth)
    first = rows.json()["value"][0]["opportunityid"]
    field = {"number": "estimatedvalue", "text": "description", "date": "estimatedclosedate"}[kind]

    answer = http.patch(
        f"{DV_API}/opportunities({first})",
        content=body_with({field: HOLE}, raw),
        headers={**auth, "Content-Type": "application/json", "If-Match": "*"},
    )

    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert set(error) >= {"code", "message"} and error["code"].startswith("0x")
    read = http.get(f"{DV_API}/opportunities", headers=auth)
    assert read.status_code == 200, read.text
    assert len(strict(read.text)["value"]) == 8


def referral(kind: str) -> dict[str, Any]:
    """A valid Private deal with ``HOLE`` where ``kind`` of value goes."""
    details: dict[str, Any] = {
        "dealValue": HOLE if kind == "number" else 50000,
        "currency": "USD",
        "closingDateTime": HOLE if kind == "date" else "2026-11-14T00:00:00Z",
        "requirements": {"solutions": [{"id": "SOL-34104-EBB", "type": "Name"}]},
    }
    return {
        "name": HOLE if kind == "text" else "Contoso – Azure migration",
        "externalReferenceId": f"006-{uuid.uuid4().hex[:10]}",
        "type": "Independent",
        "qualification": "SalesQualified",
        "customerProfile": {
            "name": "Contoso Customer Inc",
            "address": {"city": "Redmond", "country": "US"},
            "team": [{"firstName": "Sue", "lastName": "Smith", "email": "sue@contoso.example"}],
        },
        "consent": {"consentToShareReferralWithMicrosoftSellers": False},
        "details": details,
        "team": [
            {
                "firstName": "John",
                "lastName": "Doe",
                "phoneNumber": "+1 425 555 0101",
                "email": "john@partner.example",
            }
        ],
    }


@pytest.mark.parametrize(("name", "raw", "kind"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_the_core_refuses_the_value_and_reads_stay_whole(
    http: httpx.Client, name: str, raw: str, kind: str
) -> None:
    auth = {
        **token(
            http,
            "/sandbox-tenant/oauth2/v2.0/token",
            scope="https://api.partner.microsoft.com/.default",
        ),
        "Content-Type": "application/json",
    }
    created = http.post(REFERRALS, content=json.dumps(referral("none")).encode(), headers=auth)
    assert created.is_success, created.text  # 200 as published (CR20), 201 as a setting
    path = {"number": "/details/dealValue", "text": "/name", "date": "/details/closingDateTime"}

    posted = http.post(REFERRALS, content=body_with(referral(kind), raw), headers=auth)
    patched = http.patch(
        f"{REFERRALS}/{created.json()['id']}",
        content=body_with([{"op": "replace", "path": path[kind], "value": HOLE}], raw),
        headers={**auth, "If-Match": created.json()["eTag"]},
    )

    for answer in (posted, patched):
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["code"] and error["message"]
    read = http.get(REFERRALS, headers=auth)
    assert read.status_code == 200, read.text
    assert strict(read.text)["value"]
    assert http.get(f"{REFERRALS}/{created.json()['id']}", headers=auth).status_code == 200
