"""The sandbox's Dataverse Web API, over real HTTPS, as a Dataverse client sees it."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from sandbox.dataverse.part import DataversePart
from sandbox.harness import SandboxServer

API = "/api/data/v9.2/"
ADMIN = "/_sandbox/dataverse/"
FV = "OData.Community.Display.V1.FormattedValue"
LLN = "Microsoft.Dynamics.CRM.lookuplogicalname"


def tls(sb: SandboxServer) -> ssl.SSLContext:
    """Trust the sandbox's own CA (httpx deprecates ``verify=<path>``)."""
    return ssl.create_default_context(cafile=str(sb.ca_file))


def new_token(client: httpx.Client, scope: str = "https://org.crm.dynamics.com/.default") -> str:
    response = client.post(
        "/tenant-1/oauth2/v2.0/token",
        data={
            "client_id": "sandbox",
            "client_secret": "sandbox",
            "grant_type": "client_credentials",
            "scope": scope,
        },
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def connect(sb: SandboxServer) -> httpx.Client:
    client = httpx.Client(base_url=sb.url, verify=tls(sb), timeout=20)
    client.headers["Authorization"] = f"Bearer {new_token(client)}"
    client.headers["Accept"] = "application/json"
    return client


def all_rows(client: httpx.Client) -> list[dict[str, Any]]:
    return list(client.get(ADMIN + "opportunities").json()["value"])


def follow(
    client: httpx.Client, url: str, headers: dict[str, str]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every row of a paged answer, and the last page."""
    rows: list[dict[str, Any]] = []
    for _ in range(1000):
        page = client.get(url, headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        rows += body["value"]
        if "@odata.nextLink" not in body:
            return rows, body
        url = body["@odata.nextLink"]
    raise AssertionError("paging did not end")


@pytest.fixture(scope="module")
def shared() -> Iterator[SandboxServer]:
    """A server for tests that only read."""
    with SandboxServer(opportunities=60, seed=3) as sb:
        yield sb


@pytest.fixture(scope="module")
def reader(shared: SandboxServer) -> Iterator[httpx.Client]:
    client = connect(shared)
    yield client
    client.close()


@pytest.fixture(scope="module")
def writable() -> Iterator[SandboxServer]:
    with SandboxServer(opportunities=0) as server:
        yield server


@pytest.fixture
def sb(writable: SandboxServer) -> SandboxServer:
    """A server for tests that write or move the clock: Dataverse data and limits reset."""
    with httpx.Client(base_url=writable.url, verify=tls(writable)) as admin:
        admin.post(ADMIN + "reset", json={"opportunities": 40, "seed": 5}).raise_for_status()
    return writable


@pytest.fixture
def client(sb: SandboxServer) -> Iterator[httpx.Client]:
    c = connect(sb)
    yield c
    c.close()


# --- tokens ------------------------------------------------------------------------------------


def test_requests_without_a_dataverse_token_get_401(shared: SandboxServer) -> None:
    with httpx.Client(base_url=shared.url, verify=tls(shared)) as anonymous:
        missing = anonymous.get(API + "opportunities")
        core_token = new_token(anonymous, "https://api.partner.microsoft.com/.default")
        wrong = anonymous.get(
            API + "opportunities", headers={"Authorization": f"Bearer {core_token}"}
        )
        good = anonymous.get(
            API + "opportunities?$top=1",
            headers={"Authorization": f"Bearer {new_token(anonymous)}"},
        )
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "0x80040220"
    assert good.status_code == 200


# --- reading -----------------------------------------------------------------------------------


def test_pages_follow_maxpagesize_and_nextlink(shared: SandboxServer, reader: httpx.Client) -> None:
    first = reader.get(
        API + "opportunities?$select=name", headers={"Prefer": "odata.maxpagesize=7"}
    )
    assert first.headers["Preference-Applied"] == "odata.maxpagesize=7"
    body = first.json()
    assert len(body["value"]) == 7
    assert body["@odata.nextLink"].startswith(shared.url + API + "opportunities?")
    assert "$skip=" not in body["@odata.nextLink"]
    rows, last = follow(
        reader, API + "opportunities?$select=name", {"Prefer": "odata.maxpagesize=7"}
    )
    ids = [r["opportunityid"] for r in rows]
    assert len(ids) == len(set(ids)) == 60
    assert set(rows[0]) == {"@odata.etag", "name", "opportunityid"}
    assert "@odata.deltaLink" not in last
    stored = {r["opportunityid"]: r for r in all_rows(reader)}
    for row in rows:
        assert row["@odata.etag"] == f'W/"{stored[row["opportunityid"]]["versionnumber"]}"'


def test_skip_and_unknown_columns_are_refused(reader: httpx.Client) -> None:
    skip = reader.get(API + "opportunities?$skip=10")
    unknown = reader.get(API + "opportunities?$select=name,amount")
    bad_filter = reader.get(API + "opportunities", params={"$filter": "name eq"})
    for response in (skip, unknown, bad_filter):
        assert response.status_code == 400
        assert response.json()["error"]["code"].startswith("0x")


def test_filter_and_orderby_match_the_stored_rows(reader: httpx.Client) -> None:
    stored = all_rows(reader)
    query = {
        "$select": "name,estimatedvalue,statecode",
        "$filter": "statecode eq 0 and (cosell_syncwithpartnercenter eq true or "
        "estimatedvalue gt 1000000) and not (estimatedvalue eq null)",
        "$orderby": "estimatedvalue desc,name asc",
    }
    rows, _ = follow(reader, API + "opportunities?" + str(httpx.QueryParams(query)), {})
    expected = [
        r
        for r in stored
        if r["statecode"] == 0
        and (r["cosell_syncwithpartnercenter"] or (r["estimatedvalue"] or 0) > 1_000_000)
        and r["estimatedvalue"] is not None
    ]
    assert {r["opportunityid"] for r in rows} == {r["opportunityid"] for r in expected}
    values = [r["estimatedvalue"] for r in rows]
    assert values == sorted(values, reverse=True)
    assert 0 < len(rows) < len(stored)


def test_filter_literals_dates_guids_and_in(reader: httpx.Client) -> None:
    stored = all_rows(reader)
    one = stored[0]
    by_id = reader.get(
        API + "opportunities",
        params={"$filter": f"opportunityid eq {one['opportunityid'].upper()}", "$select": "name"},
    ).json()["value"]
    assert [r["opportunityid"] for r in by_id] == [one["opportunityid"]]
    cutoff = sorted(r["modifiedon"] for r in stored)[len(stored) // 2]
    since = reader.get(
        API + "opportunities",
        params={
            "$filter": f"modifiedon ge {cutoff}",
            "$orderby": "modifiedon asc,opportunityid asc",
        },
    ).json()["value"]
    assert {r["opportunityid"] for r in since} == {
        r["opportunityid"] for r in stored if r["modifiedon"] >= cutoff
    }
    in_stages = reader.get(
        API + "opportunities",
        params={
            "$filter": "Microsoft.Dynamics.CRM.In(PropertyName='salesstage',PropertyValues=['0','3'])"
        },
    ).json()["value"]
    assert {r["opportunityid"] for r in in_stages} == {
        r["opportunityid"] for r in stored if r["salesstage"] in (0, 3)
    }
    dated = reader.get(
        API + "opportunities", params={"$filter": "estimatedclosedate lt 2026-10-01"}
    ).json()["value"]
    assert all(r["estimatedclosedate"] < "2026-10-01" for r in dated) and dated


def test_writes_between_pages_show_in_later_pages(client: httpx.Client) -> None:
    ids = [
        client.post(ADMIN + "opportunities", json={"name": f"Paged {n:02d}"}).json()[
            "opportunityid"
        ]
        for n in range(30)
    ]
    url = (
        API
        + "opportunities?"
        + str(
            httpx.QueryParams(
                {"$select": "name", "$filter": "startswith(name,'Paged')", "$orderby": "name asc"}
            )
        )
    )
    prefer = {"Prefer": "odata.maxpagesize=10"}
    first = client.get(url, headers=prefer).json()
    assert [r["opportunityid"] for r in first["value"]] == ids[:10]

    def edit(row_id: str, values: dict[str, Any]) -> None:
        client.post(ADMIN + f"opportunities/{row_id}", json=values).raise_for_status()

    edit(ids[15], {"name": "Paged 05b"})  # moves before the last row sent: not sent
    edit(ids[3], {"name": "Paged 99"})  # sent, moves to the end: sent again
    edit(ids[11], {"description": "changed"})  # same place: sent once, as it is now
    edit(ids[20], {"name": "Other"})  # leaves the filter
    client.delete(ADMIN + f"opportunities/{ids[12]}").raise_for_status()
    created = client.post(ADMIN + "opportunities", json={"name": "paged 10a"}).json()

    rest, _ = follow(client, first["@odata.nextLink"], prefer)
    expected = [ids[10], created["opportunityid"], ids[11], *ids[13:15], *ids[16:20]]
    expected += [*ids[21:], ids[3]]
    assert [r["opportunityid"] for r in rest] == expected
    assert rest[-1]["name"] == "Paged 99"
    stored = {r["opportunityid"]: r for r in all_rows(client)}
    assert rest[2]["@odata.etag"] == f'W/"{stored[ids[11]]["versionnumber"]}"'


def test_quoted_strings_escape_quotes(client: httpx.Client) -> None:
    created = client.post(ADMIN + "opportunities", json={"name": "O'Brien's deal"}).json()
    rows = client.get(
        API + "opportunities", params={"$filter": "name eq 'o''brien''s DEAL'", "$select": "name"}
    ).json()["value"]
    assert [r["opportunityid"] for r in rows] == [created["opportunityid"]]


def test_expand_single_valued_lookups(reader: httpx.Client) -> None:
    params = {
        "$select": "name,_parentaccountid_value,_ownerid_value",
        "$expand": "parentaccountid($select=name,cosell_countrycode),"
        "ownerid($select=fullname,internalemailaddress,address1_telephone1),"
        "transactioncurrencyid($select=isocurrencycode)",
        "$top": "10",
    }
    rows = reader.get(API + "opportunities", params=params).json()["value"]
    assert len(rows) == 10
    for row in rows:
        account = row["parentaccountid"]
        assert account["accountid"] == row["_parentaccountid_value"]
        assert set(account) == {"@odata.etag", "name", "cosell_countrycode", "accountid"}
        assert row["ownerid"]["systemuserid"] == row["_ownerid_value"]
        assert row["transactioncurrencyid"]["isocurrencycode"] in {
            "USD", "EUR", "GBP", "JPY", "CAD", "AUD"
        }  # fmt: skip
    tracked = reader.get(
        API + "opportunities",
        params={"$expand": "parentaccountid($select=name)"},
        headers={"Prefer": "odata.track-changes"},
    )
    assert tracked.status_code == 400


def test_formatted_values_and_lookup_annotations(reader: httpx.Client) -> None:
    select = "salesstage,statuscode,statecode,estimatedvalue,_parentaccountid_value,_transactioncurrencyid_value,cosell_syncwithpartnercenter"
    only_labels = reader.get(
        API + "opportunities",
        params={"$select": select, "$top": "20"},
        headers={"Prefer": f'odata.include-annotations="{FV}"'},
    )
    assert only_labels.headers["Preference-Applied"] == f'odata.include-annotations="{FV}"'
    accounts = {
        a["accountid"]: a["name"] for a in reader.get(API + "accounts?$select=name").json()["value"]
    }
    stages = {0: "Qualify", 1: "Develop", 2: "Propose", 3: "Close"}
    for row in only_labels.json()["value"]:
        assert row[f"salesstage@{FV}"] == stages[row["salesstage"]]
        assert row[f"statecode@{FV}"] in {"Open", "Won", "Lost"}
        assert row[f"_parentaccountid_value@{FV}"] == accounts[row["_parentaccountid_value"]]
        assert row[f"cosell_syncwithpartnercenter@{FV}"] in {"Yes", "No"}
        assert f"_parentaccountid_value@{LLN}" not in row
        if (
            row["estimatedvalue"] is not None
            and row[f"_transactioncurrencyid_value@{FV}"] == "US Dollar"
        ):
            assert row[f"estimatedvalue@{FV}"] == f"${row['estimatedvalue']:,.2f}".replace(
                "$-", "-$"
            )
    everything = reader.get(
        API + "opportunities",
        params={"$select": select, "$top": "1"},
        headers={"Prefer": 'odata.include-annotations="*"'},
    ).json()["value"][0]
    assert everything[f"_parentaccountid_value@{LLN}"] == "account"
    assert everything[f"_transactioncurrencyid_value@{LLN}"] == "transactioncurrency"


def test_single_row_and_not_modified(reader: httpx.Client) -> None:
    one = all_rows(reader)[0]
    url = API + f"opportunities({one['opportunityid']})?$select=name"
    row = reader.get(url)
    assert row.status_code == 200
    assert row.json()["name"] == one["name"]
    same = reader.get(url, headers={"If-None-Match": row.json()["@odata.etag"]})
    assert same.status_code == 304
    missing = reader.get(API + "opportunities(00000000-0000-4000-8000-000000000001)")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "0x80040217"


# --- change tracking ---------------------------------------------------------------------------


def test_change_tracking_returns_changes_and_deletions(
    sb: SandboxServer, client: httpx.Client
) -> None:
    track = {"Prefer": "odata.track-changes,odata.maxpagesize=15"}
    rows, last = follow(client, API + "opportunities?$select=name,modifiedon", track)
    assert len({r["opportunityid"] for r in rows}) == 40
    delta = last["@odata.deltaLink"]
    assert "$deltatoken=" in delta and "$select=name,modifiedon" in delta

    quiet, _ = follow(client, delta, track)
    assert quiet == []

    stored = all_rows(client)
    edited, deleted = stored[0]["opportunityid"], stored[1]["opportunityid"]
    assert (
        client.post(
            ADMIN + f"opportunities/{edited}", json={"name": "Edited by a user"}
        ).status_code
        == 200
    )
    assert client.delete(ADMIN + f"opportunities/{deleted}").status_code == 200
    created = client.post(ADMIN + "opportunities", json={"name": "New by a user"}).json()

    changes, last = follow(client, delta, track)
    by_id = {c.get("opportunityid") or c["id"]: c for c in changes}
    assert set(by_id) == {edited, deleted, created["opportunityid"]}
    assert by_id[edited]["name"] == "Edited by a user"
    assert by_id[deleted]["reason"] == "deleted"
    assert by_id[deleted]["@odata.context"].endswith("$metadata#opportunities/$deletedEntity")
    assert "@odata.context" in last and last["@odata.context"].endswith("/$delta")

    again, _ = follow(client, last["@odata.deltaLink"], track)
    assert again == []

    refused = client.get(
        API + "opportunities?$filter=statecode eq 0", headers={"Prefer": "odata.track-changes"}
    )
    assert refused.status_code == 400


def test_delta_tokens_expire_by_age_and_by_admin(sb: SandboxServer, client: httpx.Client) -> None:
    track = {"Prefer": "odata.track-changes"}
    _, last = follow(client, API + "opportunities?$select=name", track)
    delta = last["@odata.deltaLink"]
    assert client.post(ADMIN + "expire-delta-tokens").status_code == 200
    revoked = client.get(delta, headers=track)
    assert revoked.status_code == 400
    assert revoked.json()["error"]["code"] == "0x80044352"
    assert "expired" in revoked.json()["error"]["message"]

    _, fresh = follow(client, API + "opportunities?$select=name", track)
    assert client.get(fresh["@odata.deltaLink"], headers=track).status_code == 200
    client.post("/_sandbox/clock", json={"days": 8})
    client.headers["Authorization"] = f"Bearer {new_token(client)}"
    aged = client.get(fresh["@odata.deltaLink"], headers=track)
    assert aged.status_code == 400
    assert aged.json()["error"]["code"] == "0x80044352"


# --- writing -----------------------------------------------------------------------------------


def test_patch_with_if_match_star_never_creates(client: httpx.Client) -> None:
    missing = "11111111-2222-4333-8444-555555555555"
    response = client.patch(
        API + f"opportunities({missing})", json={"name": "ghost"}, headers={"If-Match": "*"}
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "0x80040217"
    assert client.get(ADMIN + f"opportunities/{missing}").status_code == 404
    upsert = client.patch(API + f"opportunities({missing})", json={"name": "upserted"})
    assert upsert.status_code == 204
    assert client.get(ADMIN + f"opportunities/{missing}").json()["name"] == "upserted"


def test_stale_etag_gets_412_and_writes_bump_the_version(
    sb: SandboxServer, client: httpx.Client
) -> None:
    row = next(r for r in all_rows(client) if r["statecode"] == 0)
    url = API + f"opportunities({row['opportunityid']})"
    etag = f'W/"{row["versionnumber"]}"'
    sb.ctx.clock.advance(timedelta(seconds=5))
    ok = client.patch(url, json={"cosell_referralid": "REF-1"}, headers={"If-Match": etag})
    assert ok.status_code == 204
    assert ok.headers["OData-EntityId"].endswith(f"opportunities({row['opportunityid']})")
    after = client.get(ADMIN + f"opportunities/{row['opportunityid']}").json()
    assert after["versionnumber"] > row["versionnumber"]
    assert after["modifiedon"] > row["modifiedon"]
    stale = client.patch(url, json={"cosell_referralid": "REF-2"}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "0x80060882"
    assert (
        client.get(ADMIN + f"opportunities/{row['opportunityid']}").json()["cosell_referralid"]
        == "REF-1"
    )


def test_won_rows_are_read_only_and_state_changes_need_actions(client: httpx.Client) -> None:
    rows = all_rows(client)
    won = next(r for r in rows if r["statecode"] == 1)
    refused = client.patch(
        API + f"opportunities({won['opportunityid']})",
        json={"cosell_syncerror": "x"},
        headers={"If-Match": "*"},
    )
    assert refused.status_code == 400
    assert "read-only" in refused.json()["error"]["message"]
    open_row = next(r for r in rows if r["statecode"] == 0)
    set_state = client.patch(
        API + f"opportunities({open_row['opportunityid']})",
        json={"statecode": 1, "statuscode": 3},
        headers={"If-Match": "*"},
    )
    assert set_state.status_code == 400
    assert "WinOpportunity" in set_state.json()["error"]["message"]


def test_win_and_lose_actions_close_opportunities(client: httpx.Client) -> None:
    open_ids = [r["opportunityid"] for r in all_rows(client) if r["statecode"] == 0][:2]
    win = client.post(
        API + "WinOpportunity",
        json={
            "OpportunityClose": {
                "subject": "Won",
                "opportunityid@odata.bind": f"/opportunities({open_ids[0]})",
            },
            "Status": 3,
        },
    )
    assert win.status_code == 204
    lose = client.post(
        API + "LoseOpportunity",
        json={
            "OpportunityClose": {"opportunityid@odata.bind": f"/opportunities({open_ids[1]})"},
            "Status": 5,
        },
    )
    assert lose.status_code == 204
    won = client.get(ADMIN + f"opportunities/{open_ids[0]}").json()
    lost = client.get(ADMIN + f"opportunities/{open_ids[1]}").json()
    assert (won["statecode"], won["statuscode"]) == (1, 3)
    assert (lost["statecode"], lost["statuscode"]) == (2, 5)
    twice = client.post(
        API + "WinOpportunity",
        json={
            "OpportunityClose": {"opportunityid@odata.bind": f"/opportunities({open_ids[0]})"},
            "Status": 3,
        },
    )
    assert twice.status_code == 400


def test_post_creates_with_binds(client: httpx.Client) -> None:
    account = client.get(API + "accounts?$select=name&$top=1").json()["value"][0]
    body = {
        "name": "Inbound – Zürich",
        "estimatedvalue": 1234.5,
        "estimatedclosedate": "2026-12-31",
        "cosell_helpneeded": 3,
        "parentaccountid@odata.bind": f"/accounts({account['accountid']})",
        "customerid_account@odata.bind": f"/accounts({account['accountid']})",
    }
    plain = client.post(API + "opportunities", json=body)
    assert plain.status_code == 204
    new_id = plain.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    stored = client.get(ADMIN + f"opportunities/{new_id}").json()
    assert stored["_parentaccountid_value"] == account["accountid"]
    assert stored["_customerid_value"] == account["accountid"]
    assert (stored["statecode"], stored["statuscode"]) == (0, 1)
    shown = client.post(
        API + "opportunities?$select=name,cosell_helpneeded",
        json={"name": "With representation", "cosell_helpneeded": 6},
        headers={"Prefer": f'return=representation,odata.include-annotations="{FV}"'},
    )
    assert shown.status_code == 201
    assert shown.json()["name"] == "With representation"
    assert shown.json()[f"cosell_helpneeded@{FV}"] == "Workload Specific Value Proposition"
    bad_bind = client.post(
        API + "opportunities",
        json={
            "name": "x",
            "parentaccountid@odata.bind": "/accounts(11111111-2222-4333-8444-555555555555)",
        },
    )
    assert bad_bind.status_code == 400
    bad_value = client.post(API + "opportunities", json={"name": "x", "salesstage": 9})
    assert bad_value.status_code == 400
    lookup_value = client.post(
        API + "opportunities", json={"_parentaccountid_value": account["accountid"]}
    )
    assert lookup_value.status_code == 400


# --- $batch ------------------------------------------------------------------------------------


def _batch(parts: list[str], boundary: str = "batch_abc") -> str:
    return "".join(f"--{boundary}\r\n{p}\r\n" for p in parts) + f"--{boundary}--\r\n"


def _http_part(
    method: str, url: str, body: str | None, content_id: int | None = None, extra: str = ""
) -> str:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    if content_id is not None:
        head += f"Content-ID: {content_id}\r\n"
    request = f"{method} {url} HTTP/1.1\r\nContent-Type: application/json\r\n{extra}"
    return f"{head}\r\n{request}\r\n{body or ''}"


def _changeset(parts: list[str], boundary: str = "changeset_xyz") -> str:
    inner = "".join(f"--{boundary}\r\n{p}\r\n" for p in parts) + f"--{boundary}--"
    return f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n{inner}"


def test_batch_changeset_applies_all_or_nothing(sb: SandboxServer, client: httpx.Client) -> None:
    rows = [r for r in all_rows(client) if r["statecode"] == 0][:3]
    patches = [
        _http_part(
            "PATCH",
            f"{sb.url}{API}opportunities({r['opportunityid']})",
            '{"cosell_status": "Synced"}',
            i + 1,
            "If-Match: *\r\n",
        )
        for i, r in enumerate(rows)
    ]
    body = _batch(
        [_changeset(patches), _http_part("GET", f"{API}opportunities?$select=name&$top=2", None)]
    )
    response = client.post(
        API + "$batch",
        content=body,
        headers={"Content-Type": "multipart/mixed; boundary=batch_abc"},
    )
    assert response.status_code == 200
    text = response.text
    assert text.count("HTTP/1.1 204 No Content") == 3
    assert "HTTP/1.1 200 OK" in text
    assert all(
        client.get(ADMIN + f"opportunities/{r['opportunityid']}").json()["cosell_status"]
        == "Synced"
        for r in rows
    )

    stale = _http_part(
        "PATCH",
        f"{API}opportunities({rows[1]['opportunityid']})",
        '{"cosell_status": "Never"}',
        2,
        'If-Match: W/"1"\r\n',
    )
    good = _http_part(
        "PATCH",
        f"{API}opportunities({rows[0]['opportunityid']})",
        '{"cosell_status": "Never"}',
        1,
        "If-Match: *\r\n",
    )
    failed = client.post(
        API + "$batch",
        content=_batch([_changeset([good, stale])]),
        headers={"Content-Type": "multipart/mixed; boundary=batch_abc"},
    )
    # Without continue-on-error a failure ends the batch: 400, the failure in a multipart body.
    assert failed.status_code == 400
    assert failed.headers["Content-Type"].startswith("multipart/mixed; boundary=batchresponse_")
    assert "HTTP/1.1 412 Precondition Failed" in failed.text and "0x80060882" in failed.text
    assert (
        client.get(ADMIN + f"opportunities/{rows[0]['opportunityid']}").json()["cosell_status"]
        == "Synced"
    )


def test_batch_stops_at_a_failure_with_400_unless_continue_on_error(
    sb: SandboxServer, client: httpx.Client
) -> None:
    rows = [r for r in all_rows(client) if r["statecode"] == 0][:3]
    missing = "00000000-0000-0000-0000-00000000abcd"

    def patch(row_id: str, value: str, content_id: int) -> str:
        url = f"{API}opportunities({row_id})"
        body = f'{{"cosell_status": "{value}"}}'
        return _http_part("PATCH", url, body, content_id, "If-Match: *\r\n")

    def statuses() -> list[str | None]:
        return [
            client.get(ADMIN + f"opportunities/{r['opportunityid']}").json()["cosell_status"]
            for r in rows
        ]

    parts = [
        patch(rows[0]["opportunityid"], "A", 1),
        patch(missing, "B", 2),
        patch(rows[1]["opportunityid"], "C", 3),
    ]
    headers = {"Content-Type": "multipart/mixed; boundary=batch_abc"}
    stopped = client.post(API + "$batch", content=_batch(parts), headers=headers)
    assert stopped.status_code == 400
    assert "HTTP/1.1 404 Not Found" in stopped.text and "Content-ID: 2" in stopped.text
    assert "Content-ID: 3" not in stopped.text  # not processed
    assert statuses()[:2] == ["A", rows[1]["cosell_status"]]

    parts[0] = patch(rows[0]["opportunityid"], "D", 1)
    kept_going = client.post(
        API + "$batch",
        content=_batch(parts),
        headers={**headers, "Prefer": "odata.continue-on-error"},
    )
    assert kept_going.status_code == 200
    assert kept_going.text.count("HTTP/1.1 204 No Content") == 2
    assert "HTTP/1.1 404 Not Found" in kept_going.text
    assert statuses()[:2] == ["D", "C"]


def test_batch_post_then_reference_by_content_id(client: httpx.Client) -> None:
    create = _http_part("POST", f"{API}opportunities", '{"name": "Batch made"}', 1)
    update = _http_part("PATCH", "$1", '{"description": "patched via $1"}', 2, "If-Match: *\r\n")
    response = client.post(
        API + "$batch",
        content=_batch([_changeset([create, update])]),
        headers={"Content-Type": "multipart/mixed; boundary=batch_abc"},
    )
    assert response.status_code == 200, response.text
    made = [r for r in all_rows(client) if r["name"] == "Batch made"]
    assert len(made) == 1 and made[0]["description"] == "patched via $1"


# --- metadata ----------------------------------------------------------------------------------


def _options(client: httpx.Client, attribute: str, cast: str) -> list[dict[str, Any]]:
    url = (
        f"{API}EntityDefinitions(LogicalName='opportunity')/Attributes(LogicalName='{attribute}')"
        f"/Microsoft.Dynamics.CRM.{cast}?$select=LogicalName&$expand=OptionSet($select=Options)"
    )
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.json()["LogicalName"] == attribute
    return list(response.json()["OptionSet"]["Options"])


def test_option_set_metadata(reader: httpx.Client) -> None:
    def labels(options: list[dict[str, Any]]) -> dict[int, str]:
        return {o["Value"]: o["Label"]["UserLocalizedLabel"]["Label"] for o in options}

    assert labels(_options(reader, "salesstage", "PicklistAttributeMetadata")) == {
        0: "Qualify", 1: "Develop", 2: "Propose", 3: "Close"
    }  # fmt: skip
    status = _options(reader, "statuscode", "StatusAttributeMetadata")
    assert {o["Value"]: o["State"] for o in status} == {1: 0, 2: 0, 3: 1, 4: 2, 5: 2}
    assert labels(status)[5] == "Out-Sold"
    assert (
        labels(_options(reader, "cosell_helpneeded", "PicklistAttributeMetadata"))[4]
        == "Quotes or Licensing"
    )
    wrong_cast = reader.get(
        f"{API}EntityDefinitions(LogicalName='opportunity')/Attributes(LogicalName='salesstage')"
        "/Microsoft.Dynamics.CRM.StatusAttributeMetadata"
    )
    assert wrong_cast.status_code == 400


def test_table_definitions_say_which_tables_track_changes(client: httpx.Client) -> None:
    # Microsoft's query (use-change-tracking-synchronize-data-external-systems.md)
    listed = client.get(
        API + "EntityDefinitions?$select=SchemaName&$filter=ChangeTrackingEnabled eq true"
    )
    assert listed.status_code == 200, listed.text
    assert [t["SchemaName"] for t in listed.json()["value"]] == ["Opportunity"]
    one = client.get(
        API + "EntityDefinitions(LogicalName='opportunity')"
        "?$select=LogicalName,ChangeTrackingEnabled"
    ).json()
    assert one["LogicalName"] == "opportunity" and one["ChangeTrackingEnabled"] is True
    assert one["@odata.context"].endswith("$metadata#EntityDefinitions/$entity")
    tracked = {"Prefer": "odata.track-changes"}
    assert client.get(API + "opportunities?$select=name", headers=tracked).status_code == 200

    assert client.put(ADMIN + "change-tracking", json={"opportunity": False}).json() == {
        "opportunity": False, "account": False, "contact": False, "systemuser": False,
        "transactioncurrency": False, "connection": False, "connectionrole": False,
    }  # fmt: skip
    off = client.get(API + "EntityDefinitions(LogicalName='opportunity')").json()
    assert off["ChangeTrackingEnabled"] is False
    refused = client.get(API + "opportunities?$select=name", headers=tracked)
    assert refused.status_code == 400
    assert "not enabled" in refused.json()["error"]["message"]
    client.put(ADMIN + "change-tracking", json={"opportunity": True})
    assert client.get(API + "opportunities?$select=name", headers=tracked).status_code == 200


def test_column_types_come_with_the_attributes(reader: httpx.Client) -> None:
    listed = reader.get(
        API + "EntityDefinitions(LogicalName='opportunity')/Attributes"
        "?$select=LogicalName,AttributeType"
    )
    assert listed.status_code == 200
    types = {a["LogicalName"]: a for a in listed.json()["value"]}
    assert types["name"]["AttributeType"] == "String"
    assert (types["estimatedclosedate"]["AttributeType"], types["estimatedclosedate"]["Format"]) == (
        "DateTime", "DateOnly"
    )  # fmt: skip
    assert types["modifiedon"]["Format"] == "DateAndTime"
    assert types["estimatedvalue"]["AttributeType"] == "Money"


# --- service protection ------------------------------------------------------------------------


def test_request_budget_gives_429_with_retry_after(sb: SandboxServer, client: httpx.Client) -> None:
    assert (
        client.put(ADMIN + "limits", json={"requests_per_5min": 5}).json()["requests_per_5min"] == 5
    )
    statuses = [client.get(API + "opportunities?$top=1").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    throttled = client.get(API + "opportunities?$top=1")
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "0x80072322"
    retry_after = int(throttled.headers["Retry-After"])
    assert 1 <= retry_after <= 300
    client.post("/_sandbox/clock", json={"seconds": retry_after})
    assert client.get(API + "opportunities?$top=1").status_code == 200


def test_concurrency_ceiling_gives_429(sb: SandboxServer, client: httpx.Client) -> None:
    client.put(ADMIN + "limits", json={"concurrency": 2, "execution_ms": 300})
    statuses: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        with connect_same_token(sb, client) as c:
            status = c.get(API + "opportunities?$top=1").status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert statuses.count(200) >= 2
    assert 429 in statuses


def connect_same_token(sb: SandboxServer, client: httpx.Client) -> httpx.Client:
    return httpx.Client(
        base_url=sb.url,
        verify=tls(sb),
        headers={"Authorization": client.headers["Authorization"]},
        timeout=20,
    )


# --- seed and persistence ----------------------------------------------------------------------


def test_seed_is_deterministic_and_mixed(sb: SandboxServer) -> None:
    part: DataversePart = sb.part("dataverse")
    part.seed(400, 11)
    first = part.dump()["store"]["rows"]["opportunities"]
    defects = dict(part.defects)
    part.seed(400, 11)
    assert part.dump()["store"]["rows"]["opportunities"] == first
    rows = first
    synced = sum(r["cosell_syncwithpartnercenter"] for r in rows) / len(rows)
    assert 0.78 < synced < 0.92
    assert 0.03 < len(defects) / len(rows) < 0.10
    assert {r["statecode"] for r in rows} == {0, 1, 2}
    assert 0.3 < sum(r["cosell_helpneeded"] is not None for r in rows) / len(rows) < 0.5
    assert any("SOL-IP-" in (r["cosell_solutions"] or "") for r in rows)
    currencies = {r["_transactioncurrencyid_value"] for r in rows}
    assert len(currencies) == 6
    accounts = part.store.all("accounts")
    assert any(a["cosell_countrycode"] is None for a in accounts)
    assert any(not a["name"].isascii() for a in accounts)


def test_dump_and_load_round_trip(sb: SandboxServer) -> None:
    part: DataversePart = sb.part("dataverse")
    data = part.dump()
    other = DataversePart(sb.ctx)
    other.load(json.loads(json.dumps(data)))
    assert other.dump() == data


def test_injected_faults_use_dataverse_error_shape(sb: SandboxServer, client: httpx.Client) -> None:
    client.put("/_sandbox/faults", json={"dataverse": {"rate_429": 1.0, "retry_after_s": 2}})
    try:
        throttled = client.get(API + "opportunities?$top=1")
    finally:
        client.put("/_sandbox/faults", json={"dataverse": {}})
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "2"
    assert throttled.json()["error"]["code"] == "0x80072322"
    assert client.get(API + "opportunities?$top=1").status_code == 200
