"""Status writes through ``$batch``: every answer Dataverse documents is read per write.

Without ``Prefer: odata.continue-on-error`` a batch stops at its first failure and
answers ``400`` with a multipart body; with it, ``200`` and one answer per request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import respx
from dynamics_fakes import (
    API,
    OPP1,
    OPP2,
    OPP3,
    adapter,
    batch_ops,
    batch_part,
    batch_response,
    mocked_dataverse,
    states,
)

from connector.crm.dynamics.batch import is_multipart, parse_batch
from connector.model import CrmStatusUpdate

IDS = (OPP1, OPP2, OPP3)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with mocked_dataverse() as router:
        states(router, **dict.fromkeys(IDS, 0))
        yield router


def write(**options: object) -> list[tuple[bool, str | None, str | None]]:
    crm = adapter(**options)
    try:
        results = crm.write_status([CrmStatusUpdate(i, {"cosell_status": "x"}) for i in IDS])
    finally:
        crm.close()
    return [(r.ok, r.error_code, r.message) for r in results]


def test_by_default_parts_are_independent_and_one_failure_costs_one_call(
    mock: respx.MockRouter,
) -> None:
    batch = mock.post(f"{API}/$batch").mock(
        return_value=batch_response(
            200, [batch_part(204, "1"), batch_part(404, "2", "0x80040217"), batch_part(204, "3")]
        )
    )
    results = write()
    assert [(ok, code) for ok, code, _ in results] == [
        (True, None),
        (False, "not_found"),
        (True, None),
    ]
    assert batch.call_count == 1
    request = batch.calls[0].request
    assert request.headers["Prefer"] == "odata.continue-on-error"
    assert "changeset_" not in request.content.decode()


def test_a_400_multipart_answer_settles_each_write_and_resends_what_did_not_run(
    mock: respx.MockRouter,
) -> None:
    # A server that ignored continue-on-error: the batch stopped at write 2.
    batch = mock.post(f"{API}/$batch").mock(
        side_effect=[
            batch_response(400, [batch_part(204, "1"), batch_part(400, "2", "0x80044331")]),
            batch_response(200, [batch_part(204, "3")]),
        ]
    )
    results = write()
    assert [(ok, code) for ok, code, _ in results] == [
        (True, None),
        (False, "0x80044331"),
        (True, None),
    ]
    assert "refused (0x80044331)" in (results[1][2] or "")
    assert "--batchresponse" not in (results[1][2] or "")  # never the raw multipart text
    assert [op[0] for op in batch_ops(batch.calls[1].request)] == ["3"]


def test_a_failed_change_set_answered_400_resends_the_rest_without_the_failure(
    mock: respx.MockRouter,
) -> None:
    changeset = [
        "Content-Type: multipart/mixed; boundary=changesetresponse_9",
        "",
        "--changesetresponse_9",
        *batch_part(412, "2"),
        "--changesetresponse_9--",
    ]
    batch = mock.post(f"{API}/$batch").mock(
        side_effect=[
            batch_response(400, [changeset]),
            batch_response(200, [batch_part(204, "1"), batch_part(204, "3")]),
        ]
    )
    results = write(batch_changesets=True)
    assert [(ok, code) for ok, code, _ in results] == [
        (True, None),
        (False, "precondition_failed"),
        (True, None),
    ]
    assert "boundary=changeset_" in batch.calls[0].request.content.decode()
    assert [op[0] for op in batch_ops(batch.calls[1].request)] == ["1", "3"]


def test_the_published_400_shape_without_content_type_or_ids_falls_back_to_single_writes(
    mock: respx.MockRouter,
) -> None:
    # Microsoft's example: HTTP/1.1 400 BadRequest, the failed request's answer alone,
    # no Content-ID; which write failed cannot be told, so each is written on its own.
    mock.post(f"{API}/$batch").mock(
        return_value=batch_response(
            400, [batch_part(400, None, "0x80044331")], with_content_type=False
        )
    )
    singles = {
        OPP1: mock.patch(f"{API}/opportunities({OPP1})").respond(204),
        OPP2: mock.patch(f"{API}/opportunities({OPP2})").respond(
            400, json={"error": {"code": "0x80044331", "message": "too long"}}
        ),
        OPP3: mock.patch(f"{API}/opportunities({OPP3})").respond(204),
    }
    results = write()
    assert [(ok, code) for ok, code, _ in results] == [
        (True, None),
        (False, "0x80044331"),
        (True, None),
    ]
    assert all(route.call_count == 1 for route in singles.values())
    assert all(r.calls[0].request.headers["If-Match"] == "*" for r in singles.values())


def test_a_400_json_error_fails_every_write_with_its_code(mock: respx.MockRouter) -> None:
    mock.post(f"{API}/$batch").respond(
        400, json={"error": {"code": "0x80060888", "message": "Bad batch request"}}
    )
    results = write()
    assert {(ok, code) for ok, code, _ in results} == {(False, "0x80060888")}
    assert all("Bad batch request" in (message or "") for _, _, message in results)


def test_a_complete_200_without_content_ids_is_read_in_request_order(
    mock: respx.MockRouter,
) -> None:
    mock.post(f"{API}/$batch").mock(
        return_value=batch_response(
            200, [batch_part(204, None), batch_part(412, None), batch_part(204, None)]
        )
    )
    assert [(ok, code) for ok, code, _ in write()] == [
        (True, None),
        (False, "precondition_failed"),
        (True, None),
    ]


def test_a_multipart_body_is_recognised_by_its_first_line_without_a_content_type() -> None:
    body = batch_response(400, [batch_part(400, None, "0x80044331")]).content
    assert is_multipart(body, "")
    assert is_multipart(body, "multipart/mixed; boundary=batchresponse_1")
    assert not is_multipart(b'{"error": {}}', "application/json")
    (answer,) = parse_batch(body, "")
    assert answer.status == 400 and answer.content_id is None
    assert json.loads(answer.body)["error"]["code"] == "0x80044331"


def test_a_quoted_boundary_is_read() -> None:
    response = httpx.Response(
        200,
        headers={"Content-Type": 'multipart/mixed; boundary="batchresponse_1"'},
        content=batch_response(200, [batch_part(204, "1")]).content,
    )
    (answer,) = parse_batch(response.content, response.headers["Content-Type"])
    assert (answer.status, answer.content_id) == (204, "1")
