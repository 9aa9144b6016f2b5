"""The Dataverse adapter reads what Microsoft publishes: every fixture replayed through it.

The published examples are about contacts, accounts and tasks; the adapter reads
opportunities. A replay keeps every envelope (``@odata.context``, ``@odata.etag``,
``@odata.nextLink`` with its paging cookie, ``@odata.deltaLink``, ``$deletedEntity``,
multipart parts, error bodies, ``Retry-After``) as published, and gives each row the
two columns every opportunity row has (``opportunityid`` from the row's own key,
``modifiedon``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from dataverse_contract import API, ENV, TOKEN_URL, client, published

from connector.errors import CrmError
from connector.model import CrmStatusUpdate

STAMP = "2026-05-01T10:00:00Z"
OPP1 = "11111111-1111-1111-1111-111111111111"
OPP2 = "22222222-2222-2222-2222-222222222222"
OPP3 = "33333333-3333-3333-3333-333333333333"


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        router.post(TOKEN_URL).respond(json={"access_token": "tok", "expires_in": 3600})
        router.get(f"{API}/EntityDefinitions", name="tables").respond(
            json=published("definition", ENV)["response"]["body"]
        )
        for entity in ("accounts", "systemusers", "transactioncurrencies", "contacts"):
            router.get(f"{API}/{entity}", params={"$select": "accountid,name"}).respond(
                json={"value": []}
            )
        yield router


def with_our_columns(link: str, crm: Any, fields: list[str]) -> str:
    """A published delta link selecting the columns this adapter reads (the example's
    select the account's; a link without them makes the adapter read everything again).
    The ``$deltatoken`` and the rest of the link are kept as published."""
    from connector.crm.dynamics.rows import plan_columns

    plan = plan_columns(fields, lookups=crm.lookups, stage_column=crm.stage_column)
    url = httpx.URL(link)
    return str(url.copy_set_param("$select", ",".join(plan.select)))


def as_opportunities(body: dict[str, Any], key: str) -> dict[str, Any]:
    """The published page with each live row given an opportunity's id and stamp."""
    rows = []
    for row in body["value"]:
        if "reason" in row:
            rows.append(row)  # a $deletedEntity is kept exactly
        else:
            rows.append({**row, "opportunityid": row[key], "modifiedon": STAMP})
    return {**body, "value": rows}


def test_published_paging_is_followed_link_for_link(mock: respx.MockRouter) -> None:
    fixture = published("paging", ENV)
    first, second = (r["body"] for r in fixture["responses"])
    last = httpx.URL(second["@odata.nextLink"])
    mock.get(f"{API}/contacts", params={"$skiptoken": last.params["$skiptoken"]}).respond(
        json={"value": []}  # not published: the end of the list
    )
    follow = mock.get(
        f"{API}/contacts",
        params={"$skiptoken": httpx.URL(first["@odata.nextLink"]).params["$skiptoken"]},
    ).respond(
        json=as_opportunities(second, "contactid"), headers=fixture["responses"][1]["headers"]
    )
    mock.get(f"{API}/opportunities").respond(
        json=as_opportunities(first, "contactid"), headers=fixture["responses"][0]["headers"]
    )
    crm = client(change_tracking="off", page_size=2)
    pages = list(crm.pull_changes(None, fields=["fullname"], select=None))
    crm.close()
    # the nextLink is sent back exactly as published: its cookie is neither decoded nor re-encoded
    assert str(follow.calls.last.request.url) == first["@odata.nextLink"]
    assert follow.calls.last.request.headers["Prefer"].startswith("odata.maxpagesize=2")
    names = [r.fields["fullname"] for p in pages for r in p.records]
    assert names == [
        "Yvonne McKay (sample)",
        "Susanna Stubberod (sample)",
        "Nancy Anderson (sample)",
        "Maria Campbell (sample)",
    ]
    assert pages[0].records[0].etag == 'W/"72201545"'


def test_published_change_tracking_gives_changes_deletions_and_the_next_delta_link(
    mock: respx.MockRouter,
) -> None:
    fixture = published("change_tracking", ENV)
    initial, delta = (r["body"] for r in fixture["responses"])
    crm = client()
    link = with_our_columns(initial["@odata.deltaLink"], crm, ["name"])
    initial = {**initial, "@odata.deltaLink": link}
    mock.get(link).respond(json=as_opportunities(delta, "accountid"))
    mock.get(f"{API}/opportunities").respond(json=as_opportunities(initial, "accountid"))
    (first,) = list(crm.pull_changes(None, fields=["name"], select=None))
    assert [r.fields["name"] for r in first.records] == ["Monte Orton"]
    assert first.cursor == f"delta:{initial['@odata.deltaLink']}"
    (changes,) = list(crm.pull_changes(first.cursor, fields=["name"], select=None))
    crm.close()
    assert [r.id for r in changes.records] == ["60c4e274-0d87-e711-80e5-00155db19e6d"]
    assert list(changes.deleted_ids) == ["2e451703-c686-e711-80e5-00155db19e6d"]
    assert changes.cursor == f"delta:{delta['@odata.deltaLink']}"


def test_the_published_empty_delta_answer_keeps_the_cursor(mock: respx.MockRouter) -> None:
    # "An empty JSON response is returned if no table changes have occurred"
    crm = client()
    link = published("change_tracking", ENV)["responses"][0]["body"]["@odata.deltaLink"]
    link = with_our_columns(link, crm, ["name"])
    mock.get(link).respond(200, content=b"")
    (page,) = list(crm.pull_changes(f"delta:{link}", fields=["name"], select=None))
    crm.close()
    assert (list(page.records), page.cursor) == ([], f"delta:{link}")


def batch(mock: respx.MockRouter, status: int, text: str) -> respx.Route:
    # published with LF line ends and without a Content-Type header; both are read
    return mock.post(f"{API}/$batch").respond(
        status, content=text.encode(), headers={"OData-Version": "4.0"}
    )


def write(**options: Any) -> list[tuple[bool, str | None]]:
    crm = client(**options)
    try:
        results = crm.write_status(
            [CrmStatusUpdate(i, {"cosell_status": "Active"}) for i in (OPP1, OPP2, OPP3)]
        )
    finally:
        crm.close()
    return [(r.ok, r.error_code) for r in results]


def test_the_published_200_batch_answer_settles_each_write_in_order(
    mock: respx.MockRouter,
) -> None:
    fixture = published("batch", ENV)["with_continue_on_error"]
    mock.get(f"{API}/opportunities", params={"$select": "opportunityid,statecode"}).respond(
        json={"value": [{"opportunityid": i, "statecode": 0} for i in (OPP1, OPP2, OPP3)]}
    )
    route = batch(mock, fixture["status"], fixture["text"])
    assert write() == [(False, "0x80044331"), (True, None), (True, None)]
    assert route.calls.last.request.headers["Prefer"] == "odata.continue-on-error"


def test_the_published_400_batch_answer_is_never_read_as_nothing_happened(
    mock: respx.MockRouter,
) -> None:
    fixture = published("batch", ENV)["without_continue_on_error"]
    mock.get(f"{API}/opportunities", params={"$select": "opportunityid,statecode"}).respond(
        json={"value": [{"opportunityid": i, "statecode": 0} for i in (OPP1, OPP2, OPP3)]}
    )
    batch(mock, fixture["status"], fixture["text"])
    error = published("batch", ENV)["with_continue_on_error"]["text"].split("\n\n")[2]
    singles = [
        mock.patch(f"{API}/opportunities({OPP1})").respond(400, content=error.split("\n")[0]),
        mock.patch(f"{API}/opportunities({OPP2})").respond(204),
        mock.patch(f"{API}/opportunities({OPP3})").respond(204),
    ]
    # which write failed cannot be told from that answer: each is written on its own
    assert write() == [(False, "0x80044331"), (True, None), (True, None)]
    assert [r.call_count for r in singles] == [1, 1, 1]


def test_the_published_error_body_gives_the_code_and_message(mock: respx.MockRouter) -> None:
    response = published("error", ENV)["response"]
    mock.get(f"{API}/opportunities").respond(
        response["status"], json=response["body"], headers=response["headers"]
    )
    crm = client()
    with pytest.raises(CrmError) as info:
        list(crm.pull_changes(None, fields=["name"], select=None))
    crm.close()
    assert info.value.code == "0x80040265" and info.value.status == 400
    assert "Example Error Message." in info.value.message and not info.value.transient
    assert "TraceText" not in info.value.message


def test_the_published_429_waits_for_retry_after_then_goes_on(mock: respx.MockRouter) -> None:
    response = published("throttled", ENV)["response"]
    sleeps: list[float] = []
    mock.get(f"{API}/opportunities").mock(
        side_effect=[
            httpx.Response(response["status"], json=response["body"], headers=response["headers"]),
            httpx.Response(200, json={"value": []}),
        ]
    )
    now = [1000.0]

    def sleep(seconds: float) -> None:  # a fake clock, moved by the waits
        sleeps.append(seconds)
        now[0] += seconds

    crm = client(sleep=sleep, monotonic=lambda: now[0])
    list(crm.pull_changes(None, fields=["name"], select=None))
    crm.close()
    assert sum(sleeps) == pytest.approx(2.0) and crm.transport.throttled == 1
    assert crm.transport.throttle_wait_s == 2.0


def test_the_published_definition_query_says_the_table_tracks_changes(
    mock: respx.MockRouter,
) -> None:
    mock.get(f"{API}/opportunities").respond(json={"value": [], "@odata.deltaLink": f"{API}/x"})
    crm = client(change_tracking="required")
    list(crm.pull_changes(None, fields=["name"], select=None))
    crm.close()
    request = mock.routes["tables"].calls.last.request
    assert request.url.params["$filter"] == "ChangeTrackingEnabled eq true"
    assert "SchemaName" in request.url.params["$select"].split(",")
