"""What the Dataverse adapter makes of odd answers: empty bodies, non-JSON, links in
another spelling of the environment's host."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import respx
from dynamics_fakes import API, OPP1, OPP2, adapter, mocked_dataverse, row

from connector.crm.dynamics.transport import is_within
from connector.errors import CrmError

DELTA = f"{API}/opportunities?$deltatoken=919042%2108%2f22%2f2026"


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with mocked_dataverse() as router:
        yield router


def test_an_empty_200_to_a_full_read_is_a_classified_error(mock: respx.MockRouter) -> None:
    mock.get(f"{API}/opportunities").respond(200, content=b"")
    crm = adapter()
    with pytest.raises(CrmError) as info:
        list(crm.pull_changes(None, fields=["name"], select=None))
    crm.close()
    assert info.value.code == "empty_response" and info.value.transient
    assert "GET opportunities (all)" in info.value.message
    assert "empty body" in info.value.message


def test_an_html_page_in_a_200_is_a_classified_error(mock: respx.MockRouter) -> None:
    mock.get(f"{API}/opportunities").respond(
        200, content=b"<html>gateway</html>", headers={"Content-Type": "text/html"}
    )
    crm = adapter()
    with pytest.raises(CrmError) as info:
        list(crm.pull_changes(None, fields=["name"], select=None))
    crm.close()
    assert info.value.code == "malformed_response"
    assert "text/html" in info.value.message


@pytest.mark.parametrize("body", [[], {"value": {"a": 1}}, {"value": [1, 2]}, "text"])
def test_an_answer_of_another_shape_is_refused_not_read_as_no_rows(
    mock: respx.MockRouter, body: object
) -> None:
    mock.get(f"{API}/opportunities").respond(200, json=body)
    crm = adapter()
    with pytest.raises(CrmError) as info:
        list(crm.pull_changes(None, fields=["name"], select=None))
    crm.close()
    assert info.value.code == "malformed_response"


def test_a_next_page_that_is_not_an_object_stops_the_pull(mock: respx.MockRouter) -> None:
    mock.get(f"{API}/opportunities", params={"$skiptoken": "2"}).respond(200, json=["x"])
    mock.get(f"{API}/opportunities").respond(
        json={"value": [row(OPP1)], "@odata.nextLink": f"{API}/opportunities?$skiptoken=2"}
    )
    for entity in ("accounts", "systemusers", "transactioncurrencies", "contacts"):
        mock.get(f"{API}/{entity}").respond(json={"value": []})
    crm = adapter()
    pages = crm.pull_changes(None, fields=["name"], select=None)
    assert [r.id for r in next(pages).records] == [OPP1]
    with pytest.raises(CrmError) as info:
        next(pages)
    crm.close()
    assert info.value.code == "malformed_response"


def test_an_empty_delta_answer_means_no_changes_and_keeps_the_cursor(
    mock: respx.MockRouter,
) -> None:
    # Microsoft's change-tracking article: "An empty JSON response is returned if no
    # table changes have occurred after the initial change tracking request was called."
    route = mock.get(DELTA).respond(200, content=b"")
    crm = adapter()
    pages = list(crm.pull_changes(f"delta:{DELTA}", fields=["name"], select=None))
    crm.close()
    assert route.call_count == 1
    assert [(list(p.records), p.cursor, list(p.deleted_ids)) for p in pages] == [
        ([], f"delta:{DELTA}", [])
    ]


def test_fetching_one_row_answered_empty_is_a_classified_error(mock: respx.MockRouter) -> None:
    mock.get(f"{API}/opportunities({OPP1})").respond(200, content=b" ")
    crm = adapter()
    with pytest.raises(CrmError) as info:
        crm.fetch(OPP1, fields=["name"])
    crm.close()
    assert info.value.code == "empty_response"


def test_links_in_lower_case_are_followed_for_a_mixed_case_environment_url(
    mock: respx.MockRouter,
) -> None:
    # Dataverse writes links with the host as it knows it, in lower case.
    page2 = f"{API}/opportunities?$skiptoken=p2"
    mock.get(page2).respond(json={"value": [row(OPP2)], "@odata.deltaLink": DELTA})
    mock.get(f"{API}/opportunities").respond(json={"value": [row(OPP1)], "@odata.nextLink": page2})
    crm = adapter("https://Org.CRM.Dynamics.com/")
    pages = list(crm.pull_changes(None, fields=["name"], select=None))
    crm.close()
    assert [[r.id for r in p.records] for p in pages] == [[OPP1], [OPP2]]
    assert pages[-1].cursor == f"delta:{DELTA}"


@pytest.mark.parametrize(
    ("link", "inside"),
    [
        ("https://org.crm.dynamics.com/api/data/v9.2/opportunities?$skiptoken=1", True),
        ("https://ORG.crm.dynamics.com:443/api/data/v9.2/opportunities", True),
        ("https://org.crm.dynamics.com/API/Data/V9.2/opportunities", True),
        ("https://org.crm.dynamics.com.evil.example/api/data/v9.2/x", False),
        ("https://org.crm.dynamics.com:8443/api/data/v9.2/x", False),
        ("http://org.crm.dynamics.com/api/data/v9.2/x", False),
        ("https://org.crm.dynamics.com/api/data/v9.20/x", False),
        ("https://org.crm.dynamics.com/other", False),
    ],
)
def test_a_link_is_ours_only_on_the_same_origin_and_api_path(link: str, inside: bool) -> None:
    assert is_within(link, "https://Org.Crm.Dynamics.com/api/data/v9.2") is inside
