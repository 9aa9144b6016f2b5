"""The sandbox's Salesforce over real HTTPS, driven by simple-salesforce itself."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jwt
import pytest
import requests
from simple_salesforce import Salesforce, format_soql
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from sandbox.harness import SandboxServer
from sandbox.salesforce.seed import build_org

N = 450
FIELDS = "Id, Name, Amount, SystemModstamp"


@pytest.fixture(scope="module")
def sb() -> Iterator[SandboxServer]:
    with SandboxServer(opportunities=N) as server:
        yield server


@pytest.fixture(scope="module")
def session(sb: SandboxServer) -> requests.Session:
    s = requests.Session()
    s.verify = str(sb.ca_file)
    s.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would override verify
    return s


def token(sb: SandboxServer, session: requests.Session, **form: str) -> requests.Response:
    data = {"grant_type": "client_credentials", "client_id": "sandbox", "client_secret": "sandbox"}
    return session.post(f"{sb.url}/services/oauth2/token", data={**data, **form}, timeout=10)


@pytest.fixture
def sf(sb: SandboxServer, session: requests.Session) -> Salesforce:
    body = token(sb, session).json()
    return Salesforce(
        instance_url=body["instance_url"], session_id=body["access_token"], session=session
    )


@pytest.fixture
def admin(sb: SandboxServer, session: requests.Session) -> Iterator[Any]:
    def call(method: str, path: str, **kw: Any) -> Any:
        r = session.request(method, f"{sb.url}/_sandbox/salesforce/{path}", timeout=10, **kw)
        assert r.status_code < 300, r.text
        return r.json()

    yield call
    call("PUT", "validation-rules", json={"rules": []})
    call("PUT", "limits", json={"max": 100000})


# --- auth ---------------------------------------------------------------------


def test_client_credentials_answers_like_salesforce(
    sb: SandboxServer, session: requests.Session
) -> None:
    body = token(sb, session).json()
    assert body["instance_url"] == sb.url
    assert body["token_type"] == "Bearer"
    assert {"access_token", "issued_at", "id", "signature"} <= body.keys()
    bad = token(sb, session, client_secret="wrong")
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_client"


def test_jwt_bearer_checks_iss_and_exp_but_not_the_signature(
    sb: SandboxServer, session: requests.Session
) -> None:
    def assertion(**claims: Any) -> str:
        base = {"iss": "sandbox", "sub": "integration@sandbox.example", "aud": "https://login.salesforce.com",
                "exp": int(time.time()) + 180}  # fmt: skip
        return jwt.encode(
            {**base, **claims}, "any key at all, the sandbox never checks it", algorithm="HS256"
        )

    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    ok = session.post(
        f"{sb.url}/services/oauth2/token",
        data={"grant_type": grant, "assertion": assertion()},
        timeout=10,
    )
    assert ok.status_code == 200 and ok.json()["access_token"]
    for audience in ("https://test.salesforce.com", sb.url):  # a sandbox, the org's own site
        r = session.post(
            f"{sb.url}/services/oauth2/token",
            data={"grant_type": grant, "assertion": assertion(aud=audience)},
            timeout=10,
        )
        assert r.status_code == 200, audience
    for claims, error in (
        ({"iss": "other"}, "invalid_client"),
        ({"exp": int(time.time()) - 5}, "invalid_grant"),
        ({"aud": "https://elsewhere.example"}, "invalid_grant"),
    ):
        r = session.post(
            f"{sb.url}/services/oauth2/token",
            data={"grant_type": grant, "assertion": assertion(**claims)},
            timeout=10,
        )
        assert (r.status_code, r.json()["error"]) == (400, error)


def test_bad_token_is_an_expired_session(sb: SandboxServer, session: requests.Session) -> None:
    sf = Salesforce(instance_url=sb.url, session_id="not-a-token", session=session)
    with pytest.raises(SalesforceExpiredSession) as caught:
        sf.query("SELECT Id FROM Opportunity")
    assert caught.value.content[0]["errorCode"] == "INVALID_SESSION_ID"


# --- query ----------------------------------------------------------------------


def test_query_pages_with_batch_size(sf: Salesforce) -> None:
    options = {"Sforce-Query-Options": "batchSize=200"}
    first = sf.query(
        f"SELECT {FIELDS} FROM Opportunity ORDER BY SystemModstamp, Id", headers=options
    )
    assert first["totalSize"] == N and not first["done"] and len(first["records"]) == 200
    assert first["nextRecordsUrl"].startswith("/services/data/v")
    assert first["nextRecordsUrl"].endswith("-200")
    records = list(first["records"])
    page = first
    while not page["done"]:
        page = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True)
        records.extend(page["records"])
    assert len(records) == N == len({r["Id"] for r in records})
    keys = [(r["SystemModstamp"], r["Id"]) for r in records]
    assert keys == sorted(keys)
    every = sf.query_all("SELECT Id FROM Opportunity", headers=options)
    assert every["totalSize"] == N


def test_records_carry_attributes_and_salesforce_formats(sf: Salesforce) -> None:
    rows = sf.query(
        "SELECT Id, CloseDate, SystemModstamp, IsClosed, Amount FROM Opportunity WHERE CloseDate != null LIMIT 5"
    )["records"]
    row = rows[0]
    assert row["attributes"]["type"] == "Opportunity"
    assert row["attributes"]["url"].endswith(f"/sobjects/Opportunity/{row['Id']}")
    assert len(row["Id"]) == 18 and row["Id"].startswith("006")
    assert len(row["CloseDate"]) == 10
    datetime.strptime(row["SystemModstamp"], "%Y-%m-%dT%H:%M:%S.000+0000")
    assert isinstance(row["IsClosed"], bool)


def test_relationship_fields_are_nested(sf: Salesforce) -> None:
    rows = sf.query_all(
        "SELECT Id, Account.Name, Account.BillingCountryCode, Owner.Email, Primary_Contact__r.Email "
        "FROM Opportunity"
    )["records"]
    with_contact = [r for r in rows if r["Primary_Contact__r"] is not None]
    without = [r for r in rows if r["Primary_Contact__r"] is None]
    assert with_contact and without
    account = rows[0]["Account"]
    assert account["attributes"]["type"] == "Account" and set(account) == {
        "attributes",
        "Name",
        "BillingCountryCode",
    }
    assert rows[0]["Owner"]["attributes"]["type"] == "User"
    assert any(not r["Account"]["Name"].isascii() for r in rows)  # Unicode names survive


@pytest.mark.parametrize(
    ("where", "check"),
    [
        (
            "Sync_with_Partner_Center__c = true AND Amount > 100000",
            lambda r: r["Sync_with_Partner_Center__c"] and (r["Amount"] or 0) > 100000,
        ),
        ("CurrencyIsoCode IN ('EUR', 'GBP')", lambda r: r["CurrencyIsoCode"] in ("EUR", "GBP")),
        ("CurrencyIsoCode NOT IN ('USD')", lambda r: r["CurrencyIsoCode"] != "USD"),
        ("Name LIKE 'Müller%'", lambda r: r["Name"].startswith("Müller")),
        (
            "NOT (StageName = 'Closed Won' OR StageName = 'Closed Lost')",
            lambda r: not r["IsClosed"],
        ),
        ("Amount = null", lambda r: r["Amount"] is None),
        (
            "CloseDate >= 2026-10-01 AND CloseDate < 2027-01-01",
            lambda r: "2026-10-01" <= (r["CloseDate"] or "") < "2027-01-01",
        ),
        (
            "How_can_Microsoft_help__c != null AND How_can_Microsoft_help__c != 'None'",
            lambda r: r["How_can_Microsoft_help__c"] not in (None, "None"),
        ),
    ],
)
def test_soql_features_over_http(sf: Salesforce, where: str, check: Any) -> None:
    fields = "Id, Name, Amount, CurrencyIsoCode, StageName, IsClosed, CloseDate, Sync_with_Partner_Center__c, How_can_Microsoft_help__c"
    matched = sf.query_all(f"SELECT {fields} FROM Opportunity WHERE {where}")["records"]
    everything = sf.query_all(f"SELECT {fields} FROM Opportunity")["records"]
    expected = [r["Id"] for r in everything if check(r)]
    assert expected, "the seed should contain rows for this filter"
    assert sorted(r["Id"] for r in matched) == sorted(expected)


def test_datetime_comparisons_at_second_resolution(sf: Salesforce, admin: Any) -> None:
    created = admin(
        "POST",
        "opportunities",
        json={"Name": "Second test", "StageName": "Prospecting", "CloseDate": "2026-12-01"},
    )
    stamp = datetime.strptime(created["SystemModstamp"], "%Y-%m-%dT%H:%M:%S.000%z")

    def hit(op: str, moment: datetime) -> bool:
        text = format_soql(
            "SELECT Id FROM Opportunity WHERE Id = {} AND SystemModstamp " + op + " {}",
            created["Id"],
            moment,
        )
        return bool(sf.query(text)["totalSize"] == 1)

    assert hit(">=", stamp) and hit("=", stamp) and hit("<=", stamp)
    assert not hit(">", stamp) and not hit("<", stamp)
    assert hit(">", stamp - timedelta(seconds=1))
    assert not hit(">=", stamp + timedelta(seconds=1))
    plus_two = stamp.astimezone(timezone(timedelta(hours=2))).strftime("%Y-%m-%dT%H:%M:%S+02:00")
    text = (
        f"SELECT Id FROM Opportunity WHERE Id = '{created['Id']}' AND SystemModstamp = {plus_two}"
    )
    assert sf.query(text)["totalSize"] == 1


def test_query_all_includes_deleted_rows(sf: Salesforce, admin: Any) -> None:
    created = admin(
        "POST",
        "opportunities",
        json={"Name": "To delete", "StageName": "Prospecting", "CloseDate": "2026-12-01"},
    )
    sf.Opportunity.delete(created["Id"])
    text = f"SELECT Id, IsDeleted FROM Opportunity WHERE Id = '{created['Id']}'"
    assert sf.query(text)["totalSize"] == 0
    assert sf.query_all(text, include_deleted=True)["records"][0]["IsDeleted"] is True
    with pytest.raises(SalesforceResourceNotFound):
        sf.Opportunity.get(created["Id"])


def test_opportunity_stages(sf: Salesforce, admin: Any) -> None:
    text = ("SELECT MasterLabel, ApiName, IsActive, SortOrder, IsClosed, IsWon, DefaultProbability, "
            "ForecastCategoryName FROM OpportunityStage WHERE IsActive = true ORDER BY SortOrder")  # fmt: skip
    stages = sf.query(text)["records"]
    labels = [s["MasterLabel"] for s in stages]
    assert labels[:2] == ["Prospecting", "Qualification"] and len(labels) == 12
    by_label = {s["MasterLabel"]: s for s in stages}
    assert (
        by_label["Technical Win"]["DefaultProbability"] == 65
        and not by_label["Technical Win"]["IsClosed"]
    )
    assert by_label["Verbal Commit"]["DefaultProbability"] == 85
    assert by_label["Closed Won"]["IsWon"] and by_label["Closed Lost"]["IsClosed"]
    admin("POST", "stages", json={"MasterLabel": "Legal Review", "DefaultProbability": 80})
    assert sf.query(text)["records"][-1]["MasterLabel"] == "Legal Review"


# --- writes ---------------------------------------------------------------------


def test_patch_bumps_stamps_and_follows_the_stage(sf: Salesforce, admin: Any) -> None:
    row = sf.query(
        "SELECT Id, SystemModstamp FROM Opportunity WHERE StageName = 'Prospecting' LIMIT 1"
    )["records"][0]
    assert (
        sf.Opportunity.update(
            row["Id"], {"StageName": "Closed Won", "CoSell_Status__c": "Closed/Won"}
        )
        == 204
    )
    after = sf.Opportunity.get(row["Id"])
    assert after["IsClosed"] and after["IsWon"] and after["Probability"] == 100
    assert after["SystemModstamp"] > row["SystemModstamp"]
    assert after["SystemModstamp"] == after["LastModifiedDate"]
    assert after["SystemModstamp"].endswith(".000+0000")


def test_composite_patch_with_a_validation_rule(sf: Salesforce, admin: Any) -> None:
    rows = sf.query("SELECT Id FROM Opportunity ORDER BY Id LIMIT 4")["records"]
    ids = [r["Id"] for r in rows]
    admin("PUT", "validation-rules", json={"rules": [
        {"field": "CoSell_Status__c", "equals": "Bad", "message": "Bad is not a status"},
        {"ids": [ids[3]], "message": "This record is locked"},
    ]})  # fmt: skip
    records = [
        {
            "attributes": {"type": "Opportunity"},
            "id": ids[0],
            "CoSell_Status__c": "Active/Accepted",
        },
        {"attributes": {"type": "Opportunity"}, "id": ids[1], "CoSell_Status__c": "Bad"},
        {"attributes": {"type": "Opportunity"}, "id": ids[2], "No_Such__c": "x"},
        {
            "attributes": {"type": "Opportunity"},
            "id": ids[3],
            "CoSell_Status__c": "Active/Accepted",
        },
    ]
    results = sf.restful(
        "composite/sobjects", method="PATCH", json={"allOrNone": False, "records": records}
    )
    assert [r["success"] for r in results] == [True, False, False, False]
    assert results[0] == {"id": ids[0], "success": True, "errors": []}
    assert results[1]["errors"][0]["statusCode"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    assert results[1]["errors"][0]["message"] == "Bad is not a status"
    assert results[2]["errors"][0]["statusCode"] == "INVALID_FIELD"
    assert "No_Such__c" in results[2]["errors"][0]["message"]
    assert results[3]["errors"][0]["message"] == "This record is locked"
    assert sf.Opportunity.get(ids[0])["CoSell_Status__c"] == "Active/Accepted"
    assert sf.Opportunity.get(ids[1])["CoSell_Status__c"] != "Bad"

    records[0]["CoSell_Status__c"] = "Rolled back"
    results = sf.restful(
        "composite/sobjects", method="PATCH", json={"allOrNone": True, "records": records}
    )
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert sf.Opportunity.get(ids[0])["CoSell_Status__c"] == "Active/Accepted"


def test_composite_limits_and_deleted_records(sf: Salesforce, admin: Any) -> None:
    too_many = [{"attributes": {"type": "Opportunity"}, "id": "006000000000001AAA"}] * 201
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.restful("composite/sobjects", method="PATCH", json={"records": too_many})
    assert caught.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    created = admin(
        "POST",
        "opportunities",
        json={"Name": "Gone", "StageName": "Prospecting", "CloseDate": "2026-12-01"},
    )
    admin("DELETE", f"opportunities/{created['Id']}")
    results = sf.restful("composite/sobjects", method="PATCH", json={"records": [
        {"attributes": {"type": "Opportunity"}, "id": created["Id"], "CoSell_Status__c": "x"},
        {"attributes": {"type": "Opportunity"}, "id": "not-an-id", "CoSell_Status__c": "x"},
    ]})  # fmt: skip
    assert [r["errors"][0]["statusCode"] for r in results] == ["ENTITY_IS_DELETED", "MALFORMED_ID"]


def test_create_single_and_collection(sf: Salesforce) -> None:
    account = sf.query("SELECT Id FROM Account LIMIT 1")["records"][0]["Id"]
    one = sf.Opportunity.create(
        {
            "Name": "Inbound deal",
            "StageName": "Verbal Commit",
            "CloseDate": "2026-12-24",
            "AccountId": account,
        }
    )
    assert one["success"] and one["id"].startswith("006")
    fetched = sf.Opportunity.get(one["id"])
    assert (
        fetched["Probability"] == 85
        and not fetched["IsClosed"]
        and fetched["CurrencyIsoCode"] == "USD"
    )
    results = sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": [
        {"attributes": {"type": "Opportunity"}, "Name": "A", "StageName": "Prospecting", "CloseDate": "2026-12-01"},
        {"attributes": {"type": "Opportunity"}, "Name": "B", "StageName": "No Such Stage", "CloseDate": "2026-12-01"},
        {"attributes": {"type": "Opportunity"}, "StageName": "Prospecting", "CloseDate": "2026-12-01"},
    ]})  # fmt: skip
    assert results[0]["success"] and results[0]["id"].startswith("006")
    assert results[1]["errors"][0]["statusCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert results[2]["errors"][0] == {
        "statusCode": "REQUIRED_FIELD_MISSING",
        "message": "Required fields are missing: [Name]",
        "fields": ["Name"],
    }


# --- errors and limits ----------------------------------------------------------------


def test_errors_map_to_simple_salesforce_exceptions(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query("SELECT Id FROM Opportunity WHERE")
    assert caught.value.content[0]["errorCode"] == "MALFORMED_QUERY"
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query("SELECT Nope__c FROM Opportunity")
    assert caught.value.content[0]["errorCode"] == "INVALID_FIELD"
    assert "Nope__c" in caught.value.content[0]["message"]
    with pytest.raises(SalesforceResourceNotFound) as caught:
        sf.Opportunity.get("006Sb0000000zzzIAA")
    assert caught.value.content[0]["errorCode"] == "NOT_FOUND"
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query_more("/services/data/v59.0/query/01gSb00000000ZZAAA-2000", identifier_is_url=True)
    assert caught.value.content[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_api_usage_and_the_daily_limit(sf: Salesforce, admin: Any) -> None:
    admin("PUT", "limits", json={"max": 5000, "used": 4997})
    sf.query("SELECT Id FROM Opportunity LIMIT 1")
    assert sf.api_usage["api-usage"].used == 4998 and sf.api_usage["api-usage"].total == 5000
    limits = sf.limits()
    assert limits["DailyApiRequests"] == {"Max": 5000, "Remaining": 1}
    sf.query("SELECT Id FROM Opportunity LIMIT 1")
    with pytest.raises(SalesforceRefusedRequest) as caught:
        sf.query("SELECT Id FROM Opportunity LIMIT 1")
    assert caught.value.status == 403
    assert caught.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_describe_lists_fields(sf: Salesforce) -> None:
    fields = {f["name"]: f for f in sf.Opportunity.describe()["fields"]}
    assert fields["CoSell_Status__c"]["updateable"] and not fields["SystemModstamp"]["updateable"]
    assert fields["CloseDate"]["type"] == "date"
    assert "Technical Win" in [v["value"] for v in fields["StageName"]["picklistValues"]]


# --- data ----------------------------------------------------------------------


def test_seed_is_deterministic_and_follows_the_contract() -> None:
    now = datetime.now(UTC)
    one, two = build_org(2000, 7, now), build_org(2000, 7, now)
    assert one.records == two.records and one.defects == two.defects
    assert build_org(2000, 8, now).records["Opportunity"] != one.records["Opportunity"]
    opps = one.records["Opportunity"]
    selected = [o for o in opps if o["Sync_with_Partner_Center__c"]]
    assert 0.80 < len(selected) / len(opps) < 0.90
    assert 0.04 < len(one.defects) / len(selected) < 0.09
    assert len(set(one.defects.values())) == 7
    assert all(o["SystemModstamp"] <= now.strftime("%Y-%m-%dT%H:%M:%S.000+0000") for o in opps)
    cosell = [o for o in selected if o.get("How_can_Microsoft_help__c") not in (None, "None")]
    assert 0.3 < len(cosell) / len(selected) < 0.5


def test_state_round_trip(sb: SandboxServer) -> None:
    part = sb.part("salesforce")
    dumped = part.dump()
    before = part.org.records["Opportunity"]
    part.load(json.loads(json.dumps(dumped)))
    assert part.org.records["Opportunity"] == before


def test_injected_faults_come_in_salesforce_shape(
    sb: SandboxServer, session: requests.Session, sf: Salesforce
) -> None:
    def faults(**settings: float) -> None:
        r = session.put(f"{sb.url}/_sandbox/faults", json={"salesforce": settings}, timeout=10)
        assert r.status_code == 200

    try:
        faults(rate_500=1.0)
        with pytest.raises(SalesforceGeneralError) as caught:
            sf.query("SELECT Id FROM Opportunity LIMIT 1")
        assert caught.value.status == 500
        assert caught.value.content[0]["errorCode"] == "UNKNOWN_EXCEPTION"
        faults(rate_token_expiry=1.0)
        with pytest.raises(SalesforceExpiredSession) as expired:
            sf.query("SELECT Id FROM Opportunity LIMIT 1")
        assert expired.value.content[0]["errorCode"] == "INVALID_SESSION_ID"
    finally:
        faults()
