"""Both adapters tell which linked records are gone, and settle writes to them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import responses
from dynamics_fakes import API as DV_API
from dynamics_fakes import OPP1, OPP2, adapter, mocked_dataverse
from salesforce_fakes import COMPOSITE, QUERY_ALL, existing_token_adapter, page, sf_id

from connector.crm.base import RECORD_GONE
from connector.crm.salesforce.records import write_result
from connector.model import CrmStatusUpdate


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def test_salesforce_counts_the_recycle_bin_and_purged_records_as_gone(
    rsps: responses.RequestsMock,
) -> None:
    ids = [f"006{n:012d}AAA" for n in range(250)]  # 18 characters: 15 and a checksum
    live = {ids[0], ids[201]}
    in_bin = ids[1]

    def answer(request: object) -> tuple[int, dict[str, str], str]:
        soql = parse_qs(urlsplit(request.url).query)["q"][0]  # type: ignore[attr-defined]
        asked = [i.strip(" '") for i in soql.split(" IN (")[1].rstrip(")").split(",")]
        rows = [
            {"attributes": {"type": "Opportunity"}, "Id": i, "IsDeleted": i == in_bin}
            for i in asked
            if i in live or i == in_bin
        ]
        return 200, {}, json.dumps(page(rows))

    rsps.add_callback(responses.GET, QUERY_ALL, callback=answer)
    crm = existing_token_adapter()
    # a link may hold the 15-character form of an id Salesforce answers in 18
    gone = crm.missing_records([*ids, ids[0][:15], "not an id"])
    assert gone == set(ids) - live
    soqls = [parse_qs(urlsplit(c.request.url).query)["q"][0] for c in rsps.calls]
    assert len(soqls) == 2  # 200 ids a query
    assert soqls[0].startswith("SELECT Id, IsDeleted FROM Opportunity WHERE Id IN ('")
    assert crm.usage.by_kind == {"query": 2}


def test_salesforce_settles_a_status_write_to_a_deleted_record(
    rsps: responses.RequestsMock,
) -> None:
    rsps.patch(
        COMPOSITE,
        json=[
            {"id": sf_id(1), "success": True, "errors": []},
            {
                "success": False,
                "errors": [
                    {
                        "statusCode": "ENTITY_IS_DELETED",
                        "message": "entity is deleted",
                        "fields": [],
                    }
                ],
            },
        ],
    )
    results = existing_token_adapter().write_status(
        [CrmStatusUpdate(sf_id(n), {"CoSell_Status__c": "Active"}) for n in (1, 2)]
    )
    assert [(r.ok, r.error_code) for r in results] == [(True, None), (False, RECORD_GONE)]
    assert results[1].message == "ENTITY_IS_DELETED: entity is deleted"
    other = write_result("x", {"success": False, "errors": [{"statusCode": "STRING_TOO_LONG"}]})
    assert other.error_code == "STRING_TOO_LONG"


def test_dataverse_asks_100_ids_a_query_and_answers_the_rows_not_found() -> None:
    ids = [f"{n:08d}-0000-0000-0000-000000000000" for n in range(150)]
    asked: list[list[str]] = []
    with mocked_dataverse() as mock:

        def answer(request: httpx.Request) -> httpx.Response:
            wanted = [c.split(" eq ")[1] for c in request.url.params["$filter"].split(" or ")]
            asked.append(wanted)
            rows = [{"opportunityid": i.upper()} for i in wanted if i not in (ids[3], ids[120])]
            return httpx.Response(200, json={"value": rows})

        mock.get(f"{DV_API}/opportunities", params={"$select": "opportunityid"}).mock(
            side_effect=answer
        )
        crm = adapter()
        gone = crm.missing_records([*ids, "not-a-guid"])
        crm.close()
    assert gone == {ids[3], ids[120]}
    assert [len(a) for a in asked] == [100, 50]


def test_dataverse_settles_a_status_write_to_a_deleted_row() -> None:
    with mocked_dataverse() as mock:
        mock.get(f"{DV_API}/opportunities", params={"$select": "opportunityid,statecode"}).respond(
            json={"value": [{"opportunityid": OPP1, "statecode": 0}]}
        )
        patch = mock.patch(f"{DV_API}/opportunities({OPP1})").respond(204)
        crm = adapter()
        results = crm.write_status(
            [CrmStatusUpdate(i, {"cosell_status": "Active"}) for i in (OPP1, OPP2)]
        )
        crm.close()
    assert [(r.ok, r.error_code) for r in results] == [(True, None), (False, RECORD_GONE)]
    assert patch.call_count == 1
