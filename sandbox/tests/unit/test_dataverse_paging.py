"""Paging through the Dataverse sandbox while rows change: every page must be the one a fresh
filter and sort of the table gives (the read indexes only find rows faster)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from sandbox.context import Clock
from sandbox.dataverse import (
    filter as dataverse_filter,
)
from sandbox.dataverse import (
    index as dataverse_index,
)
from sandbox.dataverse import schema as s
from sandbox.dataverse import (
    seed as dataverse_seed,
)
from sandbox.dataverse.api import DataverseApi, DvRequest
from sandbox.dataverse.limits import Limits
from sandbox.dataverse.query import (
    decode_cookie,
    key_from_json,
    parse_query,
    sort_key_function,
)
from sandbox.dataverse.store import DataverseStore

Row = dict[str, Any]
BASE = "https://127.0.0.1:1/api/data/v9.2/"
TABLE = s.OPPORTUNITY


# --- the previous implementation: filter, cut after the last key and sort the whole table ---


def _key_after(key: tuple[Any, ...], last: tuple[Any, ...], sort: Any) -> bool:
    for (_, desc), a, b in zip(sort, key, last, strict=True):
        if a == b:
            continue
        return bool((a > b) != desc)
    return False


def reference_page(
    store: DataverseStore, params: dict[str, str], size: int
) -> tuple[list[str], bool]:
    query = parse_query(params, TABLE)
    key = sort_key_function(query.sort, TABLE)
    rows = [r for r in store.all("opportunities") if query.filter is None or query.filter(r)]
    if "$skiptoken" in params:
        last = key_from_json(decode_cookie(params["$skiptoken"])[0]["last"])
        rows = [r for r in rows if _key_after(key(r), last, query.sort)]
    keyed = [(key(r), r) for r in rows]
    for index in range(len(query.sort) - 1, -1, -1):
        keyed.sort(key=lambda kr: kr[0][index], reverse=query.sort[index][1])
    ids = [r["opportunityid"] for _, r in keyed]
    return ids[:size], len(ids) > size


def reference_changes(
    store: DataverseStore, params: dict[str, str], since: int | None, size: int
) -> tuple[list[str], bool]:
    after = ""
    if "$skiptoken" in params:
        state = decode_cookie(params["$skiptoken"])[0]
        since, after = state["since"], state["after"]
    ids = [
        r["opportunityid"]
        for r in store.all("opportunities")
        if since is None or r["versionnumber"] > since
    ]
    if since is not None:
        live = set(store.rows["opportunities"])
        ids += list({i for v, i, _ in store.tombstones["opportunities"] if v > since} - live)
    ids = sorted(i for i in ids if i > after)
    return ids[:size], len(ids) > size


# --- a store that changes between pages --------------------------------------------------------


def make_api(n: int) -> DataverseApi:
    store = DataverseStore(Clock())
    dataverse_seed.build(store, n, 11, datetime(2026, 10, 1, tzinfo=UTC))
    return DataverseApi(store, Limits())


def get(api: DataverseApi, url: str, prefer: str) -> tuple[dict[str, str], Row]:
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    path = parts.path.rsplit("/", 1)[-1]
    answer = api.handle(DvRequest("GET", path, params, {"prefer": prefer}, b"", BASE))
    assert answer.status == 200, answer.body
    return params, json.loads(answer.body)


def new_guid(rng: random.Random) -> str:
    return f"{rng.getrandbits(32):08x}-0000-4000-8000-{rng.getrandbits(48):012x}"


def change_rows(store: DataverseStore, rng: random.Random, count: int) -> None:
    """Edits that move rows in and out of filters and orders, deletions, insertions and a
    change set that is undone."""
    rows = store.rows["opportunities"]
    live = sorted(rows)
    for _ in range(count):
        row_id, other = rng.choice(live), rng.choice(live)
        if row_id not in rows or other not in rows:
            continue  # deleted earlier in this burst
        roll = rng.random()
        if roll < 0.55:
            changes = rng.choice(
                [
                    {"name": rng.choice(["aaa", "ZZZ", "mmm", "Mmm", None])},
                    {"estimatedvalue": rng.choice([None, 5.0, 250_000.0, 2e6])},
                    {"statecode": rng.choice([0, 1, 2])},
                    {"closeprobability": rng.randrange(101)},
                ]
            )
            store.update("opportunities", row_id, changes)
        elif roll < 0.75:
            store.delete("opportunities", row_id)
        elif roll < 0.9:
            row = {"opportunityid": new_guid(rng), "name": rng.choice(["new", "Alpha", None])}
            store.insert("opportunities", {**row, "statecode": 0, "statuscode": 1})
        else:
            store.begin()
            store.update("opportunities", row_id, {"name": "undone"})
            store.delete("opportunities", other)
            store.insert("opportunities", {"opportunityid": new_guid(rng), "statecode": 0})
            store.rollback()


QUERIES = [
    "$select=name",
    "$select=name,estimatedvalue&$filter=statecode eq 0&$orderby=estimatedvalue desc,name asc",
    "$select=name&$orderby=modifiedon asc,opportunityid asc",
    "$select=name&$filter=estimatedvalue gt 1000&$orderby=name desc,closeprobability asc",
]


@pytest.mark.parametrize("options", QUERIES)
@pytest.mark.parametrize("writes", [0, 2, 300])
def test_pages_while_rows_change_match_a_fresh_filter_and_sort(options: str, writes: int) -> None:
    api = make_api(2500)
    rng = random.Random(writes)
    url, sent = f"{BASE}opportunities?{options}", []
    for _ in range(200):
        params = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        expected, more = reference_page(api.store, params, 97)
        _, body = get(api, url, "odata.maxpagesize=97")
        page = [r["opportunityid"] for r in body["value"]]
        assert page == expected
        assert ("@odata.nextLink" in body) == more
        stored = api.store.rows["opportunities"]
        versions = [f'W/"{stored[i]["versionnumber"]}"' for i in page]
        assert [r["@odata.etag"] for r in body["value"]] == versions
        sent += page
        if not more:
            break
        url = body["@odata.nextLink"]
        change_rows(api.store, rng, writes)
    else:
        raise AssertionError("paging did not end")
    if options == "$select=name":  # the key never changes: each row at most once
        assert len(sent) == len(set(sent))


def test_default_order_loses_and_repeats_no_row_while_rows_change() -> None:
    api = make_api(3000)
    rng = random.Random(7)
    before = set(api.store.rows["opportunities"])
    deleted: set[str] = set()
    url, sent = f"{BASE}opportunities?$select=name", []
    for _ in range(100):
        _, body = get(api, url, "odata.maxpagesize=250")
        sent += [r["opportunityid"] for r in body["value"]]
        if "@odata.nextLink" not in body:
            break
        url = body["@odata.nextLink"]
        tombs = len(api.store.tombstones["opportunities"])
        change_rows(api.store, rng, 5)
        deleted |= {i for _, i, _ in api.store.tombstones["opportunities"][tombs:]}
    assert len(sent) == len(set(sent))
    assert before - deleted <= set(sent)
    assert set(sent) <= before | set(api.store.rows["opportunities"]) | deleted


@pytest.mark.parametrize("writes", [0, 3, 300])
def test_change_tracking_pages_while_rows_change(writes: int) -> None:
    api = make_api(2500)
    rng = random.Random(writes)
    prefer = "odata.track-changes,odata.maxpagesize=120"
    url = f"{BASE}opportunities?$select=name"
    since: int | None = None
    for _round in range(2):  # the full sync, then the delta link
        for _ in range(200):
            params = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
            if "$deltatoken" in params:
                since = int(params["$deltatoken"].split("!")[0])
            expected, more = reference_changes(api.store, params, since, 120)
            _, body = get(api, url, prefer)
            page = [r.get("opportunityid") or r["id"] for r in body["value"]]
            assert page == expected
            gone = [i not in api.store.rows["opportunities"] for i in page]
            assert ["reason" in r for r in body["value"]] == gone
            if not more:
                assert "@odata.nextLink" not in body
                url = body["@odata.deltaLink"]
                break
            url = body["@odata.nextLink"]
            change_rows(api.store, rng, writes)
        else:
            raise AssertionError("paging did not end")
        change_rows(api.store, rng, 500)  # a delta of several pages


def test_indexes_catch_up_on_a_few_writes_and_rebuild_when_far_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    builds: list[int] = []

    class Counted(dataverse_index.SortedIndex):
        def __init__(self, *args: Any) -> None:
            builds.append(1)
            super().__init__(*args)

    monkeypatch.setattr(dataverse_index, "SortedIndex", Counted)
    api = make_api(1000)
    api.store.journal_limit = 500
    rng = random.Random(3)
    one = sorted(api.store.rows["opportunities"])[500]

    def page_matches(url: str) -> str:
        params, body = get(api, url, "odata.maxpagesize=40")
        expected = reference_page(api.store, params, 40)[0]
        assert [r["opportunityid"] for r in body["value"]] == expected
        return str(body["@odata.nextLink"])

    first = f"{BASE}opportunities?$select=name&$orderby=name asc"
    url = page_matches(first)
    for writes in [0, 1, 2, 0, 5]:  # caught up from the journal
        change_rows(api.store, rng, writes)
        url = page_matches(url)
    assert len(builds) == 1
    change_rows(api.store, rng, 200)  # more rows changed than catching up is worth
    url = page_matches(url)
    assert len(builds) == 2
    for n in range(600):  # one row only, but the journal no longer reaches back
        api.store.update("opportunities", one, {"name": f"renamed {n}"})
    url = page_matches(url)
    assert len(builds) == 3
    api.store.clear()  # a reseed: every index starts again
    dataverse_seed.build(api.store, 60, 2, datetime(2026, 10, 1, tzinfo=UTC))
    page_matches(first)
    assert len(builds) == 4


# --- lookups by key: filters that name the values a kept row must have ----------------------


def _lookup_queries(api: DataverseApi) -> list[str]:
    ids = sorted(api.store.rows["opportunities"])
    some = ids[::97][:20]
    by_id = " or ".join(f"opportunityid eq {i.upper() if n % 2 else i}" for n, i in enumerate(some))
    gone = "00000000-0000-4000-8000-000000000001"
    return [
        f"$select=name&$filter={by_id} or opportunityid eq {gone}",
        f"$select=name&$filter=({by_id}) and statecode eq 0&$orderby=name desc",
        "$select=name&$filter=name eq 'aaa' or name eq 'mmm' or name eq 'new'",
        "$select=name&$filter=(name eq 'ZZZ' or name eq null) and estimatedvalue gt 1000",
        "$select=name&$filter=Microsoft.Dynamics.CRM.In(PropertyName='statecode',"
        "PropertyValues=['1','2'])&$orderby=estimatedvalue desc",
        "$select=name&$filter=name eq 'aaa' or statecode eq 1",  # two columns: every row
        "$select=name&$filter=not (name eq 'aaa')",
    ]


def test_lookups_by_key_match_a_fresh_filter_while_rows_change() -> None:
    api = make_api(1500)
    rng = random.Random(5)
    queries = _lookup_queries(api)
    for _round in range(12):
        for options in queries:
            url = f"{BASE}opportunities?{options}"
            for _ in range(100):
                params = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
                expected, more = reference_page(api.store, params, 300)
                _, body = get(api, url, "odata.maxpagesize=300")
                assert [r["opportunityid"] for r in body["value"]] == expected, options
                if not more:
                    break
                url = body["@odata.nextLink"]
            else:
                raise AssertionError("paging did not end")
        change_rows(api.store, rng, 40)
    api.store.clear()  # a reseed: the value indexes start again
    dataverse_seed.build(api.store, 80, 2, datetime(2026, 10, 1, tzinfo=UTC))
    for options in queries:
        params = dict(parse_qsl(options, keep_blank_values=True))
        _, body = get(api, f"{BASE}opportunities?{options}", "odata.maxpagesize=300")
        expected = reference_page(api.store, params, 300)[0]
        assert [r["opportunityid"] for r in body["value"]] == expected


def test_a_lookup_by_ids_tests_only_the_rows_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    api = make_api(3000)
    tested: list[str] = []
    original = dataverse_filter.Condition.__call__

    def counted(self: dataverse_filter.Condition, row: Row) -> bool:
        tested.append(str(row.get("opportunityid")))
        return original(self, row)

    monkeypatch.setattr(dataverse_filter.Condition, "__call__", counted)
    rows = api.store.rows["opportunities"]
    ids = sorted(rows)[:50]
    by_id = " or ".join(f"opportunityid eq {i}" for i in ids)
    _, body = get(api, f"{BASE}opportunities?$select=statecode&$filter={by_id}", "")
    assert sorted(r["opportunityid"] for r in body["value"]) == ids
    assert len(tested) == 50
    referrals = [f"Ref-{n:04d}" for n in range(50)]
    for row_id, referral in zip(sorted(rows)[100:], referrals, strict=False):
        api.store.update("opportunities", row_id, {"cosell_referralid": referral})
    by_referral = " or ".join(f"cosell_referralid eq '{r}'" for r in referrals)
    tested.clear()
    for _ in range(3):  # the column's value index is built once, then kept current
        _, body = get(api, f"{BASE}opportunities?$filter={by_referral}", "")
        assert sorted(r["cosell_referralid"] for r in body["value"]) == referrals
    assert len(tested) == 150
    contacts = sorted(api.store.rows["contacts"])[:50]
    by_contact = " or ".join(f"contactid eq {i}" for i in contacts)
    answer = api.handle(DvRequest("GET", "contacts", {"$filter": by_contact}, {}, b"", BASE))
    assert len(json.loads(answer.body)["value"]) == 50
