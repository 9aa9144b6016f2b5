"""The sandbox's Salesforce answers in the shapes Salesforce publishes (``fixtures/``).

Each published request is sent over HTTPS as closely as the sandbox's org allows; the
answer must have the published status and envelope: the same keys with the same kinds
of value, the same header formats.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from salesforce_contract import published, shape

from sandbox.harness import SandboxServer

VERSION = "v59.0"
LIMIT_INFO = re.compile(r"^api-usage=\d+/\d+$")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(opportunities=300, seed=5) as sb:
        yield sb


@pytest.fixture
def api(sandbox: SandboxServer) -> Iterator[Any]:
    session = requests.Session()
    session.verify = str(sandbox.ca_file)
    session.trust_env = False
    form = {"grant_type": "client_credentials", "client_id": "sandbox", "client_secret": "sandbox"}
    token = session.post(f"{sandbox.url}/services/oauth2/token", data=form, timeout=10).json()
    session.headers["Authorization"] = f"Bearer {token['access_token']}"

    def call(method: str, path: str, **kw: Any) -> requests.Response:
        url = path if path.startswith("https://") else f"{sandbox.url}{path}"
        return session.request(method, url, timeout=20, **kw)

    yield call
    session.put(f"{sandbox.url}/_sandbox/salesforce/limits", json={"max": 100000}, timeout=10)
    session.close()


def test_query_pages_have_the_published_envelope(api: Any) -> None:
    first_published, last_published = (r["body"] for r in published("query")["responses"])
    first = api(
        "GET",
        f"/services/data/{VERSION}/query",
        params={"q": "SELECT Name FROM Opportunity"},
        headers={"Sforce-Query-Options": "batchSize=200"},
    )
    assert first.status_code == 200 and LIMIT_INFO.match(first.headers["Sforce-Limit-Info"])
    body = first.json()
    assert set(body) == set(first_published)
    assert shape(body["records"][0]) == shape(first_published["records"][0])
    assert re.fullmatch(
        rf"/services/data/{VERSION}/sobjects/Opportunity/006\w{{15}}",
        body["records"][0]["attributes"]["url"],
    )
    # published: /services/data/vNN.N/query/<locator>-<offset>, relative to the instance
    assert re.fullmatch(rf"/services/data/{VERSION}/query/[\w]+-\d+", body["nextRecordsUrl"])
    last = api("GET", body["nextRecordsUrl"]).json()
    assert set(last) == set(last_published) and last["done"] is True


def test_collection_results_have_the_published_shape(api: Any) -> None:
    fixture = published("collections")
    (row,) = api(
        "GET",
        f"/services/data/{VERSION}/query",
        params={"q": "SELECT Id FROM Opportunity LIMIT 1"},
    ).json()["records"]
    records = [
        {"attributes": {"type": "Opportunity"}, "id": row["Id"], "Description": "contract"},
        {"attributes": {"type": "Opportunity"}, "id": "001xx000003DGb2999", "Description": "x"},
    ]
    answer = api(
        "PATCH",
        f"/services/data/{VERSION}/composite/sobjects",
        json={"allOrNone": False, "records": records},
    )
    assert answer.status_code == fixture["response"]["status"]
    assert [shape(r) for r in answer.json()] == [shape(r) for r in fixture["response"]["body"]]
    assert answer.json()[1]["errors"][0]["statusCode"] == "MALFORMED_ID"


def test_errors_are_published_arrays_with_their_status(api: Any, sandbox: SandboxServer) -> None:
    errors = published("errors")["responses"]
    malformed = api("GET", f"/services/data/{VERSION}/sobjects/Opportunity/not-an-id")
    expired = api(
        "GET",
        f"/services/data/{VERSION}/query",
        params={"q": "SELECT Id FROM Opportunity"},
        headers={"Authorization": "Bearer not-a-token"},
    )
    assert expired.status_code == errors["session"]["status"]
    assert shape(expired.json()) == shape(errors["session"]["body"])
    assert expired.json()[0]["errorCode"] == "INVALID_SESSION_ID"
    assert malformed.status_code in (400, 404)
    assert {"message", "errorCode"} <= set(malformed.json()[0])

    api("PUT", "/_sandbox/salesforce/limits", json={"max": 1, "used": 1})
    spent = api("GET", f"/services/data/{VERSION}/query", params={"q": "SELECT Id FROM Account"})
    assert spent.status_code == errors["limit"]["status"]
    assert shape(spent.json()) == shape(errors["limit"]["body"])
    assert spent.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_every_answer_carries_the_published_limit_info_header(api: Any) -> None:
    header = published("limit_info")["response"]["headers"]["Sforce-Limit-Info"]
    assert LIMIT_INFO.match(header)
    for path in (
        f"/services/data/{VERSION}/query?q=SELECT+Id+FROM+Account+LIMIT+1",
        f"/services/data/{VERSION}/sobjects/Opportunity/describe",
        f"/services/data/{VERSION}/limits",
    ):
        answer = api("GET", path)
        assert answer.status_code == 200, path
        assert LIMIT_INFO.match(answer.headers["Sforce-Limit-Info"]), path
