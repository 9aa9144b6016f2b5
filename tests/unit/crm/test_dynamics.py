"""DataverseOpportunities against respx-mocked Dataverse and Entra endpoints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from pydantic import TypeAdapter

from connector.crm.base import NewOpportunity
from connector.crm.dynamics.adapter import DataverseOpportunities
from connector.crm.dynamics.auth import DataverseTokens
from connector.crm.dynamics.batch import BatchOperation, build_batch, parse_batch
from connector.errors import CrmError, QuotaExhausted, Throttled
from connector.model import CrmStatusUpdate, Filter

ENV = "https://org.crm.dynamics.com"
API = f"{ENV}/api/data/v9.2"
TOKEN_URL = "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token"
SECRET = "s3cr3t-value"
OPP1 = "11111111-1111-1111-1111-111111111111"
OPP2 = "22222222-2222-2222-2222-222222222222"
OPP3 = "33333333-3333-3333-3333-333333333333"
ACC1 = "aaaaaaaa-0000-0000-0000-000000000001"
USER1 = "bbbbbbbb-0000-0000-0000-000000000001"
FV = "@OData.Community.Display.V1.FormattedValue"
SYNCED: Filter = TypeAdapter(Filter).validate_python(
    {"field": "cosell_syncwithpartnercenter", "value": True}
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        router.post(TOKEN_URL).mock(side_effect=_token_issuer())
        router.get(f"{API}/EntityDefinitions").respond(
            json={"value": [{"LogicalName": "opportunity", "SchemaName": "Opportunity"}]}
        )
        yield router


def _token_issuer() -> Any:
    issued = iter(range(1, 1000))

    def issue(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"access_token": f"tok{next(issued)}", "expires_in": 3600})

    return issue


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(sleeps: list[float], clock: FakeClock) -> Iterator[Any]:
    made: list[DataverseOpportunities] = []

    def sleep(seconds: float) -> None:  # a fake sleep moves the fake clock
        sleeps.append(seconds)
        clock.now += seconds

    def factory(**options: Any) -> DataverseOpportunities:
        http = httpx.Client()
        tokens = DataverseTokens(
            environment_url=ENV,
            tenant="tenant-1",
            client_id="app-1",
            client_secret=SECRET,
            http=http,
            monotonic=clock,
        )
        adapter = DataverseOpportunities(
            environment_url=ENV,
            http=http,
            tokens=tokens,
            sleep=sleep,
            monotonic=clock,
            owns_http=True,
            **options,
        )
        made.append(adapter)
        return adapter

    yield factory
    for adapter in made:
        adapter.close()


def row(opp: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "@odata.etag": 'W/"1001"',
        "opportunityid": opp,
        "name": f"Deal {opp[:4]}",
        "modifiedon": "2026-05-01T10:00:00Z",
        "statecode": 0,
        "statuscode": 1,
        "salesstage": 1,
        f"salesstage{FV}": "Develop",
        "cosell_syncwithpartnercenter": True,
    }
    base.update(extra)
    return base


def empty_related(mock: respx.MockRouter) -> None:
    for entity in ("accounts", "systemusers", "transactioncurrencies", "contacts"):
        mock.get(f"{API}/{entity}").respond(json={"value": []})


# -- tokens -------------------------------------------------------------------


def test_token_is_cached_until_shortly_before_expiry(
    mock: respx.MockRouter, make: Any, clock: FakeClock
) -> None:
    route = mock.get(f"{API}/opportunities(11111111-1111-1111-1111-111111111111)").respond(
        json=row(OPP1)
    )
    adapter = make()
    adapter.fetch(OPP1, fields=["name"])
    adapter.fetch(OPP1, fields=["name"])
    assert mock.routes[0].call_count == 1
    assert route.calls[1].request.headers["Authorization"] == "Bearer tok1"
    clock.now += 3600 - 299  # inside the 5-minute refresh margin
    adapter.fetch(OPP1, fields=["name"])
    assert mock.routes[0].call_count == 2
    assert route.calls[2].request.headers["Authorization"] == "Bearer tok2"
    form = mock.routes[0].calls[0].request.content.decode()
    assert "scope=https%3A%2F%2Forg.crm.dynamics.com%2F.default" in form
    assert "grant_type=client_credentials" in form


def test_401_refreshes_the_token_once(mock: respx.MockRouter, make: Any) -> None:
    route = mock.get(f"{API}/opportunities({OPP1})").mock(
        side_effect=[
            httpx.Response(401, json={"error": {"code": "0x80040220"}}),
            httpx.Response(200, json=row(OPP1)),
        ]
    )
    record = make().fetch(OPP1, fields=["name"])
    assert record is not None and record.id == OPP1
    assert [c.request.headers["Authorization"] for c in route.calls] == [
        "Bearer tok1",
        "Bearer tok2",
    ]


def test_second_401_fails_without_leaking_the_token(mock: respx.MockRouter, make: Any) -> None:
    mock.get(f"{API}/opportunities({OPP1})").respond(401, json={"error": {"code": "0x80040220"}})
    with pytest.raises(CrmError) as info:
        make().fetch(OPP1, fields=["name"])
    assert info.value.code == "unauthenticated"
    assert "tok1" not in str(info.value) and "tok2" not in str(info.value)
    assert mock.routes[0].call_count == 2


def test_token_endpoint_failure_names_the_client_not_the_secret(
    mock: respx.MockRouter, make: Any
) -> None:
    mock.routes[0].mock(return_value=httpx.Response(401, json={"error": "invalid_client"}))
    with pytest.raises(CrmError) as info:
        make().fetch(OPP1, fields=["name"])
    assert info.value.code == "auth_failed"
    assert "app-1" in str(info.value) and SECRET not in str(info.value)


# -- change tracking ------------------------------------------------------------


def test_initial_pull_pages_with_change_tracking_and_filters_client_side(
    mock: respx.MockRouter, make: Any
) -> None:
    empty_related(mock)
    page2 = f"{API}/opportunities?$skiptoken=p2"
    delta = f"{API}/opportunities?$deltatoken=919042%2108%2f22%2f2026"
    mock.get(page2).respond(json={"value": [row(OPP3)], "@odata.deltaLink": delta})
    first = mock.get(f"{API}/opportunities").respond(
        json={
            "value": [row(OPP1), row(OPP2, cosell_syncwithpartnercenter=False)],
            "@odata.nextLink": page2,
        }
    )
    adapter = make(page_size=2)
    pages = list(adapter.pull_changes(None, fields=["name", "salesstage@label"], select=SYNCED))
    request = first.calls[0].request
    prefer = request.headers["Prefer"]
    assert "odata.track-changes" in prefer and "odata.maxpagesize=2" in prefer
    assert "OData.Community.Display.V1.FormattedValue" in prefer
    params = request.url.params
    assert "$filter" not in params and "$orderby" not in params and "$expand" not in params
    assert set(params["$select"].split(",")) >= {
        "opportunityid",
        "modifiedon",
        "statecode",
        "salesstage",
        "name",
        "cosell_syncwithpartnercenter",
    }
    assert [[r.id for r in p.records] for p in pages] == [[OPP1], [OPP3]]  # OPP2 not selected
    assert pages[0].cursor is None  # an intermediate page keeps the previous cursor
    assert pages[1].cursor == f"delta:{delta}"
    assert adapter.usage.by_kind == {"metadata": 1, "read": 2}  # the table's definition first


def test_delta_pull_reports_changes_and_deletions(mock: respx.MockRouter, make: Any) -> None:
    empty_related(mock)
    link = f"{API}/opportunities?$deltatoken=abc"
    new_link = f"{API}/opportunities?$deltatoken=def"
    route = mock.get(link).respond(
        json={
            "value": [
                row(OPP1, name="Renamed"),
                {
                    "@odata.context": f"{API}/$metadata#opportunities/$deletedEntity",
                    "id": OPP2.upper(),
                    "reason": "deleted",
                },
            ],
            "@odata.deltaLink": new_link,
        }
    )
    pages = list(make().pull_changes(f"delta:{link}", fields=["name"], select=None))
    assert route.call_count == 1
    assert "odata.track-changes" in route.calls[0].request.headers["Prefer"]
    assert [(r.id, r.fields["name"]) for r in pages[0].records] == [(OPP1, "Renamed")]
    assert list(pages[0].deleted_ids) == [OPP2]
    assert pages[0].cursor == f"delta:{new_link}"


def test_expired_delta_token_starts_a_full_resync(
    mock: respx.MockRouter, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    empty_related(mock)
    old = f"{API}/opportunities?$deltatoken=old"
    mock.get(old).respond(
        400,
        json={
            "error": {
                "code": "0x80044352",
                "message": "Version stamp associated with the client has expired. Please perform a full sync.",
            }
        },
    )
    fresh = f"{API}/opportunities?$deltatoken=fresh"
    full = mock.get(f"{API}/opportunities").respond(
        json={"value": [row(OPP1), row(OPP2)], "@odata.deltaLink": fresh}
    )
    with caplog.at_level("WARNING"):
        pages = list(make().pull_changes(f"delta:{old}", fields=["name"], select=None))
    assert full.call_count == 1
    assert [r.id for r in pages[0].records] == [OPP1, OPP2]
    assert pages[0].cursor == f"delta:{fresh}"
    assert "full resync" in caplog.text


def test_other_delta_errors_are_not_swallowed(mock: respx.MockRouter, make: Any) -> None:
    link = f"{API}/opportunities?$deltatoken=x"
    mock.get(link).respond(403, json={"error": {"code": "0x80040225", "message": "no privilege"}})
    with pytest.raises(CrmError) as info:
        list(make().pull_changes(f"delta:{link}", fields=["name"], select=None))
    assert info.value.code == "0x80040225" and not info.value.transient


def test_a_link_to_another_host_is_refused(mock: respx.MockRouter, make: Any) -> None:
    mock.get(f"{API}/opportunities").respond(
        json={"value": [], "@odata.nextLink": "https://evil.example.com/steal"}
    )
    with pytest.raises(CrmError) as info:
        list(make().pull_changes(None, fields=["name"], select=None))
    assert info.value.code == "foreign_link"


# -- fallback: modifiedon -------------------------------------------------------


def test_modifiedon_mode_filters_orders_dedupes_and_caps_the_cursor(
    mock: respx.MockRouter, make: Any
) -> None:
    empty_related(mock)
    page2 = f"{API}/opportunities?$skiptoken=2"
    date_header = {"Date": "Fri, 01 May 2026 10:00:30 GMT"}
    mock.get(page2).respond(
        headers=date_header,
        json={
            "value": [
                row(OPP2, modifiedon="2026-05-01T09:59:50Z"),
                row(OPP3, modifiedon="2026-05-01T10:00:10Z"),
            ]
        },
    )
    first = mock.get(f"{API}/opportunities").respond(
        headers=date_header,
        json={
            "value": [
                row(OPP1, modifiedon="2026-05-01T09:00:00Z"),
                row(OPP2, modifiedon="2026-05-01T09:59:50Z"),
            ],
            "@odata.nextLink": page2,
        },
    )
    adapter = make(change_tracking=False)
    pages = list(
        adapter.pull_changes("modifiedon:2026-05-01T08:00:00+00:00", fields=["name"], select=SYNCED)
    )
    params = first.calls[0].request.url.params
    assert (
        params["$filter"]
        == "modifiedon ge 2026-05-01T07:55:00Z and cosell_syncwithpartnercenter eq true"
    )
    assert params["$orderby"] == "modifiedon asc,opportunityid asc"
    assert "odata.track-changes" not in first.calls[0].request.headers["Prefer"]
    assert [[r.id for r in p.records] for p in pages] == [[OPP1, OPP2], [OPP3]]  # OPP2 once
    # server time 10:00:30 minus the 60 s margin caps the cursor below OPP3's stamp
    assert pages[0].cursor == "modifiedon:2026-05-01T09:59:30+00:00"
    assert pages[1].cursor == "modifiedon:2026-05-01T09:59:30+00:00"


def test_modifiedon_cursor_never_moves_back(mock: respx.MockRouter, make: Any) -> None:
    mock.get(f"{API}/opportunities").respond(
        headers={"Date": "Fri, 01 May 2026 12:00:00 GMT"}, json={"value": []}
    )
    pages = list(
        make(change_tracking=False).pull_changes(
            "modifiedon:2026-05-01T08:00:00+00:00", fields=[], select=None
        )
    )
    assert pages[0].cursor == "modifiedon:2026-05-01T08:00:00+00:00"


# -- normalisation -------------------------------------------------------------


def test_rows_are_normalised_with_lookups_and_formatted_values(
    mock: respx.MockRouter, make: Any
) -> None:
    accounts = mock.get(f"{API}/accounts").respond(
        json={"value": [{"accountid": ACC1, "name": "Contoso", "cosell_countrycode": "US"}]}
    )
    users = mock.get(f"{API}/systemusers").respond(
        json={"value": [{"systemuserid": USER1, "internalemailaddress": "ana@contoso.com"}]}
    )
    # dates are read as dates because the table's definition says so (once per adapter)
    types = mock.get(f"{API}/EntityDefinitions(LogicalName='opportunity')/Attributes").respond(
        json={
            "value": [
                {"LogicalName": "estimatedclosedate", "AttributeType": "DateTime"},
                {"LogicalName": "cosell_expiration", "AttributeType": "DateTime"},
                {"LogicalName": "name", "AttributeType": "String"},
            ]
        }
    )
    won = row(
        OPP1,
        statecode=1,
        statuscode=3,
        estimatedvalue=25000,
        estimatedclosedate="2026-06-30",
        cosell_expiration="2026-07-01T08:30:00Z",
        _parentaccountid_value=ACC1,
        **{f"_parentaccountid_value{FV}": "Contoso", f"statecode{FV}": "Won"},
        _ownerid_value=USER1,
    )
    won["actualvalue"] = 24999.99  # a JSON float: must arrive as an exact Decimal
    page2 = f"{API}/opportunities?$skiptoken=2"
    mock.get(page2).respond(
        json={
            "value": [row(OPP2, _parentaccountid_value=ACC1)],
            "@odata.deltaLink": f"{API}/opportunities?$deltatoken=1",
        }
    )
    first = mock.get(f"{API}/opportunities").respond(
        json={"value": [won], "@odata.nextLink": page2}
    )
    fields = [
        "name",
        "estimatedvalue",
        "actualvalue",
        "estimatedclosedate",
        "cosell_expiration",
        "parentaccountid.name",
        "parentaccountid.cosell_countrycode",
        "ownerid.internalemailaddress",
    ]
    pages = list(make().pull_changes(None, fields=fields, select=None))
    record = pages[0].records[0]
    f = record.fields
    assert record.id == OPP1 and record.etag == 'W/"1001"'
    assert record.modstamp == datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    assert f["estimatedvalue"] == Decimal("25000") and isinstance(f["estimatedvalue"], Decimal)
    assert f["actualvalue"] == Decimal("24999.99")
    assert f["estimatedclosedate"] == date(2026, 6, 30)
    assert f["cosell_expiration"] == datetime(2026, 7, 1, 8, 30, tzinfo=UTC)
    assert f["salesstage@label"] == "Develop" and f["statecode@label"] == "Won"
    assert f["parentaccountid"] == ACC1 and f["parentaccountid@label"] == "Contoso"
    assert f["parentaccountid.name"] == "Contoso"
    assert f["parentaccountid.cosell_countrycode"] == "US"
    assert f["ownerid.internalemailaddress"] == "ana@contoso.com"
    assert f["statecode"] == 1 and f["is_won"] is True and f["is_closed"] is True
    assert f["stage"] == "Won"
    assert not any(k.startswith("@odata") for k in f)
    assert pages[1].records[0].fields["stage"] == "Develop"
    assert pages[1].records[0].fields["parentaccountid.name"] == "Contoso"
    # the related rows: one query per lookup and page, cached across pages
    assert accounts.call_count == 1 and users.call_count == 1
    assert types.call_count == 1  # accounts and users hold no date-shaped text: never asked
    assert accounts.calls[0].request.url.params["$filter"] == f"accountid eq {ACC1}"
    select = first.calls[0].request.url.params["$select"].split(",")
    assert "_parentaccountid_value" in select and "_ownerid_value" in select


def test_fetch_validates_the_id_and_answers_none_when_missing(
    mock: respx.MockRouter, make: Any
) -> None:
    adapter = make()
    with pytest.raises(CrmError) as info:
        adapter.fetch("1 or 1 eq 1", fields=["name"])
    assert info.value.code == "invalid_id"
    assert mock.routes[0].call_count == 0  # not even a token was fetched
    mock.get(f"{API}/opportunities({OPP1})").respond(
        404, json={"error": {"code": "0x80040217", "message": "not found"}}
    )
    assert adapter.fetch(OPP1.upper(), fields=["name"]) is None


# -- stage metadata -----------------------------------------------------------


def test_stage_metadata_from_the_option_set(mock: respx.MockRouter, make: Any) -> None:
    route = mock.get(
        url__startswith=f"{API}/EntityDefinitions(LogicalName='opportunity')/Attributes(LogicalName='cosell_stage')"
    ).respond(
        json={
            "LogicalName": "cosell_stage",
            "OptionSet": {
                "Options": [
                    {"Value": 100000000, "Label": {"UserLocalizedLabel": {"Label": "Discover"}}},
                    {
                        "Value": 100000001,
                        "Label": {
                            "UserLocalizedLabel": None,
                            "LocalizedLabels": [{"Label": "Design", "LanguageCode": 1033}],
                        },
                    },
                ]
            },
        }
    )
    stages = make(stage_source="cosell_stage").stage_metadata()
    assert route.call_count == 1
    assert [(s.label, s.api_name, s.is_closed, s.is_won, s.probability) for s in stages] == [
        ("Discover", "100000000", False, False, None),
        ("Design", "100000001", False, False, None),
        ("Won", "statecode:1", True, True, None),
        ("Lost", "statecode:2", True, False, None),
    ]


# -- writes ---------------------------------------------------------------------


def states(mock: respx.MockRouter, **by_id: int) -> respx.Route:
    return mock.get(f"{API}/opportunities", params={"$select": "opportunityid,statecode"}).respond(
        json={"value": [{"opportunityid": k, "statecode": v} for k, v in by_id.items()]}
    )


def test_single_patch_sends_if_match_star(mock: respx.MockRouter, make: Any) -> None:
    states(mock, **{OPP1: 0})
    patch = mock.patch(f"{API}/opportunities({OPP1})").respond(204)
    results = make().write_status(
        [
            CrmStatusUpdate(
                OPP1,
                {
                    "cosell_status": "Active",
                    "cosell_expiration": datetime(2026, 7, 1, tzinfo=UTC),
                    "ownerid": USER1,
                },
            )
        ]
    )
    assert results[0].ok and results[0].crm_id == OPP1
    request = patch.calls[0].request
    assert request.headers["If-Match"] == "*"
    assert json.loads(request.content) == {
        "cosell_status": "Active",
        "cosell_expiration": "2026-07-01T00:00:00Z",
        "ownerid@odata.bind": f"/systemusers({USER1})",
    }


def test_write_results_per_record(mock: respx.MockRouter, make: Any) -> None:
    states(mock, **{OPP1: 0, OPP2: 1})  # OPP2 won; OPP3 missing
    patch = mock.patch(f"{API}/opportunities({OPP1})").respond(
        412,
        json={
            "error": {
                "code": "0x80060882",
                "message": "The version of the existing record doesn't match",
            }
        },
    )
    results = make(batch_threshold=100).write_status(
        [
            CrmStatusUpdate(OPP1, {"cosell_status": "x"}),
            CrmStatusUpdate(OPP2, {"cosell_status": "x"}),
            CrmStatusUpdate(OPP3, {"cosell_status": "x"}),
            CrmStatusUpdate("nope", {"cosell_status": "x"}),
        ]
    )
    assert [(r.ok, r.error_code) for r in results] == [
        (False, "precondition_failed"),
        (False, "read_only_closed"),
        (False, "not_found"),
        (False, "invalid_id"),
    ]
    assert patch.call_count == 1  # the closed and missing rows were never written


def test_a_row_closed_in_between_is_reported_read_only(mock: respx.MockRouter, make: Any) -> None:
    mock.patch(f"{API}/opportunities({OPP1})").respond(
        400, json={"error": {"code": "0x80040203", "message": "closed"}}
    )
    result = make(guard_closed=False).write_status([CrmStatusUpdate(OPP1, {"cosell_status": "x"})])[
        0
    ]
    assert (result.ok, result.error_code) == (False, "read_only_closed")


def batch_answer(*parts: tuple[str, int], changeset: bool = True) -> httpx.Response:
    lines: list[str] = []
    inner = "changesetresponse_1"
    if changeset:
        lines += ["--batchresponse_1", f"Content-Type: multipart/mixed; boundary={inner}", ""]
    for cid, status in parts:
        lines += [
            f"--{inner if changeset else 'batchresponse_1'}",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            f"Content-ID: {cid}",
            "",
            f"HTTP/1.1 {status} X",
            "OData-Version: 4.0",
        ]
        if status >= 300:
            lines += [
                "Content-Type: application/json; odata.metadata=minimal",
                "",
                json.dumps({"error": {"code": "0x80060882", "message": "stale"}}),
            ]
        else:
            lines += [""]
    if changeset:
        lines.append(f"--{inner}--")
    lines += ["--batchresponse_1--", ""]
    return httpx.Response(
        200,
        headers={"Content-Type": "multipart/mixed; boundary=batchresponse_1"},
        content="\r\n".join(lines).encode(),
    )


def parse_batch_request(request: httpx.Request) -> list[tuple[str, str, dict[str, Any]]]:
    """(content id, request line, JSON body) of each operation in a $batch request."""
    text = request.content.decode()
    out = []
    for chunk in text.split("Content-Type: application/http\r\n")[1:]:
        head, _, rest = chunk.partition("\r\n\r\n")
        cid = head.split("Content-ID: ")[1].strip()
        request_line, _, rest = rest.partition("\r\n")
        _, _, body = rest.partition("\r\n\r\n")
        out.append((cid, request_line, json.loads(body.split("\r\n--")[0])))
    return out


def test_many_updates_go_in_batches(mock: respx.MockRouter, make: Any) -> None:
    ids = [f"{n:08d}-0000-0000-0000-000000000000" for n in range(5)]
    states(mock, **dict.fromkeys(ids, 0))
    batch = mock.post(f"{API}/$batch").mock(
        side_effect=[
            batch_answer(("1", 204), ("2", 204), ("3", 204)),
            batch_answer(("1", 204), ("2", 204)),
        ]
    )
    adapter = make(batch_size=3, max_concurrency=1)
    results = adapter.write_status(
        [CrmStatusUpdate(i, {"cosell_status": f"s{i[:8]}"}) for i in ids]
    )
    assert all(r.ok for r in results) and [r.crm_id for r in results] == ids
    assert batch.call_count == 2
    first = batch.calls[0].request
    assert first.headers["Content-Type"].startswith("multipart/mixed; boundary=batch_")
    # independent parts: one refused write never costs the others a second call
    assert "boundary=changeset_" not in first.content.decode()
    assert first.headers["Prefer"] == "odata.continue-on-error"
    ops = parse_batch_request(first)
    assert [op[0] for op in ops] == ["1", "2", "3"]
    assert ops[0][1] == f"PATCH {API}/opportunities({ids[0]}) HTTP/1.1"
    assert ops[0][2] == {"cosell_status": f"s{ids[0][:8]}"}
    assert "If-Match: *" in first.content.decode()
    assert adapter.usage.by_kind == {"read_state": 1, "batch": 2}


def test_states_before_writing_are_read_50_ids_a_query_in_parallel(
    mock: respx.MockRouter, make: Any
) -> None:
    ids = [f"{n:08d}-0000-0000-0000-000000000000" for n in range(130)]
    closed = {ids[n] for n in range(7, 130, 40)}
    missing = ids[-1]
    asked: list[list[str]] = []

    def answer_states(request: httpx.Request) -> httpx.Response:
        wanted = [c.split(" eq ")[1] for c in request.url.params["$filter"].split(" or ")]
        asked.append(wanted)
        rows = [
            {"opportunityid": i.upper(), "statecode": 1 if i in closed else 0}
            for i in wanted
            if i != missing
        ]
        return httpx.Response(200, json={"value": rows})

    def answer_batch(request: httpx.Request) -> httpx.Response:
        return batch_answer(*((cid, 204) for cid, _, _ in parse_batch_request(request)))

    mock.get(f"{API}/opportunities", params={"$select": "opportunityid,statecode"}).mock(
        side_effect=answer_states
    )
    mock.post(f"{API}/$batch").mock(side_effect=answer_batch)
    adapter = make(max_concurrency=4)
    results = adapter.write_status([CrmStatusUpdate(i, {"cosell_status": "x"}) for i in ids])
    assert sorted(len(a) for a in asked) == [30, 50, 50]
    assert sorted(i for a in asked for i in a) == ids
    expected = [
        "not_found" if i == missing else "read_only_closed" if i in closed else None for i in ids
    ]
    assert [r.error_code for r in results] == expected
    assert [r.crm_id for r in results] == ids
    assert adapter.usage.by_kind == {"read_state": 3, "batch": 7}


def test_a_failed_changeset_is_resent_without_the_failing_write(
    mock: respx.MockRouter, make: Any
) -> None:
    ids = [OPP1, OPP2, OPP3]
    states(mock, **dict.fromkeys(ids, 0))
    batch = mock.post(f"{API}/$batch").mock(
        side_effect=[batch_answer(("2", 412)), batch_answer(("1", 204), ("3", 204))]
    )
    results = make(batch_changesets=True).write_status(
        [CrmStatusUpdate(i, {"cosell_status": "x"}) for i in ids]
    )
    assert [(r.ok, r.error_code) for r in results] == [
        (True, None),
        (False, "precondition_failed"),
        (True, None),
    ]
    assert [op[0] for op in parse_batch_request(batch.calls[1].request)] == ["1", "3"]


def test_independent_batch_parts_continue_on_error(mock: respx.MockRouter, make: Any) -> None:
    states(mock, **{OPP1: 0, OPP2: 0})
    batch = mock.post(f"{API}/$batch").mock(
        return_value=batch_answer(("1", 412), ("2", 204), changeset=False)
    )
    results = make(batch_changesets=False).write_status(
        [CrmStatusUpdate(i, {"cosell_status": "x"}) for i in (OPP1, OPP2)]
    )
    assert [(r.ok, r.error_code) for r in results] == [(False, "precondition_failed"), (True, None)]
    request = batch.calls[0].request
    assert request.headers["Prefer"] == "odata.continue-on-error"
    assert "changeset_" not in request.content.decode()


def test_batch_build_and_parse_round_trip() -> None:
    content, content_type = build_batch(
        [
            BatchOperation(
                "7", "PATCH", f"{API}/opportunities({OPP1})", {"If-Match": "*"}, b'{"a":1}'
            )
        ],
        changeset=False,
        boundary="batch_x",
    )
    assert content_type == "multipart/mixed; boundary=batch_x"
    assert content.startswith(b"--batch_x\r\nContent-Type: application/http\r\n")
    assert content.endswith(b"--batch_x--\r\n")
    answer = batch_answer(("7", 204), ("8", 412))
    parsed = parse_batch(answer.content, answer.headers["Content-Type"])
    assert [(p.content_id, p.status) for p in parsed] == [("7", 204), ("8", 412)]
    assert json.loads(parsed[1].body)["error"]["code"] == "0x80060882"


def test_create_posts_with_return_representation_and_binds(
    mock: respx.MockRouter, make: Any
) -> None:
    route = mock.post(f"{API}/opportunities").respond(
        201, json={"@odata.etag": 'W/"5"', "opportunityid": OPP3.upper()}
    )
    results = make().create_opportunities(
        [
            NewOpportunity(
                "ref-1",
                {
                    "name": "Inbound",
                    "estimatedvalue": Decimal("100.50"),
                    "parentaccountid": ACC1,
                    "transactioncurrencyid@odata.bind": "/transactioncurrencies(cccccccc-0000-0000-0000-000000000001)",
                },
            )
        ]
    )
    assert results[0].ok and results[0].crm_id == OPP3
    request = route.calls[0].request
    assert request.headers["Prefer"] == "return=representation"
    assert json.loads(request.content) == {
        "name": "Inbound",
        "estimatedvalue": 100.5,
        "parentaccountid@odata.bind": f"/accounts({ACC1})",
        "transactioncurrencyid@odata.bind": "/transactioncurrencies(cccccccc-0000-0000-0000-000000000001)",
    }


def test_create_reports_a_bad_lookup_per_item(mock: respx.MockRouter, make: Any) -> None:
    route = mock.post(f"{API}/opportunities").respond(
        204, headers={"OData-EntityId": f"{API}/opportunities({OPP2})"}
    )
    results = make().create_opportunities(
        [NewOpportunity("r1", {"ownerid": "bob"}), NewOpportunity("r2", {"name": "ok"})]
    )
    assert [(r.ok, r.error_code, r.crm_id) for r in results] == [
        (False, "invalid_lookup", None),
        (True, None, OPP2),
    ]
    assert route.call_count == 1


# -- throttling and budget ---------------------------------------------------------


def test_429_waits_for_retry_after_and_counts(
    mock: respx.MockRouter, make: Any, sleeps: list[float]
) -> None:
    throttled = httpx.Response(
        429,
        headers={"Retry-After": "7"},
        json={"error": {"code": "0x80072322", "message": "Number of requests exceeded the limit"}},
    )
    route = mock.get(f"{API}/opportunities({OPP1})").mock(
        side_effect=[throttled, throttled, httpx.Response(200, json=row(OPP1))]
    )
    adapter = make()
    assert adapter.fetch(OPP1, fields=["name"]) is not None
    assert sleeps == [7.0, 7.0]
    assert route.call_count == 3
    assert adapter.usage.calls == 3 and adapter.transport.throttled == 2


def test_throttling_past_the_wait_budget_stops_the_run(
    mock: respx.MockRouter, make: Any, sleeps: list[float]
) -> None:
    mock.get(f"{API}/opportunities({OPP1})").respond(
        429,
        headers={"Retry-After": "40"},
        json={"error": {"code": "0x80072322", "message": "limit"}},
    )
    with pytest.raises(Throttled) as info:
        make(max_throttle_wait_s=100).fetch(OPP1, fields=["name"])
    assert sleeps == [40.0, 40.0]  # a third wait would pass 100 s
    assert info.value.retry_after == 40.0


def test_5xx_is_retried_with_backoff(
    mock: respx.MockRouter, make: Any, sleeps: list[float]
) -> None:
    mock.get(f"{API}/opportunities({OPP1})").mock(
        side_effect=[
            httpx.Response(503),
            httpx.ConnectError("down"),
            httpx.Response(200, json=row(OPP1)),
        ]
    )
    assert make().fetch(OPP1, fields=["name"]) is not None
    assert len(sleeps) == 2 and all(0 < s <= 30 for s in sleeps)


def test_request_budget_stops_a_pull_cleanly(mock: respx.MockRouter, make: Any) -> None:
    empty_related(mock)
    mock.get(f"{API}/opportunities?$skiptoken=2").respond(
        json={"value": [row(OPP2)], "@odata.nextLink": f"{API}/opportunities?$skiptoken=3"}
    )
    mock.get(f"{API}/opportunities").respond(
        json={"value": [row(OPP1)], "@odata.nextLink": f"{API}/opportunities?$skiptoken=2"}
    )
    adapter = make(max_requests=3)  # the table's definition, then two pages
    pages = adapter.pull_changes(None, fields=["name"], select=None)
    assert [r.id for r in next(pages).records] == [OPP1]
    assert [r.id for r in next(pages).records] == [OPP2]
    with pytest.raises(QuotaExhausted):
        next(pages)
    assert adapter.usage.calls == 3


def test_window_share_counts_requests_in_five_minutes(
    mock: respx.MockRouter, make: Any, clock: FakeClock
) -> None:
    mock.get(f"{API}/opportunities({OPP1})").respond(json=row(OPP1))
    adapter = make(window_share=1 / 3000)  # 2 requests per 5 minutes
    adapter.fetch(OPP1, fields=[])
    adapter.fetch(OPP1, fields=[])
    with pytest.raises(QuotaExhausted):
        adapter.fetch(OPP1, fields=[])
    clock.now += 301
    assert adapter.fetch(OPP1, fields=[]) is not None


def test_writes_past_the_budget_are_reported_not_lost(mock: respx.MockRouter, make: Any) -> None:
    states(mock, **{OPP1: 0, OPP2: 0})
    mock.patch(url__startswith=f"{API}/opportunities(").respond(204)
    adapter = make(max_requests=2, batch_threshold=10)
    results = adapter.write_status(
        [
            CrmStatusUpdate(OPP1, {"cosell_status": "x"}),
            CrmStatusUpdate(OPP2, {"cosell_status": "x"}),
        ]
    )
    assert [(r.ok, r.error_code) for r in results] == [(True, None), (False, "quota_exhausted")]
    assert adapter.quota_exhausted


def test_stepname_stages_fall_back_to_won_and_lost(mock: respx.MockRouter, make: Any) -> None:
    mock.get(f"{API}/processstages").respond(
        404, json={"error": {"code": "0x80060888", "message": "no such table"}}
    )
    stages = make(stage_source="stepname").stage_metadata()
    assert [s.label for s in stages] == ["Won", "Lost"]


def test_parallel_batches_stay_under_max_concurrency(mock: respx.MockRouter, make: Any) -> None:
    import threading
    import time

    ids = [f"{n:08d}-0000-0000-0000-000000000000" for n in range(12)]
    states(mock, **dict.fromkeys(ids, 0))
    lock = threading.Lock()
    in_flight, peak = [0], [0]

    def answer(request: httpx.Request) -> httpx.Response:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.03)
        with lock:
            in_flight[0] -= 1
        return batch_answer(("1", 204), ("2", 204))

    batch = mock.post(f"{API}/$batch").mock(side_effect=answer)
    results = make(batch_size=2, max_concurrency=2).write_status(
        [CrmStatusUpdate(i, {"cosell_status": "x"}) for i in ids]
    )
    assert all(r.ok for r in results)
    assert batch.call_count == 6 and peak[0] == 2


def test_a_delta_link_without_newly_mapped_columns_resyncs(
    mock: respx.MockRouter, make: Any
) -> None:
    old = f"{API}/opportunities?$select=opportunityid,modifiedon,statecode,statuscode,salesstage,name&$deltatoken=1"
    stale = mock.get(old).respond(json={"value": []})
    full = mock.get(f"{API}/opportunities").respond(
        json={"value": [row(OPP1)], "@odata.deltaLink": f"{API}/opportunities?$deltatoken=2"}
    )
    pages = list(make().pull_changes(f"delta:{old}", fields=["name", "cosell_status"], select=None))
    assert stale.call_count == 0 and full.call_count == 1
    assert "cosell_status" in full.calls[0].request.url.params["$select"]
    assert [r.id for r in pages[0].records] == [OPP1]
