"""The sandbox's Dataverse answers in the shapes Microsoft publishes (``fixtures/``).

Each published request is sent, as closely as the sandbox's tables allow (opportunities
for the examples' contacts, accounts and tasks), over HTTPS; the answer must have the
published status, headers and envelope: the same keys with the same kinds of value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from dataverse_contract import published, shape

from sandbox.harness import SandboxServer

API = "/api/data/v9.2/"
ADMIN = "/_sandbox/dataverse/"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(opportunities=8, seed=5) as sb:
        yield sb


@pytest.fixture
def web(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with sandbox.client(20) as client:
        client.post(ADMIN + "reset", json={"opportunities": 8, "seed": 5}).raise_for_status()
        token = client.post(
            "/tenant-1/oauth2/v2.0/token",
            data={
                "client_id": "sandbox",
                "client_secret": "sandbox",
                "grant_type": "client_credentials",
                "scope": "https://org.crm.dynamics.com/.default",
            },
        ).json()["access_token"]
        client.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})
        yield client


def root(sandbox: SandboxServer) -> str:
    return f"{sandbox.url}{API}"


def test_paging_has_the_published_envelope_and_links(
    sandbox: SandboxServer, web: httpx.Client
) -> None:
    fixture = published("paging", sandbox.url)
    first_published = fixture["responses"][0]
    prefer = {"Prefer": "odata.maxpagesize=2"}
    first = web.get(API + "opportunities?$select=name", headers=prefer)
    assert first.status_code == first_published["status"]
    assert first.headers["Preference-Applied"] == first_published["headers"]["Preference-Applied"]
    body = first.json()
    assert set(body) == set(first_published["body"])
    assert body["@odata.context"] == f"{root(sandbox)}$metadata#opportunities(name)"
    row, published_row = body["value"][0], first_published["body"]["value"][0]
    # published: @odata.etag, the selected column, the key, each a string
    assert set(row) == {"@odata.etag", "name", "opportunityid"}
    assert shape(row["@odata.etag"]) == shape(published_row["@odata.etag"])
    assert re.fullmatch(r'W/"\d+"', row["@odata.etag"])
    link = httpx.URL(body["@odata.nextLink"])
    published_link = httpx.URL(first_published["body"]["@odata.nextLink"])
    assert str(link).startswith(root(sandbox)) and link.path == f"{API}opportunities"
    assert set(link.params) == set(published_link.params) == {"$select", "$skiptoken"}
    second = web.get(str(link), headers=prefer)
    assert second.status_code == 200 and set(second.json()) >= {"@odata.context", "value"}


def test_change_tracking_has_the_published_delta_and_deleted_entity(
    sandbox: SandboxServer, web: httpx.Client
) -> None:
    fixture = published("change_tracking", sandbox.url)
    initial_published, delta_published = (r["body"] for r in fixture["responses"])
    tracked = {"Prefer": "odata.track-changes"}
    initial = web.get(API + "opportunities?$select=name", headers=tracked)
    assert "odata.track-changes" in initial.headers["Preference-Applied"]
    body = initial.json()
    assert set(body) == set(initial_published)
    link = httpx.URL(body["@odata.deltaLink"])
    assert set(link.params) == set(httpx.URL(initial_published["@odata.deltaLink"]).params)
    rows = body["value"]
    web.delete(ADMIN + f"opportunities/{rows[0]['opportunityid']}").raise_for_status()
    web.post(ADMIN + f"opportunities/{rows[1]['opportunityid']}", json={"name": "Renamed"})

    delta = web.get(str(link), headers=tracked).json()

    assert set(delta) == set(delta_published)
    assert delta["@odata.context"].endswith("/$delta")
    deleted = [r for r in delta["value"] if "reason" in r]
    published_deleted = [r for r in delta_published["value"] if "reason" in r]
    assert [shape(r) for r in deleted] == [shape(r) for r in published_deleted]
    assert deleted[0]["@odata.context"] == f"{root(sandbox)}$metadata#opportunities/$deletedEntity"
    assert (deleted[0]["id"], deleted[0]["reason"]) == (rows[0]["opportunityid"], "deleted")
    assert [r["name"] for r in delta["value"] if "reason" not in r] == ["Renamed"]


def _part(row_id: str, name: str) -> str:
    return (
        "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        f"PATCH {API}opportunities({row_id}) HTTP/1.1\r\n"
        "Content-Type: application/json; type=entry\r\nIf-Match: *\r\n\r\n"
        f'{{"name": "{name}"}}'
    )


def _batch(web: httpx.Client, rows: list[dict[str, Any]], prefer: str | None) -> httpx.Response:
    # the published example: three requests, the first with a value too long for its column
    parts = [_part(rows[0]["opportunityid"], "x" * 400)]
    parts += [_part(r["opportunityid"], f"Batch {n}") for n, r in enumerate(rows[1:3])]
    body = "".join(f"--batch_1\r\n{p}\r\n" for p in parts) + "--batch_1--\r\n"
    headers = {"Content-Type": "multipart/mixed; boundary=batch_1"}
    if prefer:
        headers["Prefer"] = prefer
    return web.post(API + "$batch", content=body, headers=headers)


def _answers(response: httpx.Response) -> list[tuple[dict[str, str], str, str, str]]:
    """(part headers, status line, answer headers, body) of each part, as the doc shows them."""
    boundary = response.text.split("\r\n", 1)[0].removeprefix("--")
    out = []
    for part in response.text.split(f"--{boundary}")[1:-1]:
        head, _, message = part.strip("\r\n").partition("\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.split("\r\n"))
        status_line, _, rest = message.partition("\r\n")
        inner, _, body = rest.partition("\r\n\r\n")
        out.append((headers, status_line, inner, body.strip()))
    return out


def test_batch_answers_400_or_200_in_the_published_shapes(
    sandbox: SandboxServer, web: httpx.Client
) -> None:
    fixture = published("batch", sandbox.url)
    rows = web.get(ADMIN + "opportunities").json()["value"]
    rows = [r for r in rows if r["statecode"] == 0][:3]

    stopped = _batch(web, rows, None)
    assert stopped.status_code == fixture["without_continue_on_error"]["status"]
    assert stopped.headers["Content-Type"].startswith("multipart/mixed; boundary=batchresponse_")
    (only,) = _answers(stopped)  # the failure ends the batch: nothing after it ran
    assert only[0] == {"Content-Type": "application/http", "Content-Transfer-Encoding": "binary"}
    assert only[1] == "HTTP/1.1 400 Bad Request"
    assert "Content-Type: application/json; odata.metadata=minimal" in only[2]
    error = httpx.Response(200, content=only[3]).json()
    assert shape(error) == {"error": {"code": "str", "message": "str"}}
    assert error["error"]["code"] == "0x80044331"

    kept = _batch(web, rows, "odata.continue-on-error")
    assert kept.status_code == fixture["with_continue_on_error"]["status"]
    assert [a[1] for a in _answers(kept)] == [
        "HTTP/1.1 400 Bad Request",
        "HTTP/1.1 204 No Content",
        "HTTP/1.1 204 No Content",
    ]
    # as published for each write that succeeded: the row it wrote
    assert all("OData-EntityId: " in a[2] for a in _answers(kept)[1:])


def test_errors_have_the_published_body(web: httpx.Client) -> None:
    published_error = published("error")["response"]
    row = web.get(ADMIN + "opportunities").json()["value"][0]
    refused = web.patch(
        API + f"opportunities({row['opportunityid']})",
        json={"name": "x" * 400},
        headers={"If-Match": "*"},
    )
    assert refused.status_code == 400
    assert refused.headers["Content-Type"].startswith("application/json")
    core = {k: v for k, v in published_error["body"]["error"].items() if not k.startswith("@")}
    assert shape(refused.json()) == shape({"error": core})


def test_throttling_has_the_published_status_header_and_error(web: httpx.Client) -> None:
    published_429 = published("throttled")["response"]
    web.put(ADMIN + "limits", json={"requests_per_5min": 2})
    statuses = [web.get(API + "opportunities?$top=1").status_code for _ in range(3)]
    throttled = web.get(API + "opportunities?$top=1")
    assert statuses[-1] == throttled.status_code == published_429["status"]
    assert re.fullmatch(r"\d+", throttled.headers["Retry-After"])
    error = throttled.json()["error"]
    assert error["code"] == published_429["body"]["error"]["code"]
    assert error["message"].startswith("Number of requests exceeded the limit of 2 ")
    assert "over time window of 300 seconds." in error["message"]


def test_the_published_change_tracking_query_answers_in_its_shape(web: httpx.Client) -> None:
    fixture = published("definition")
    answer = web.get(API + fixture["request"]["path"])
    assert answer.status_code == fixture["response"]["status"]
    assert shape(answer.json()) == shape(fixture["response"]["body"])
    assert [t["SchemaName"] for t in answer.json()["value"]] == ["Opportunity"]
